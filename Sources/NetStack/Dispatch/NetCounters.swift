import CLibellula

/// Per-CPU counter blocks: each CPU writes only its own block (a relaxed store of a plain
/// add), any thread may read them.
public final class NetCounters: @unchecked Sendable {
    public let cpuCount: Int
    @usableFromInline let stride: Int
    @usableFromInline let base: UnsafeMutablePointer<Int64>

    init(cpuCount: Int) {
        self.cpuCount = cpuCount
        // One block per CPU, rounded up to whole cache lines.
        stride = (NetCounter.allCases.count + 7) & ~7
        base = .allocate(capacity: stride * max(1, cpuCount))
        base.initialize(repeating: 0, count: stride * max(1, cpuCount))
    }

    deinit { base.deallocate() }

    /// Adds `n` to a counter of `cpu` (call only on that CPU).
    @inlinable @inline(__always)
    public func add(_ c: NetCounter, cpu: Int, _ n: Int = 1) {
        lb_counter_add(base + cpu * stride + c.rawValue, Int64(n))
    }

    /// A counter of one CPU.
    public func value(_ c: NetCounter, cpu: Int) -> Int {
        Int(lb_counter_load(base + cpu * stride + c.rawValue))
    }

    /// A counter summed over CPUs.
    public func total(_ c: NetCounter) -> Int {
        (0..<cpuCount).reduce(0) { $0 + value(c, cpu: $1) }
    }

    /// Every drop counter summed over CPUs.
    public var totalDrops: Int {
        NetCounter.allCases.filter(\.isDrop).reduce(0) { $0 + total($1) }
    }

    /// Every counter of every CPU, `[cpu][counter name] = value` (zeros included, so the
    /// columns are stable): what the stack's section of `LWKTSnapshot` holds.
    public func perCPU() -> [[String: Int64]] {
        (0..<cpuCount).map { cpu in
            var d: [String: Int64] = [:]
            d.reserveCapacity(NetCounter.allCases.count)
            for c in NetCounter.allCases { d[c.name] = lb_counter_load(base + cpu * stride + c.rawValue) }
            return d
        }
    }

    /// A snapshot: `[cpu][counter name] = value`, non-zero entries only.
    public func snapshot() -> [[String: Int]] {
        (0..<cpuCount).map { cpu in
            var d: [String: Int] = [:]
            for c in NetCounter.allCases { let v = value(c, cpu: cpu); if v != 0 { d[c.name] = v } }
            return d
        }
    }

    /// A table of the non-zero counters, one column per CPU.
    public func table() -> String {
        var lines = ["counter".rightPad(28)
                     + (0..<cpuCount).map { "cpu\($0)".leftPad(12) }.joined()]
        for c in NetCounter.allCases {
            let vs = (0..<cpuCount).map { value(c, cpu: $0) }
            if vs.allSatisfy({ $0 == 0 }) { continue }
            lines.append(c.name.rightPad(28) + vs.map { String($0).leftPad(12) }.joined())
        }
        return lines.joined(separator: "\n")
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
    func rightPad(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}
