import CLibellula
import Foundation
import LWKT
import Synchronization

/// One second of a server's life, per CPU where it is per CPU: the rates `/_stats` draws
/// and `/_stats.json` reports (`rates`, the newest).
public struct RateSample: Codable, Sendable, Equatable {
    /// The end of the second, seconds since 1970.
    public var timestamp: Double
    /// Seconds the sample covers (about 1).
    public var seconds: Double
    /// HTTP requests per second, per CPU.
    public var requests: [Double]
    /// HTTP response bytes per second, per CPU.
    public var bytes: [Double]
    /// HTTP 4xx and 5xx responses per second, per CPU.
    public var errors: [Double]
    /// memcached GET hits per second, per owner CPU.
    public var cacheHits: [Double]
    /// IPIs received per second, per CPU.
    public var ipis: [Double]
    /// Share of the second each CPU was running jobs, 0…100.
    public var busyPercent: [Double]
    /// HTTP connections open at the end of the second.
    public var openConnections: Int
    /// Resident memory at the end of the second.
    public var residentBytes: Int
    /// Bytes of memcached items, and the limit (0: no cache).
    public var memcachedBytes: Int
    public var memcachedLimitBytes: Int
    /// memcached GET hits over GETs in the second (nil: no GETs).
    public var hitRatio: Double?
    /// HTTP service time p99 over the second (0: no requests).
    public var httpP99Nanos: Int64
    /// Jobs waiting in each CPU's ready queue, the mean of ten readings over the second (nil:
    /// from a server without per-CPU series).
    public var readyDepth: [Double]? = nil
    /// The largest of those readings, per CPU.
    public var readyDepthMax: [Double]? = nil
    /// Seconds each CPU's own sample covers (nil: the rates come from two snapshots
    /// `seconds` apart); a rate times this is the count.
    public var cpuSeconds: [Double]? = nil
}

extension RateSample {
    /// The rates between two documents of one server (`b` the later), from their
    /// timestamps; p99 is the since-start value of `b` (documents carry no buckets).
    public static func between(_ a: ServerStatistics, _ b: ServerStatistics) -> RateSample {
        var r = StatisticsSampler.rates(from: a, to: b, seconds: max(0.001, b.timestamp - a.timestamp), latency: HistogramSnapshot())
        r.httpP99Nanos = b.latency["http_service"]?.p99Nanos ?? 0
        return r
    }
}

/// Samples a server's statistics once a second on its own OS thread (never on a CPU) and
/// keeps five minutes of ``RateSample``s. The per-CPU rates (requests, bytes, errors, cache
/// hits, IPIs, busy percentage and the ready-queue depth) come from each CPU's own ring
/// (``CPUTimeSeries``, recorded on the CPU), merged by second when read; the system-wide
/// values (open connections, memory, hit ratio, p99) from this thread's ring.
///
/// Rules of this file: only the sampler thread appends to its ring and writes the cache-hit
/// feed; readers copy the ring under a lock held for the copy of one array reference.
final class StatisticsSampler: @unchecked Sendable {
    static let history = 300
    private let ring = Mutex<TimeSeriesRing<RateSample>>(TimeSeriesRing(capacity: StatisticsSampler.history))
    private let pendingRings = Mutex<[PendingRing]>([])
    private let running = Atomic<Bool>(false)
    private let finished = Atomic<Bool>(true)
    private let perCPU = Mutex<CPUTimeSeries?>(nil)

    /// The samples, oldest first, with each CPU's own series merged in.
    var samples: [RateSample] {
        let system = ring.withLock { $0.elements }
        guard let series = perCPU.withLock({ $0 }) else { return system }
        return Self.merge(system, Self.settled(series.merged()), channels: series.channels.map(\.name))
    }
    /// The newest sample.
    var latest: RateSample? {
        guard let last = ring.withLock({ $0.last }) else { return nil }
        guard let series = perCPU.withLock({ $0 }) else { return last }
        return Self.merge([last], Self.settled(series.merged()).suffix(1), channels: series.channels.map(\.name)).last
    }

    /// The per-CPU samples without the newest second while some CPU has yet to record it
    /// (for two seconds at most: a CPU that stays away is drawn as zero).
    static func settled(_ m: [CPUTimeSeries.Sample], now: Double = Date().timeIntervalSince1970) -> [CPUTimeSeries.Sample] {
        guard let last = m.last, !last.present.allSatisfy({ $0 }), now - Double(last.second) < 2 else { return m }
        return Array(m.dropLast())
    }
    /// Cross-CPU messages waiting at the last sample (looked up on the sampler thread,
    /// since naming their functions may read files).
    var pending: [PendingRing] { pendingRings.withLock { $0 } }

    /// Starts sampling `source` every `interval` (until ``stop()`` or `source` returns nil),
    /// and each CPU's own series: `http`'s counters (one block per CPU), memcached hits from
    /// the feed, then the scheduler's (IPIs, busy, ready depth).
    func start(interval: Duration = .seconds(1), system: LWKTSystem, http: [HTTPCounters] = [],
               source: @escaping @Sendable () -> ServerStatistics?) {
        guard running.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        finished.store(false, ordering: .releasing)
        // memcached GET hits per owner CPU as of the last sample (the memcached service keeps
        // its counters in its own CPU-local state; this thread copies them here, and each
        // CPU's recorder reads its word).
        let feed = CounterFeed(count: system.cpuCount)
        func httpChannel(_ name: String, _ f: @escaping @Sendable (HTTPCounters) -> Int) -> CPUTimeSeries.Channel {
            .init(name: name, kind: .rate) { cpu in cpu < http.count ? Int64(f(http[cpu])) : 0 }
        }
        let series = CPUTimeSeries(system: system, channels: [
            httpChannel("requests") { $0.requests.load(ordering: .relaxed) },
            httpChannel("bytes") { $0.bytesSent.load(ordering: .relaxed) },
            httpChannel("errors") { $0.status4xx.load(ordering: .relaxed) &+ $0.status5xx.load(ordering: .relaxed) },
            .init(name: "cache_hits", kind: .rate) { cpu in feed.load(cpu) },
        ] + CPUTimeSeries.schedulerChannels(system), capacity: Self.history)
        series.start()
        perCPU.withLock { $0 = series }
        let step = max(0.01, Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18)
        Thread.detachNewThread { [self] in
            defer { series.stop() }
            guard var previous = source() else { finished.store(true, ordering: .releasing); return }
            let latencies = system.latencies
            var previousLatency = latencies.httpService.merged()
            var previousTime = Date().timeIntervalSince1970
            while running.load(ordering: .acquiring) {
                var slept = 0.0
                while slept < step && running.load(ordering: .acquiring) {
                    Thread.sleep(forTimeInterval: min(0.05, step - slept))
                    slept += 0.05
                }
                guard running.load(ordering: .acquiring) else { break }
                guard let now = source() else { break }
                if let mc = now.memcached {
                    for (i, c) in mc.prefix(system.cpuCount).enumerated() { feed.store(i, Int64(c["get_hits"] ?? 0)) }
                }
                let latency = latencies.httpService.merged()
                let t = now.timestamp
                let sample = Self.rates(from: previous, to: now, seconds: max(0.001, t - previousTime),
                                        latency: Self.difference(latency, previousLatency))
                ring.withLock { $0.append(sample) }
                let waiting = system.pendingMessages()
                pendingRings.withLock { $0 = waiting }
                previous = now
                previousLatency = latency
                previousTime = t
            }
            finished.store(true, ordering: .releasing)
        }
    }

    /// One sample per second the CPUs recorded (their own rates, merged by second), each
    /// with the system-wide values (open connections, memory, hit ratio, p99) of the system
    /// sample nearest in time. Without per-CPU samples, the system samples as they are.
    static func merge<C: Collection<CPUTimeSeries.Sample>>(_ system: [RateSample], _ perCPU: C, channels: [String]) -> [RateSample] {
        guard !perCPU.isEmpty, !system.isEmpty else { return system }
        func column(_ s: CPUTimeSeries.Sample, _ name: String) -> [Double]? {
            channels.firstIndex(of: name).map { s.values[$0] }
        }
        var j = 0
        return perCPU.map { s in
            // The system samples are in time order: walk to the nearest one.
            let t = Double(s.second)
            while j + 1 < system.count && abs(system[j + 1].timestamp - t) <= abs(system[j].timestamp - t) { j += 1 }
            var m = system[j]
            m.timestamp = t
            m.seconds = s.seconds.max() ?? 1
            let zero = [Double](repeating: 0, count: s.present.count)
            m.requests = column(s, "requests") ?? zero
            m.bytes = column(s, "bytes") ?? zero
            m.errors = column(s, "errors") ?? zero
            m.cacheHits = column(s, "cache_hits") ?? zero
            m.ipis = column(s, "ipis") ?? zero
            m.busyPercent = (column(s, "busy_percent") ?? zero).map { min(100, $0) }
            m.readyDepth = column(s, "ready_depth")
            m.readyDepthMax = column(s, "ready_depth_max")
            m.cpuSeconds = s.seconds
            return m
        }
    }

    /// Stops the sampler thread (waits up to a second for it).
    func stop() {
        running.store(false, ordering: .releasing)
        perCPU.withLock { $0 }?.stop()
        for _ in 0..<100 where !finished.load(ordering: .acquiring) { usleep(10_000) }
    }

    static func difference(_ a: HistogramSnapshot, _ b: HistogramSnapshot) -> HistogramSnapshot {
        var d = HistogramSnapshot()
        d.count = a.count &- b.count
        d.sum = a.sum &- b.sum
        d.max = Int64.max
        for i in 0..<min(a.buckets.count, b.buckets.count) { d.buckets[i] = max(0, a.buckets[i] &- b.buckets[i]) }
        return d
    }

    /// The rates between two snapshots `seconds` apart.
    static func rates(from a: ServerStatistics, to b: ServerStatistics, seconds: Double,
                      latency: HistogramSnapshot) -> RateSample {
        let n = b.lwkt.cpuCount
        func perCPU(_ f: (Int) -> Double) -> [Double] { (0..<n).map { max(0, f($0) / seconds) } }
        func http(_ s: ServerStatistics, _ i: Int, _ f: (HTTPCPUStatistics) -> Int) -> Double {
            i < s.http.count ? Double(f(s.http[i])) : 0
        }
        func lwkt(_ s: ServerStatistics, _ i: Int, _ c: CPUCounter) -> Double {
            i < s.lwkt.cpus.count ? Double(s.lwkt.cpus[i].counters[c.name] ?? 0) : 0
        }
        func mc(_ s: ServerStatistics, _ i: Int, _ k: String) -> Double {
            guard let m = s.memcached, i < m.count else { return 0 }
            return Double(m[i][k] ?? 0)
        }
        let requests = perCPU { http(b, $0, \.requests) - http(a, $0, \.requests) }
        let bytes = perCPU { http(b, $0, \.bytesSent) - http(a, $0, \.bytesSent) }
        let errors = perCPU {
            http(b, $0, \.responses4xx) + http(b, $0, \.responses5xx) - http(a, $0, \.responses4xx) - http(a, $0, \.responses5xx)
        }
        let hits = perCPU { mc(b, $0, "get_hits") - mc(a, $0, "get_hits") }
        let ipis = perCPU { lwkt(b, $0, .ipiReceived) - lwkt(a, $0, .ipiReceived) }
        let busy = (0..<n).map { i in
            min(100, max(0, (lwkt(b, i, .busyNanos) - lwkt(a, i, .busyNanos)) / (seconds * 1e9) * 100))
        }
        let gets = (0..<n).reduce(0.0) { $0 + (mc(b, $1, "get_hits") + mc(b, $1, "get_misses")) - (mc(a, $1, "get_hits") + mc(a, $1, "get_misses")) }
        let hitSum = (0..<n).reduce(0.0) { $0 + mc(b, $1, "get_hits") - mc(a, $1, "get_hits") }
        return RateSample(
            timestamp: b.timestamp, seconds: seconds, requests: requests, bytes: bytes, errors: errors,
            cacheHits: hits, ipis: ipis, busyPercent: busy,
            openConnections: b.http.reduce(0) { $0 + $1.connectionsOpen },
            residentBytes: b.process.residentBytes,
            memcachedBytes: b.memcached?.reduce(0) { $0 + ($1["bytes"] ?? 0) } ?? 0,
            memcachedLimitBytes: b.process.memcachedLimitBytes,
            hitRatio: gets > 0 ? hitSum / gets : nil,
            httpP99Nanos: latency.buckets.reduce(0, &+) > 0 ? latency.quantile(0.99) : 0)
    }
}

/// Counters one thread stores and the CPUs' recorders load (relaxed, one word each); freed
/// with the last closure that holds it.
final class CounterFeed: @unchecked Sendable {
    private let words: UnsafeMutablePointer<Int64>
    private let count: Int
    init(count: Int) {
        self.count = count
        words = .allocate(capacity: max(1, count))
        words.initialize(repeating: 0, count: max(1, count))
    }
    deinit { words.deallocate() }
    func load(_ i: Int) -> Int64 { i < count ? lb_counter_load(words + i) : 0 }
    func store(_ i: Int, _ v: Int64) { if i < count { lb_counter_store(words + i, v) } }
}
