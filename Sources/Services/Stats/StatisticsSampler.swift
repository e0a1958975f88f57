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
/// keeps five minutes of ``RateSample``s.
///
/// Rules of this file: only the sampler thread appends; readers copy the ring under a lock
/// held for the copy of one array reference.
final class StatisticsSampler: @unchecked Sendable {
    static let history = 300
    private let ring = Mutex<TimeSeriesRing<RateSample>>(TimeSeriesRing(capacity: StatisticsSampler.history))
    private let pendingRings = Mutex<[PendingRing]>([])
    private let running = Atomic<Bool>(false)
    private let finished = Atomic<Bool>(true)

    /// The samples, oldest first.
    var samples: [RateSample] { ring.withLock { $0.elements } }
    /// The newest sample.
    var latest: RateSample? { ring.withLock { $0.last } }
    /// Cross-CPU messages waiting at the last sample (looked up on the sampler thread,
    /// since naming their functions may read files).
    var pending: [PendingRing] { pendingRings.withLock { $0 } }

    /// Starts sampling `source` every `interval` (until ``stop()`` or `source` returns nil).
    func start(interval: Duration = .seconds(1), system: LWKTSystem,
               source: @escaping @Sendable () -> ServerStatistics?) {
        guard running.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        finished.store(false, ordering: .releasing)
        let step = max(0.01, Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18)
        Thread.detachNewThread { [self] in
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

    /// Stops the sampler thread (waits up to a second for it).
    func stop() {
        running.store(false, ordering: .releasing)
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
