import Glibc
import Synchronization

/// A many-reader gate in the style of a "big reader" lock: every reader slot lives on its own
/// cache line, so readers on different CPUs never write a shared line, and a read section
/// costs one uncontended atomic add on entry and one on exit.
///
/// Writers come in two strengths, both serialised by one writer lock that is held only for
/// pointer and counter updates (never across a file-system call):
/// - `publish` changes what readers may see *without* waiting for them: it adds records to
///   hash chains and moves a record from unresolved or negative to resolved, with every
///   field a reader follows written before the pointer or state that makes it reachable
///   (release fences; readers load the state first). Lookups on every CPU go on meanwhile.
/// - `write` closes the gate and waits until every slot has drained: for changes that unlink
///   or free what a reader could be standing on (removal, rename, eviction, table growth).
///   Because no reader can be inside, a writer may free what it unlinks at once; what a
///   `publish` replaced (`retire`) is released after the next drain.
///
/// Readers never block inside a read section and writers wait only for readers, so the gate
/// cannot take part in a deadlock. Each slot line also carries the per-slot statistics
/// counters of the namecache. The reader protocol lives once, in `ReadGateView`.
final class ReadGate: @unchecked Sendable {
    /// Number of reader slots (a power of two).
    static let slotCount = 64
    /// Ints per slot: 16 × 8 bytes = 128 bytes, two cache lines, so adjacent-line prefetch
    /// does not couple neighbours.
    static let stride = 16

    /// Counter indices inside a slot line (index 0 is the reader count).
    enum Counter: Int, CaseIterable {
        case hits = 1, negativeHits, misses, resolves, evictions, fastLookups, slowLookups, drains, publishes
    }

    /// The reader side, as two plain pointers.
    let view: ReadGateView
    private let writerLock = NamespaceLock()
    /// Objects a `publish` made unreachable; released after the next drain (writer lock held).
    private var retired: [AnyObject] = []

    init() {
        let n = Self.slotCount * Self.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: n * 8, alignment: 128)
        let slots = raw.bindMemory(to: Atomic<Int>.self, capacity: n)
        for i in 0..<n { (slots + i).initialize(to: Atomic(0)) }
        let closed = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1)
        closed.initialize(to: Atomic(0))
        view = ReadGateView(slots: slots, closed: closed)
    }

    deinit {
        let n = Self.slotCount * Self.stride
        view.slots.deinitialize(count: n)
        UnsafeMutableRawPointer(view.slots).deallocate()
        view.closed.deinitialize(count: 1)
        view.closed.deallocate()
    }

    /// Runs `body` inside a read section.
    @inline(__always)
    func read<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let s = view.enterRead()
        defer { view.exitRead(s) }
        return try body()
    }

    /// Runs `body` with every reader drained and no other writer. `body` must not block on
    /// anything a reader could hold, and must not enter a read section.
    func write<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        writerLock.lock()
        view.closed.pointee.store(1, ordering: .sequentiallyConsistent)
        var spins = 0
        for s in 0..<Self.slotCount {
            let p = view.slots + s * Self.stride
            while p.pointee.load(ordering: .sequentiallyConsistent) != 0 { VFSWait.relax(&spins) }
        }
        // Every reader that could still see a retired object has left.
        let released = retired
        retired.removeAll()
        count(.drains)
        defer {
            view.closed.pointee.store(0, ordering: .releasing)
            writerLock.unlock()
            _ = released.count
        }
        return try body()
    }

    /// Runs `body` with no other writer while readers go on (see the type's rules): `body`
    /// may only add reachable state, publishing each pointer or state after what it leads to.
    func publish<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        writerLock.lock()
        defer { writerLock.unlock() }
        count(.publishes)
        return try body()
    }

    /// Keeps `object` alive until every reader that might still hold a plain pointer into it
    /// has left (the next drain). Call inside `publish` or `write`.
    func retire(_ object: AnyObject) { retired.append(object) }

    /// Objects waiting for a drain (inside a writer section).
    var retiredCount: Int { retired.count }

    /// Adds to a counter from outside a read section.
    func count(_ c: Counter, by n: Int = 1) {
        view.count(c, slot: ReadGateView.slotIndex(), by: n)
    }

    /// The sum of a counter over all slots.
    func total(_ c: Counter) -> Int {
        var sum = 0
        for s in 0..<Self.slotCount {
            sum &+= (view.slots + s * Self.stride + c.rawValue).pointee.load(ordering: .relaxed)
        }
        return sum
    }
}

/// The reader side of a `ReadGate` as two plain pointers: entering and leaving a read section
/// through it touches no reference count. This is the one implementation of the reader
/// protocol: add one to the caller's slot, then check that the gate is open (both
/// sequentially consistent, pairing with the writer's close-then-scan); if it is closed,
/// step back out and wait for it to open.
struct ReadGateView {
    let slots: UnsafeMutablePointer<Atomic<Int>>
    let closed: UnsafeMutablePointer<Atomic<Int>>

    /// The slot of the calling thread, from a hash of its pthread handle.
    @inline(__always)
    static func slotIndex() -> Int {
        let t = UInt(pthread_self())
        return Int(truncatingIfNeeded: ((t >> 6) &* 0x9E37_79B9_7F4A_7C15) >> 58) & (ReadGate.slotCount - 1)
    }

    /// Enters a read section; returns the slot to pass to `exitRead`.
    @inline(__always)
    func enterRead() -> Int {
        let s = Self.slotIndex()
        let p = slots + s * ReadGate.stride
        while true {
            p.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
            if closed.pointee.load(ordering: .sequentiallyConsistent) == 0 { return s }
            p.pointee.wrappingSubtract(1, ordering: .releasing)
            var spins = 0
            while closed.pointee.load(ordering: .acquiring) != 0 { VFSWait.relax(&spins) }
        }
    }

    /// Leaves a read section.
    @inline(__always)
    func exitRead(_ slot: Int) {
        (slots + slot * ReadGate.stride).pointee.wrappingSubtract(1, ordering: .releasing)
    }

    /// Adds to a statistics counter of `slot`. Only the slot's owner(s) write the line; a lost
    /// increment when two threads share a slot is acceptable for statistics.
    @inline(__always)
    func count(_ c: ReadGate.Counter, slot: Int, by n: Int = 1) {
        let p = slots + slot * ReadGate.stride + c.rawValue
        p.pointee.store(p.pointee.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }
}
