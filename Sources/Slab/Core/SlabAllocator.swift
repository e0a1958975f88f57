#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CLibellula
import LWKT
import Synchronization

/// Lifetime guard shared with in-flight notifications; never freed, so a late passive
/// IPI can always read it and see that its allocator is gone.
struct SlabControl {
    let raw: UnsafeMutableRawPointer

    static func make(arenas: UnsafeMutableRawPointer) -> SlabControl {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
        let atomics = raw.bindMemory(to: Atomic<Int>.self, capacity: 2)
        atomics.initialize(to: Atomic(0))
        (atomics + 1).initialize(to: Atomic(0))
        raw.storeBytes(of: arenas, toByteOffset: 16, as: UnsafeMutableRawPointer.self)
        return SlabControl(raw: raw)
    }

    var closed: UnsafeMutablePointer<Atomic<Int>> { raw.assumingMemoryBound(to: Atomic<Int>.self) }
    var inFlight: UnsafeMutablePointer<Atomic<Int>> { raw.assumingMemoryBound(to: Atomic<Int>.self) + 1 }
    var arenas: UnsafeMutableRawPointer { raw.load(fromByteOffset: 16, as: UnsafeMutableRawPointer.self) }
    /// The LWKT system (unretained; the allocator keeps it alive), or nil.
    var system: UnsafeMutableRawPointer? {
        get { raw.load(fromByteOffset: 24, as: UnsafeMutableRawPointer?.self) }
        nonmutating set { raw.storeBytes(of: newValue, toByteOffset: 24, as: UnsafeMutableRawPointer?.self) }
    }
}

/// DragonFly's per-CPU slab allocator (`kmalloc`/`kfree`) as a library.
///
/// Each CPU owns an arena of 128 KiB zones, one list per size class. A thread that is a
/// CPU of the allocator's system allocates from and frees to its own arena without a lock
/// or an atomic instruction. A chunk freed on another thread goes back to its zone's
/// remote list with one compare-and-swap; the owner is told (through its mailbox and, on
/// a ``SlabAllocator`` made for an `LWKTSystem`, a passive IPI) only when a zone it took
/// off its list gets its first chunk back. Threads that are not CPUs allocate from a
/// shared pool behind a lock, and may free any chunk.
///
/// Wholly free zones are parked on the CPU's free-zone list and given back to the OS only
/// from the allocation path once more than ``SlabConfiguration/freeZoneThreshold`` are
/// parked. Requests of ``SizeClass/zoneLimit`` bytes or more are mapped directly.
public final class SlabAllocator: @unchecked Sendable {
    /// What a zero-byte allocation returns (DragonFly's `ZERO_LENGTH_PTR`); freeing it is
    /// a no-op.
    @inline(__always)
    public static var zeroLengthPointer: UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bitPattern: UInt.max &- 7).unsafelyUnwrapped
    }

    /// Number of per-CPU arenas.
    public let cpuCount: Int
    /// The configuration in force.
    public let configuration: SlabConfiguration
    /// The type charged when no type is given (no limit).
    public let defaultType: MallocType
    let defaultTypeRef: Unmanaged<MallocType>

    let arenas: UnsafeMutableRawPointer      // cpuCount + 1 arenas; the last is the shared pool
    let regionBase: UInt
    let regionSize: UInt
    let region: ZoneRegion
    let big = BigBlockTable()
    let debug: Bool
    let sharedLock = Mutex<Void>(())
    let control: SlabControl
    let typeList: Mutex<[MallocType]>
    /// The LWKT system whose CPUs own the arenas (nil: arenas driven through handles).
    public let system: LWKTSystem?
    /// Remote chunks freed by threads that are not CPUs, per class (atomic adds).
    let foreignFrees: UnsafeMutablePointer<Atomic<Int>>
    /// Wakes sleepers waiting on a type; set by the LWKT glue.
    let wake: (@Sendable (MallocType) -> Void)?
    /// Whether this allocator's arenas are installed in its system's CPUs' globaldata
    /// (it is the system's slab, see ``shared(for:configuration:)``).
    let installed = Atomic<Bool>(false)

    /// Index of the shared pool's arena and of the type slot for foreign frees.
    @inline(__always) var sharedIndex: Int { cpuCount }
    @inline(__always) var foreignSlot: Int { cpuCount &+ 1 }

    /// Creates an allocator with `cpuCount` arenas that are driven explicitly through
    /// ``arena(_:)`` handles (for hosts that run their own per-CPU threads, and tests).
    /// Remote frees are posted to the owner's mailbox, which the owner drains when it runs
    /// out of zones and on ``SlabArenaHandle/poll()``.
    public convenience init(cpuCount: Int, configuration: SlabConfiguration = .init()) {
        self.init(cpuCount: max(1, cpuCount), system: nil, configuration: configuration, notify: nil, wake: nil)
    }

    /// Creates an allocator with `cpuCount` arenas; with a system, arena `i` belongs to the
    /// thread of `system.cpus[i]`.
    init(cpuCount: Int, system: LWKTSystem?, configuration: SlabConfiguration, notify: ArenaNotify?,
         wake: (@Sendable (MallocType) -> Void)?) {
        self.cpuCount = cpuCount
        self.system = system
        self.configuration = configuration
        debug = configuration.debug
        self.wake = wake
        guard let region = ZoneRegion(requestedBytes: configuration.zoneRegionBytes) else {
            SlabDebug.fail(.outOfMemory, "cannot reserve address space for zones")
        }
        self.region = region
        regionBase = region.base
        regionSize = UInt(region.size)

        let arenaBytes = Arena.stride * (cpuCount + 1)
        arenas = UnsafeMutableRawPointer.allocate(byteCount: arenaBytes, alignment: 128)
        control = SlabControl.make(arenas: arenas)
        control.system = system.map { Unmanaged.passUnretained($0).toOpaque() }
        let unmanagedRegion = Unmanaged.passUnretained(region)
        for i in 0...cpuCount {
            let shared = i == cpuCount
            Arena.initialize(arenas.advanced(by: i * Arena.stride), header: ArenaHeader(
                freeZoneCount: 0, freeZoneThreshold: configuration.freeZoneThreshold,
                fastLimit: configuration.debug ? -1 : configuration.freeZoneThreshold,
                debug: configuration.debug, index: i, freeZones: nil,
                ownerKey: ZoneLayout.noOwnerKey, notify: shared ? nil : notify,
                notifyContext: control.raw,
                region: unmanagedRegion))
        }

        if let system {
            // Zones made by CPU i's arena carry CPU i's globaldata key, so the owner
            // recognises its own chunks on free with one compare.
            for i in 0..<min(cpuCount, system.cpuCount) {
                Arena(arenas.advanced(by: i * Arena.stride)).header.pointee.ownerKey = system.cpus[i].globaldataKey
            }
        }

        foreignFrees = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: SizeClass.count)
        for i in 0..<SizeClass.count { (foreignFrees + i).initialize(to: Atomic(0)) }

        let slots = cpuCount + 2
        let def = MallocType(name: "default", limit: Int.max, index: 0, arenaSlots: slots, accounted: false)
        defaultType = def
        defaultTypeRef = Unmanaged.passUnretained(def)
        typeList = Mutex([def])
    }

    deinit {
        if let system, installed.load(ordering: .acquiring) {
            for cpu in system.cpus { cpu.uninstallSlab(owner: control.raw) }
        }
        // Turn away notifications still in flight, wait for any running one, then unmap.
        control.closed.pointee.store(1, ordering: .sequentiallyConsistent)
        while control.inFlight.pointee.load(ordering: .sequentiallyConsistent) != 0 { sched_yield() }
        arenas.deallocate()
        foreignFrees.deallocate()
        // `control` is leaked on purpose (a few bytes): late IPIs read it.
    }

    /// The arena index of the calling thread, or nil when it is not one of our system's
    /// CPUs: the CPU's index read from its globaldata (one thread-local load and a
    /// compare). Threads that are not CPUs, and CPUs of other systems, get nil and use
    /// the shared pool.
    @inline(__always)
    func currentArenaIndex() -> Int? {
        guard let system else { return nil }
        guard let i = CPU.currentIndex(in: system), i < cpuCount else { return nil }
        return i
    }

    /// Puts this allocator's arenas into its system's CPUs' globaldata (DragonFly's
    /// `gd_slab`), so allocation finds the arena at a fixed offset from the current-CPU
    /// pointer. Done once, for the system's slab only.
    func installInGlobaldata() {
        guard let system, !installed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        for i in 0..<min(cpuCount, system.cpuCount) {
            system.cpus[i].installSlab(owner: control.raw, arena: arenas.advanced(by: i &* Arena.stride),
                                       flush: SlabAllocator.deferredFlushHandler)
        }
    }

    /// What the run loop calls at the end of a job that left a remote-free batch in CPU
    /// `index`'s arena: hands the batch over (guarded like a notification, so a batch
    /// left by an allocator being destroyed is ignored).
    static let deferredFlushHandler: SlabDeferredFlush = { ctx, index in
        guard let ctx else { return }
        let control = SlabControl(raw: ctx)
        control.inFlight.pointee.add(1, ordering: .sequentiallyConsistent)
        if control.closed.pointee.load(ordering: .sequentiallyConsistent) == 0 {
            Arena(control.arenas.advanced(by: index &* Arena.stride)).flushRemoteBatch()
        }
        control.inFlight.pointee.subtract(1, ordering: .sequentiallyConsistent)
    }

    @inline(__always)
    func arena(at index: Int) -> Arena { Arena(arenas.advanced(by: index &* Arena.stride)) }

    /// A handle on arena `index` (`0 ..< cpuCount`), for callers that know which CPU they
    /// run as. Its operations must only be used from that one thread at a time.
    public func arena(_ index: Int) -> SlabArenaHandle {
        precondition(index >= 0 && index < cpuCount, "arena index out of range")
        return SlabArenaHandle(allocator: self, index: index)
    }

    /// Creates a malloc type with a byte limit (`Int.max`: none).
    public func makeType(name: String, limit: Int = .max) -> MallocType {
        typeList.withLock { list in
            let t = MallocType(name: name, limit: limit, index: list.count, arenaSlots: cpuCount + 2)
            list.append(t)
            return t
        }
    }

    // MARK: - Allocation

    /// Allocates `size` bytes for `type` (the ``defaultType`` when nil).
    ///
    /// On one of the allocator's CPUs this takes no lock; elsewhere it uses the shared
    /// pool. Returns ``zeroLengthPointer`` for a size of 0. When the type is at its limit
    /// or no memory can be had, it returns nil if `flags` has ``SlabFlags/mayReturnNil``
    /// (or ``SlabFlags/waitUntilFreed``), and otherwise aborts with a report, as
    /// DragonFly's `kmalloc` panics.
    public func allocate(_ size: Int, type: MallocType? = nil, flags: SlabFlags = []) -> UnsafeMutableRawPointer? {
        // Fast path: the system's slab on one of its CPUs, an untyped request of 1...1024
        // bytes without flags (class by table), a zone with chunks to spare. It only loads,
        // compares and stores; everything else tail-calls the general path.
        if type == nil && flags.isEmpty && UInt(bitPattern: size &- 1) < 1024,
           let (a, _) = CPU.currentSlabArena(owner: control.raw),
           let p = Arena(a).allocateFast(sizeClass: lb_slab_small_class(UInt(bitPattern: size))) {
            return p
        }
        return allocateGeneral(size, type: type, flags: flags)
    }

    /// Every allocation the fast path of ``allocate(_:type:flags:)`` does not take.
    @inline(never)
    func allocateGeneral(_ size: Int, type: MallocType?, flags: SlabFlags) -> UnsafeMutableRawPointer? {
        // The system's slab: the arena pointer is in the current CPU's globaldata.
        if let (a, index) = CPU.currentSlabArena(owner: control.raw) {
            return allocate(size, type: type, flags: flags, arena: Arena(a), arenaIndex: index)
        }
        return allocateOffGlobaldata(size, type: type, flags: flags)
    }

    /// Allocation by another allocator of the same system (found by CPU index), or by a
    /// thread that is not one of the system's CPUs (the shared pool, under its lock).
    @inline(never)
    func allocateOffGlobaldata(_ size: Int, type: MallocType?, flags: SlabFlags) -> UnsafeMutableRawPointer? {
        if let index = currentArenaIndex() {
            return allocate(size, type: type, flags: flags, arenaIndex: index)
        }
        return allocateShared(size, type: type, flags: flags)
    }

    /// Allocation from the locked pool of threads that are not CPUs.
    @inline(never)
    func allocateShared(_ size: Int, type: MallocType?, flags: SlabFlags) -> UnsafeMutableRawPointer? {
        sharedLock.withLock { _ in allocate(size, type: type, flags: flags, arenaIndex: sharedIndex) }
    }

    /// The allocation itself, as arena `arenaIndex` (whose thread, or lock, the caller has).
    @inline(__always)
    func allocate(_ size: Int, type: MallocType?, flags: SlabFlags, arenaIndex: Int) -> UnsafeMutableRawPointer? {
        allocate(size, type: type, flags: flags, arena: arena(at: arenaIndex), arenaIndex: arenaIndex)
    }

    @inline(__always)
    func allocate(_ size: Int, type: MallocType?, flags: SlabFlags, arena: Arena, arenaIndex: Int) -> UnsafeMutableRawPointer? {
        if _slowPath(size <= 0) || _slowPath(SizeClass.mapsDirectly(size)) {
            return allocateUnusual(size, type: type, flags: flags, arenaIndex: arenaIndex)
        }
        // The type is used unretained: the caller's reference keeps it alive for the call.
        let typeRef = type.map { Unmanaged.passUnretained($0) }
        if let typeRef, _slowPath(!typeRef._withUnsafeGuaranteedRef { $0.underLimit() }) {
            return failure(.limitExceeded, size: size, type: type, flags: flags)
        }
        let (sizeClass, chunkSize) = SizeClass.index(forSize: size)
        guard let p = arena.allocate(sizeClass: sizeClass, zero: flags.contains(.zero)) else {
            return failure(.outOfMemory, size: size, type: type, flags: flags)
        }
        typeRef?._withUnsafeGuaranteedRef { $0.chargeAllocation(slot: arenaIndex, bytes: chunkSize) }
        return p
    }

    /// Zero-sized, negative and big requests.
    @inline(never)
    func allocateUnusual(_ size: Int, type: MallocType?, flags: SlabFlags, arenaIndex: Int) -> UnsafeMutableRawPointer? {
        if size == 0 { return Self.zeroLengthPointer }
        if size < 0 { return failure(.invalidSize, size: size, type: type, flags: flags) }
        if let type, !type.underLimit() { return failure(.limitExceeded, size: size, type: type, flags: flags) }
        // Hysteresis work belongs to the allocation path, big requests included.
        if arenaIndex < cpuCount || arenaIndex == sharedIndex {
            let a = arena(at: arenaIndex)
            if a.header.pointee.freeZoneCount > a.header.pointee.freeZoneThreshold { a.releaseExcessZones() }
        }
        guard let (p, bytes) = big.allocate(bytes: size, typeIndex: type?.index ?? 0) else {
            return failure(.outOfMemory, size: size, type: type, flags: flags)
        }
        type?.chargeAllocation(slot: arenaIndex, bytes: bytes)
        return p
    }

    @inline(never)
    func failure(_ kind: SlabDebug.Failure, size: Int, type: MallocType?, flags: SlabFlags) -> UnsafeMutableRawPointer? {
        let type = type ?? defaultType
        if !flags.isDisjoint(with: [.mayReturnNil, .waitUntilFreed]) { return nil }
        switch kind {
        case .limitExceeded:
            SlabDebug.fail(kind, "type \"\(type.name)\" holds \(type.exactBytes()) bytes, limit \(type.limit); request of \(size) bytes (pass .mayReturnNil or .waitUntilFreed to handle this)")
        default:
            SlabDebug.fail(kind, "request of \(size) bytes for type \"\(type.name)\"")
        }
    }

    // MARK: - Free

    /// Frees memory from ``allocate(_:type:flags:)``; `type` must be the type it was
    /// allocated with. Any thread may free any chunk. Freeing a pointer this allocator
    /// never handed out aborts with a report; in debug mode so does a double free.
    public func free(_ p: UnsafeMutableRawPointer, type: MallocType? = nil) {
        // Fast path: an untyped free of a chunk of a live zone the calling CPU owns (the
        // zone's owner key is this CPU's globaldata address; parked zones and threads that
        // are not CPUs never match), not in debug mode.
        if type == nil && !debug && UInt(bitPattern: p) &- regionBase < regionSize {
            let z = ZoneLayout.header(of: p)
            if z.pointee.ownerKey == UInt(bitPattern: lb_current_cpu()) {
                Arena(z.pointee.arena).freeLocalFast(p, zone: z)
                return
            }
        }
        freeGeneral(p, type: type)
    }

    /// Every free the fast path of ``free(_:type:)`` does not take.
    @inline(never)
    func freeGeneral(_ p: UnsafeMutableRawPointer, type: MallocType?) {
        freeFromCurrentThread(p, type: type)
    }

    /// A free on the current thread: the owning CPU recognises its zone by the key stored
    /// in it (one compare, no table lookup); everyone else resolves who they are.
    @inline(__always)
    func freeFromCurrentThread(_ p: UnsafeMutableRawPointer, type: MallocType?) {
        if _slowPath(UInt(bitPattern: p) &- regionBase >= regionSize) {
            freeUnusual(p, type: type, arenaIndex: currentArenaIndex())
            return
        }
        let z = ZoneLayout.header(of: p)
        let key = UInt(bitPattern: lb_current_cpu())
        // Both words are on the zone's read-only line: one compare says "mine".
        if _fastPath(z.pointee.ownerKey == key && z.pointee.magic == ZoneLayout.liveMagic) {
            let bytes = z.pointee.chunkSize
            Arena(z.pointee.arena).freeLocal(p, zone: z)
            if let type {
                let me = Int(z.pointee.ownerIndex)
                Unmanaged.passUnretained(type)._withUnsafeGuaranteedRef { t in
                    t.chargeFree(slot: me, bytes: bytes, remote: false)
                    if _slowPath(t.waiters.hint != 0) { wakeWaiters(t) }
                }
            }
            return
        }
        freeSlow(p, type: type)
    }

    @inline(never)
    func wakeWaiters(_ type: MallocType) { wake?(type) }

    /// A free of a chunk the calling thread does not own. On a CPU whose globaldata holds
    /// this allocator's arena, the chunk joins the CPU's remote-free batch (no atomic);
    /// otherwise it goes to its zone's remote list at once.
    @inline(never)
    func freeSlow(_ p: UnsafeMutableRawPointer, type: MallocType?) {
        if let (a, me) = CPU.currentSlabArena(owner: control.raw) {
            let z = ZoneLayout.header(of: p)
            if _slowPath(z.pointee.magic != ZoneLayout.liveMagic) { invalidZone(p, z) }
            let arena = Arena(a)
            if let type {
                type.chargeFree(slot: me, bytes: z.pointee.chunkSize, remote: true)
            }
            countRemote(arenaIndex: me, sizeClass: Int(z.pointee.classIndex))
            if _slowPath(debug) { Arena(z.pointee.arena).markFreed(z, p) }
            if arena.batchRemoteFree(p, zone: z) { CPU.noteSlabDeferredWork() }
            if let type, _slowPath(type.waiters.hint != 0) {
                // A waiter needs the memory now, not at the end of the job.
                arena.flushRemoteBatch()
                wake?(type)
            }
            return
        }
        free(p, type: type, arenaIndex: currentArenaIndex())
    }

    @inline(never)
    func invalidZone(_ p: UnsafeMutableRawPointer, _ z: UnsafeMutablePointer<ZoneHeader>) -> Never {
        SlabDebug.fail(.invalidFree, "\(SlabDebug.hex(p)) is not in a live zone (zone magic 0x\(String(z.pointee.magic, radix: 16)))")
    }

    /// The free itself, as arena `arenaIndex` (nil: a thread that is not a CPU).
    @inline(__always)
    func free(_ p: UnsafeMutableRawPointer, type: MallocType?, arenaIndex: Int?) {
        if _slowPath(UInt(bitPattern: p) &- regionBase >= regionSize) {
            freeUnusual(p, type: type, arenaIndex: arenaIndex)
            return
        }
        let z = ZoneLayout.header(of: p)
        if _slowPath(z.pointee.magic != ZoneLayout.liveMagic) { invalidZone(p, z) }
        let owner = Int(z.pointee.ownerIndex)
        let bytes = z.pointee.chunkSize
        if let me = arenaIndex {
            if owner == me {
                arena(at: me).freeLocal(p, zone: z)
                type?.chargeFree(slot: me, bytes: bytes, remote: false)
            } else {
                type?.chargeFree(slot: me, bytes: bytes, remote: true)
                countRemote(arenaIndex: me, sizeClass: Int(z.pointee.classIndex))
                Arena.remoteFree(p, zone: z, debug: debug)
            }
        } else if owner == sharedIndex {
            sharedLock.withLock { _ in
                arena(at: sharedIndex).freeLocal(p, zone: z)
                type?.chargeFree(slot: sharedIndex, bytes: bytes, remote: false)
            }
        } else {
            type?.chargeForeignFree(bytes: bytes)
            foreignFrees[Int(z.pointee.classIndex)].add(1, ordering: .relaxed)
            Arena.remoteFree(p, zone: z, debug: debug)
        }
        if let type, _slowPath(type.waiters.hint != 0) { wake?(type) }
    }

    @inline(__always)
    func countRemote(arenaIndex: Int, sizeClass: Int) {
        let a = arena(at: arenaIndex)
        counterAdd(a.counter(sizeClass, .frees), 1)
        counterAdd(a.counter(.remoteFreesSent), 1)
    }

    @inline(never)
    func freeUnusual(_ p: UnsafeMutableRawPointer, type: MallocType?, arenaIndex: Int?) {
        if p == Self.zeroLengthPointer { return }
        guard let block = big.free(p) else {
            SlabDebug.fail(.invalidFree, "\(SlabDebug.hex(p)) is neither a zone chunk nor a live big allocation")
        }
        guard let type else { return }
        if let me = arenaIndex {
            type.chargeFree(slot: me, bytes: block.bytes, remote: false)
        } else {
            type.chargeForeignFree(bytes: block.bytes)
        }
        if type.waiters.hint != 0 { wake?(type) }
    }

    /// The usable size of an allocation: its chunk size, or the mapped bytes of a big one.
    public func usableSize(_ p: UnsafeRawPointer) -> Int? {
        if p == UnsafeRawPointer(Self.zeroLengthPointer) { return 0 }
        if UInt(bitPattern: p) &- regionBase < regionSize {
            let z = ZoneLayout.header(of: p)
            return z.pointee.magic == ZoneLayout.liveMagic ? z.pointee.chunkSize : nil
        }
        return big.lookup(p)?.bytes
    }

    /// Resizes an allocation (`krealloc`): the same pointer when the new size falls in the
    /// same class or page count, otherwise a new allocation with the old contents copied.
    /// A nil pointer allocates; a size of 0 frees and returns nil.
    public func reallocate(_ p: UnsafeMutableRawPointer?, to size: Int, type: MallocType? = nil,
                           flags: SlabFlags = []) -> UnsafeMutableRawPointer? {
        guard let p, p != Self.zeroLengthPointer else { return allocate(size, type: type, flags: flags) }
        if size == 0 {
            free(p, type: type)
            return nil
        }
        guard let old = usableSize(p) else {
            SlabDebug.fail(.invalidFree, "reallocate of \(SlabDebug.hex(p)), which is not a live allocation")
        }
        if size > 0 && size < SizeClass.zoneLimit && old < SizeClass.zoneLimit
            && SizeClass.index(forSize: size).chunkSize == old { return p }
        if size >= SizeClass.zoneLimit && old >= SizeClass.zoneLimit
            && (size + BigBlockTable.pageSize - 1) / BigBlockTable.pageSize * BigBlockTable.pageSize == old { return p }
        guard let q = allocate(size, type: type, flags: flags.subtracting(.zero)) else { return nil }
        q.copyMemory(from: p, byteCount: min(old, size))
        free(p, type: type)
        return q
    }

    /// Gives back to the OS every zone parked on the calling CPU's free-zone list (or the
    /// shared pool's, off a CPU), ignoring the threshold.
    public func trim() {
        if let i = currentArenaIndex() {
            arena(at: i).flushRemoteBatch()
            arena(at: i).drainMailbox()
            arena(at: i).releaseAllFreeZones()
        } else {
            sharedLock.withLock { _ in
                arena(at: sharedIndex).drainMailbox()
                arena(at: sharedIndex).releaseAllFreeZones()
            }
        }
    }

    /// Hands over the calling CPU's batch of remote frees, then drains its mailbox of
    /// remotely freed zones (what the passive IPI does).
    public func poll() {
        if let i = currentArenaIndex() {
            arena(at: i).flushRemoteBatch()
            arena(at: i).drainMailbox()
        }
        else { sharedLock.withLock { _ in arena(at: sharedIndex).drainMailbox() } }
    }

    /// The passive-IPI entry point: drains arena `index`'s mailbox on its own CPU.
    static let notificationHandler: @convention(c) (UnsafeMutableRawPointer?, Int) -> Void = { ctx, index in
        guard let ctx else { return }
        let control = SlabControl(raw: ctx)
        control.inFlight.pointee.add(1, ordering: .sequentiallyConsistent)
        if control.closed.pointee.load(ordering: .sequentiallyConsistent) == 0 {
            Arena(control.arenas.advanced(by: index * Arena.stride)).handleNotification()
        }
        control.inFlight.pointee.subtract(1, ordering: .sequentiallyConsistent)
    }
}
