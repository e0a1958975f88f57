import Synchronization
import VFS

/// The kernel's node ids and the namecache records they stand for.
///
/// Rules: a node id is the object's inode number (so every name of a hard-linked file is one
/// kernel inode), except that the mount's root is always 1 and an object whose inode number
/// is 1 gets `displacedOne`. An entry holds its record (`VFSProcess.hold`) and counts the
/// kernel's lookups of it: each reply that hands the kernel a node id adds one, FORGET
/// subtracts what the kernel says, and at zero the entry goes. The table is split into
/// shards by node id, each behind its own short lock (a dictionary probe), so CPUs serving
/// different objects do not meet.
final class FUSENodeTable: @unchecked Sendable {
    /// The node id given to a non-root object whose inode number is 1.
    static let displacedOne: UInt64 = 0x8000_0000_0000_0001
    private static let shardCount = 64

    private final class Entry: @unchecked Sendable {
        var record: NCRecord
        var lookups: UInt64
        init(record: NCRecord, lookups: UInt64) { self.record = record; self.lookups = lookups }
    }

    private final class Shard: @unchecked Sendable {
        let table = Mutex<[UInt64: Entry]>([:])
        func withLock<R>(_ body: (inout [UInt64: Entry]) -> R) -> R { table.withLock { body(&$0) } }
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

    /// The node id the kernel gets for an object with inode number `inode`.
    func nodeID(forInode inode: UInt64) -> UInt64 {
        if inode == rootInode { return 1 }
        if inode == 1 { return Self.displacedOne }
        return inode
    }

    @inline(__always)
    private func shard(_ id: UInt64) -> Int { Int(truncatingIfNeeded: (id &* 0x9E37_79B9_7F4A_7C15) >> 58) }

    /// Records that the kernel now knows `record` (with attributes `attributes`) by one more
    /// lookup; returns its node id.
    func remember(_ record: NCRecord, attributes: FileAttributes) -> UInt64 {
        let id = nodeID(forInode: attributes.inode)
        if id == 1 { return 1 }
        var replaced: NCRecord?
        let added: Bool = shards[shard(id)].withLock { t in
            if let e = t[id] {
                e.lookups += 1
                if e.record !== record {
                    // Another name of the object, or a fresh record after the old one went stale.
                    process.hold(record)
                    replaced = e.record
                    e.record = record
                }
                return false
            }
            process.hold(record)
            t[id] = Entry(record: record, lookups: 1)
            return true
        }
        if let old = replaced { process.release(old) }
        if added { liveCount.wrappingAdd(1, ordering: .relaxed) }
        return id
    }

    /// The record behind a node id, or `nil` for an id the kernel should not have.
    func record(_ id: UInt64) -> NCRecord? {
        if id == 1 { return root }
        return shards[shard(id)].withLock { $0[id]?.record }
    }

    /// The kernel dropped `count` lookups of `id`.
    func forget(_ id: UInt64, count: UInt64) {
        if id == 1 { return }
        let gone: NCRecord? = shards[shard(id)].withLock { t in
            guard let e = t[id] else { return nil }
            if e.lookups > count {
                e.lookups -= count
                return nil
            }
            t[id] = nil
            return e.record
        }
        if let r = gone {
            process.release(r)
            liveCount.wrappingSubtract(1, ordering: .relaxed)
        }
    }

    /// Node ids the kernel holds now (without the root).
    var count: Int { liveCount.load(ordering: .relaxed) }

    /// Forgets everything (the connection is gone).
    func clear() {
        for s in shards {
            let all = s.withLock { t -> [Entry] in
                let v = Array(t.values)
                t.removeAll()
                return v
            }
            for e in all { process.release(e.record) }
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
