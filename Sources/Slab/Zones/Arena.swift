#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Function that tells an arena's owner its mailbox has zones: `(context, arena index)`.
typealias ArenaNotify = @convention(c) (UnsafeMutableRawPointer?, Int) -> Void

/// The owner-only scalar state at the start of an arena block.
struct ArenaHeader {
    // Read on every allocation: kept together at the front.
    var freeZoneCount: Int
    var freeZoneThreshold: Int
    /// The free-zone threshold, or -1 in debug mode: while `freeZoneCount <= fastLimit`
    /// the allocation fast path (``Arena/allocateFast(sizeClass:)``) may run, so one
    /// compare sends both hysteresis work and debug checks to the general path.
    var fastLimit: Int
    var debug: Bool
    var index: Int
    var freeZones: UnsafeMutablePointer<ZoneHeader>?
    /// `lb_current_cpu()` on the owner's thread; ``ZoneLayout/noOwnerKey`` for the shared
    /// pool and arenas driven through handles (no thread's key).
    var ownerKey: UInt
    var notify: ArenaNotify?
    var notifyContext: UnsafeMutableRawPointer?
    var region: Unmanaged<ZoneRegion>
    /// The remote-free batch this (freeing) arena is building: chunks of one zone of
    /// another arena, linked through their first word from `batchHead` to `batchTail`,
    /// handed to the zone with one compare-and-swap when full, when a chunk of another
    /// zone is freed, or when the CPU's job ends (see ``Arena/flushRemoteBatch()``).
    var batchZone: UnsafeMutablePointer<ZoneHeader>? = nil
    var batchHead: UnsafeMutableRawPointer? = nil
    var batchTail: UnsafeMutableRawPointer? = nil
    var batchCount = 0
}

/// One CPU's slab state ("SLGlobalData"): a list of zones with free chunks per size class,
/// the wholly free zones it keeps, a mailbox where remote freers post zones that got
/// chunks back while off their list, and counters.
///
/// An arena is a view on raw memory. All of its operations run on the owning thread only
/// (or under the shared pool's lock), except ``remoteFree(_:zone:)`` which any thread may
/// call for a chunk it holds.
struct Arena {
    let raw: UnsafeMutableRawPointer

    // Block layout (bytes).
    static let headsOffset = 128
    static let tailsOffset = headsOffset + 8 * SizeClass.count          // 704
    static let mailboxOffset = tailsOffset + 8 * SizeClass.count        // 1280
    static let classCountersOffset = mailboxOffset + 64                 // 1344
    static let classCounterCount = 4
    static let arenaCountersOffset = classCountersOffset + 8 * classCounterCount * SizeClass.count
    static let arenaCounterCount = 9
    static let stride = (arenaCountersOffset + 8 * arenaCounterCount + 127) & ~127

    /// Per-size-class counters.
    enum ClassCounter: Int { case allocations = 0, frees, zonesHeld, remoteChunksReclaimed }
    /// Per-arena counters.
    enum ArenaCounter: Int {
        case zonesFromRegion = 0, zonesReused, zonesReleased, notificationsHandled
        case remoteFreesSent, mailboxPosts, exhaustions, freeZonesParked, remoteBatches
    }

    @inline(__always) init(_ raw: UnsafeMutableRawPointer) { self.raw = raw }

    /// Most chunks a remote-free batch holds before it is handed over.
    static let batchLimit = 64

    static func initialize(_ raw: UnsafeMutableRawPointer, header: ArenaHeader) {
        assert(MemoryLayout<ArenaHeader>.size <= headsOffset, "arena header overlaps the class lists")
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: stride)
        raw.bindMemory(to: ArenaHeader.self, capacity: 1).initialize(to: header)
        raw.advanced(by: headsOffset).bindMemory(to: UnsafeMutablePointer<ZoneHeader>?.self, capacity: 2 * SizeClass.count)
        raw.advanced(by: mailboxOffset).bindMemory(to: Atomic<UInt>.self, capacity: 2)
        raw.advanced(by: classCountersOffset).bindMemory(
            to: Atomic<Int>.self, capacity: classCounterCount * SizeClass.count + arenaCounterCount)
    }

    @inline(__always) var header: UnsafeMutablePointer<ArenaHeader> { raw.assumingMemoryBound(to: ArenaHeader.self) }
    @inline(__always) var heads: UnsafeMutablePointer<UnsafeMutablePointer<ZoneHeader>?> {
        raw.advanced(by: Self.headsOffset).assumingMemoryBound(to: UnsafeMutablePointer<ZoneHeader>?.self)
    }
    @inline(__always) var tails: UnsafeMutablePointer<UnsafeMutablePointer<ZoneHeader>?> {
        raw.advanced(by: Self.tailsOffset).assumingMemoryBound(to: UnsafeMutablePointer<ZoneHeader>?.self)
    }
    @inline(__always) var mailbox: UnsafeMutablePointer<Atomic<UInt>> {
        raw.advanced(by: Self.mailboxOffset).assumingMemoryBound(to: Atomic<UInt>.self)
    }
    /// Set while a notification (passive IPI) is on its way to the owner, so a busy
    /// owner's ring never fills with them: at most one is outstanding per arena.
    @inline(__always) var notifyOutstanding: UnsafeMutablePointer<Atomic<UInt>> {
        raw.advanced(by: Self.mailboxOffset + 8).assumingMemoryBound(to: Atomic<UInt>.self)
    }
    @inline(__always) func counter(_ sizeClass: Int, _ c: ClassCounter) -> UnsafeMutablePointer<Atomic<Int>> {
        raw.advanced(by: Self.classCountersOffset &+ (sizeClass &* Self.classCounterCount &+ c.rawValue) &* 8)
            .assumingMemoryBound(to: Atomic<Int>.self)
    }
    @inline(__always) func counter(_ c: ArenaCounter) -> UnsafeMutablePointer<Atomic<Int>> {
        raw.advanced(by: Self.arenaCountersOffset &+ c.rawValue &* 8).assumingMemoryBound(to: Atomic<Int>.self)
    }

    // MARK: - Allocation

    /// A chunk of class `sizeClass`, or nil when no zone can be had.
    @inline(__always)
    func allocate(sizeClass: Int, zero: Bool) -> UnsafeMutableRawPointer? {
        // Hysteresis is settled on the allocation path only (never in free, which may run
        // in an IPI): give back what is parked above the threshold.
        let h = header
        if _slowPath(h.pointee.freeZoneCount > h.pointee.freeZoneThreshold) { releaseExcessZones() }
        if let z = heads[sizeClass] {
            return take(z, sizeClass: sizeClass, zero: zero)
        }
        return allocateSlow(sizeClass: sizeClass, zero: zero)
    }

    /// The allocation fast path: a chunk of class `sizeClass` when no hysteresis work is
    /// due, the arena is not in debug mode and the class's first zone has more than one
    /// free chunk; nil (having changed nothing) otherwise, for ``allocate(sizeClass:zero:)``.
    /// Only loads, compares and stores, so its callers need no saved registers.
    @inline(__always)
    func allocateFast(sizeClass: Int) -> UnsafeMutableRawPointer? {
        let h = header
        guard h.pointee.freeZoneCount <= h.pointee.fastLimit, let z = heads[sizeClass] else { return nil }
        let left = z.pointee.freeCount &- 1
        guard left != 0 else { return nil }     // the last chunk: exhaustion is handled in take
        let c: UnsafeMutableRawPointer
        if let f = z.pointee.localFree {
            z.pointee.localFree = f.load(as: UnsafeMutableRawPointer?.self)
            c = f
        } else {
            c = z.pointee.bump
            z.pointee.bump = c.advanced(by: z.pointee.chunkSize)
        }
        z.pointee.freeCount = left
        counterAdd(counter(sizeClass, .allocations), 1)
        return c
    }

    @inline(__always)
    func take(_ z: UnsafeMutablePointer<ZoneHeader>, sizeClass: Int, zero: Bool) -> UnsafeMutableRawPointer {
        let c: UnsafeMutableRawPointer
        let debug = header.pointee.debug
        if let f = z.pointee.localFree {
            let next = f.load(as: UnsafeMutableRawPointer?.self)
            if _slowPath(debug) { checkReused(z, f, next: next) }
            z.pointee.localFree = next
            c = f
            if _slowPath(zero) { zeroChunk(c, zone: z, fresh: false) }
        } else {
            c = z.pointee.bump
            z.pointee.bump = c.advanced(by: z.pointee.chunkSize)
            if _slowPath(zero) { zeroChunk(c, zone: z, fresh: true) }
        }
        let left = z.pointee.freeCount &- 1
        z.pointee.freeCount = left
        if _slowPath(left == 0) { exhausted(z, sizeClass: sizeClass) }
        if _slowPath(debug) { markAllocated(z, c) }
        counterAdd(counter(sizeClass, .allocations), 1)
        return c
    }

    /// Zero-fills a chunk handed out with ``SlabFlags/zero`` (not needed for a never-used
    /// chunk of a zone known to be zero-filled).
    @inline(never)
    func zeroChunk(_ c: UnsafeMutableRawPointer, zone z: UnsafeMutablePointer<ZoneHeader>, fresh: Bool) {
        if fresh && z.pointee.bumpZeroed { return }
        c.initializeMemory(as: UInt8.self, repeating: 0, count: z.pointee.chunkSize)
    }

    @inline(never)
    func allocateSlow(sizeClass: Int, zero: Bool) -> UnsafeMutableRawPointer? {
        drainMailbox()
        if let z = heads[sizeClass] { return take(z, sizeClass: sizeClass, zero: zero) }
        releaseExcessZones()
        let h = header
        let z: UnsafeMutablePointer<ZoneHeader>
        let zeroed: Bool
        if let parked = h.pointee.freeZones {
            h.pointee.freeZones = parked.pointee.next
            h.pointee.freeZoneCount -= 1
            counterAdd(counter(.freeZonesParked), -1)
            z = parked
            zeroed = false
            counterAdd(counter(.zonesReused), 1)
        } else {
            guard let (fresh, isZero) = h.pointee.region.takeUnretainedValue().obtain() else { return nil }
            z = ZoneLayout.header(of: fresh)
            _ = UnsafeMutableRawPointer(z).bindMemory(to: ZoneHeader.self, capacity: 1)
            zeroed = isZero
            counterAdd(counter(.zonesFromRegion), 1)
        }
        initializeZone(z, sizeClass: sizeClass, zeroed: zeroed)
        pushFront(z, sizeClass: sizeClass)
        counterAdd(counter(sizeClass, .zonesHeld), 1)
        return take(z, sizeClass: sizeClass, zero: zero)
    }

    func initializeZone(_ z: UnsafeMutablePointer<ZoneHeader>, sizeClass: Int, zeroed: Bool) {
        let h = header
        let size = SizeClass.chunkSize(ofClass: sizeClass)
        let offset = ZoneLayout.baseOffset(chunkSize: size, debug: h.pointee.debug)
        let capacity = (ZoneLayout.zoneSize - offset) / size
        let zoneRaw = UnsafeMutableRawPointer(z)
        let base = ZoneLayout.zoneBase(z).advanced(by: offset)
        z.initialize(to: ZoneHeader(
            ownerKey: h.pointee.ownerKey, arena: raw, chunkSize: size, capacity: capacity, base: base,
            bumpEnd: base.advanced(by: capacity * size), magic: ZoneLayout.liveMagic,
            classIndex: Int32(sizeClass), ownerIndex: Int32(h.pointee.index), bumpZeroed: zeroed,
            localFree: nil, freeCount: capacity, bump: base, next: nil, prev: nil,
            listed: false, notifyPending: false))
        zoneRaw.advanced(by: ZoneLayout.remoteOffset).bindMemory(to: Atomic<UInt>.self, capacity: 1)
            .initialize(to: Atomic(0))
        ZoneLayout.mailboxLink(z).pointee = 0
        if h.pointee.debug {
            zoneRaw.advanced(by: ZoneLayout.bitmapOffset).initializeMemory(
                as: UInt8.self, repeating: 0, count: ZoneLayout.bitmapBytes)
            _ = zoneRaw.advanced(by: ZoneLayout.bitmapOffset).bindMemory(
                to: Atomic<UInt64>.self, capacity: ZoneLayout.bitmapBytes / 8)
        }
    }

    /// The zone handed out its last local chunk: pull in remote frees, or take it off
    /// the list and arm it so the next remote free posts it back.
    @inline(never)
    func exhausted(_ z: UnsafeMutablePointer<ZoneHeader>, sizeClass: Int) {
        counterAdd(counter(.exhaustions), 1)

        let head = ZoneLayout.remoteHead(z)
        while true {
            let chain = head.pointee.exchange(0, ordering: .acquiring) & ~ZoneLayout.armed
            if chain != 0 {
                splice(z, chain: chain, sizeClass: sizeClass)
                return
            }
            if z.pointee.notifyPending {
                unlink(z, sizeClass: sizeClass)
                return
            }
            if head.pointee.compareExchange(expected: 0, desired: ZoneLayout.armed, ordering: .acquiringAndReleasing).exchanged {
                unlink(z, sizeClass: sizeClass)
                return
            }
        }
    }

    /// Moves a chain of remotely freed chunks onto the zone's local list.
    func splice(_ z: UnsafeMutablePointer<ZoneHeader>, chain: UInt, sizeClass: Int) {
        guard let first = UnsafeMutableRawPointer(bitPattern: chain) else { return }
        var n = 1
        var last = first
        let debug = header.pointee.debug
        while let next = last.load(as: UnsafeMutableRawPointer?.self) {
            if debug { checkChunkAddress(z, next, what: .writeAfterFree, context: "corrupt link in a remote-free list") }
            last = next
            n += 1
        }
        last.storeBytes(of: z.pointee.localFree, as: UnsafeMutableRawPointer?.self)
        z.pointee.localFree = first
        z.pointee.freeCount += n
        counterAdd(counter(sizeClass, .remoteChunksReclaimed), n)
    }

    // MARK: - Free

    /// Frees a chunk of a zone this arena owns.
    @inline(__always)
    func freeLocal(_ c: UnsafeMutableRawPointer, zone z: UnsafeMutablePointer<ZoneHeader>) {
        let sizeClass = Int(z.pointee.classIndex)
        if _slowPath(header.pointee.debug) { markFreed(z, c) }
        c.storeBytes(of: z.pointee.localFree, as: UnsafeMutableRawPointer?.self)
        z.pointee.localFree = c
        let free = z.pointee.freeCount &+ 1
        z.pointee.freeCount = free
        counterAdd(counter(sizeClass, .frees), 1)
        if _slowPath(!z.pointee.listed) {
            relistAfterLocalFree(z, sizeClass: sizeClass)
        } else if _slowPath(free == z.pointee.capacity)
                    && !(z.pointee.next == nil && heads[sizeClass] == z) {
            parkIfFree(z, sizeClass: sizeClass)
        }
    }

    /// The free fast path: ``freeLocal(_:zone:)`` for an arena not in debug mode (the
    /// caller checked), with the rare list work in one out-of-line call at the end.
    @inline(__always)
    func freeLocalFast(_ c: UnsafeMutableRawPointer, zone z: UnsafeMutablePointer<ZoneHeader>) {
        c.storeBytes(of: z.pointee.localFree, as: UnsafeMutableRawPointer?.self)
        z.pointee.localFree = c
        let free = z.pointee.freeCount &+ 1
        z.pointee.freeCount = free
        counterAdd(counter(Int(z.pointee.classIndex), .frees), 1)
        if _slowPath(!z.pointee.listed || free == z.pointee.capacity) { afterLocalFree(z) }
    }

    /// The list work of a local free: relist a zone that was off its list, or park one
    /// that became wholly free.
    @inline(never)
    func afterLocalFree(_ z: UnsafeMutablePointer<ZoneHeader>) {
        let sizeClass = Int(z.pointee.classIndex)
        if !z.pointee.listed {
            relistAfterLocalFree(z, sizeClass: sizeClass)
        } else if !(z.pointee.next == nil && heads[sizeClass] == z) {
            parkIfFree(z, sizeClass: sizeClass)
        }
    }

    @inline(never)
    func relistAfterLocalFree(_ z: UnsafeMutablePointer<ZoneHeader>, sizeClass: Int) {
        pushBack(z, sizeClass: sizeClass)
        if !z.pointee.notifyPending {
            let head = ZoneLayout.remoteHead(z)
            if !head.pointee.compareExchange(expected: ZoneLayout.armed, desired: 0, ordering: .acquiringAndReleasing).exchanged {
                // A remote freer consumed the mark: its post is on the way.
                z.pointee.notifyPending = true
            }
        }
        parkIfFree(z, sizeClass: sizeClass)
    }

    /// Pushes a chunk of someone else's zone onto that zone's remote list: one
    /// compare-and-swap. The free that finds the zone armed posts it to the owner's
    /// mailbox, and the post that finds the mailbox empty notifies the owner.
    static func remoteFree(_ c: UnsafeMutableRawPointer, zone z: UnsafeMutablePointer<ZoneHeader>, debug: Bool) {
        if debug { Arena(z.pointee.arena).markFreed(z, c) }
        pushRemote(first: c, last: c, zone: z)
    }

    /// Adds a chunk of another arena's zone to this (freeing) arena's remote-free batch:
    /// no atomic instruction and no write to the zone. The batch goes to the zone in one
    /// compare-and-swap when it holds ``batchLimit`` chunks, when a chunk of another zone
    /// is freed, or when the CPU's current job ends. Returns true when it started a new
    /// batch (the caller then tells the CPU that the slab has deferred work).
    /// Owner (freeing CPU) only.
    @inline(__always)
    func batchRemoteFree(_ c: UnsafeMutableRawPointer, zone z: UnsafeMutablePointer<ZoneHeader>) -> Bool {
        let h = header
        if _fastPath(h.pointee.batchZone == z) {
            c.storeBytes(of: h.pointee.batchHead, as: UnsafeMutableRawPointer?.self)
            h.pointee.batchHead = c
            let n = h.pointee.batchCount &+ 1
            h.pointee.batchCount = n
            if _slowPath(n >= Self.batchLimit) { flushRemoteBatch() }
            return false
        }
        return startRemoteBatch(c, zone: z)
    }

    @inline(never)
    func startRemoteBatch(_ c: UnsafeMutableRawPointer, zone z: UnsafeMutablePointer<ZoneHeader>) -> Bool {
        let h = header
        let hadBatch = h.pointee.batchZone != nil
        if hadBatch { flushRemoteBatch() }
        c.storeBytes(of: nil, as: UnsafeMutableRawPointer?.self)
        h.pointee.batchZone = z
        h.pointee.batchHead = c
        h.pointee.batchTail = c
        h.pointee.batchCount = 1
        return !hadBatch
    }

    /// Hands the batch under construction to its zone: the chain is pushed onto the
    /// zone's remote list with one compare-and-swap, and if the zone was armed (its owner
    /// took it off its list) it is posted to the owner's mailbox, as a single remote free
    /// would. Owner (freeing CPU) only.
    @inline(never)
    func flushRemoteBatch() {
        let h = header
        guard let z = h.pointee.batchZone, let first = h.pointee.batchHead, let last = h.pointee.batchTail else { return }
        h.pointee.batchZone = nil
        h.pointee.batchHead = nil
        h.pointee.batchTail = nil
        h.pointee.batchCount = 0
        counterAdd(counter(.remoteBatches), 1)
        Self.pushRemote(first: first, last: last, zone: z)
    }

    /// Pushes the chain `first`…`last` (linked through first words) onto zone `z`'s remote
    /// list; the push that finds the zone armed posts it to its owner.
    @inline(__always)
    static func pushRemote(first: UnsafeMutableRawPointer, last: UnsafeMutableRawPointer,
                           zone z: UnsafeMutablePointer<ZoneHeader>) {
        let owner = Arena(z.pointee.arena)   // read while our chunks keep the zone alive
        let head = ZoneLayout.remoteHead(z)
        var old = head.pointee.load(ordering: .relaxed)
        while true {
            last.storeBytes(of: old & ~ZoneLayout.armed, as: UInt.self)
            let (done, seen) = head.pointee.compareExchange(
                expected: old, desired: UInt(bitPattern: first), ordering: .releasing)
            if done { break }
            old = seen
        }
        if _slowPath(old == ZoneLayout.armed) { owner.post(z) }
    }

    /// Posts a zone to this (owner) arena's mailbox; notifies on empty → non-empty.
    @inline(never)
    func post(_ z: UnsafeMutablePointer<ZoneHeader>) {
        let box = mailbox
        let link = ZoneLayout.mailboxLink(z)
        var old = box.pointee.load(ordering: .relaxed)
        while true {
            link.pointee = old
            let (done, seen) = box.pointee.compareExchange(expected: old, desired: UInt(bitPattern: z), ordering: .sequentiallyConsistent)
            if done { break }
            old = seen
        }
        counter(.mailboxPosts).pointee.add(1, ordering: .relaxed)
        if old == 0, let notify = header.pointee.notify,
           notifyOutstanding.pointee.exchange(1, ordering: .sequentiallyConsistent) == 0 {
            notify(header.pointee.notifyContext, header.pointee.index)
        }
    }

    /// What the passive IPI runs on the owner: allow the next notification, then drain.
    func handleNotification() {
        notifyOutstanding.pointee.store(0, ordering: .sequentiallyConsistent)
        reclaimChain(mailbox.pointee.exchange(0, ordering: .sequentiallyConsistent))
    }

    /// Takes every zone posted to the mailbox and puts their remote chunks back to use.
    /// Owner only.
    func drainMailbox() {
        let box = mailbox
        if box.pointee.load(ordering: .relaxed) == 0 { return }
        reclaimChain(box.pointee.exchange(0, ordering: .acquiring))
    }

    func reclaimChain(_ first: UInt) {
        var next = first
        while let z = UnsafeMutablePointer<ZoneHeader>(bitPattern: next) {
            next = ZoneLayout.mailboxLink(z).pointee
            reclaim(z)
        }
    }

    /// Handles one posted zone.
    func reclaim(_ z: UnsafeMutablePointer<ZoneHeader>) {
        counterAdd(counter(.notificationsHandled), 1)
        let sizeClass = Int(z.pointee.classIndex)
        z.pointee.notifyPending = false
        let head = ZoneLayout.remoteHead(z)
        while true {
            let chain = head.pointee.exchange(0, ordering: .acquiring) & ~ZoneLayout.armed
            if chain != 0 { splice(z, chain: chain, sizeClass: sizeClass) }
            if z.pointee.freeCount > 0 {
                if !z.pointee.listed { pushBack(z, sizeClass: sizeClass) }
                parkIfFree(z, sizeClass: sizeClass)
                return
            }
            if head.pointee.compareExchange(expected: 0, desired: ZoneLayout.armed, ordering: .acquiringAndReleasing).exchanged {
                return
            }
        }
    }

    // MARK: - Zone lists and hysteresis

    /// A wholly free zone goes to the free-zone list, unless it is its class's last zone
    /// or a notification for it is still on the way.
    func parkIfFree(_ z: UnsafeMutablePointer<ZoneHeader>, sizeClass: Int) {
        guard z.pointee.freeCount == z.pointee.capacity, z.pointee.listed, !z.pointee.notifyPending else { return }
        if heads[sizeClass] == z && z.pointee.next == nil { return }
        unlink(z, sizeClass: sizeClass)
        counterAdd(counter(sizeClass, .zonesHeld), -1)
        let h = header
        z.pointee.magic = ZoneLayout.parkedMagic
        // The free fast path trusts an owner-key match alone: a parked zone has no owner.
        z.pointee.ownerKey = ZoneLayout.noOwnerKey
        z.pointee.next = h.pointee.freeZones
        h.pointee.freeZones = z
        h.pointee.freeZoneCount += 1
        counterAdd(counter(.freeZonesParked), 1)
    }

    /// Gives free zones above the threshold back to the OS. Allocation path only.
    @inline(never)
    func releaseExcessZones() {
        let h = header
        while h.pointee.freeZoneCount > h.pointee.freeZoneThreshold, let z = h.pointee.freeZones {
            h.pointee.freeZones = z.pointee.next
            h.pointee.freeZoneCount -= 1
            counterAdd(counter(.freeZonesParked), -1)
            z.pointee.magic = 0
            h.pointee.region.takeUnretainedValue().release(ZoneLayout.zoneBase(z))
            counterAdd(counter(.zonesReleased), 1)
        }
    }

    /// Gives every parked zone back to the OS (an explicit trim).
    func releaseAllFreeZones() {
        let h = header
        let keep = h.pointee.freeZoneThreshold
        h.pointee.freeZoneThreshold = 0
        releaseExcessZones()
        h.pointee.freeZoneThreshold = keep
    }

    func pushFront(_ z: UnsafeMutablePointer<ZoneHeader>, sizeClass: Int) {
        z.pointee.prev = nil
        z.pointee.next = heads[sizeClass]
        if let old = heads[sizeClass] { old.pointee.prev = z } else { tails[sizeClass] = z }
        heads[sizeClass] = z
        z.pointee.listed = true
    }

    func pushBack(_ z: UnsafeMutablePointer<ZoneHeader>, sizeClass: Int) {
        z.pointee.next = nil
        z.pointee.prev = tails[sizeClass]
        if let old = tails[sizeClass] { old.pointee.next = z } else { heads[sizeClass] = z }
        tails[sizeClass] = z
        z.pointee.listed = true
    }

    func unlink(_ z: UnsafeMutablePointer<ZoneHeader>, sizeClass: Int) {
        if let p = z.pointee.prev { p.pointee.next = z.pointee.next } else { heads[sizeClass] = z.pointee.next }
        if let n = z.pointee.next { n.pointee.prev = z.pointee.prev } else { tails[sizeClass] = z.pointee.prev }
        z.pointee.next = nil
        z.pointee.prev = nil
        z.pointee.listed = false
    }

    // MARK: - Debug checks

    /// Index of chunk `c` in zone `z`, after checking it is a chunk boundary inside the
    /// part of the zone ever handed out.
    func checkChunkAddress(_ z: UnsafeMutablePointer<ZoneHeader>, _ c: UnsafeRawPointer,
                           what: SlabDebug.Failure, context: String) {
        let offset = UInt(bitPattern: c) &- UInt(bitPattern: z.pointee.base)
        let size = UInt(z.pointee.chunkSize)
        if UInt(bitPattern: c) & ZoneLayout.zoneMask != UInt(bitPattern: ZoneLayout.zoneBase(z))
            || offset % size != 0 || UnsafeRawPointer(c) >= UnsafeRawPointer(z.pointee.bump) {
            SlabDebug.fail(what, "\(context): \(SlabDebug.hex(c)) is not a chunk handed out by zone \(SlabDebug.hex(z)) (chunk size \(size))")
        }
    }

    func markAllocated(_ z: UnsafeMutablePointer<ZoneHeader>, _ c: UnsafeMutableRawPointer) {
        let i = (UInt(bitPattern: c) - UInt(bitPattern: z.pointee.base)) / UInt(z.pointee.chunkSize)
        let word = ZoneLayout.bitmap(z).advanced(by: Int(i / 64))
        let bit: UInt64 = 1 << (i % 64)
        let before = word.pointee.bitwiseOr(bit, ordering: .relaxed).oldValue
        if before & bit != 0 {
            SlabDebug.fail(.writeAfterFree, "chunk \(SlabDebug.hex(c)) handed out twice (free list corrupted)")
        }
    }

    func markFreed(_ z: UnsafeMutablePointer<ZoneHeader>, _ c: UnsafeMutableRawPointer) {
        checkChunkAddress(z, c, what: .invalidFree, context: "free")
        let i = (UInt(bitPattern: c) - UInt(bitPattern: z.pointee.base)) / UInt(z.pointee.chunkSize)
        let word = ZoneLayout.bitmap(z).advanced(by: Int(i / 64))
        let bit: UInt64 = 1 << (i % 64)
        let before = word.pointee.bitwiseAnd(~bit, ordering: .relaxed).oldValue
        if before & bit == 0 {
            SlabDebug.fail(.doubleFree, "chunk \(SlabDebug.hex(c)) of \(z.pointee.chunkSize) bytes was already free")
        }
        SlabDebug.poison(c, bytes: z.pointee.chunkSize)
    }

    func checkReused(_ z: UnsafeMutablePointer<ZoneHeader>, _ c: UnsafeMutableRawPointer, next: UnsafeMutableRawPointer?) {
        if let next {
            checkChunkAddress(z, next, what: .writeAfterFree,
                              context: "free-list link of \(SlabDebug.hex(c)) overwritten")
        }
        if let off = SlabDebug.firstPoisonMismatch(c, bytes: z.pointee.chunkSize) {
            let value = c.load(fromByteOffset: off, as: UInt64.self)
            SlabDebug.fail(.writeAfterFree,
                "chunk \(SlabDebug.hex(c)) (\(z.pointee.chunkSize) bytes) was modified after it was freed: byte offset \(off) holds 0x\(String(value, radix: 16)), expected the poison 0x\(String(SlabDebug.poisonWord, radix: 16))")
        }
    }
}
