import Synchronization

/// A named kind of allocation with a usage limit and per-CPU usage counters, after
/// DragonFly's `struct malloc_type`.
///
/// Create types with ``SlabAllocator/makeType(name:limit:)`` and pass the same type to the
/// allocation and to the free. Usage is charged to the CPU performing each operation, so
/// one CPU's numbers can go negative; only their sum (``MallocTypeStatistics``) is exact.
public final class MallocType: @unchecked Sendable {
    /// Short description shown in statistics.
    public let name: String
    /// Most bytes this type may hold; `Int.max` for no limit.
    public let limit: Int
    /// Position in the allocator's type list.
    let index: Int
    /// One 64-byte counter slot per arena, then one for threads that are not CPUs.
    let slots: UnsafeMutableRawPointer
    let slotCount: Int
    /// A loose, up-only running total of bytes, folded in from the per-CPU counters every
    /// `foldBytes`; recomputed exactly only when it reaches the limit.
    let looseBytes = Atomic<Int>(0)
    let foldBytes: Int
    /// Allocations sleeping until usage drops under the limit. The word lives in raw
    /// memory, so the free path reads it without touching the object's reference count.
    let waiterWord: UnsafeMutablePointer<Atomic<Int>>
    /// The count of allocations sleeping on this type.
    @inline(__always) var waiters: WaiterCount { WaiterCount(word: waiterWord) }
    /// False for the allocator's default type, which keeps no counters of its own: its
    /// numbers are what the size classes and big blocks hold beyond the other types.
    let accounted: Bool

    static let slotStride = 64

    enum Counter: Int {
        case bytes = 0, inUse, calls, frees, remoteFrees, pendingLoose
    }

    init(name: String, limit: Int, index: Int, arenaSlots: Int, accounted: Bool = true) {
        self.accounted = accounted
        self.name = name
        self.limit = max(0, limit)
        self.index = index
        self.slotCount = arenaSlots
        let bytes = arenaSlots * Self.slotStride
        waiterWord = .allocate(capacity: 1)
        waiterWord.initialize(to: Atomic(0))
        slots = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        slots.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        _ = slots.bindMemory(to: Atomic<Int>.self, capacity: bytes / 8)
        // Slack of the loose total: at most foldBytes per slot, so keep it a small share
        // of the limit, and never more than one zone.
        foldBytes = max(8, min(ZoneLayout.zoneSize, self.limit / max(1, arenaSlots * 8)))
    }

    deinit {
        slots.deallocate()
        waiterWord.deallocate()
    }

    @inline(__always)
    func counter(_ slot: Int, _ c: Counter) -> UnsafeMutablePointer<Atomic<Int>> {
        slots.advanced(by: slot &* Self.slotStride &+ c.rawValue &* 8).assumingMemoryBound(to: Atomic<Int>.self)
    }

    /// Charges an allocation of `bytes` to `slot` (the caller is the slot's only writer).
    @inline(__always)
    func chargeAllocation(slot: Int, bytes: Int) {
        if !accounted { return }
        counterAdd(counter(slot, .bytes), bytes)
        counterAdd(counter(slot, .inUse), 1)
        counterAdd(counter(slot, .calls), 1)
        let pending = counter(slot, .pendingLoose)
        let p = pending.pointee.load(ordering: .relaxed) &+ bytes
        if p >= foldBytes {
            pending.pointee.store(0, ordering: .relaxed)
            looseBytes.add(p, ordering: .relaxed)
        } else {
            pending.pointee.store(p, ordering: .relaxed)
        }
    }

    /// Charges a free of `bytes` to `slot` (the caller is the slot's only writer).
    @inline(__always)
    func chargeFree(slot: Int, bytes: Int, remote: Bool) {
        if !accounted { return }
        counterAdd(counter(slot, .bytes), -bytes)
        counterAdd(counter(slot, .inUse), -1)
        counterAdd(counter(slot, .frees), 1)
        if remote { counterAdd(counter(slot, .remoteFrees), 1) }
    }

    /// Charges a free from a thread that owns no slot (atomic adds on the last slot).
    func chargeForeignFree(bytes: Int) {
        if !accounted { return }
        let slot = slotCount - 1
        counter(slot, .bytes).pointee.subtract(bytes, ordering: .relaxed)
        counter(slot, .inUse).pointee.subtract(1, ordering: .relaxed)
        counter(slot, .frees).pointee.add(1, ordering: .relaxed)
        counter(slot, .remoteFrees).pointee.add(1, ordering: .relaxed)
    }

    /// Exact bytes in use: the sum over every slot (DragonFly treats a negative sum,
    /// possible while counters race, as zero).
    func exactBytes() -> Int {
        var total = 0
        for s in 0..<slotCount { total &+= counter(s, .bytes).pointee.load(ordering: .relaxed) }
        return max(0, total)
    }

    func sum(_ c: Counter) -> Int {
        var total = 0
        for s in 0..<slotCount { total &+= counter(s, c).pointee.load(ordering: .relaxed) }
        return total
    }

    /// Whether one more allocation is allowed. Cheap while the loose total is under the
    /// limit; otherwise recomputes the exact sum and stores it back as the loose total.
    @inline(__always)
    func underLimit() -> Bool {
        if !accounted { return true }
        if looseBytes.load(ordering: .relaxed) < limit { return true }
        return underLimitSlow()
    }

    @inline(never)
    func underLimitSlow() -> Bool {
        let exact = exactBytes()
        looseBytes.store(exact, ordering: .relaxed)
        return exact < limit
    }
}

/// Adds to a counter that only the calling thread writes: a relaxed load and store, so
/// readers on other threads never see a torn value and the writer pays no locked
/// instruction.
@inline(__always)
func counterAdd(_ p: UnsafeMutablePointer<Atomic<Int>>, _ v: Int) {
    p.pointee.store(p.pointee.load(ordering: .relaxed) &+ v, ordering: .relaxed)
}

/// A view of a malloc type's waiter count (an atomic word in raw memory).
struct WaiterCount {
    let word: UnsafeMutablePointer<Atomic<Int>>
    /// The count, as a hint (relaxed): frees use it to decide whether to wake anyone.
    @inline(__always) var hint: Int { word.pointee.load(ordering: .relaxed) }
    /// A sleeper announces itself (sequentially consistent, paired with the interlock).
    @inline(__always) func enter() { word.pointee.add(1, ordering: .sequentiallyConsistent) }
    @inline(__always) func leave() { word.pointee.subtract(1, ordering: .sequentiallyConsistent) }
}
