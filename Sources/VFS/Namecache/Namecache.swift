import Glibc
import Synchronization

// Namecache rules (the VFS's locking, in the manner of the comment at the top of DragonFly's
// vfs_cache.c). Every rule is referred to by number elsewhere in the VFS.
//
//  1. Topology. Records form one connected tree hashed by (parent id, name); a record is
//     unresolved, positive or negative. Lookups of cached names (`fastLookup`, `probe`) run
//     in read sections of the `ReadGate` and take no lock, allocate nothing and touch no
//     reference count; they follow the records' plain-memory `NCHot` mirrors.
//  2. Two kinds of writer section, both under the gate's one writer lock, which is held only
//     for pointer and counter work, never across a file-system call:
//     - `publish` (readers go on): adding a child (`lookupOrCreate`), resolving an unresolved
//       or negative record (`setResolved`), a directory's search flag, replacing a process's
//       working, root or jail directory (`chdir`, `chroot`, `jail`);
//     - `write` (every reader drained first): anything that unlinks or frees what a reader
//       may stand on: removal and replacement of a record, rename (`move`), eviction of
//       negative records (in batches of `negativeSlack`), unmount, table growth, credentials.
//  3. Publication order. A `publish` writes every field a lock-free reader follows before
//     the pointer or state that makes it reachable (release fence; `NCRecord.syncHot` writes
//     the state last), and readers load the state first, then fence. A resolved state never
//     goes back in a `publish`.
//  4. Record locks. Records are locked one by one with `RecordLock`, an LWKT sleep lock
//     (shared or exclusive; the exclusive holder is recorded: its LWKT thread, else its OS
//     thread). LWKT threads take it with `lock(_:) async`: on contention the thread parks
//     (`LWKT.tsleep` on the lock's channel) and its CPU runs its other threads and answers
//     IPIs; the release that frees the lock wakes the sleepers (`LWKT.wakeup`). A thread may
//     hold a record lock across a park. A waiting exclusive locker holds off new shared
//     ones. The synchronous `lock()` (exclusive) is for threads that are not CPUs (host-I/O
//     pool, plain threads) and for the synchronous VFS API: it waits with `VFSWait`, which
//     keeps answering IPIs on a CPU but cannot run the CPU's other threads, so a synchronous
//     waiter on a CPU must never wait for a record held across a park by a thread of its own
//     CPU (a debug assertion checks the recorded holder). The parking API
//     (`VFSProcess.parking`) runs the synchronous operations on a CPU as non-blocking
//     attempts (`VFSAttempt`): there a taken lock makes the operation give up, before any
//     change, and the LWKT thread parks on that lock, then tries again. A namespace operation holds the
//     record lock of each name it changes, and of its directory, even while the record is
//     negative; multi-record operations (rename: source, target and both directories;
//     unmount: the covered record) take them through `lockAll` (synchronous or async), in
//     ascending record id. Lock order: a mount's rename lock, then record locks (by id), then
//     MemFS node locks (by inode), then the gate's writer lock; only record locks may be held
//     across a park. Calls that may block in the host run on the host-I/O pool
//     (`VFSProcess.offCPU`), so no lock wait or host call makes a CPU deaf.
//  5. Retirement. What a `publish` replaces (a process's old working directory) is kept
//     alive by the gate until the next drain, so a reader that loaded it may still use it.
//  6. Holds. Open files, working directories and roots hold their records: a held record is
//     never evicted, and a mount with holds cannot be unmounted.
//  7. Host names. Records of a file system that changes behind the cache (HostFS) carry a
//     stamp: the value of their directory's validity word when the name was last checked
//     with the host. While the word still holds it, the record is used without asking
//     (lock-free); inotify moves the word on every change, and a record with an old stamp
//     is checked again under its record lock. When inotify loses events (queue overflow),
//     the mount's positive entries are dropped (`dropPositives`), all but held ones.

/// Statistics of the namecache.
public struct NamecacheStatistics: Sendable, Equatable {
    /// Components found positive in the cache.
    public var hits: Int
    /// Components found negative in the cache (answered ENOENT without asking the file system).
    public var negativeHits: Int
    /// Components not in the cache: a new unresolved record was made.
    public var misses: Int
    /// Calls into a file system to resolve or revalidate a name.
    public var resolves: Int
    /// Records reclaimed to keep negative entries within their bound.
    public var evictions: Int
    /// Path lookups answered entirely by the lock-free path.
    public var fastLookups: Int
    /// Path lookups that took the locked path.
    public var slowLookups: Int
    /// Records in the hash table now.
    public var records: Int
    /// Positive records now.
    public var positives: Int
    /// Negative records now.
    public var negatives: Int
    /// Writer sections that drained every reader (removals, renames, evictions, growth).
    public var drains: Int = 0
    /// Writer sections that published without stopping readers (new names, resolutions, chdir).
    public var publishes: Int = 0
}

/// The namecache: a hash of records by (parent, name) over one connected tree of records.
///
/// Lookups of cached names run inside read sections of a `ReadGate`; they take no lock and
/// allocate nothing. Additions and resolutions are published without stopping readers;
/// removals, renames and evictions drain them first. Namespace operations serialise on
/// record locks taken in record-id order. The numbered rules at the top of this file say
/// who may change what, and how.
public final class Namecache: @unchecked Sendable {
    let gate = ReadGate()
    /// The hash table header (buckets of `NCHot` chains), in plain memory.
    let table: UnsafeMutablePointer<NCTable>
    private let nextID = Atomic<UInt64>(1)

    private let recordCount = Atomic<Int>(0)
    private let positiveCount = Atomic<Int>(0)
    private let negativeCount = Atomic<Int>(0)
    unowned(unsafe) private var negativeHead: NCRecord?
    unowned(unsafe) private var negativeTail: NCRecord?

    /// Negative records are kept within `max(minimumNegatives, positives × negativeRatio)`.
    public let negativeRatio: Int
    /// The floor of the negative bound.
    public let minimumNegatives: Int

    /// Creates an empty namecache.
    public init(negativeRatio: Int = 1, minimumNegatives: Int = 1024, initialBuckets: Int = 1 << 14) {
        self.negativeRatio = max(negativeRatio, 0)
        self.minimumNegatives = max(minimumNegatives, 1)
        var n = 16
        while n < initialBuckets { n <<= 1 }
        let b = UnsafeMutablePointer<UnsafeMutablePointer<NCHot>?>.allocate(capacity: n)
        b.initialize(repeating: nil, count: n)
        table = .allocate(capacity: 1)
        table.initialize(to: NCTable(buckets: b, mask: n - 1))
    }

    deinit {
        // Records hold their parents and their children, and a covered record holds its
        // mount, which holds the covered record: cycles that would keep every record, its
        // node and (on HostFS) the node's host descriptor and the watcher's inotify instance
        // alive after the namespace is gone. Nothing can reach the records now (processes
        // and servers hold the namespace, which holds this cache): break the cycles. The
        // records are gathered first, so none is freed while its chain is walked.
        var records: [NCRecord] = []
        records.reserveCapacity(recordCount.load(ordering: .relaxed))
        for i in 0...table.pointee.mask {
            var cursor = table.pointee.buckets[i]
            while let h = cursor {
                if let o = h.pointee.owner { records.append(Unmanaged<NCRecord>.fromOpaque(o).takeUnretainedValue()) }
                cursor = h.pointee.hashNext
            }
        }
        for r in records {
            r.children.removeAll()
            r.parent = nil
            r.mountedHere = nil
        }
        records.removeAll()
        table.pointee.buckets.deinitialize(count: table.pointee.mask + 1)
        table.pointee.buckets.deallocate()
        table.deinitialize(count: 1)
        table.deallocate()
    }

    /// Current statistics.
    public var statistics: NamecacheStatistics {
        NamecacheStatistics(
            hits: gate.total(.hits), negativeHits: gate.total(.negativeHits), misses: gate.total(.misses),
            resolves: gate.total(.resolves), evictions: gate.total(.evictions),
            fastLookups: gate.total(.fastLookups), slowLookups: gate.total(.slowLookups),
            records: recordCount.load(ordering: .relaxed), positives: positiveCount.load(ordering: .relaxed),
            negatives: negativeCount.load(ordering: .relaxed), drains: gate.total(.drains), publishes: gate.total(.publishes))
    }

    // MARK: hashing and probing (read or write section)

    /// FNV-1a over the name bytes, then over the parent's id.
    @inline(__always)
    static func hash(parentID: UInt64, _ bytes: UnsafePointer<UInt8>, _ count: Int) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in 0..<count {
            h = (h ^ UInt64(bytes[i])) &* 0x0000_0100_0000_01b3
        }
        h = (h ^ parentID) &* 0x0000_0100_0000_01b3
        return h ^ (h >> 29)
    }

    static func hash(parentID: UInt64, _ bytes: [UInt8]) -> UInt64 {
        bytes.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else { return hash(parentID: parentID, UnsafePointer(bitPattern: 1)!, 0) }
            return hash(parentID: parentID, base, b.count)
        }
    }

    /// Finds the hot part of the live record for (parent, name). Must run inside a read or write
    /// section. Touches no reference count.
    @inline(__always)
    static func probe(_ table: UnsafeMutablePointer<NCTable>, _ parent: UnsafeMutablePointer<NCHot>,
                      _ bytes: UnsafePointer<UInt8>, _ count: Int, hash: UInt64) -> UnsafeMutablePointer<NCHot>? {
        var cursor = table.pointee.buckets[Int(truncatingIfNeeded: hash) & table.pointee.mask]
        while let h = cursor {
            if h.pointee.hash == hash && h.pointee.parent == parent && h.pointee.nameLength == count
                && memcmp(h.pointee.name, bytes, count) == 0 {
                return h
            }
            cursor = h.pointee.hashNext
        }
        return nil
    }

    /// The record for (parent, name), inside a read or write section.
    func probe(_ parent: NCRecord, _ name: [UInt8]) -> NCRecord? {
        let h = Self.hash(parentID: parent.id, name)
        return name.withUnsafeBufferPointer { b -> NCRecord? in
            guard let base = b.baseAddress else { return nil }
            guard let hot = Self.probe(table, parent.hot, base, b.count, hash: h), let owner = hot.pointee.owner else { return nil }
            return Unmanaged<NCRecord>.fromOpaque(owner).takeUnretainedValue()
        }
    }

    // MARK: topology changes (write section)

    /// Puts `r` at the head of its chain. Runs in a `publish` or `write` section: the record's
    /// hot fields and chain link are written before the bucket head that makes it reachable
    /// (rule 3). Growing the table needs a drain, so it is left to `growIfNeeded`.
    private func hashInsert(_ r: NCRecord) {
        r.syncHot()
        let i = Int(truncatingIfNeeded: r.hash) & table.pointee.mask
        r.hot.pointee.hashNext = table.pointee.buckets[i]
        atomicMemoryFence(ordering: .releasing)
        table.pointee.buckets[i] = r.hot
        recordCount.wrappingAdd(1, ordering: .relaxed)
    }

    /// Whether the table has grown past two records per bucket.
    private var needsGrow: Bool { recordCount.load(ordering: .relaxed) > 2 * (table.pointee.mask + 1) }

    /// Doubles the table when it is too full (a drained write section, rare).
    private func growIfNeeded() {
        guard needsGrow else { return }
        gate.write { () in if needsGrow { grow() } }
    }

    private func hashRemove(_ r: NCRecord) {
        let i = Int(truncatingIfNeeded: r.hot.pointee.hash) & table.pointee.mask
        var prev: UnsafeMutablePointer<NCHot>? = nil
        var cursor = table.pointee.buckets[i]
        while let c = cursor {
            if c == r.hot {
                if let p = prev { p.pointee.hashNext = c.pointee.hashNext } else { table.pointee.buckets[i] = c.pointee.hashNext }
                c.pointee.hashNext = nil
                recordCount.wrappingSubtract(1, ordering: .relaxed)
                return
            }
            prev = c
            cursor = c.pointee.hashNext
        }
    }

    private func grow() {
        let oldCount = table.pointee.mask + 1
        let newCount = oldCount * 2
        let nb = UnsafeMutablePointer<UnsafeMutablePointer<NCHot>?>.allocate(capacity: newCount)
        nb.initialize(repeating: nil, count: newCount)
        let ob = table.pointee.buckets
        for i in 0..<oldCount {
            var cursor = ob[i]
            while let c = cursor {
                cursor = c.pointee.hashNext
                let j = Int(truncatingIfNeeded: c.pointee.hash) & (newCount - 1)
                c.pointee.hashNext = nb[j]
                nb[j] = c
            }
        }
        ob.deinitialize(count: oldCount)
        ob.deallocate()
        table.pointee.buckets = nb
        table.pointee.mask = newCount - 1
    }

    private func negativeListAppend(_ r: NCRecord) {
        guard !r.onNegativeList else { return }
        r.onNegativeList = true
        r.negativeNext = nil
        r.negativePrev = negativeTail
        if let t = negativeTail { t.negativeNext = r } else { negativeHead = r }
        negativeTail = r
        negativeCount.wrappingAdd(1, ordering: .relaxed)
    }

    private func negativeListRemove(_ r: NCRecord) {
        guard r.onNegativeList else { return }
        r.onNegativeList = false
        if let p = r.negativePrev { p.negativeNext = r.negativeNext } else { negativeHead = r.negativeNext }
        if let n = r.negativeNext { n.negativePrev = r.negativePrev } else { negativeTail = r.negativePrev }
        r.negativePrev = nil
        r.negativeNext = nil
        negativeCount.wrappingSubtract(1, ordering: .relaxed)
    }

    private func clearResolution(_ r: NCRecord) {
        switch r.state {
        case .positive: positiveCount.wrappingSubtract(1, ordering: .relaxed)
        case .negative: negativeListRemove(r)
        case .unresolved: break
        }
        r.state = .unresolved
        r.syncHot()
        atomicMemoryFence(ordering: .releasing)
        r.node = nil
        r.flags &= ~(NCRecord.isDirectory | NCRecord.isSymlink | NCRecord.worldSearchable)
    }

    /// Gives a record its file system's answer. In a `publish` section the record is
    /// unresolved or negative, so lock-free readers either fall back (unresolved) or stop at
    /// the state (negative); the node and flags are written before the new state (rule 3).
    private func applyResolution(_ r: NCRecord, node: (any FSNode)?, worldSearchable: Bool) {
        clearResolution(r)
        if let node {
            r.node = node
            switch node.type {
            case .directory: r.flags |= NCRecord.isDirectory
            case .symlink: r.flags |= NCRecord.isSymlink
            default: break
            }
            if worldSearchable { r.flags |= NCRecord.worldSearchable }
            positiveCount.wrappingAdd(1, ordering: .relaxed)
            atomicMemoryFence(ordering: .releasing)
            r.state = .positive
        } else {
            r.state = .negative
            negativeListAppend(r)
        }
        r.syncHot()
    }

    /// Takes a record out of the namespace: out of the hash and its parent's children. Its
    /// descendants go with it. The record keeps its name and parent link, so holders (open
    /// files, a working directory) can still find `..` and report ENOENT for getcwd.
    private func destroyLocked(_ r: NCRecord) {
        var stack: [NCRecord] = [r]
        while let c = stack.popLast() {
            if c.isDestroyed { continue }
            c.flags |= NCRecord.destroyed
            c.syncHot()
            if c.parent != nil { hashRemove(c) }
            if c.state == .negative { negativeListRemove(c) }
            if c.state == .positive { positiveCount.wrappingSubtract(1, ordering: .relaxed) }
            for (_, child) in c.children { stack.append(child) }
            c.children.removeAll()
        }
        if let p = r.parent { p.children[ObjectIdentifier(r)] = nil }
    }

    private func newRecord(parent: NCRecord, name: [UInt8], hash: UInt64) -> NCRecord {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        return name.withUnsafeBytes { NCRecord(id: id, name: $0, hash: hash, parent: parent, mount: parent.mount) }
    }

    private func linkLocked(_ r: NCRecord, under parent: NCRecord) {
        parent.children[ObjectIdentifier(r)] = r
        hashInsert(r)
    }

    // MARK: public-facing internal operations

    /// Makes the root record of a mount.
    func makeMountRoot(for mount: Mount) -> NCRecord {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let r = [UInt8]().withUnsafeBytes { NCRecord(id: id, name: $0, hash: 0, parent: nil, mount: mount) }
        r.state = .positive
        r.node = mount.fileSystem.rootNode
        r.flags = NCRecord.isDirectory | NCRecord.isMountRoot
        if let a = try? mount.fileSystem.attributes(of: mount.fileSystem.rootNode), a.mode & 0o001 != 0 {
            r.flags |= NCRecord.worldSearchable
        }
        r.syncHot()
        positiveCount.wrappingAdd(1, ordering: .relaxed)
        return r
    }

    /// The record for `name` under `parent`, made unresolved if there is none. The result may be
    /// destroyed by the time the caller locks it; callers re-check after locking.
    func lookupOrCreate(_ parent: NCRecord, _ name: [UInt8]) -> NCRecord {
        let h = Self.hash(parentID: parent.id, name)
        let found: NCRecord? = gate.read { () -> NCRecord? in probe(parent, name) }
        if let found {
            switch found.state {
            case .positive: gate.count(.hits)
            case .negative: gate.count(.negativeHits)
            case .unresolved: break
            }
            return found
        }
        let fresh = newRecord(parent: parent, name: name, hash: h)
        // Adding a child publishes it: no reader waits (rule 2).
        let r = gate.publish { () -> NCRecord in
            if let again = probe(parent, name) { return again }
            gate.count(.misses)
            linkLocked(fresh, under: parent)
            return fresh
        }
        growIfNeeded()
        return r
    }

    /// Records the file system's answer for a locked record. An unresolved or negative record
    /// is resolved in a `publish` section (rule 2); only a positive one, whose node readers may
    /// be using, needs a drain. Negative records beyond the bound are reclaimed in batches.
    func setResolved(_ r: NCRecord, node: (any FSNode)?, worldSearchable: Bool) {
        assert(r.isLockedByCaller, "namecache rule 4: a record is resolved under its lock")
        if r.state == .positive {
            gate.write { () in
                guard !r.isDestroyed else { return }
                applyResolution(r, node: node, worldSearchable: worldSearchable)
            }
        } else {
            gate.publish { () in
                guard !r.isDestroyed else { return }
                applyResolution(r, node: node, worldSearchable: worldSearchable)
            }
        }
        if node == nil { trimNegativesIfNeeded() }
    }

    /// Updates the world-searchable flag of a directory record after a mode change (one flag
    /// word: readers see the old or the new one).
    func setWorldSearchable(_ r: NCRecord, _ on: Bool) {
        gate.publish { () in
            if on { r.flags |= NCRecord.worldSearchable } else { r.flags &= ~NCRecord.worldSearchable }
            r.hot.pointee.flags = r.flags
        }
    }

    /// Takes a locked record out of the namespace and puts a fresh record with the same name in
    /// its place: negative when `negative`, else unresolved. Returns the fresh record.
    @discardableResult
    func replace(_ r: NCRecord, negative: Bool) -> NCRecord? {
        assert(r.isLockedByCaller, "namecache rule 4: a record is replaced under its lock")
        guard let parent = r.parent else { return nil }
        let name = r.name
        return gate.write { () -> NCRecord? in
            guard !r.isDestroyed else { return probe(parent, name) }
            destroyLocked(r)
            let fresh = newRecord(parent: parent, name: name, hash: r.hash)
            linkLocked(fresh, under: parent)
            if negative { applyResolution(fresh, node: nil, worldSearchable: false) }
            if needsGrow { grow() }
            trimNegativesLocked()
            return fresh
        }
    }

    /// Moves the locked record `source` to the name of the locked record `target`, which is
    /// destroyed; the source's old name gets a fresh negative record. Keeps the source record,
    /// its node and its children: open files and working directories below it stay valid.
    func move(_ source: NCRecord, over target: NCRecord) {
        assert(source.isLockedByCaller && target.isLockedByCaller, "namecache rule 4: rename holds both records")
        guard let newParent = target.parent, let oldParent = source.parent else { return }
        let newName = target.name
        let oldName = source.name
        gate.write { () in
            destroyLocked(target)
            hashRemove(source)
            oldParent.children[ObjectIdentifier(source)] = nil
            source.setName(newName, hash: target.hash)
            source.parent = newParent
            source.stamp(nil, 0)   // checked again in its new directory
            linkLocked(source, under: newParent)
            let hole = newRecord(parent: oldParent, name: oldName, hash: Self.hash(parentID: oldParent.id, oldName))
            linkLocked(hole, under: oldParent)
            applyResolution(hole, node: nil, worldSearchable: false)
            if needsGrow { grow() }
            trimNegativesLocked()
        }
    }

    /// Swaps the names (and parents) of the locked records `a` and `b` (`RENAME_EXCHANGE`):
    /// both records keep their nodes and children.
    func exchange(_ a: NCRecord, _ b: NCRecord) {
        guard let pa = a.parent, let pb = b.parent, a !== b else { return }
        let nameA = a.name, nameB = b.name
        let hashA = a.hash, hashB = b.hash
        gate.write { () in
            hashRemove(a)
            hashRemove(b)
            pa.children[ObjectIdentifier(a)] = nil
            pb.children[ObjectIdentifier(b)] = nil
            a.setName(nameB, hash: hashB)
            a.parent = pb
            b.setName(nameA, hash: hashA)
            b.parent = pa
            linkLocked(a, under: pb)
            linkLocked(b, under: pa)
        }
    }

    /// Marks `r` as covered by `mount`.
    func setMounted(_ r: NCRecord, _ mount: Mount?) {
        gate.write { () in
            r.mountedHere = mount
            r.syncHot()
        }
    }

    /// Runs `body` inside a write section (for process state that lock-free readers read).
    func exclusive<R>(_ body: () -> R) -> R {
        gate.write { () -> R in body() }
    }

    /// Runs `body` in a `publish` section for a change of single pointers that readers load
    /// once (a working or root directory): `body` hands every object it replaced to `retire`,
    /// which keeps it alive until readers that may still hold it have left.
    func publishReplacing(_ body: (_ retire: (AnyObject) -> Void) -> Void) {
        let crowded = gate.publish { () -> Bool in
            body { gate.retire($0) }
            return gate.retiredCount > 64
        }
        if crowded { gate.write { () in } }
    }

    /// Drops every unheld child record below `r` (used after unmount and for stale host directories).
    func purgeChildren(of r: NCRecord) {
        gate.write { () in
            for (_, c) in r.children { destroyLocked(c) }
        }
    }

    /// Drops the positive entries below `top` (a mount's root), after the file system lost
    /// track of host changes (an inotify queue overflow): each is destroyed with its subtree,
    /// so the next lookup asks the host afresh. Records that must stay are kept, with their
    /// ancestors: held ones (open files, working directories, FUSE node ids), mount points,
    /// and records whose lock someone holds (their operation re-checks them); the kept ones
    /// are checked with the host on their next use, as their directories' words have moved.
    /// Every record dropped is locked (`tryLock`) inside the drained section, so a thread
    /// that locks one later sees it destroyed. Returns the number of positive entries dropped.
    @discardableResult
    func dropPositives(below top: NCRecord) -> Int {
        gate.write { () -> Int in
            var taken: [NCRecord] = []
            var victims: [NCRecord] = []
            /// Whether `r` and its whole subtree can go (then all of it is locked, in
            /// `taken`). A record that stays hands its positive children that can go to
            /// `victims`. (Only positive directories have children.)
            func visit(_ r: NCRecord) -> Bool {
                var free = r.refs.load(ordering: .relaxed) == 0 && r.mountedHere == nil
                var going: [NCRecord] = []
                for (_, c) in r.children {
                    if visit(c) { going.append(c) } else { free = false }
                }
                if free, r.tryLock() {
                    taken.append(r)
                    return true
                }
                for c in going where c.state == .positive { victims.append(c) }
                return false
            }
            for (_, c) in top.children where visit(c) && c.state == .positive { victims.append(c) }
            var dropped = 0
            for v in victims {
                var stack = [v]
                while let x = stack.popLast() {
                    if x.state == .positive { dropped += 1 }
                    for (_, c) in x.children { stack.append(c) }
                }
                destroyLocked(v)
            }
            for t in taken { t.unlock() }
            return dropped
        }
    }

    // MARK: negative bound

    /// The current limit on negative records.
    public var negativeLimit: Int {
        max(minimumNegatives, positiveCount.load(ordering: .relaxed) * negativeRatio)
    }

    /// Negative records allowed above the limit before a drained trim runs, so that a storm of
    /// misses pays one drain per batch instead of one per name.
    var negativeSlack: Int { max(16, negativeLimit / 16) }

    /// Trims the negative list back to its limit once it is a batch over it.
    private func trimNegativesIfNeeded() {
        guard negativeCount.load(ordering: .relaxed) > negativeLimit + negativeSlack else { return }
        gate.write { () in trimNegativesLocked(budget: negativeSlack * 2 + 32) }
    }

    /// Reclaims the oldest negative records beyond the limit. Runs inside a write section; a
    /// record that is held or locked by someone is rotated to the tail instead.
    private func trimNegativesLocked(budget initial: Int = 32) {
        var budget = initial
        while negativeCount.load(ordering: .relaxed) > negativeLimit, budget > 0, let victim = negativeHead {
            budget -= 1
            if victim.refs.load(ordering: .relaxed) == 0, victim.children.isEmpty, victim.tryLock() {
                destroyLocked(victim)
                victim.unlock()
                gate.count(.evictions)
            } else {
                negativeListRemove(victim)
                negativeListAppend(victim)
            }
        }
    }

    // MARK: locking several records

    /// Locks every record in `records` (duplicates allowed) in the one order of rule 4:
    /// ascending record id. Every multi-record operation locks through here, so no two can
    /// wait for each other in a cycle.
    /// In a non-blocking attempt (`VFSAttempt`) a taken record makes it give up: the records
    /// taken so far are released and the error is thrown.
    func lockAll(_ records: [NCRecord]) throws(VFSError) {
        var uniq: [NCRecord] = []
        for r in records where !uniq.contains(where: { $0 === r }) { uniq.append(r) }
        uniq.sort { $0.id < $1.id }
        for (i, r) in uniq.enumerated() {
            do throws(VFSError) { try r.lock() } catch {
                for taken in uniq[..<i] { taken.unlock() }
                throw error
            }
        }
    }

    /// Locks every record in `records` in `mode`, in the order of rule 4 (ascending record
    /// id), parking the calling LWKT thread on contention (`RecordLock.lock(_:) async`). If
    /// the thread is cancelled while it waits, the records taken so far are released and
    /// `CancellationError` is thrown.
    func lockAll(_ records: [NCRecord], _ mode: RecordLock.Mode) async throws {
        var uniq: [NCRecord] = []
        for r in records where !uniq.contains(where: { $0 === r }) { uniq.append(r) }
        uniq.sort { $0.id < $1.id }
        for (i, r) in uniq.enumerated() {
            do { try await r.lock(mode) } catch {
                for taken in uniq[..<i] { taken.unlock(mode) }
                throw error
            }
        }
    }

    /// Unlocks records locked with `lockAll(_:_:)` in `mode`.
    func unlockAll(_ records: [NCRecord], _ mode: RecordLock.Mode) {
        var uniq: [NCRecord] = []
        for r in records where !uniq.contains(where: { $0 === r }) { uniq.append(r) }
        for r in uniq { r.unlock(mode) }
    }

    /// Unlocks records locked with `lockAll`.
    func unlockAll(_ records: [NCRecord]) {
        var uniq: [NCRecord] = []
        for r in records where !uniq.contains(where: { $0 === r }) { uniq.append(r) }
        for r in uniq { r.unlock() }
    }

    // MARK: checking

    /// Checks the topology: every record in the hash is its parent's child, reaches a mount root
    /// through live parents, and is found again by probing. Returns a description of each
    /// problem (empty when the tree is sound).
    public func checkTopology() -> [String] {
        var problems: [String] = []
        gate.write { () in
            var seen = 0
            for i in 0...table.pointee.mask {
                var cursor = table.pointee.buckets[i]
                while let ch = cursor, let owner = ch.pointee.owner {
                    let c = Unmanaged<NCRecord>.fromOpaque(owner).takeUnretainedValue()
                    cursor = ch.pointee.hashNext
                    seen += 1
                    if c.isDestroyed { problems.append("destroyed record \(c.id) in hash") }
                    guard let p = c.parent else { problems.append("record \(c.id) without parent in hash"); break }
                    if p.children[ObjectIdentifier(c)] !== c { problems.append("record \(c.id) missing from parent's children") }
                    if p.isDestroyed { problems.append("record \(c.id) under destroyed parent") }
                    var up: NCRecord? = c
                    var steps = 0
                    while let u = up, u.parent != nil {
                        up = u.parent
                        steps += 1
                        if steps > 100_000 { problems.append("cycle above record \(c.id)"); break }
                    }
                    if let top = up, top.flags & NCRecord.isMountRoot == 0 { problems.append("record \(c.id) does not reach a mount root") }
                    if probe(p, c.name) !== c { problems.append("record \(c.id) not found by probe") }
                    if ch.pointee.parent != p.hot || ch.pointee.flags != c.flags || ch.pointee.state != c.state {
                        problems.append("record \(c.id) hot fields out of date")
                    }
                }
            }
            if seen != recordCount.load(ordering: .relaxed) { problems.append("record count \(recordCount.load(ordering: .relaxed)) but \(seen) in hash") }
        }
        return problems
    }

    /// The number of held records reachable in the hash (for leak checks).
    public func heldRecordCount() -> Int {
        var n = 0
        gate.write { () in
            for i in 0...table.pointee.mask {
                var cursor = table.pointee.buckets[i]
                while let ch = cursor, let owner = ch.pointee.owner {
                    if Unmanaged<NCRecord>.fromOpaque(owner).takeUnretainedValue().refs.load(ordering: .relaxed) != 0 { n += 1 }
                    cursor = ch.pointee.hashNext
                }
            }
        }
        return n
    }
}
