import Glibc
import Synchronization

/// A pass-through file system over a host directory, built on the `openat` family. Every
/// directory node holds an `O_PATH` descriptor and names are always resolved one component
/// at a time relative to one (never through a host path), so nothing escapes the root. Other
/// nodes hold no descriptor: they are reached by their directory's descriptor and their name
/// and checked by device, inode and type on every use (`HostFSNode`, rules 1–4), so the
/// descriptors HostFS holds grow with the number of directories, not of cached names.
///
/// The host directory may change behind the VFS (`changesBehindCache` is true). Every
/// directory HostFS hands out is watched with inotify (`HostFSWatcher`): a cached name is
/// used without a host call for as long as its directory's generation word has not moved
/// since the name was last checked, so cached lookups take the namecache's lock-free walk.
/// After a change, or where inotify cannot watch, the VFS asks `revalidate`, which compares
/// the host's current answer (`fstatat`, not following links) with the cached one by device
/// and inode. A renamed or removed host file is never served under its old name once the
/// kernel has reported the change.
///
/// Every method that enters the host kernel first calls `VFSAttempt.hostCall()`, so that a
/// non-blocking attempt on an LWKT CPU gives up there and the operation goes to the host-I/O
/// pool; answers from cached attributes make no host call and stay on the CPU.
///
/// Objects are created with exactly the requested mode (the host umask is undone) and, when
/// the host process may, owned by the caller's uid and gid.
public final class HostFS: FileSystem, @unchecked Sendable {
    private static let deviceCounter = Atomic<UInt64>(0x4846_0000)
    private let root: HostFSNode
    public let deviceID: UInt64
    public var rootNode: any FSNode { root }
    public var changesBehindCache: Bool { true }
    /// Host system calls can wait for a disk, a network file system or a FIFO's peer.
    public var callsMayBlock: Bool { true }
    private let hostIsRoot = geteuid() == 0
    let watcher: HostFSWatcher?
    /// Odd while the VFS moves names on this file system (a rename or an exchange and the
    /// nodes' new places, `FileSystem.moving`); bumped again when it is done. A lookup by a
    /// node's place that finds the wrong object reads it to tell a move in flight (look
    /// again) from a name that really lost the node (`ESTALE`).
    let moves = Atomic<UInt64>(0)
    /// Every path operation first applies the changes the kernel has reported so far (one
    /// non-blocking `read` of the inotify descriptor), so a change completed before the
    /// operation began is always seen by it.
    public let strict: Bool

    /// Opens `hostPath` (a directory) as the root of the file system. With `watch` (the
    /// default) host changes are learnt from inotify: a change is seen once the watcher has
    /// read it (microseconds), or, with `strict`, by every operation that starts after the
    /// change. Without `watch` every cached name is checked with the host on each use.
    ///
    /// Where inotify cannot watch a directory (its limits, a file system without inotify), a
    /// cached name in it is trusted for `unwatchedValidity` (nil: checked on every use).
    public init(hostPath: String, watch: Bool = true, strict: Bool = false,
                unwatchedValidity: Duration? = .milliseconds(200)) throws(VFSError) {
        self.strict = strict && watch
        let fd = Glibc.open(hostPath, O_PATH | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw .current }
        var st = stat()
        if fstat(fd, &st) != 0 { let e = VFSError.current; Glibc.close(fd); throw e }
        watcher = watch ? HostFSWatcher(validity: unwatchedValidity) : nil
        root = HostFSNode(directoryFD: fd, st: st, watcher: watcher, parent: nil)
        deviceID = Self.deviceCounter.wrappingAdd(1, ordering: .relaxed).newValue
    }

    deinit { watcher?.stop() }

    /// Counters of the inotify watcher: events read, queue overflows, watches refused.
    public var watchStatistics: (events: Int, overflows: Int, refused: Int) {
        guard let w = watcher else { return (0, 0, 0) }
        return (w.events.load(ordering: .relaxed), w.overflows.load(ordering: .relaxed), w.refusals.load(ordering: .relaxed))
    }

    /// Applies the host changes inotify has reported so far before returning (the reader
    /// thread does this continuously; tests call it to wait for a change they just made).
    public func settle() { watcher?.settle() }

    public func validityWord(for directory: any FSNode) -> UnsafeMutablePointer<Atomic<UInt64>>? {
        guard let d = directory as? HostFSNode else { return nil }
        if d.generation.pointee.load(ordering: .acquiring) != 0 { return d.generation }
        // Unwatched (rule 1 of HostFSWatcher): time-bounded validity, if any.
        guard let w = watcher, w.validity != nil else { return nil }
        return w.clock
    }

    static func fileType(_ mode: mode_t) -> FileType {
        switch mode & S_IFMT {
        case S_IFDIR: .directory
        case S_IFREG: .regular
        case S_IFLNK: .symlink
        default: .other
        }
    }

    static func attributes(_ st: stat, device: UInt64) -> FileAttributes {
        FileAttributes(
            type: fileType(st.st_mode), mode: UInt32(st.st_mode) & 0o7777, uid: st.st_uid, gid: st.st_gid,
            nlink: UInt32(st.st_nlink), size: Int64(st.st_size), device: device, inode: UInt64(st.st_ino),
            atime: Timespec(seconds: Int64(st.st_atim.tv_sec), nanoseconds: Int64(st.st_atim.tv_nsec)),
            mtime: Timespec(seconds: Int64(st.st_mtim.tv_sec), nanoseconds: Int64(st.st_mtim.tv_nsec)),
            ctime: Timespec(seconds: Int64(st.st_ctim.tv_sec), nanoseconds: Int64(st.st_ctim.tv_nsec)))
    }

    private func host(_ node: any FSNode) throws(VFSError) -> HostFSNode {
        guard let n = node as? HostFSNode else { throw .xdev }
        return n
    }

    private func cName(_ name: [UInt8]) -> [CChar] {
        name.map { CChar(bitPattern: $0) } + [0]
    }

    /// `name` as a C string, refused unless it is one component that stays in its directory
    /// (not empty, no `/`, not `.` or `..`): HostFSNode rule 2.
    private func component(_ name: [UInt8]) throws(VFSError) -> [CChar] {
        if name.isEmpty || name.contains(UInt8(ascii: "/")) || name == [0x2E] || name == [0x2E, 0x2E] || name.contains(0) {
            throw .inval
        }
        return cName(name)
    }

    /// The node for `name` in `dir`, or nil when the name does not exist. A directory gets
    /// its `O_PATH` descriptor; anything else only its place and identity (one `fstatat`).
    private func openNode(_ name: [UInt8], in dir: HostFSNode) throws(VFSError) -> HostFSNode? {
        let c = try component(name)
        var st = stat()
        if fstatat(dir.fd, c, &st, AT_SYMLINK_NOFOLLOW) != 0 {
            let e = VFSError.current
            if e == .noent { return nil }
            throw e
        }
        if Self.fileType(st.st_mode) != .directory { return HostFSNode(name: name, in: dir, st: st) }
        let fd = openat(dir.fd, c, O_PATH | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0 {
            let e = VFSError.current
            if e == .noent { return nil }
            throw e
        }
        // The name may have changed between the two calls: describe what was opened.
        if fstat(fd, &st) != 0 { let e = VFSError.current; Glibc.close(fd); throw e }
        if Self.fileType(st.st_mode) != .directory {
            Glibc.close(fd)
            return HostFSNode(name: name, in: dir, st: st)
        }
        return HostFSNode(directoryFD: fd, st: st, watcher: watcher, parent: dir)
    }

    /// Opens a checked `O_PATH` descriptor on a non-directory node's object from its place
    /// (HostFSNode rule 2); the caller closes it. ESTALE when the name no longer leads there.
    private func openPlace(_ n: HostFSNode) throws(VFSError) -> Int32 {
        guard let (d, name) = n.currentPlace else { throw .stale }
        let fd = openat(d.fd, try component(name), O_PATH | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0 {
            let e = VFSError.current
            throw e == .noent || e == .notdir ? .stale : e
        }
        var st = stat()
        if fstat(fd, &st) != 0 { let e = VFSError.current; Glibc.close(fd); throw e }
        guard n.isSameObject(st) else { Glibc.close(fd); throw .stale }
        return fd
    }

    /// Runs `body` with a descriptor on `n`'s object: a directory's own, a pinned one, or a
    /// checked temporary one opened from the node's place (closed afterwards).
    private func withHandle<R>(_ n: HostFSNode, _ body: (Int32) throws(VFSError) -> R) throws(VFSError) -> R {
        if n.fd >= 0 { return try body(n.fd) }
        var p = n.pinnedDescriptor
        if p >= 0 { return try body(p) }
        let fd: Int32
        do { fd = try openPlace(n) } catch {
            // Pinned meanwhile (an unlink): use that.
            p = n.pinnedDescriptor
            if p >= 0 { return try body(p) }
            throw error
        }
        defer { Glibc.close(fd) }
        return try body(fd)
    }

    /// The host's `stat` of `n`'s object, checked to be that object (HostFSNode rule 2).
    static func hostStat(_ n: HostFSNode) throws(VFSError) -> stat {
        var st = stat()
        if n.fd >= 0 {
            if fstat(n.fd, &st) != 0 { throw .current }
            return st
        }
        if let (d, name) = n.currentPlace, !name.isEmpty, !name.contains(UInt8(ascii: "/")) {
            if fstatat(d.fd, name.map { CChar(bitPattern: $0) } + [0], &st, AT_SYMLINK_NOFOLLOW) == 0 {
                if n.isSameObject(st) { return st }
            } else {
                // A missing name is the node's object gone from its place (pinned, or stale);
                // any other failure is the host's answer.
                let e = VFSError.current
                if e != .noent && e != .notdir && n.pinnedDescriptor < 0 { throw e }
            }
        }
        let p = n.pinnedDescriptor
        if p >= 0 {
            if fstat(p, &st) != 0 { throw .current }
            return st
        }
        throw .stale
    }

    /// After the VFS renamed or exchanged names: `node` is now `name` in `directory`
    /// (HostFSNode rule 3). Called under the mount's rename lock.
    func moved(_ node: any FSNode, to name: [UInt8], in directory: any FSNode) {
        guard let n = node as? HostFSNode, n.fd < 0, let d = directory as? HostFSNode else { return }
        n.move(to: name, in: d)
    }

    /// After HostFS itself changed `nodes` and the names in `directories`: their cached
    /// attributes and the directories' cached names are stale now, before inotify says so.
    private func changed(_ nodes: HostFSNode?..., directories: [HostFSNode] = []) {
        for n in nodes { n?.forgetAttributes() }
        for d in directories { d.forgetAttributes(); d.advance() }
    }

    public func resolve(_ name: [UInt8], in directory: any FSNode) throws(VFSError) -> (any FSNode)? {
        try VFSAttempt.hostCall()
        return try openNode(name, in: try host(directory))
    }

    public func revalidate(_ name: [UInt8], in directory: any FSNode, cached: (any FSNode)?) -> Bool {
        guard let d = directory as? HostFSNode else { return false }
        var st = stat()
        if fstatat(d.fd, cName(name), &st, AT_SYMLINK_NOFOLLOW) != 0 {
            return cached == nil && Glibc.errno == ENOENT
        }
        guard let c = cached as? HostFSNode else { return false }
        return c.hostInode == UInt64(st.st_ino) && c.hostDevice == UInt64(st.st_dev) && c.type == Self.fileType(st.st_mode)
    }

    public func attributes(of node: any FSNode) throws(VFSError) -> FileAttributes {
        let n = try host(node)
        if let cached = n.currentAttributes() { return cached }
        try VFSAttempt.hostCall()
        let stamp = n.parentGeneration
        let st = try Self.hostStat(n)
        let a = Self.attributes(st, device: deviceID)
        n.remember(a, blocks: Int64(st.st_blocks), stamp: stamp)
        return a
    }

    /// The attributes of `node` if they are cached and current, without a host call (the
    /// namecache's lock-free walk uses this through a raw pointer).
    static func currentAttributes(_ node: HostFSNode, device: UInt64) -> FileAttributes? {
        guard var a = node.currentAttributes() else { return nil }
        a.device = device
        return a
    }

    public func setAttributes(of node: any FSNode, _ change: AttributeChange) throws(VFSError) {
        try VFSAttempt.hostCall()
        let n = try host(node)
        defer { changed(n, n.currentDirectory) }
        if change.size != nil && n.type == .directory { throw .isdir }
        if change.mode != nil && n.type == .symlink { throw .other }
        try withHandle(n) { (h) throws(VFSError) in
            let path = HostFSNode.procPath(h)
            if let size = change.size {
                if Glibc.truncate(path, off_t(size)) != 0 { throw .current }
            }
            if change.uid != nil || change.gid != nil {
                if fchownat(h, "", change.uid ?? UInt32.max, change.gid ?? UInt32.max, AT_EMPTY_PATH) != 0 { throw .current }
            }
            if let mode = change.mode {
                if fchmodat(AT_FDCWD, path, mode_t(mode & 0o7777), 0) != 0 { throw .current }
            }
            if change.atime != nil || change.mtime != nil {
                func ts(_ t: Timespec?) -> timespec {
                    guard let t else { return timespec(tv_sec: 0, tv_nsec: UTIME_OMIT) }
                    return timespec(tv_sec: Int(t.seconds), tv_nsec: Int(t.nanoseconds))
                }
                var times = [ts(change.atime), ts(change.mtime)]
                if utimensat(AT_FDCWD, path, &times, 0) != 0 { throw .current }
            }
        }
    }

    private func finishCreate(_ name: [UInt8], in d: HostFSNode, mode: UInt32?, credentials: Credentials) throws(VFSError) -> any FSNode {
        changed(directories: [d])
        if let mode { _ = fchmodat(d.fd, cName(name), mode_t(mode), 0) }
        if hostIsRoot && (credentials.uid != 0 || credentials.gid != 0) {
            _ = fchownat(d.fd, cName(name), credentials.uid, credentials.gid, AT_SYMLINK_NOFOLLOW)
        }
        guard let n = try openNode(name, in: d) else { throw .noent }
        return n
    }

    public func create(_ name: [UInt8], in directory: any FSNode, mode: UInt32, credentials: Credentials) throws(VFSError) -> any FSNode {
        try VFSAttempt.hostCall()
        let d = try host(directory)
        let fd = openat(d.fd, cName(name), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, mode_t(mode))
        if fd < 0 { throw .current }
        Glibc.close(fd)
        return try finishCreate(name, in: d, mode: mode, credentials: credentials)
    }

    public func makeDirectory(_ name: [UInt8], in directory: any FSNode, mode: UInt32, credentials: Credentials) throws(VFSError) -> any FSNode {
        try VFSAttempt.hostCall()
        let d = try host(directory)
        if mkdirat(d.fd, cName(name), mode_t(mode)) != 0 { throw .current }
        return try finishCreate(name, in: d, mode: mode, credentials: credentials)
    }

    public func makeSymlink(_ name: [UInt8], in directory: any FSNode, target: [UInt8], credentials: Credentials) throws(VFSError) -> any FSNode {
        try VFSAttempt.hostCall()
        let d = try host(directory)
        if symlinkat(cName(target), d.fd, cName(name)) != 0 { throw .current }
        return try finishCreate(name, in: d, mode: nil, credentials: credentials)
    }

    public func link(_ node: any FSNode, as name: [UInt8], in directory: any FSNode) throws(VFSError) {
        try VFSAttempt.hostCall()
        let n = try host(node), d = try host(directory)
        defer { changed(n, directories: [d]) }
        let c = cName(name)
        // HostFSNode rule 4: the VFS gives the new name the same node, so the node now has
        // two names, and its place may be renamed over or removed while the other remains.
        if n.fd < 0 && n.pinnedDescriptor < 0 { n.pin(try openPlace(n)) }
        try withHandle(n) { (h) throws(VFSError) in
            if linkat(h, "", d.fd, c, AT_EMPTY_PATH) == 0 { return }
            if linkat(AT_FDCWD, HostFSNode.procPath(h), d.fd, c, AT_SYMLINK_FOLLOW) != 0 { throw .current }
        }
    }

    public func unlink(_ name: [UInt8], in directory: any FSNode, node: any FSNode) throws(VFSError) {
        try VFSAttempt.hostCall()
        let d = try host(directory)
        let n = node as? HostFSNode
        defer { changed(n, directories: [d]) }
        // HostFSNode rule 4: a descriptor on the object, kept by the node once the name is gone.
        var pin: Int32 = -1
        if let n, n.fd < 0, n.pinnedDescriptor < 0 { pin = (try? openPlace(n)) ?? -1 }
        if unlinkat(d.fd, cName(name), 0) != 0 {
            let e = VFSError.current
            if pin >= 0 { Glibc.close(pin) }
            throw e
        }
        if pin >= 0, let n { n.pin(pin) }
    }

    public func removeDirectory(_ name: [UInt8], in directory: any FSNode, node: any FSNode) throws(VFSError) {
        try VFSAttempt.hostCall()
        let d = try host(directory)
        defer { changed(node as? HostFSNode, directories: [d]) }
        if unlinkat(d.fd, cName(name), AT_REMOVEDIR) != 0 {
            let e = VFSError.current
            throw e == .exist ? .notempty : e
        }
    }

    /// Before a rename gives `node`'s name to another object (HostFSNode rule 4): the node
    /// keeps a descriptor on its object, as after an unlink, so a thread that resolved the
    /// name just before the rename still reaches the object it found instead of `ESTALE`.
    func willLoseName(_ node: any FSNode) throws(VFSError) {
        try VFSAttempt.hostCall()
        guard let n = node as? HostFSNode, n.fd < 0, n.pinnedDescriptor < 0 else { return }
        if let fd = try? openPlace(n) { n.pin(fd) }
    }

    public func rename(_ name: [UInt8], in directory: any FSNode, to newName: [UInt8], in newDirectory: any FSNode) throws(VFSError) {
        try VFSAttempt.hostCall()
        let d = try host(directory), nd = try host(newDirectory)
        defer { changed(directories: [d, nd]) }
        if renameat(d.fd, cName(name), nd.fd, cName(newName)) != 0 {
            let e = VFSError.current
            throw e == .exist ? .notempty : e
        }
    }

    public func readSymlink(_ node: any FSNode) throws(VFSError) -> [UInt8] {
        try VFSAttempt.hostCall()
        let n = try host(node)
        return try withHandle(n) { (h) throws(VFSError) -> [UInt8] in
            var buf = [UInt8](repeating: 0, count: PathLimits.pathMax)
            let len = buf.withUnsafeMutableBytes { b -> Int in
                guard let base = b.baseAddress else { return -1 }
                return readlinkat(h, "", base.assumingMemoryBound(to: CChar.self), b.count)
            }
            if len < 0 { throw .current }
            return Array(buf[0..<len])
        }
    }

    public func open(_ node: any FSNode, name: [UInt8], in directory: (any FSNode)?, read: Bool, write: Bool) throws(VFSError) -> any FSOpenFile {
        try VFSAttempt.hostCall()
        let n = try host(node)
        // Always non-blocking: it changes nothing for regular files and directories, and a
        // FIFO, socket or device (which the VFS opens only when asked) must never make the
        // open or a later read wait for a peer.
        var flags: Int32 = O_CLOEXEC | O_NONBLOCK
        if n.type == .directory { flags |= O_RDONLY | O_DIRECTORY } else if read && write { flags |= O_RDWR } else if write { flags |= O_WRONLY } else { flags |= O_RDONLY }
        if n.fd >= 0 {
            let fd = Glibc.open(n.procPath, flags)
            if fd < 0 { throw .current }
            return HostFSOpenFile(fd: fd, device: deviceID, node: n)
        }
        let pinned = n.pinnedDescriptor
        if pinned >= 0 {
            let fd = Glibc.open(HostFSNode.procPath(pinned), flags)
            if fd < 0 { throw .current }
            return HostFSOpenFile(fd: fd, device: deviceID, node: n)
        }
        // HostFSNode rule 2: by name in the directory (where the VFS found it, which is the
        // node's place), not following a link, then checked to be the node's object.
        let dirNode: HostFSNode, c: [CChar]
        if let d = directory as? HostFSNode {
            dirNode = d
            c = try component(name)
        } else {
            guard let (d, placeName) = n.currentPlace else { throw .stale }
            dirNode = d
            c = try component(placeName)
        }
        let stamp = n.parentGeneration
        if let fd = try openChecked(n, in: dirNode, c, flags) {
            if !write {
                // The open's own `fstat` leaves the attributes cached (unless a write follows).
                var st = stat()
                if fstat(fd, &st) == 0 { n.remember(Self.attributes(st, device: deviceID), blocks: Int64(st.st_blocks), stamp: stamp) }
            }
            return HostFSOpenFile(fd: fd, device: deviceID, node: n)
        }
        // The name no longer leads to the node's object. A rename over it or an unlink through
        // the VFS pinned the node before changing the name (rule 4), and a rename that moved
        // the node updated its place (rule 3): a thread that found the node just before either
        // still opens the object it found.
        let found = try acrossMoves { () throws(VFSError) -> Int32? in
            let late = n.pinnedDescriptor
            if late >= 0 {
                let fd = Glibc.open(HostFSNode.procPath(late), flags)
                if fd < 0 { throw .current }
                return fd
            }
            guard let (d, placeName) = n.currentPlace, let pc = try? component(placeName) else { return nil }
            return try openChecked(n, in: d, pc, flags)
        }
        guard let fd = found else { throw .stale }
        return HostFSOpenFile(fd: fd, device: deviceID, node: n)
    }

    /// Runs `find` again while a move runs on this file system, until it answers or a pass
    /// saw no move; nil when the object is not where the node says. Host-I/O threads only
    /// (every caller made a host call first), and bounded: a move is one host call.
    func acrossMoves<R>(_ find: () throws(VFSError) -> R?) throws(VFSError) -> R? {
        for _ in 0..<100_000 {
            let before = moves.load(ordering: .sequentiallyConsistent)
            if before & 1 == 0 {
                if let r = try find() { return r }
                if moves.load(ordering: .sequentiallyConsistent) == before { return nil }
            }
        }
        return nil
    }

    /// Opens `name` in `directory` without following a link and checks that it is `n`'s
    /// object; nil when the name is missing or leads to another object.
    private func openChecked(_ n: HostFSNode, in directory: HostFSNode, _ name: [CChar], _ flags: Int32) throws(VFSError) -> Int32? {
        let fd = openat(directory.fd, name, flags | O_NOFOLLOW)
        if fd < 0 {
            let e = VFSError.current
            if e == .noent || e == .loop { return nil }
            throw e
        }
        var st = stat()
        if fstat(fd, &st) != 0 { let e = VFSError.current; Glibc.close(fd); throw e }
        guard n.isSameObject(st) else { Glibc.close(fd); return nil }
        return fd
    }

    /// Swaps two names on the host (`renameat2` with `RENAME_EXCHANGE`).
    func exchangeNames(_ name: [UInt8], in directory: any FSNode, with otherName: [UInt8], in otherDirectory: any FSNode) throws(VFSError) {
        try VFSAttempt.hostCall()
        let d = try host(directory), nd = try host(otherDirectory)
        guard let call = Self.renameat2 else { throw .inval }
        if call(d.fd, cName(name), nd.fd, cName(otherName), 2) != 0 { throw .current }
    }

    /// `renameat2`, which Swift's Glibc module does not declare, looked up in the C library.
    private static let renameat2: (@convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32)? = {
        guard let handle = dlopen(nil, RTLD_NOW), let sym = dlsym(handle, "renameat2") else { return nil }
        return unsafeBitCast(sym, to: (@convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32).self)
    }()

    /// Creates a FIFO on the host.
    func makeFIFONode(_ name: [UInt8], in directory: any FSNode, mode: UInt32, credentials: Credentials) throws(VFSError) -> any FSNode {
        try VFSAttempt.hostCall()
        let d = try host(directory)
        if mknodat(d.fd, cName(name), mode_t(S_IFIFO) | mode_t(mode & 0o7777), 0) != 0 { throw .current }
        return try finishCreate(name, in: d, mode: mode & 0o7777, credentials: credentials)
    }
}
