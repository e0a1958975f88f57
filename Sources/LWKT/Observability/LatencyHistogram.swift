import CLibellula

// Latency histograms, HDR style: log-linear buckets over nanoseconds, one fixed block of
// counters per CPU.
//
// Rules of this file:
// - Block `i` (for `i < cpuCount`) is written only by CPU `i`'s own thread: a relaxed load
//   and store per counter, no locked instruction, no allocation, no lock.
// - Block `cpuCount` is shared by threads that are not CPUs; they add with atomic
//   read-modify-write instructions.
// - Anyone may read any block at any time (relaxed loads): a reader merges the blocks into
//   a ``HistogramSnapshot``; a snapshot taken during recording may miss the newest values
//   but never sees a torn counter.

/// The bucket layout of a ``LatencyHistogram``: values below 32 have a bucket each; above,
/// every power of two is split into 16 equal sub-buckets, so a bucket's width is at most
/// 1/16 of its lower bound (quantiles are exact to within 6.25 %). Values at or above
/// 2^41 ns (about 37 minutes) share the last bucket.
public enum HistogramBuckets {
    /// Sub-buckets per power of two, as a power of two.
    public static let subBucketBits = 4
    /// The largest exponent with its own buckets.
    public static let maxExponent = 40
    /// How many buckets there are.
    public static let count = (maxExponent - subBucketBits) * 16 + 32

    /// The bucket of `value` nanoseconds.
    @inlinable @inline(__always)
    public static func index(of value: UInt64) -> Int {
        if value < 32 { return Int(value) }
        let e = min(63 - value.leadingZeroBitCount, maxExponent)
        if e == maxExponent, value >> UInt64(maxExponent + 1) != 0 { return count - 1 }
        let shift = UInt64(e - subBucketBits)
        return (e - subBucketBits) * 16 + Int(truncatingIfNeeded: value >> shift)
    }

    /// The smallest value in bucket `index`.
    public static func lowerBound(of index: Int) -> UInt64 {
        if index < 32 { return UInt64(index) }
        let shift = index / 16 - 1
        return UInt64(index % 16 + 16) << UInt64(shift)
    }

    /// The largest value in bucket `index`.
    public static func upperBound(of index: Int) -> UInt64 {
        if index < 32 { return UInt64(index) }
        if index == count - 1 { return UInt64.max }
        return lowerBound(of: index + 1) - 1
    }
}

/// A per-CPU latency histogram with fixed memory: recording touches two counters of the
/// calling CPU's block and allocates nothing; reading merges every block.
public final class LatencyHistogram: @unchecked Sendable {
    /// What is measured, for reports (`http_service`, `domsg_round_trip`, ...).
    public let name: String
    /// A sentence for reports.
    public let help: String
    /// The number of per-CPU blocks (the last is for threads that are not CPUs).
    public let cpuCount: Int
    /// Per block: count, sum, max, then the buckets.
    @usableFromInline static let header = 3
    @usableFromInline static let stride = header + HistogramBuckets.count
    @usableFromInline let base: UnsafeMutablePointer<Int64>

    /// A histogram with a block for each of `cpuCount` CPUs and one shared block.
    public init(name: String, help: String, cpuCount: Int) {
        self.name = name
        self.help = help
        self.cpuCount = cpuCount
        let n = (cpuCount + 1) * Self.stride
        base = .allocate(capacity: n)
        base.initialize(repeating: 0, count: n)
    }

    deinit { base.deallocate() }

    /// Records `nanos` from CPU `cpu` (its own thread), or from another thread when `cpu`
    /// is not a CPU index (for example -1).
    @inlinable @inline(__always)
    public func record(_ nanos: UInt64, cpu: Int) {
        let i = HistogramBuckets.index(of: nanos)
        let v = Int64(truncatingIfNeeded: min(nanos, UInt64(Int64.max)))
        if cpu >= 0 && cpu < cpuCount {
            let b = base + cpu &* Self.stride
            lb_counter_add(b, 1)
            lb_counter_add(b + 1, v)
            if lb_counter_load(b + 2) < v { lb_counter_store(b + 2, v) }
            lb_counter_add(b + Self.header + i, 1)
        } else {
            let b = base + cpuCount &* Self.stride
            lb_atomic_add64(b, 1)
            lb_atomic_add64(b + 1, v)
            lb_atomic_max64(b + 2, v)
            lb_atomic_add64(b + Self.header + i, 1)
        }
    }

    /// Records the time since `start` (a `lb_now_ns()` reading) on the current CPU.
    @inlinable @inline(__always)
    public func recordSince(_ start: UInt64, cpu: Int) {
        record(lb_now_ns() &- start, cpu: cpu)
    }

    /// One block's counters now (`cpu == cpuCount`: the shared block).
    public func snapshot(cpu: Int) -> HistogramSnapshot {
        precondition(cpu >= 0 && cpu <= cpuCount)
        let b = base + cpu * Self.stride
        var buckets = [Int64](repeating: 0, count: HistogramBuckets.count)
        for i in 0..<HistogramBuckets.count { buckets[i] = lb_counter_load(b + Self.header + i) }
        return HistogramSnapshot(count: lb_counter_load(b), sum: lb_counter_load(b + 1),
                                 max: lb_counter_load(b + 2), buckets: buckets)
    }

    /// Every CPU's block, merged.
    public func merged() -> HistogramSnapshot {
        var s = HistogramSnapshot()
        for c in 0...cpuCount { s.merge(snapshot(cpu: c)) }
        return s
    }
}

/// The counters of a histogram (one CPU's or merged) at one moment.
public struct HistogramSnapshot: Sendable, Equatable {
    /// Values recorded.
    public var count: Int64 = 0
    /// Their sum, in nanoseconds.
    public var sum: Int64 = 0
    /// The largest, in nanoseconds.
    public var max: Int64 = 0
    /// Values per bucket (see ``HistogramBuckets``).
    public var buckets: [Int64] = .init(repeating: 0, count: HistogramBuckets.count)

    public init() {}

    public init(count: Int64, sum: Int64, max: Int64, buckets: [Int64]) {
        self.count = count
        self.sum = sum
        self.max = max
        self.buckets = buckets
    }

    /// Adds `other`'s values to these.
    public mutating func merge(_ other: HistogramSnapshot) {
        count &+= other.count
        sum &+= other.sum
        max = Swift.max(max, other.max)
        for i in 0..<Swift.min(buckets.count, other.buckets.count) { buckets[i] &+= other.buckets[i] }
    }

    /// The value at quantile `q` (0…1): the upper bound of the bucket that holds it, capped
    /// at the largest value seen; 0 when empty.
    public func quantile(_ q: Double) -> Int64 {
        let total = buckets.reduce(0, &+)
        guard total > 0 else { return 0 }
        let rank = Swift.max(1, Int64((q * Double(total)).rounded(.up)))
        var seen: Int64 = 0
        for (i, c) in buckets.enumerated() where c > 0 {
            seen += c
            if seen >= rank {
                let upper = HistogramBuckets.upperBound(of: i)
                return Int64(truncatingIfNeeded: Swift.min(upper, UInt64(Swift.max(0, max))))
            }
        }
        return max
    }

    /// Values at or below `nanos` (for cumulative exposition such as Prometheus `le`):
    /// whole buckets whose upper bound is at most `nanos`.
    public func countAtOrBelow(_ nanos: UInt64) -> Int64 {
        var n: Int64 = 0
        for (i, c) in buckets.enumerated() where c > 0 {
            if HistogramBuckets.upperBound(of: i) <= nanos { n += c } else { break }
        }
        return n
    }

    /// The summary reports print.
    public var summary: LatencySummary {
        LatencySummary(count: count, meanNanos: count > 0 ? sum / count : 0, p50Nanos: quantile(0.5),
                       p90Nanos: quantile(0.9), p99Nanos: quantile(0.99), p999Nanos: quantile(0.999), maxNanos: max)
    }
}

/// Quantiles of a histogram, in nanoseconds.
public struct LatencySummary: Codable, Sendable, Equatable {
    public var count: Int64
    public var meanNanos: Int64
    public var p50Nanos: Int64
    public var p90Nanos: Int64
    public var p99Nanos: Int64
    public var p999Nanos: Int64
    public var maxNanos: Int64
}
