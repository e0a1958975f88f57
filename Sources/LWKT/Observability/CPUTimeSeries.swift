import CLibellula
import Glibc
import Synchronization

/// Per-CPU rings of per-second samples: every CPU records its own second (rates of its
/// counters, values of its gauges, its ready-queue depth) into its own fixed ring, and a
/// reader merges the CPUs' rings by second.
///
/// Rules of this file: CPU `i`'s ring, its previous readings and its slot index are written
/// only by the recorder thread on CPU `i` (an LWKT thread that sleeps to each second
/// boundary), in memory allocated up front, so recording allocates nothing and takes no
/// lock. Each slot is a sequence-locked record: the writer makes its stamp odd, writes the
/// fields, then stores the new even stamp (release fences between); a reader copies the
/// fields between two equal even stamps and otherwise skips the slot for this read.
public final class CPUTimeSeries: @unchecked Sendable {
    /// How a channel's reading becomes a sample.
    public enum Kind: Sendable {
        /// A cumulative counter: the sample is its increase per second, times `scale`.
        case rate
        /// A level (a queue depth, a count of open things): the sample is the reading.
        case gauge
        /// A level read ``CPUTimeSeries/subSamples`` times a second: the sample is the mean.
        case mean
        /// A level read ``CPUTimeSeries/subSamples`` times a second: the sample is the largest.
        case max

        var isSampled: Bool { self == .mean || self == .max }
    }

    /// One series every CPU records.
    public struct Channel: Sendable {
        /// A snake_case name (`requests`, `ready_depth`).
        public var name: String
        public var kind: Kind
        /// A factor applied to the sample (for example nanoseconds busy per second to a
        /// percentage: 100 / 1e9).
        public var scale: Double
        /// Reads the channel's counter or level for the CPU given, on that CPU. It must not
        /// allocate, lock or block (a relaxed load of a per-CPU counter).
        public var read: @Sendable (Int) -> Int64

        public init(name: String, kind: Kind, scale: Double = 1, read: @escaping @Sendable (Int) -> Int64) {
            self.name = name
            self.kind = kind
            self.scale = scale
            self.read = read
        }
    }

    /// One second of every CPU, merged on read.
    public struct Sample: Sendable, Equatable {
        /// The second (seconds since 1970, UTC) the sample ends in.
        public var second: Int64
        /// Per channel (in ``CPUTimeSeries/channels`` order), per CPU; 0 where a CPU has no
        /// sample for this second (it was busy past the whole second, or just started).
        public var values: [[Double]]
        /// Per CPU, whether it recorded this second.
        public var present: [Bool]
        /// Per CPU, the seconds its sample covers (about 1; a CPU's first sample covers
        /// from its start to the next whole second). A rate times this is the count.
        public var seconds: [Double]
    }

    /// The channels, in sample order.
    public let channels: [Channel]
    /// Seconds each CPU keeps.
    public let capacity: Int
    public let cpuCount: Int
    private let system: LWKTSystem
    /// Words per slot: stamp, second, seconds covered, then one per channel (`Double` bits).
    private let slotWords: Int
    /// Per CPU: `capacity` slots, then the previous readings, the sub-sample accumulators
    /// (sum or largest, per channel), then the time of the previous readings, the next slot
    /// index and the sub-sample count, padded to whole cache lines.
    private let cpuWords: Int
    private let memory: UnsafeMutablePointer<Int64>
    private let recorders = Mutex<[LWKTThread]>([])

    /// Rings for `system`'s CPUs keeping `capacity` seconds (at least 2) of `channels`.
    public init(system: LWKTSystem, channels: [Channel], capacity: Int = 300) {
        self.system = system
        self.channels = channels
        self.capacity = max(2, capacity)
        cpuCount = system.cpuCount
        slotWords = 3 + channels.count
        let words = self.capacity * slotWords + 2 * channels.count + 3
        cpuWords = (words + 7) / 8 * 8
        let raw = UnsafeMutableRawPointer.allocate(byteCount: cpuCount * cpuWords * 8, alignment: 64)
        memory = raw.bindMemory(to: Int64.self, capacity: cpuCount * cpuWords)
        memory.initialize(repeating: 0, count: cpuCount * cpuWords)
    }

    deinit {
        memory.deallocate()
    }

    /// The scheduler's own channels: IPIs received per second, busy percentage and the
    /// ready-queue depth (jobs waiting to run at the sample).
    public static func schedulerChannels(_ system: LWKTSystem) -> [Channel] {
        [
            Channel(name: "ipis", kind: .rate) { system.cpuUnchecked($0).counters.load(.ipiReceived) },
            Channel(name: "busy_percent", kind: .rate, scale: 100 / 1e9) { system.cpuUnchecked($0).counters.load(.busyNanos) },
            Channel(name: "ready_depth", kind: .mean) { system.cpuUnchecked($0).readyDepth },
            Channel(name: "ready_depth_max", kind: .max) { system.cpuUnchecked($0).readyDepth },
        ]
    }

    @inline(__always) private func base(_ cpu: Int) -> UnsafeMutablePointer<Int64> { memory + cpu * cpuWords }
    @inline(__always) private func previous(_ cpu: Int) -> UnsafeMutablePointer<Int64> { base(cpu) + capacity * slotWords }
    @inline(__always) private func accumulators(_ cpu: Int) -> UnsafeMutablePointer<Int64> { previous(cpu) + channels.count }
    /// Word 0: when the previous readings were taken (`lb_now_ns`); word 1: the next slot;
    /// word 2: sub-samples taken since.
    @inline(__always) private func cursor(_ cpu: Int) -> UnsafeMutablePointer<Int64> { accumulators(cpu) + channels.count }

    /// Readings per second of the ``Kind/mean`` and ``Kind/max`` channels (one at the end
    /// of the second, the others every 100 ms before it).
    public static let subSamples = 10
    private var hasSampledChannels: Bool { channels.contains { $0.kind.isSampled } }

    /// Starts one recorder thread per CPU; each records at every whole second until
    /// ``stop()`` or the system shuts down.
    public func start() {
        recorders.withLock { list in
            guard list.isEmpty else { return }
            list = system.cpus.map { cpu in
                let id = cpu.id
                return LWKTThread.spawn(on: cpu, priority: .kernel, name: "time-series") { [self] in
                    record(cpu: id, now: lb_now_ns(), second: Self.wallSecond(), first: true)
                    let step: UInt64 = 1_000_000_000 / UInt64(Self.subSamples)
                    let sampled = hasSampledChannels
                    while true {
                        // To the boundary after the second this wakeup counts as (a timer
                        // that fires a little early must not record the same second twice),
                        // reading the sampled levels every `step` on the way.
                        var wall = Self.wallNanos()
                        let target = wall &+ Self.sleepToNextSecond(from: wall)
                        while sampled && target > wall &+ step + step / 2 {
                            guard (try? await LWKT.sleep(for: .nanoseconds(Int64(step)))) != nil else { return }
                            sample(cpu: id)
                            wall = Self.wallNanos()
                        }
                        let rest = target > wall ? target - wall : 0
                        guard (try? await LWKT.sleep(for: .nanoseconds(Int64(rest)))) != nil else { return }
                        record(cpu: id, now: lb_now_ns(), second: Self.wallSecond(), first: false)
                    }
                }
            }
        }
    }

    /// Stops the recorder threads (the rings stay readable). Safe to call more than once,
    /// from any thread.
    public func stop() {
        for t in recorders.withLock({ list in defer { list = [] }; return list }) { t.cancel() }
    }

    static func wallNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// The current second since 1970, rounded to the nearest (a recorder wakes just after
    /// the boundary, or a little before it when the timer fires early).
    static func wallSecond() -> Int64 { second(of: wallNanos()) }

    /// How long a recorder that woke at `wallNanos` sleeps: to the boundary after the second
    /// this wakeup counts as (``second(of:)``), so that a wakeup a little before a boundary
    /// is that boundary's sample and the next one comes a second later, not at once.
    static func sleepToNextSecond(from wallNanos: UInt64) -> UInt64 {
        let target = UInt64(second(of: wallNanos) + 1) &* 1_000_000_000
        return target > wallNanos ? target - wallNanos : 0
    }

    /// The second (since 1970) nearest to `wallNanos`.
    static func second(of wallNanos: UInt64) -> Int64 { Int64((wallNanos + 500_000_000) / 1_000_000_000) }

    /// Reads CPU `cpu`'s ``Kind/mean`` and ``Kind/max`` channels once into their
    /// accumulators. Runs on CPU `cpu`, like ``record(cpu:now:second:first:)``.
    public func sample(cpu: Int) {
        let acc = accumulators(cpu)
        let cur = cursor(cpu)
        for (k, c) in channels.enumerated() {
            switch c.kind {
            case .mean: acc[k] &+= c.read(cpu)
            case .max: acc[k] = cur[2] == 0 ? c.read(cpu) : Swift.max(acc[k], c.read(cpu))
            case .rate, .gauge: break
            }
        }
        cur[2] += 1
    }

    /// Records CPU `cpu`'s second ending at `now` (`lb_now_ns`) into its ring; `first` only
    /// takes the readings. Runs on CPU `cpu` (tests call it directly, with their own
    /// clock, from one thread per CPU).
    public func record(cpu: Int, now: UInt64, second: Int64, first: Bool) {
        let prev = previous(cpu)
        let cur = cursor(cpu)
        let acc = accumulators(cpu)
        sample(cpu: cpu)  // the level at the end of the second is one of the readings
        let readings = Double(cur[2])
        let elapsed = Double(now &- UInt64(bitPattern: cur[0])) / 1e9
        let slot = base(cpu) + Int(cur[1]) * slotWords
        if !first && elapsed > 0 {
            let stamp = lb_counter_load(slot)
            lb_counter_store(slot, stamp | 1)
            lb_fence_release()
            lb_counter_store(slot + 1, second)
            lb_counter_store(slot + 2, Int64(bitPattern: elapsed.bitPattern))
            for (k, c) in channels.enumerated() {
                let v = c.read(cpu)
                let x: Double
                switch c.kind {
                case .rate: x = max(0, Double(v &- prev[k]) / elapsed * c.scale)
                case .gauge: x = Double(v) * c.scale
                case .mean: x = Double(acc[k]) / readings * c.scale
                case .max: x = Double(acc[k]) * c.scale
                }
                prev[k] = v
                lb_counter_store(slot + 3 + k, Int64(bitPattern: x.bitPattern))
            }
            lb_fence_release()
            lb_counter_store(slot, (stamp | 1) &+ 1)
            cur[1] = (cur[1] + 1) % Int64(capacity)
        } else {
            for (k, c) in channels.enumerated() { prev[k] = c.read(cpu) }
        }
        cur[0] = Int64(bitPattern: now)
        for k in 0..<channels.count { acc[k] = 0 }
        cur[2] = 0
    }

    /// Every CPU's samples merged by second, oldest first (seconds no CPU recorded are
    /// absent).
    public func merged() -> [Sample] {
        var bySecond: [Int64: Sample] = [:]
        let n = channels.count
        var fields = [Int64](repeating: 0, count: n)
        for cpu in 0..<cpuCount {
            let b = base(cpu)
            for s in 0..<capacity {
                let slot = b + s * slotWords
                let before = lb_counter_load(slot)
                guard before != 0 && before & 1 == 0 else { continue }
                lb_fence_acquire()
                let second = lb_counter_load(slot + 1)
                let covered = Double(bitPattern: UInt64(bitPattern: lb_counter_load(slot + 2)))
                for k in 0..<n { fields[k] = lb_counter_load(slot + 3 + k) }
                lb_fence_acquire()
                guard lb_counter_load(slot) == before else { continue }
                var sample = bySecond[second] ?? Sample(
                    second: second, values: Array(repeating: Array(repeating: 0, count: cpuCount), count: n),
                    present: Array(repeating: false, count: cpuCount), seconds: Array(repeating: 0, count: cpuCount))
                for k in 0..<n { sample.values[k][cpu] = Double(bitPattern: UInt64(bitPattern: fields[k])) }
                sample.present[cpu] = true
                sample.seconds[cpu] = covered
                bySecond[second] = sample
            }
        }
        return bySecond.keys.sorted().compactMap { bySecond[$0] }
    }

    /// The index of channel `name`.
    public func channelIndex(_ name: String) -> Int? { channels.firstIndex { $0.name == name } }
}

extension CPU {
    /// Jobs ready to run on this CPU now, all bands (read it on this CPU: the run queue is
    /// the owner's).
    public var readyDepth: Int64 {
        assert(isCurrent, "readyDepth read off its CPU")
        return Int64(local.pointee.runq.count)
    }
}
