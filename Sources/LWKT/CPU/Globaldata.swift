import CLibellula
import Synchronization

/// The words other threads write to reach a CPU: its doorbell, its "asleep" flag and its
/// inbox flag. Padded so that no other CPU's words share the cache line.
@usableFromInline
struct CPUSignals: ~Copyable {
    var pad0: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    /// Non-zero when some ring or the inbox may hold messages (DragonFly's RQF_IPIQ).
    @usableFromInline let doorbell = Atomic<Int>(0)
    /// 1 while the CPU has announced that it is about to sleep or sleeps.
    @usableFromInline let sleeping = Atomic<Int>(0)
    /// 1 when the inbox for threads that are not CPUs may hold messages.
    @usableFromInline let inboxFlag = Atomic<Int>(0)
    /// 1 once the CPU has been asked to stop.
    @usableFromInline let stop = Atomic<Int>(0)
    /// Threads inside ``CPU/signalEventFD()`` right now (the eventfd stays open while any is).
    @usableFromInline let wakers = Atomic<Int>(0)
    /// 1 once the CPU's epoll instance and eventfd are closed (after its thread was joined).
    @usableFromInline let descriptorsClosed = Atomic<Int>(0)
    var pad1: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
}

/// A growable owner-only stack of continuations that `LWKT.yield()` parks until the job
/// that parked them has finished.
@usableFromInline
struct ContinuationBuffer {
    @usableFromInline var items: UnsafeMutablePointer<UnsafeContinuation<Void, Never>>
    @usableFromInline var capacity: Int
    @usableFromInline var count = 0

    init() {
        capacity = 16
        items = .allocate(capacity: capacity)
    }

    @inlinable mutating func append(_ c: UnsafeContinuation<Void, Never>) {
        if count == capacity {
            let n = UnsafeMutablePointer<UnsafeContinuation<Void, Never>>.allocate(capacity: capacity * 2)
            n.moveInitialize(from: items, count: count)
            items.deallocate()
            items = n
            capacity *= 2
        }
        (items + count).initialize(to: c)
        count += 1
    }
}

/// Open-addressing table from a task's address to its LWKT thread's counters, so the run
/// loop can charge runs and run time to threads without allocating. Owner-only.
@usableFromInline
struct ThreadTable {
    @usableFromInline var keys: UnsafeMutablePointer<UInt>
    @usableFromInline var values: UnsafeMutablePointer<UnsafeMutablePointer<Int64>?>
    @usableFromInline var capacity: Int
    @usableFromInline var count = 0

    init(capacity: Int = 64) {
        self.capacity = capacity
        keys = .allocate(capacity: capacity)
        keys.initialize(repeating: 0, count: capacity)
        values = .allocate(capacity: capacity)
        values.initialize(repeating: nil, count: capacity)
    }

    @inlinable @inline(__always)
    func lookup(_ key: UInt) -> UnsafeMutablePointer<Int64>? {
        if count == 0 { return nil }
        var i = Int(truncatingIfNeeded: (key >> 4) &* 0x9E37_79B9_7F4A_7C15) & (capacity - 1)
        while true {
            let k = keys[i]
            if k == key { return values[i] }
            if k == 0 { return nil }
            i = (i + 1) & (capacity - 1)
        }
    }

    mutating func insert(_ key: UInt, _ value: UnsafeMutablePointer<Int64>) {
        if (count + 1) * 2 > capacity { rehash(capacity * 2) }
        var i = Int(truncatingIfNeeded: (key >> 4) &* 0x9E37_79B9_7F4A_7C15) & (capacity - 1)
        while keys[i] != 0 && keys[i] != key { i = (i + 1) & (capacity - 1) }
        if keys[i] == 0 { count += 1 }
        keys[i] = key
        values[i] = value
    }

    /// Removes `key` with backward-shift deletion (no tombstones, no allocation).
    mutating func remove(_ key: UInt) {
        guard count > 0 else { return }
        let mask = capacity - 1
        var i = Int(truncatingIfNeeded: (key >> 4) &* 0x9E37_79B9_7F4A_7C15) & mask
        while keys[i] != key {
            if keys[i] == 0 { return }
            i = (i + 1) & mask
        }
        keys[i] = 0
        values[i] = nil
        count -= 1
        var j = (i + 1) & mask
        while keys[j] != 0 {
            let home = Int(truncatingIfNeeded: (keys[j] >> 4) &* 0x9E37_79B9_7F4A_7C15) & mask
            // Move j back to the hole at i unless its home lies cyclically in (i, j].
            let between = i <= j ? (home > i && home <= j) : (home > i || home <= j)
            if !between {
                keys[i] = keys[j]
                values[i] = values[j]
                keys[j] = 0
                values[j] = nil
                i = j
            }
            j = (j + 1) & mask
        }
    }

    private mutating func rehash(_ newCapacity: Int) {
        let oldKeys = keys, oldValues = values, oldCap = capacity
        capacity = newCapacity
        keys = .allocate(capacity: newCapacity)
        keys.initialize(repeating: 0, count: newCapacity)
        values = .allocate(capacity: newCapacity)
        values.initialize(repeating: nil, count: newCapacity)
        count = 0
        for i in 0..<oldCap where oldKeys[i] != 0 {
            if let v = oldValues[i] { insert(oldKeys[i], v) }
        }
        oldKeys.deallocate()
        oldValues.deallocate()
    }
}

// Globaldata: what each CPU owns (DragonFly's `struct globaldata`).
//
// Every CPU has one `Globaldata`, in raw memory allocated with the CPU and never moved;
// the thread-local "current CPU" pointer (`lb_current_cpu()`) points at it, so the
// current CPU's state of any subsystem is one thread-local load plus a fixed offset away.
// No lookup table and no hash lies on any path.
//
//   field            home folder  what it holds                          who may touch it
//   ---------------  -----------  -------------------------------------  ------------------------------
//   cpu, signals     CPU/         identity; doorbell/sleep/stop words    signals: any thread (atomics)
//   critCount,       CPU/         critical-section depth, deferred       owner only
//     deferred                    preemption work (crit_enter/splz)
//   currentBand,     CPU/         run queue (gd_tdrunq), yielded         owner only; other threads queue
//     runq, yielders,             continuations, per-thread counters      jobs by IPI or the inbox
//     threads, ...
//   parkFlushes      Threads/     armed ParkFlush records: work run when  owner only
//                                 the current job gives up the CPU
//   ipi              IPI/         nesting depth, batch depth, dirty       owner only; the rings themselves
//                                 targets, inbox spare buffer             are in the system's crossbar
//                                                                         (writer: source, reader: target)
//   timers           Timers/      the timer heap (callout wheel)          owner only; others cancel by IPI
//   sleepQueues      Sleep/       tsleep queues (gd_tsleep_hash)          owner only; wakeups arrive by IPI,
//                                                                         steered by the system's slot masks
//   events           Events/      the epoll poller and fd waiters         owner only; others cancel by IPI
//   slab             (Slab)       the slab arena of this CPU (gd_slab),   owner only (remote frees go to
//                                 its deferred-work flag and flush hook   the zone's atomic remote list,
//                                                                         batched; the run loop flushes
//                                                                         the batch after each job)
//   slots[0..<16]    any module   pointers that NetStack, VFS, Services   owner only, unless the module
//                                 register at boot (``GlobaldataSlot``)   documents otherwise
//
// Nothing here is reference counted on a hot path: `cpu` is unmanaged, the subsystem
// objects are created with the CPU and released with it.

/// Everything about a CPU that only its own OS thread reads and writes, in raw memory so
/// that no dynamic exclusivity check or reference count touches it on hot paths. The
/// thread-local "current CPU" pointer points here. See the table at the top of this file.
@usableFromInline
struct Globaldata {
    // MARK: Identity and scheduler (CPU/)
    @usableFromInline let cpu: Unmanaged<CPU>
    @usableFromInline let signals: UnsafeMutablePointer<CPUSignals>
    /// The CPU's index and its system's address (unretained): modules decide "is the
    /// caller one of my system's CPUs, and which" from these two words.
    @usableFromInline let cpuID: Int
    @usableFromInline let systemID: UnsafeMutableRawPointer
    @usableFromInline var critCount = 0
    /// Set when a preemption point was reached inside a critical section.
    @usableFromInline var deferred = 0
    @usableFromInline var currentBand = 1
    @usableFromInline var runq = RunQueue()
    @usableFromInline var yielders = ContinuationBuffer()
    @usableFromInline var threads = ThreadTable()
    @usableFromInline var runningThreadStats: UnsafeMutablePointer<Int64>? = nil
    /// Armed ``ParkFlush`` records, run when the current job returns (Threads/ParkFlush.swift).
    @usableFromInline var parkFlushes: UnsafeMutablePointer<ParkFlushRecord>? = nil

    // MARK: IPI (IPI/)
    @usableFromInline var ipi: IPIGlobaldata

    // MARK: Timers, sleep queues, events (Timers/, Sleep/, Events/)
    let timers: CPUTimers
    let sleepQueues: SleepQueues
    let events: EventPoller

    // MARK: Slab (registered by the Slab module)
    /// The slab arena this CPU allocates from, set when the system's allocator is made.
    @usableFromInline var slab = SlabGlobaldata()

    // MARK: Module slots
    @usableFromInline var slots: GlobaldataSlots = GlobaldataSlots()

    // MARK: Stall watch (Observability/): words the run loop writes around each job and the
    // stall watchdog thread reads (see StallWatch.swift).
    @usableFromInline let watch = StallWatch.allocate()

    /// `address` is where this globaldata will live (what `lb_current_cpu()` returns on
    /// the CPU's thread): the subsystems keep it for their owner checks.
    init(address: UnsafeMutableRawPointer, cpu: Unmanaged<CPU>, signals: UnsafeMutablePointer<CPUSignals>, cpuID: Int,
         system: UnsafeMutableRawPointer, cpuCount: Int, epollFD: Int32, eventFD: Int32) {
        self.cpu = cpu
        self.signals = signals
        self.cpuID = cpuID
        self.systemID = system
        ipi = IPIGlobaldata(cpuCount: cpuCount)
        timers = CPUTimers(owner: address)
        sleepQueues = SleepQueues(owner: address)
        events = EventPoller(owner: address, epollFD: epollFD, eventFD: eventFD)
    }

    /// Frees what the struct owns outside itself (its class members go with it).
    mutating func release() {
        runq.deallocate()
        ipi.deallocate()
        watch.deallocate()
    }
}

/// The name the per-CPU block had before it became `Globaldata` (kept for code in flight).
@usableFromInline typealias CPULocal = Globaldata

/// The slab allocator's per-CPU words (DragonFly's `gd_slab`): the arena this CPU
/// allocates from (raw, owned by the allocator) and the identity of the allocator it
/// belongs to. `owner` is written by the allocator's creator and destroyer with atomic
/// stores (release, compare-and-swap) and read by the CPU with a relaxed load; `arena` is
/// written before `owner` is published.
///
/// `pending` and `flush` let the slab defer work on the owning CPU (its batch of remote
/// frees) to the end of the current job: the slab sets `pending` (owner only) and the run
/// loop, seeing it after the job, calls `flush(owner, cpuID)`.
@usableFromInline
struct SlabGlobaldata {
    @usableFromInline var owner: UnsafeMutableRawPointer? = nil
    @usableFromInline var arena: UnsafeMutableRawPointer? = nil
    @usableFromInline var pending = 0
    @usableFromInline var flush: SlabDeferredFlush? = nil
}

/// What the run loop calls at the end of a job when the slab has deferred work on that
/// CPU: `(slab owner identity, CPU index)`.
public typealias SlabDeferredFlush = @convention(c) (UnsafeMutableRawPointer?, Int) -> Void

/// Fixed storage for module slots: 16 pointers inline in the globaldata.
@usableFromInline
struct GlobaldataSlots {
    @usableFromInline var words: (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafeMutableRawPointer?,
                                  UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafeMutableRawPointer?,
                                  UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafeMutableRawPointer?,
                                  UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafeMutableRawPointer?,
                                  UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafeMutableRawPointer?,
                                  UnsafeMutableRawPointer?) =
        (nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil)
    @usableFromInline static let count = 16
}

/// A slot in every CPU's globaldata that a module (NetStack, VFS, a service) claims once,
/// at boot, for its own per-CPU state: DragonFly's habit of giving each subsystem a
/// `gd_xxx` field, without LWKT knowing the module's types. The slot holds a raw pointer
/// that the module allocates per CPU; it is reached from the current CPU at a fixed
/// offset. A slot is process-wide: the same index names the same field in every system.
public struct GlobaldataSlot: Sendable, Hashable, CustomStringConvertible {
    /// The slot's index, `0..<16`.
    public let index: Int
    /// The name it was registered under.
    public let name: String

    /// How many slots a process can register.
    public static let capacity = GlobaldataSlots.count

    private static let registry = Mutex<[String]>([])

    /// Claims the slot called `name`, or returns it if it was already claimed (so a module
    /// booting twice gets the same slot). Throws when all 16 are taken.
    public static func register(_ name: String) throws -> GlobaldataSlot {
        try registry.withLock { names in
            if let i = names.firstIndex(of: name) { return GlobaldataSlot(index: i, name: name) }
            guard names.count < capacity else { throw LWKTError.globaldataSlotsExhausted(name) }
            names.append(name)
            return GlobaldataSlot(index: names.count - 1, name: name)
        }
    }

    /// The slots registered so far, in index order.
    public static var registered: [GlobaldataSlot] {
        registry.withLock { $0.enumerated().map { GlobaldataSlot(index: $0.offset, name: $0.element) } }
    }

    public var description: String { "globaldata slot \(index) (\(name))" }
}

extension CPU {
    /// The pointer this CPU's globaldata holds in `slot` (nil until set). Owner-only: call
    /// it on this CPU's thread, or before the module's first use on it at boot.
    @inlinable
    public func globaldata(_ slot: GlobaldataSlot) -> UnsafeMutableRawPointer? {
        withUnsafeMutableBytes(of: &local.pointee.slots.words) {
            $0.load(fromByteOffset: slot.index &* MemoryLayout<UnsafeMutableRawPointer?>.stride,
                    as: UnsafeMutableRawPointer?.self)
        }
    }

    /// Stores `pointer` in this CPU's `slot`. Set it from the owning CPU (for example by
    /// an IPI at boot), or before any thread on the CPU can read it.
    @inlinable
    public func setGlobaldata(_ slot: GlobaldataSlot, _ pointer: UnsafeMutableRawPointer?) {
        withUnsafeMutableBytes(of: &local.pointee.slots.words) {
            $0.storeBytes(of: pointer, toByteOffset: slot.index &* MemoryLayout<UnsafeMutableRawPointer?>.stride,
                          as: UnsafeMutableRawPointer?.self)
        }
    }

    /// The current CPU's pointer in `slot`, or nil off a CPU (or when unset): a
    /// thread-local load and a fixed offset.
    @inlinable
    public static func currentGlobaldata(_ slot: GlobaldataSlot) -> UnsafeMutableRawPointer? {
        guard let l = currentLocal else { return nil }
        return withUnsafeMutableBytes(of: &l.pointee.slots.words) {
            $0.load(fromByteOffset: slot.index &* MemoryLayout<UnsafeMutableRawPointer?>.stride,
                    as: UnsafeMutableRawPointer?.self)
        }
    }
}

// MARK: - Hooks for modules above LWKT (the slab)

extension CPU {
    /// The address of this CPU's globaldata, which is what `lb_current_cpu()` returns on
    /// its thread: a key that names the CPU in data other modules stamp (the slab marks
    /// the zones a CPU owns with it).
    @inlinable public var globaldataKey: UInt { UInt(bitPattern: local) }

    /// The index of the calling CPU if it is one of `system`'s, else nil: a thread-local
    /// load and one compare, no lookup.
    @inlinable @inline(__always)
    public static func currentIndex(in system: LWKTSystem) -> Int? {
        guard let l = currentLocal else { return nil }
        return l.pointee.systemID == Unmanaged.passUnretained(system).toOpaque() ? l.pointee.cpuID : nil
    }

    /// The calling CPU's slab arena and index if the slab `owner` installed itself in this
    /// CPU's globaldata, else nil (not a CPU, or another allocator's CPU).
    @inlinable @inline(__always)
    public static func currentSlabArena(owner: UnsafeMutableRawPointer) -> (arena: UnsafeMutableRawPointer, index: Int)? {
        guard let l = currentLocal else { return nil }
        let o = withUnsafeMutablePointer(to: &l.pointee.slab.owner) { lb_ptr_load_relaxed($0) }
        // The arena is stored before the owner is published and stays when it is
        // withdrawn, so a matching owner means a non-nil arena.
        // Compared as integers: `owner` is never nil, so equality already says non-nil
        // (as optionals, the compiler tested for nil first).
        guard UInt(bitPattern: o) == UInt(bitPattern: owner) else { return nil }
        return (l.pointee.slab.arena.unsafelyUnwrapped, l.pointee.cpuID)
    }

    /// Installs `arena` as this CPU's slab arena on behalf of `owner` (an identity that
    /// is never reused). Any thread may call it; it publishes with a release store.
    public func installSlab(owner: UnsafeMutableRawPointer, arena: UnsafeMutableRawPointer) {
        installSlab(owner: owner, arena: arena, flush: nil)
    }

    /// Installs `arena` as this CPU's slab arena on behalf of `owner`, with the function
    /// the run loop calls at the end of a job in which the slab marked deferred work
    /// (``noteSlabDeferredWork()``). Call it before the CPU can allocate from the slab.
    public func installSlab(owner: UnsafeMutableRawPointer, arena: UnsafeMutableRawPointer, flush: SlabDeferredFlush?) {
        local.pointee.slab.arena = arena
        local.pointee.slab.flush = flush
        withUnsafeMutablePointer(to: &local.pointee.slab.owner) { lb_ptr_store_release($0, owner) }
    }

    /// Marks that the calling CPU's slab holds deferred work, so the run loop calls the
    /// slab's flush function when the current job ends. Owner only (a CPU thread).
    @inlinable @inline(__always)
    public static func noteSlabDeferredWork() {
        guard let l = currentLocal else { return }
        l.pointee.slab.pending = 1
    }

    /// Runs the calling CPU's deferred slab work now, if any (the run loop does it after
    /// every job; threads do it when they exit). A no-op off a CPU.
    public static func flushSlabDeferredWork() {
        guard let l = currentLocal, l.pointee.slab.pending != 0 else { return }
        runSlabFlush(l)
    }

    @usableFromInline @inline(never)
    static func runSlabFlush(_ l: UnsafeMutablePointer<Globaldata>) {
        l.pointee.slab.pending = 0
        let owner = withUnsafeMutablePointer(to: &l.pointee.slab.owner) { lb_ptr_load_relaxed($0) }
        if let owner, let flush = l.pointee.slab.flush { flush(owner, l.pointee.cpuID) }
    }

    /// Removes `owner`'s slab arena from this CPU's globaldata if it is still installed.
    @discardableResult
    public func uninstallSlab(owner: UnsafeMutableRawPointer) -> Bool {
        withUnsafeMutablePointer(to: &local.pointee.slab.owner) { lb_ptr_cas($0, owner, nil) != 0 }
    }

    /// The identity of the slab installed in this CPU's globaldata, if any.
    public var installedSlabOwner: UnsafeMutableRawPointer? {
        withUnsafeMutablePointer(to: &local.pointee.slab.owner) { lb_ptr_load_relaxed($0) }
    }
}
