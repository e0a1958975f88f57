import Synchronization

/// A node of `MemFS`. Attributes are kept in atomics behind a sequence counter, so `stat`
/// reads them without a lock; contents (directory entries, file bytes, link target) and
/// attribute updates are guarded by the node's own `lock`.
final class MemFSNode: FSNode, @unchecked Sendable {
    let type: FileType
    let inode: UInt64

    private let seq = Atomic<UInt64>(0)
    private let modeBits: Atomic<UInt32>
    private let uidBits: Atomic<UInt32>
    private let gidBits: Atomic<UInt32>
    private let nlinkBits: Atomic<UInt32>
    private let sizeBits = Atomic<Int64>(0)
    private let atimeS: Atomic<Int64>, atimeN: Atomic<Int64>
    private let mtimeS: Atomic<Int64>, mtimeN: Atomic<Int64>
    private let ctimeS: Atomic<Int64>, ctimeN: Atomic<Int64>

    /// Guards the contents and attribute updates of this node (MemFS lock rules).
    let lock = NamespaceLock()

    // Contents, guarded by `lock`.
    var entries: [[UInt8]: MemFSNode] = [:]
    var data: [UInt8] = []
    var target: [UInt8] = []
    /// A directory that has been removed accepts no new entries.
    var removed = false
    /// Extended attributes by name.
    var extendedAttributes: [[UInt8]: [UInt8]] = [:]

    init(type: FileType, inode: UInt64, mode: UInt32, uid: UInt32, gid: UInt32, now: Timespec) {
        self.type = type
        self.inode = inode
        modeBits = Atomic(mode & 0o7777)
        uidBits = Atomic(uid)
        gidBits = Atomic(gid)
        nlinkBits = Atomic(type == .directory ? 2 : 1)
        atimeS = Atomic(now.seconds); atimeN = Atomic(now.nanoseconds)
        mtimeS = Atomic(now.seconds); mtimeN = Atomic(now.nanoseconds)
        ctimeS = Atomic(now.seconds); ctimeN = Atomic(now.nanoseconds)
    }

    /// Reads a consistent set of attributes without locking.
    @inline(__always)
    func attributes(device: UInt64) -> FileAttributes {
        while true {
            let s1 = seq.load(ordering: .acquiring)
            if s1 & 1 != 0 { continue }
            let a = FileAttributes(
                type: type, mode: modeBits.load(ordering: .relaxed), uid: uidBits.load(ordering: .relaxed),
                gid: gidBits.load(ordering: .relaxed), nlink: nlinkBits.load(ordering: .relaxed),
                size: sizeBits.load(ordering: .relaxed), device: device, inode: inode,
                atime: Timespec(seconds: atimeS.load(ordering: .relaxed), nanoseconds: atimeN.load(ordering: .relaxed)),
                mtime: Timespec(seconds: mtimeS.load(ordering: .relaxed), nanoseconds: mtimeN.load(ordering: .relaxed)),
                ctime: Timespec(seconds: ctimeS.load(ordering: .relaxed), nanoseconds: ctimeN.load(ordering: .relaxed)))
            atomicMemoryFenceAcquire()
            if seq.load(ordering: .relaxed) == s1 { return a }
        }
    }

    /// Changes attributes; the caller holds the file system's lock (one writer at a time).
    func update(mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil, nlinkDelta: Int32 = 0,
                size: Int64? = nil, atime: Timespec? = nil, mtime: Timespec? = nil, ctime: Timespec? = nil) {
        seq.wrappingAdd(1, ordering: .relaxed)
        atomicMemoryFenceRelease()
        if let mode { modeBits.store(mode & 0o7777, ordering: .relaxed) }
        if let uid { uidBits.store(uid, ordering: .relaxed) }
        if let gid { gidBits.store(gid, ordering: .relaxed) }
        if nlinkDelta != 0 {
            let n = Int64(nlinkBits.load(ordering: .relaxed)) + Int64(nlinkDelta)
            nlinkBits.store(UInt32(clamping: max(n, 0)), ordering: .relaxed)
        }
        if let size { sizeBits.store(size, ordering: .relaxed) }
        if let t = atime { atimeS.store(t.seconds, ordering: .relaxed); atimeN.store(t.nanoseconds, ordering: .relaxed) }
        if let t = mtime { mtimeS.store(t.seconds, ordering: .relaxed); mtimeN.store(t.nanoseconds, ordering: .relaxed) }
        if let t = ctime { ctimeS.store(t.seconds, ordering: .relaxed); ctimeN.store(t.nanoseconds, ordering: .relaxed) }
        seq.wrappingAdd(1, ordering: .releasing)
    }

    var nlink: UInt32 { nlinkBits.load(ordering: .relaxed) }
}

@inline(__always) func atomicMemoryFenceAcquire() { atomicMemoryFence(ordering: .acquiring) }
@inline(__always) func atomicMemoryFenceRelease() { atomicMemoryFence(ordering: .releasing) }
