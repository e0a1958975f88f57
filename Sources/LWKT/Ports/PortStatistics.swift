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
    @usableFromInline enum Kind: Int { case puts = 0, sync, queued, replies, aborts }

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
        if let l = CPU.currentLocal {
            let id = l.pointee.cpu._withUnsafeGuaranteedRef { $0.id }
            if id < Self.slots {
                lb_counter_add(base + (id &* Self.stride &+ k.rawValue), 1)
                return
            }
        }
        addForeign(k)
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
