import Glibc
import Synchronization

/// One record of the namecache: a name in a directory, which is either *unresolved* (the file
/// system has not been asked yet), *positive* (it names a node) or *negative* (the name does
/// not exist).
///
/// Records form one connected tree: every record but a mount's root has its parent, and the
/// tree continues through mount points (`Mount.covered`). The namespace is locked through
/// records, not nodes: a create, remove or rename of a name holds that name's record lock,
/// even while the record is negative.
///
/// Fields that describe the topology (name, parent, state, node, flags, hash links) change
/// only inside a namecache write section; lock-free readers read them inside read sections.
public final class NCRecord: @unchecked Sendable {
    /// Resolution state.
    public enum State: UInt8, Sendable { case unresolved, positive, negative }

    /// What a cached lookup reads, mirrored by `syncHot()`.
    let hot: UnsafeMutablePointer<NCHot>
    var hash: UInt64
    var nameBytes: UnsafeMutablePointer<UInt8>
    var nameLength: Int
    var nameCapacity: Int
    var state: State
    var flags: UInt32
    unowned(unsafe) let mount: Mount

    /// Unique, never reused; orders lock acquisition.
    let id: UInt64

    // Ownership and slow-path fields.
    var parent: NCRecord?
    var node: (any FSNode)?
    var mountedHere: Mount?
    var children: [ObjectIdentifier: NCRecord] = [:]
    unowned(unsafe) var negativePrev: NCRecord?
    unowned(unsafe) var negativeNext: NCRecord?
    var onNegativeList = false

    /// Holds by open files, working directories and roots; the namecache never evicts a held record.
    let refs = Atomic<Int>(0)
    /// The record's lock: a shared/exclusive LWKT sleep lock (namecache rule 4, `RecordLock`).
    let recordLock = RecordLock()

    static let isDirectory: UInt32 = 1 << 0
    static let isSymlink: UInt32 = 1 << 1
    static let worldSearchable: UInt32 = 1 << 2
    static let destroyed: UInt32 = 1 << 3
    static let isMountRoot: UInt32 = 1 << 4

    init(id: UInt64, name: UnsafeRawBufferPointer, hash: UInt64, parent: NCRecord?, mount: Mount) {
        self.id = id
        self.hash = hash
        self.nameCapacity = max(name.count, 16)
        self.nameBytes = .allocate(capacity: nameCapacity)
        self.nameLength = name.count
        if let base = name.baseAddress, name.count > 0 {
            nameBytes.update(from: base.assumingMemoryBound(to: UInt8.self), count: name.count)
        }
        self.state = .unresolved
        self.flags = 0
        self.parent = parent
        self.mount = mount
        hot = .allocate(capacity: 1)
        hot.initialize(to: NCHot(hashNext: nil, hash: hash, parent: parent?.hot, name: nameBytes, nameLength: nameLength,
                                 id: id, flags: 0, state: .unresolved, nodeType: .other, revalidates: mount.revalidates,
                                 mountedRoot: nil, device: mount.deviceID, memNode: nil, hostNode: nil, validity: nil, validStamp: 0,
                                 owner: nil))
        hot.pointee.owner = Unmanaged.passUnretained(self).toOpaque()
    }

    /// Copies the fields a cached lookup reads into `hot`. Called inside namecache writer
    /// sections (or before the record is published). The state goes last, after a release
    /// fence: a lock-free reader that sees the new state sees the fields that go with it.
    func syncHot() {
        hot.pointee.hash = hash
        hot.pointee.parent = parent?.hot
        hot.pointee.name = nameBytes
        hot.pointee.nameLength = nameLength
        hot.pointee.flags = flags
        hot.pointee.nodeType = node?.type ?? .other
        hot.pointee.mountedRoot = mountedHere?.root.hot
        if let n = node, ObjectIdentifier(type(of: n)) == ObjectIdentifier(MemFSNode.self) {
            hot.pointee.memNode = Unmanaged.passUnretained(n as AnyObject).toOpaque()
        } else {
            hot.pointee.memNode = nil
        }
        if let n = node, ObjectIdentifier(type(of: n)) == ObjectIdentifier(HostFSNode.self) {
            hot.pointee.hostNode = Unmanaged.passUnretained(n as AnyObject).toOpaque()
        } else {
            hot.pointee.hostNode = nil
        }
        atomicMemoryFence(ordering: .releasing)
        hot.pointee.state = state
    }

    deinit {
        hot.deinitialize(count: 1)
        hot.deallocate()
        nameBytes.deallocate()
    }

    /// The record's name as bytes.
    public var name: [UInt8] { Array(UnsafeBufferPointer(start: nameBytes, count: nameLength)) }

    /// Whether the record has been removed from the namespace (unlinked, renamed over, evicted).
    public var isDestroyed: Bool { flags & Self.destroyed != 0 }
    var isDirectory: Bool { flags & Self.isDirectory != 0 }
    var isSymlink: Bool { flags & Self.isSymlink != 0 }

    /// Compares the record's name with `bytes`.
    @inline(__always)
    func nameEquals(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        count == nameLength && memcmp(nameBytes, bytes, count) == 0
    }

    func nameEquals(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else { return nameLength == 0 }
            return nameEquals(base, b.count)
        }
    }

    func setName(_ bytes: [UInt8], hash: UInt64) {
        if bytes.count > nameCapacity {
            nameBytes.deallocate()
            nameCapacity = bytes.count
            nameBytes = .allocate(capacity: nameCapacity)
        }
        bytes.withUnsafeBufferPointer { b in
            if let base = b.baseAddress { nameBytes.update(from: base, count: b.count) }
        }
        nameLength = bytes.count
        self.hash = hash
    }

    // MARK: validity (mounts that revalidate)

    /// Whether the name was checked with the host since the last change in its directory
    /// (HostFS with inotify): then it is used without asking the file system.
    var isCurrent: Bool {
        let stamp = hot.pointee.validStamp
        guard stamp != 0, let word = hot.pointee.validity else { return false }
        return word.pointee.load(ordering: .acquiring) == stamp
    }

    /// Records that the name was checked when `word` held `stamp` (0: not stampable). The
    /// caller holds the record lock, the only writer of these two fields.
    func stamp(_ word: UnsafeMutablePointer<Atomic<UInt64>>?, _ stamp: UInt64) {
        hot.pointee.validStamp = 0
        atomicMemoryFence(ordering: .releasing)
        hot.pointee.validity = word
        atomicMemoryFence(ordering: .releasing)
        hot.pointee.validStamp = word == nil ? 0 : stamp
    }

    // MARK: record lock

    /// Takes the record's lock exclusively without suspending (threads that are not LWKT
    /// CPUs; on a CPU see rule 4). In a non-blocking attempt (`VFSAttempt`) a taken lock
    /// makes it give up instead. LWKT threads use `lock(_:) async`, which parks.
    func lock() throws(VFSError) { try recordLock.lockExclusive() }
    /// Takes the record's lock in `mode`, parking the calling LWKT thread on contention.
    func lock(_ mode: RecordLock.Mode) async throws { try await recordLock.lock(mode) }
    /// Takes the lock exclusively if it is free.
    func tryLock() -> Bool { recordLock.tryLock(.exclusive) }
    /// Releases an exclusive hold (the caller must hold it).
    func unlock() { recordLock.unlock(.exclusive) }
    /// Releases a hold taken in `mode`.
    func unlock(_ mode: RecordLock.Mode) { recordLock.unlock(mode) }
    /// Whether the calling thread holds the lock exclusively (for assertions).
    var isLockedByCaller: Bool { recordLock.isHeldForCaller }

    // MARK: holds

    /// Adds a hold (an open file, a working directory): the record will not be evicted and its
    /// mount cannot be unmounted.
    func hold() {
        refs.wrappingAdd(1, ordering: .relaxed)
        mount.holds.wrappingAdd(1, ordering: .relaxed)
    }

    /// Releases a hold taken with `hold()`.
    func drop() {
        refs.wrappingSubtract(1, ordering: .relaxed)
        mount.holds.wrappingSubtract(1, ordering: .relaxed)
    }
}
