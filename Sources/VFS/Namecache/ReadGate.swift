import Glibc
import Synchronization

/// A many-reader gate in the style of a "big reader" lock: every reader slot lives on its own
/// cache line, so readers on different CPUs never write a shared line, and a read section
/// costs one uncontended atomic add on entry and one on exit. Writers (namespace changes,
/// which are rare) close the gate, wait until every slot has drained, change the namecache
/// topology and reopen it.
///
/// Readers never block inside a read section, and a writer never waits for anything but
/// readers, so the gate cannot take part in a deadlock. Because no reader can be inside while
/// a writer works, a writer may free what it unlinks at once.
///
/// Each slot line also carries the per-slot statistics counters of the namecache.
final class ReadGate: @unchecked Sendable {
    /// Number of reader slots (a power of two).
    static let slotCount = 64
    /// Ints per slot: 16 × 8 bytes = 128 bytes, two cache lines, so adjacent-line prefetch
    /// does not couple neighbours.
    static let stride = 16

    /// Counter indices inside a slot line (index 0 is the reader count).
    enum Counter: Int, CaseIterable {
        case hits = 1, negativeHits, misses, resolves, evictions, fastLookups, slowLookups
    }

    let slots: UnsafeMutablePointer<Atomic<Int>>
    let closedFlag: UnsafeMutablePointer<Atomic<Int>>
    private let writerLock: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        let n = Self.slotCount * Self.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: n * 8, alignment: 128)
        slots = raw.bindMemory(to: Atomic<Int>.self, capacity: n)
        for i in 0..<n { (slots + i).initialize(to: Atomic(0)) }
        writerLock = .allocate(capacity: 1)
        pthread_mutex_init(writerLock, nil)
        closedFlag = .allocate(capacity: 1)
        closedFlag.initialize(to: Atomic(0))
    }

    /// A reference-count-free view of the reader side, for hot paths.
    var view: ReadGateView { ReadGateView(slots: slots, closed: closedFlag) }

    deinit {
        let n = Self.slotCount * Self.stride
        slots.deinitialize(count: n)
        UnsafeMutableRawPointer(slots).deallocate()
        pthread_mutex_destroy(writerLock)
        writerLock.deallocate()
        closedFlag.deinitialize(count: 1)
        closedFlag.deallocate()
    }

    /// The slot of the calling thread, from a hash of its pthread handle.
    @inline(__always)
    func slotIndex() -> Int {
        let t = UInt(pthread_self())
        let h = (t >> 6) &* 0x9E37_79B9_7F4A_7C15
        return Int(truncatingIfNeeded: h >> 58) & (Self.slotCount - 1)
    }

    /// Enters a read section; returns the slot to pass to `exitRead`.
    @inline(__always)
    func enterRead() -> Int {
        let s = slotIndex()
        let p = slots + s * Self.stride
        while true {
            p.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
            if closedFlag.pointee.load(ordering: .sequentiallyConsistent) == 0 { return s }
            p.pointee.wrappingSubtract(1, ordering: .releasing)
            var spins = 0
            while closedFlag.pointee.load(ordering: .acquiring) != 0 {
                spins += 1
                if spins > 64 { sched_yield() }
            }
        }
    }

    /// Leaves a read section.
    @inline(__always)
    func exitRead(_ slot: Int) {
        (slots + slot * Self.stride).pointee.wrappingSubtract(1, ordering: .releasing)
    }

    /// Runs `body` inside a read section.
    @inline(__always)
    func read<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let s = enterRead()
        defer { exitRead(s) }
        return try body()
    }

    /// Runs `body` with every reader drained and no other writer. `body` must not block on
    /// anything a reader could hold, and must not enter a read section.
    func write<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(writerLock)
        closedFlag.pointee.store(1, ordering: .sequentiallyConsistent)
        for s in 0..<Self.slotCount {
            let p = slots + s * Self.stride
            var spins = 0
            while p.pointee.load(ordering: .sequentiallyConsistent) != 0 {
                spins += 1
                if spins > 64 { sched_yield() }
            }
        }
        defer {
            closedFlag.pointee.store(0, ordering: .releasing)
            pthread_mutex_unlock(writerLock)
        }
        return try body()
    }

    /// Adds one to a statistics counter of the calling slot. Only the slot's owner(s) write the
    /// line; a lost increment when two threads share a slot is acceptable for statistics.
    @inline(__always)
    func count(_ c: Counter, slot: Int, by n: Int = 1) {
        let p = slots + slot * Self.stride + c.rawValue
        p.pointee.store(p.pointee.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    /// Adds to a counter from outside a read section.
    func count(_ c: Counter, by n: Int = 1) {
        count(c, slot: slotIndex(), by: n)
    }

    /// The sum of a counter over all slots.
    func total(_ c: Counter) -> Int {
        var sum = 0
        for s in 0..<Self.slotCount {
            sum &+= (slots + s * Self.stride + c.rawValue).pointee.load(ordering: .relaxed)
        }
        return sum
    }
}

/// The reader side of a `ReadGate` as two plain pointers: entering and leaving a read section
/// through it touches no reference count.
struct ReadGateView {
    let slots: UnsafeMutablePointer<Atomic<Int>>
    let closed: UnsafeMutablePointer<Atomic<Int>>

    @inline(__always)
    func enterRead() -> Int {
        let t = UInt(pthread_self())
        let s = Int(truncatingIfNeeded: ((t >> 6) &* 0x9E37_79B9_7F4A_7C15) >> 58) & (ReadGate.slotCount - 1)
        let p = slots + s * ReadGate.stride
        while true {
            p.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
            if closed.pointee.load(ordering: .sequentiallyConsistent) == 0 { return s }
            p.pointee.wrappingSubtract(1, ordering: .releasing)
            var spins = 0
            while closed.pointee.load(ordering: .acquiring) != 0 {
                spins += 1
                if spins > 64 { sched_yield() }
            }
        }
    }

    @inline(__always)
    func exitRead(_ slot: Int) {
        (slots + slot * ReadGate.stride).pointee.wrappingSubtract(1, ordering: .releasing)
    }

    @inline(__always)
    func count(_ c: ReadGate.Counter, slot: Int, by n: Int = 1) {
        let p = slots + slot * ReadGate.stride + c.rawValue
        p.pointee.store(p.pointee.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }
}
