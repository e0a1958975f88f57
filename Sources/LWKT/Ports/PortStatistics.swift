import CLibellula
import Synchronization

/// A snapshot of one port's counters, summed over CPUs.
public struct PortStatistics: Codable, Sendable, Equatable {
    /// The port's name.
    public var name: String
    /// Messages put to the port (sends, synchronous requests and forwards).
    public var puts: Int64
    /// Puts that the agent completed in the caller's context (the synchronous fast path).
    public var synchronousCompletions: Int64
    /// Messages placed on the port's queue (requests and replies).
    public var queued: Int64
    /// Replies delivered to the port as a reply port.
    public var replies: Int64
    /// Abort requests that reached the port's messages.
    public var aborts: Int64
}

/// Per-port counters: one cache line per CPU, written without a read-modify-write by that
/// CPU only; threads that are not CPUs share an atomic row.
@usableFromInline
struct PortCounters: @unchecked Sendable {
    @usableFromInline static let slots = 64
    @usableFromInline static let stride = 8
    /// `puts` counts slow-path puts; `sync` and `fastAsync` count fast-path puts by outcome;
    /// `syncSlow` counts slow-path synchronous completions (already counted in `puts`).
    @usableFromInline enum Kind: Int { case puts = 0, sync, queued, replies, aborts, fastAsync, syncSlow }

    @usableFromInline let base: UnsafeMutablePointer<Int64>
    let foreign: UnsafeMutablePointer<Atomic<Int64>>

    init() {
        base = .allocate(capacity: Self.slots * Self.stride)
        base.initialize(repeating: 0, count: Self.slots * Self.stride)
        foreign = .allocate(capacity: Self.stride)
        for i in 0..<Self.stride { (foreign + i).initialize(to: Atomic<Int64>(0)) }
    }

    func deallocate() {
        base.deallocate()
        foreign.deallocate()
    }

    @inlinable @inline(__always)
    func add(_ k: Kind) {
        Self.bump(row(lb_current_cpu()), k, self)
    }

    /// The calling CPU's row, or `nil` off the CPUs (then ``bump(_:_:_:)`` goes atomic).
    @inlinable @inline(__always)
    func row(_ raw: UnsafeMutableRawPointer?) -> UnsafeMutablePointer<Int64>? {
        guard let raw else { return nil }
        // The CPU's index sits in its globaldata: one load, no trip through the CPU object.
        let id = raw.assumingMemoryBound(to: Globaldata.self).pointee.cpuID
        return id < Self.slots ? base + id &* Self.stride : nil
    }

    @inlinable @inline(__always)
    static func bump(_ row: UnsafeMutablePointer<Int64>?, _ k: Kind, _ c: PortCounters) {
        if let row {
            lb_counter_add(row + k.rawValue, 1)
        } else {
            c.addForeign(k)
        }
    }

    @usableFromInline
    func addForeign(_ k: Kind) {
        foreign[k.rawValue].add(1, ordering: .relaxed)
    }

    func total(_ k: Kind) -> Int64 {
        var s = foreign[k.rawValue].load(ordering: .relaxed)
        for i in 0..<Self.slots { s &+= lb_counter_load(base + i * Self.stride + k.rawValue) }
        return s
    }
}
