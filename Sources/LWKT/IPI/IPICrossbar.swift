import CLibellula
import Synchronization

/// The software crossbar of a system: N×N single-producer single-consumer rings, one for
/// each ordered pair of CPUs, plus an inbox per CPU for threads that are not CPUs.
///
/// Sends normally publish at once; inside ``batch(_:)`` they are written to the rings and
/// published together when the batch ends (pipelining: one index store and at most one
/// doorbell and wake per target for the whole batch).
public struct IPICrossbar: Sendable {
    /// The system whose rings these are.
    public let system: LWKTSystem

    /// Ring capacity in slots.
    public static let ringCapacity = IPIRing.capacity

    /// Sends an active IPI to `target` (see ``CPU/sendIPI(_:_:_:)``).
    @inlinable
    public func send(to target: Int, _ function: IPIFunction, _ arg: UnsafeMutableRawPointer? = nil, _ arg2: Int = 0) {
        system.cpuUnchecked(target).sendIPI(function, arg, arg2)
    }

    /// Sends a passive IPI to `target` (see ``CPU/sendPassiveIPI(_:_:_:)``).
    @inlinable
    public func sendPassive(to target: Int, _ function: IPIFunction, _ arg: UnsafeMutableRawPointer? = nil, _ arg2: Int = 0) {
        system.cpuUnchecked(target).sendPassiveIPI(function, arg, arg2)
    }

    /// Runs `body` with publication deferred: every send it makes from the current CPU is
    /// published when the outermost batch ends. Off a CPU it just runs `body`.
    @inlinable
    public func batch<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        guard let l = CPU.currentLocal else { return try body() }
        l.pointee.ipi.batchDepth += 1
        defer {
            l.pointee.ipi.batchDepth -= 1
            if l.pointee.ipi.batchDepth == 0 { l.pointee.cpu._withUnsafeGuaranteedRef { $0.flushBatch() } }
        }
        return try body()
    }

    /// Messages sent so far on the ring from `source` to `target` (its published index).
    public func messages(from source: Int, to target: Int) -> Int {
        guard source >= 0, source < system.cpuCount, target >= 0, target < system.cpuCount else { return 0 }
        return system.ring(from: source, to: target).pointee.windex.load(ordering: .relaxed)
    }

    /// Messages waiting in the ring from `source` to `target`.
    public func backlog(from source: Int, to target: Int) -> Int {
        guard source >= 0, source < system.cpuCount, target >= 0, target < system.cpuCount else { return 0 }
        let r = system.ring(from: source, to: target)
        return r.pointee.windex.load(ordering: .relaxed) &- r.pointee.rindex.load(ordering: .relaxed)
    }

    /// The whole matrix of per-pair message counts, `[source][target]`.
    public func matrix() -> [[Int]] {
        (0..<system.cpuCount).map { s in (0..<system.cpuCount).map { t in messages(from: s, to: t) } }
    }

    /// cpusync: runs `body` on every CPU in `cpus` (each inside a critical section, with
    /// the CPU's id) and returns when all have run it. The caller keeps answering its own
    /// IPIs while it waits, so CPUs that cpusync each other cannot deadlock. If the caller
    /// is one of the CPUs, it runs `body` itself too.
    public func sync(cpus: [Int], _ body: @escaping @Sendable (Int) -> Void) throws {
        for c in cpus where c < 0 || c >= system.cpuCount { throw LWKTError.noSuchCPU(c) }
        let unique = Array(Set(cpus)).sorted()
        let job = CPUSyncJob(body: body, count: unique.count)
        let me = CPU.current.flatMap { $0.system === system ? $0.id : nil }
        // Send upward from the caller first, as DragonFly does, so low CPUs are not favoured.
        let ordered = unique.filter { $0 >= (me ?? 0) } + unique.filter { $0 < (me ?? 0) }
        for c in ordered where c != me {
            let arg = Unmanaged.passRetained(job).toOpaque()
            system.cpuUnchecked(c).sendIPI(cpusyncIPI, arg, c)
        }
        if let me, unique.contains(me) {
            CPU.critical { body(me) }
            job.remaining.subtract(1, ordering: .acquiringAndReleasing)
        }
        if let cur = CPU.current, cur.system === system {
            cur.counters.add(.cpusyncs)
            while job.remaining.load(ordering: .acquiring) > 0 {
                let l = cur.local
                l.pointee.critCount += 1
                if cur.drainIPIs() == 0 { lb_cpu_relax() }
                l.pointee.critCount -= 1
            }
        } else {
            var spins = 0
            while job.remaining.load(ordering: .acquiring) > 0 {
                spins &+= 1
                if spins < 1000 { lb_cpu_relax() } else { sched_yield() }
            }
        }
    }
}

final class CPUSyncJob: @unchecked Sendable {
    let body: @Sendable (Int) -> Void
    let remaining: Atomic<Int>
    init(body: @escaping @Sendable (Int) -> Void, count: Int) {
        self.body = body
        remaining = Atomic(count)
    }
}

let cpusyncIPI: IPIFunction = { arg, cpu in
    guard let arg else { return }
    let job = Unmanaged<CPUSyncJob>.fromOpaque(arg).takeRetainedValue()
    job.body(cpu)
    job.remaining.subtract(1, ordering: .acquiringAndReleasing)
}

#if canImport(Glibc)
import Glibc
#endif
