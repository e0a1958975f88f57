import Synchronization
import VFS

/// The kernel's node ids and the namecache records they stand for.
///
/// Rules: a node id is the address of an `Entry` (the mount's root is always 1), so serving a
/// request for a node id takes no lock and looks nothing up: the kernel never sends a node id
/// after the FORGET that drops its last lookup, and it sends that FORGET only once every
/// request naming it has been answered. Entries are found by inode number when a reply hands
/// one to the kernel (LOOKUP, CREATE, MKDIR, LINK, READDIRPLUS, ...), so every name of a
/// hard-linked file is one kernel inode; that map is split into shards by inode number, each
/// behind a short lock taken only by those replies and by FORGET. An entry holds its record
/// (`VFSProcess.hold`) and counts the kernel's lookups; at zero it goes.
final class FUSENodeTable: @unchecked Sendable {
    private static let shardCount = 64

    final class Entry: @unchecked Sendable {
        let inode: UInt64
        /// The record the entry was made for; never changes, so readers need no lock.
        let primary: NCRecord
        /// A live record for the same object, set (under the shard lock) once `primary` has
        /// been destroyed, e.g. a host directory's record found stale and replaced.
        var replacement: NCRecord?
        /// Kernel lookups; guarded by the shard lock.
        var lookups: UInt64
        init(inode: UInt64, record: NCRecord) { self.inode = inode; self.primary = record; self.lookups = 1 }

        var nodeID: UInt64 { UInt64(UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())) }
    }

    private final class Shard: @unchecked Sendable {
        let table = Mutex<[UInt64: Entry]>([:])
    }

    private let shards: [Shard]
    private let process: VFSProcess
    let root: NCRecord
    let rootInode: UInt64
    private let liveCount = Atomic<Int>(0)

    init(process: VFSProcess, root: NCRecord, rootInode: UInt64) {
        self.process = process
        self.root = root
        self.rootInode = rootInode
        shards = (0..<Self.shardCount).map { _ in Shard() }
        process.hold(root)
    }

    deinit {
        clear()
        process.release(root)
    }

    @inline(__always)
    private func shard(_ inode: UInt64) -> Shard {
        shards[Int(truncatingIfNeeded: (inode &* 0x9E37_79B9_7F4A_7C15) >> 58)]
    }

    /// Records that the kernel now knows `record` (with attributes `attributes`) by one more
    /// lookup; returns its node id.
    func remember(_ record: NCRecord, attributes: FileAttributes) -> UInt64 {
        if attributes.inode == rootInode { return 1 }
        var held: NCRecord? = nil
        let (id, added): (UInt64, Bool) = shard(attributes.inode).table.withLock { t in
            if let e = t[attributes.inode] {
                e.lookups += 1
                if e.primary.isDestroyed, e.replacement !== record, !record.isDestroyed {
                    held = record
                    let old = e.replacement
                    e.replacement = record
                    if let old { process.release(old) }
                }
                return (e.nodeID, false)
            }
            let e = Entry(inode: attributes.inode, record: record)
            held = record
            t[attributes.inode] = e
            return (e.nodeID, true)
        }
        if let r = held { process.hold(r) }
        if added { liveCount.wrappingAdd(1, ordering: .relaxed) }
        return id
    }

    /// The record behind a node id, or `nil` for an id the kernel should not have. Lock-free
    /// unless the entry's first record has been destroyed.
    @inline(__always)
    func record(_ id: UInt64) -> NCRecord? {
        if id == 1 { return root }
        guard let e = Self.entry(id) else { return nil }
        if !e.primary.isDestroyed { return e.primary }
        return shard(e.inode).table.withLock { _ in e.replacement } ?? e.primary
    }

    private static func entry(_ id: UInt64) -> Entry? {
        guard let p = UnsafeRawPointer(bitPattern: UInt(truncatingIfNeeded: id)) else { return nil }
        return Unmanaged<Entry>.fromOpaque(p).takeUnretainedValue()
    }

    /// The kernel dropped `count` lookups of `id`.
    func forget(_ id: UInt64, count: UInt64) {
        if id == 1 { return }
        guard let e = Self.entry(id) else { return }
        let gone: Bool = shard(e.inode).table.withLock { t in
            if e.lookups > count {
                e.lookups -= count
                return false
            }
            if t[e.inode] === e { t[e.inode] = nil }
            return true
        }
        if gone {
            process.release(e.primary)
            if let r = e.replacement { process.release(r) }
            liveCount.wrappingSubtract(1, ordering: .relaxed)
        }
    }

    /// Node ids the kernel holds now (without the root).
    var count: Int { liveCount.load(ordering: .relaxed) }

    /// Forgets everything (the connection is gone).
    func clear() {
        for s in shards {
            let all = s.table.withLock { t -> [Entry] in
                let v = Array(t.values)
                t.removeAll()
                return v
            }
            for e in all {
                process.release(e.primary)
                if let r = e.replacement { process.release(r) }
            }
            liveCount.wrappingSubtract(all.count, ordering: .relaxed)
        }
    }
}

/// A file or directory the kernel opened: `fh` in the protocol is this object's address,
/// retained from OPEN to RELEASE.
final class FUSEOpenFile: @unchecked Sendable {
    let file: any FSOpenFile
    let record: NCRecord
    let append: Bool
    let isDirectory: Bool
    /// A directory's entries, read at the first READDIR from offset 0 (the kernel serialises
    /// READDIR on one open directory).
    var listing: [DirectoryEntry] = []

    init(file: any FSOpenFile, record: NCRecord, append: Bool, isDirectory: Bool) {
        self.file = file
        self.record = record
        self.append = append
        self.isDirectory = isDirectory
    }

    /// The handle value sent to the kernel; retains the object until `release(handle:)`.
    func retainedHandle() -> UInt64 {
        UInt64(UInt(bitPattern: Unmanaged.passRetained(self).toOpaque()))
    }

    /// The object behind a handle (not consuming the retain).
    static func from(handle: UInt64) -> FUSEOpenFile? {
        guard let p = UnsafeRawPointer(bitPattern: UInt(truncatingIfNeeded: handle)) else { return nil }
        return Unmanaged<FUSEOpenFile>.fromOpaque(p).takeUnretainedValue()
    }

    /// Consumes the retain of `handle` and returns the object.
    static func release(handle: UInt64) -> FUSEOpenFile? {
        guard let p = UnsafeRawPointer(bitPattern: UInt(truncatingIfNeeded: handle)) else { return nil }
        return Unmanaged<FUSEOpenFile>.fromOpaque(p).takeRetainedValue()
    }
}
