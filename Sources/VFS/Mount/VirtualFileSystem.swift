import Glibc
import Synchronization

/// A namespace: a namecache over a root file system and the file systems mounted in it.
/// Processes (`VFSProcess`) look paths up and operate on files through it.
public final class VirtualFileSystem: @unchecked Sendable {
    /// The namecache shared by every mount of this namespace.
    public let namecache: Namecache
    /// The mount at `/`.
    public let rootMount: Mount
    private let mounts = Mutex<[Mount]>([])
    /// The pool that runs host calls which can block, off the LWKT CPUs.
    public let hostIO: HostIOPool
    /// Mounted file systems whose calls can block (`FileSystem.callsMayBlock`).
    let blockingMounts = Atomic<Int>(0)
    /// Strict HostFS mounts (path operations settle their inotify events first).
    let strictCount = Atomic<Int>(0)
    private let strictLock = NamespaceLock()
    private var strictHosts: [HostFS] = []

    /// Creates a namespace whose `/` is `rootFileSystem`; host calls that can block run on
    /// `hostIO` (by default the shared pool, sized by `HostIOPool.defaultThreads`).
    public init(rootFileSystem: any FileSystem, namecache: Namecache = Namecache(), hostIO: HostIOPool = .shared) {
        self.namecache = namecache
        self.hostIO = hostIO
        if rootFileSystem.callsMayBlock { blockingMounts.wrappingAdd(1, ordering: .relaxed) }
        let m = Mount(fileSystem: rootFileSystem)
        let r = namecache.makeMountRoot(for: m)
        m.root = r
        rootMount = m
        mounts.withLock { $0.append(m) }
        Self.dropOnOverflow(m, namecache)
        if let h = m.strictHost { addStrict(h) }
    }

    /// The root record of the namespace.
    public var rootRecord: NCRecord { rootMount.root }

    /// Drops every cached name that nothing holds: the positive entries below the root, with
    /// their file-system nodes (on HostFS each directory node holds a host descriptor). For a program that is
    /// done with this namespace or wants its host descriptors back; later lookups ask the file
    /// systems afresh. Returns the number of positive entries dropped.
    @discardableResult
    public func releaseCachedNames() -> Int {
        namecache.dropPositives(below: rootRecord)
    }

    /// A new process context at `/` with the given credentials.
    public func makeProcess(credentials: Credentials = .root) -> VFSProcess {
        VFSProcess(vfs: self, credentials: credentials)
    }

    /// Mounts `fileSystem` on the directory `path` (resolved by `process`). Only the superuser may mount.
    public func mount(_ fileSystem: any FileSystem, at path: String, by process: VFSProcess) throws(VFSError) {
        guard process.credentials.uid == 0 else { throw .perm }
        let res = try process.nlookup(Array(path.utf8), follow: true)
        let covered = res.record
        guard covered.isDirectory else { throw .notdir }
        try covered.lock()
        defer { covered.unlock() }
        guard !covered.isDestroyed, covered.mountedHere == nil else { throw .busy }
        let m = Mount(fileSystem: fileSystem)
        let r = namecache.makeMountRoot(for: m)
        m.root = r
        m.covered = covered
        covered.hold()
        namecache.setMounted(covered, m)
        Self.dropOnOverflow(m, namecache)
        mounts.withLock { $0.append(m) }
        if fileSystem.callsMayBlock { blockingMounts.wrappingAdd(1, ordering: .relaxed) }
        if let h = m.strictHost { addStrict(h) }
    }

    /// A HostFS whose inotify queue overflows has lost events: the namecache then drops the
    /// positive entries below the mount (HostFSWatcher rule 2).
    private static func dropOnOverflow(_ m: Mount, _ namecache: Namecache) {
        guard let h = m.fileSystem as? HostFS, let w = h.watcher else { return }
        w.onOverflow { [weak m, weak namecache] in
            guard let m, !m.unmounted, let root = m.root, let namecache else { return }
            namecache.dropPositives(below: root)
        }
    }

    private func addStrict(_ h: HostFS) {
        strictLock.withLock { () in strictHosts.append(h) }
        strictCount.wrappingAdd(1, ordering: .releasing)
    }

    /// Applies the host changes reported so far on every strict HostFS mount.
    @inline(__always)
    func settleStrictMounts() {
        guard strictCount.load(ordering: .acquiring) != 0 else { return }
        strictLock.withLock { () in for h in strictHosts { h.settle() } }
    }

    /// Unmounts the file system mounted at `path`: EBUSY while a file is open in it, a process
    /// has its working directory or root in it, or another file system is mounted inside it.
    public func unmount(_ path: String, by process: VFSProcess) throws(VFSError) {
        guard process.credentials.uid == 0 else { throw .perm }
        let res = try process.nlookup(Array(path.utf8), follow: true)
        let root = res.record
        guard root.flags & NCRecord.isMountRoot != 0, let covered = root.mount.covered else { throw .inval }
        let m = root.mount
        try covered.lock()
        defer { covered.unlock() }
        guard covered.mountedHere === m else { throw .inval }
        let nested = mounts.withLock { list in list.contains { $0.covered?.mount === m } }
        if nested || m.holds.load(ordering: .relaxed) != 0 { throw .busy }
        namecache.setMounted(covered, nil)
        namecache.purgeChildren(of: root)
        covered.drop()
        m.unmounted = true
        mounts.withLock { list in list.removeAll { $0 === m } }
        if m.fileSystem.callsMayBlock { blockingMounts.wrappingSubtract(1, ordering: .relaxed) }
        if let h = m.strictHost {
            strictLock.withLock { () in strictHosts.removeAll { $0 === h } }
            strictCount.wrappingSubtract(1, ordering: .releasing)
        }
    }

    /// Whether some mounted file system's calls can block the calling thread.
    public var mayBlock: Bool { blockingMounts.load(ordering: .relaxed) != 0 }

    /// The mounts of this namespace, root first.
    public var mountList: [Mount] { mounts.withLock { $0 } }
}
