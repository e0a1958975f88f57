import CFUSE
import Glibc
import LWKT
import Synchronization
import VFS

/// Settings of a FUSE mount.
public struct FUSEMountOptions: Sendable {
    /// How long the kernel may trust a name it looked up (its dentry cache), in seconds.
    public var entryTimeout: Double
    /// How long the kernel may trust attributes, in seconds.
    public var attributeTimeout: Double
    /// How long the kernel may trust that a name does not exist (a negative dentry), in seconds.
    public var negativeTimeout: Double
    /// Let users other than the mounting one use the mount.
    public var allowOther: Bool
    /// The name after `fuse.` in the mount table.
    public var subtype: String

    public init(entryTimeout: Double = 1, attributeTimeout: Double = 1, negativeTimeout: Double? = nil,
                allowOther: Bool = false, subtype: String = "libellula") {
        self.entryTimeout = max(entryTimeout, 0)
        self.attributeTimeout = max(attributeTimeout, 0)
        self.negativeTimeout = max(negativeTimeout ?? entryTimeout, 0)
        self.allowOther = allowOther
        self.subtype = subtype
    }
}

/// A VFS namespace served to the kernel over FUSE: the kernel protocol spoken directly on
/// `/dev/fuse` (no libfuse), one channel per LWKT CPU.
///
/// Rules: the session descriptor is answered once for INIT on the mounting thread; then every
/// CPU gets its own channel (CPU 0 the session descriptor, the others a descriptor cloned
/// with `FUSE_DEV_IOC_CLONE`), opened non-blocking and owned by that CPU's epoll. A CPU's
/// LWKT thread reads a request, serves it with the VFS and writes the reply on the same
/// descriptor; on a mount whose calls can block (HostFS), requests that ask the host go to
/// the channel's worker threads on the same CPU, so one request waiting for the host does not
/// hold up the next (`FUSEChannel`). The kernel keeps one input queue per mount and gives each request to one
/// channel that reads; on this side nothing is shared between CPUs but the node table's
/// inode map (see `FUSENodeTable`). Open files are handles (`FUSEOpenFile`). Requests use
/// the VFS's parking API: cached answers are given on the serving CPU, a held record lock
/// parks the channel's thread, and HostFS calls that can block run on the host-I/O pool
/// (`fsync` on a helper thread that writes its own reply), so no CPU waits in the kernel.
/// Stopping unmounts (lazily when busy) and closes every descriptor, which aborts the
/// connection for anything still open.
public final class FUSEServer: @unchecked Sendable {
    /// Where the file system is mounted.
    public let mountPoint: String
    /// The settings it was mounted with.
    public let options: FUSEMountOptions
    let vfs: VirtualFileSystem
    let process: VFSProcess
    let nodes: FUSENodeTable
    /// For `statfs`: the host directory behind a HostFS root, if any.
    let hostRoot: String?
    let system: LWKTSystem
    private(set) var channels: [FUSEChannel] = []
    private var threads: [LWKTThread] = []
    /// Channels' worker threads (mounts whose calls can block).
    private var workers: [LWKTThread] = []
    private let sessionFD: Int32
    private let stopped = Mutex<Bool>(false)
    let destroyed = Atomic<Bool>(false)
    /// FSYNCs running on helper threads (their replies are still to be written).
    let syncsInFlight = Atomic<Int>(0)
    /// Whether some CPUs read the session descriptor instead of a clone of their own.
    public private(set) var sharedChannels = false
    /// Protocol minor version agreed with the kernel.
    private(set) var protocolMinor: UInt32 = 0
    let usedMountSyscall: Bool

    static let maxWrite = 1 << 20
    static let bufferSize = (1 << 20) + (64 << 10)

    /// Mounts `vfs` at `mountPoint` and starts serving it on every CPU of `system`.
    ///
    /// - Parameter hostRoot: the host directory of a HostFS root (used for `statfs`).
    public static func mount(_ vfs: VirtualFileSystem, at mountPoint: String, system: LWKTSystem,
                             options: FUSEMountOptions = .init(), hostRoot: String? = nil) throws -> FUSEServer {
        let (fd, bySyscall) = try Self.mountSession(at: mountPoint, options: options)
        let server: FUSEServer
        do {
            server = try FUSEServer(vfs: vfs, mountPoint: mountPoint, system: system, options: options,
                                    sessionFD: fd, bySyscall: bySyscall, hostRoot: hostRoot)
        } catch {
            Self.unmountPath(mountPoint, bySyscall: bySyscall)
            Glibc.close(fd)
            throw error
        }
        do {
            try server.handshake()
            try server.startChannels()
        } catch {
            server.stop()
            throw error
        }
        return server
    }

    private init(vfs: VirtualFileSystem, mountPoint: String, system: LWKTSystem, options: FUSEMountOptions,
                 sessionFD: Int32, bySyscall: Bool, hostRoot: String?) throws {
        self.vfs = vfs
        self.mountPoint = mountPoint
        self.system = system
        self.options = options
        self.sessionFD = sessionFD
        self.usedMountSyscall = bySyscall
        self.hostRoot = hostRoot
        process = vfs.makeProcess()
        let root = vfs.rootRecord
        let a: FileAttributes
        do { a = try process.attributes(of: root) } catch { throw FUSEError.rootFailed("\(error)") }
        nodes = FUSENodeTable(process: process, root: root, rootInode: a.inode)
    }

    // MARK: mounting

    /// Checks the mount point, opens `/dev/fuse` and mounts: mount(2) as root, else fusermount3.
    private static func mountSession(at mountPoint: String, options: FUSEMountOptions) throws -> (Int32, Bool) {
        var st = stat()
        if fstatat(AT_FDCWD, mountPoint, &st, 0) != 0 {
            if errno == ENOTCONN { throw FUSEError.mountPointBusy(mountPoint) }  // a dead FUSE mount
            throw FUSEError.mountPointMissing(mountPoint)
        }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw FUSEError.mountPointNotDirectory(mountPoint) }
        var parent = stat()
        if fstatat(AT_FDCWD, mountPoint + "/..", &parent, 0) == 0, parent.st_dev != st.st_dev || parent.st_ino == st.st_ino {
            throw FUSEError.mountPointBusy(mountPoint)
        }
        let fsOptions = "default_permissions" + (options.allowOther ? ",allow_other" : "")
        if geteuid() == 0 {
            let fd = lb_fuse_open_device(1)
            if fd == -ENOENT { throw FUSEError.deviceMissing }
            if fd < 0 { throw FUSEError.deviceNotPermitted(-fd) }
            let rc = lb_fuse_kernel_mount(fd, mountPoint, options.subtype, UInt32(S_IFDIR), 0, 0, fsOptions)
            if rc != 0 {
                Glibc.close(fd)
                if rc == -EBUSY { throw FUSEError.mountPointBusy(mountPoint) }
                throw FUSEError.mountFailed(mountPoint, -rc)
            }
            return (fd, true)
        }
        if access("/dev/fuse", F_OK) != 0 { throw FUSEError.deviceMissing }
        guard let fusermount = findExecutable("fusermount3") else { throw FUSEError.fusermountMissing }
        let fd = lb_fuse_fusermount(fusermount, mountPoint, fsOptions + ",fsname=\(options.subtype),subtype=\(options.subtype)")
        if fd == -ENOENT { throw FUSEError.fusermountMissing }
        if fd == -EIO { throw FUSEError.fusermountFailed(mountPoint) }
        if fd < 0 { throw FUSEError.mountFailed(mountPoint, -fd) }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        return (fd, false)
    }

    static func findExecutable(_ name: String) -> String? {
        let path = String(cString: getenv("PATH") ?? strdup("/usr/bin:/bin"))
        for dir in (path.split(separator: ":") + ["/usr/bin", "/bin"]) {
            let p = "\(dir)/\(name)"
            if access(p, X_OK) == 0 { return p }
        }
        return nil
    }

    /// Unmounts `mountPoint`: at once if nothing uses it, lazily (detached) when busy.
    static func unmountPath(_ mountPoint: String, bySyscall: Bool) {
        if geteuid() == 0 {
            if lb_fuse_kernel_unmount(mountPoint, 0) == 0 { return }
            _ = lb_fuse_kernel_unmount(mountPoint, 1)
            return
        }
        guard let fusermount = findExecutable("fusermount3") else { return }
        var pid: pid_t = 0
        let args = [fusermount, "-u", "-z", "-q", mountPoint]
        var cargs = args.map { strdup($0) } + [nil]
        defer { for p in cargs { free(p) } }
        if posix_spawn(&pid, fusermount, nil, nil, &cargs, environ) == 0 {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
    }

    // MARK: handshake

    /// Answers the kernel's INIT on the session descriptor (waits up to 10 s for it).
    private func handshake() throws {
        let buf = UnsafeMutableRawPointer.allocate(byteCount: Self.bufferSize, alignment: 16)
        defer { buf.deallocate() }
        let deadline = MonotonicSeconds.now() + 10
        while true {
            var p = pollfd(fd: sessionFD, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, 200) < 0 && errno != EINTR { throw FUSEError.handshakeFailed("poll errno \(errno)") }
            let n = Glibc.read(sessionFD, buf, Self.bufferSize)
            if n < 0 {
                if errno == EAGAIN || errno == EINTR {
                    if MonotonicSeconds.now() > deadline { throw FUSEError.handshakeFailed("no INIT from the kernel in 10 s") }
                    continue
                }
                throw FUSEError.handshakeFailed("read errno \(errno)")
            }
            guard n >= MemoryLayout<fuse_in_header>.size else { throw FUSEError.handshakeFailed("short message") }
            let h = buf.load(as: fuse_in_header.self)
            guard h.opcode == FUSE_INIT.rawValue else { throw FUSEError.handshakeFailed("first message was opcode \(h.opcode), not INIT") }
            let initIn = (buf + MemoryLayout<fuse_in_header>.size).load(as: fuse_init_in.self)
            let out = buf + MemoryLayout<fuse_out_header>.size
            var reply = fuse_init_out()
            reply.major = UInt32(FUSE_KERNEL_VERSION)
            guard initIn.major == UInt32(FUSE_KERNEL_VERSION) else {
                // The kernel speaks a newer major: tell it ours and give up.
                out.storeBytes(of: reply, as: fuse_init_out.self)
                writeReply(fd: sessionFD, buffer: buf, unique: h.unique, error: 0, payload: 8)
                throw FUSEError.handshakeFailed("kernel FUSE major \(initIn.major), this server speaks \(FUSE_KERNEL_VERSION)")
            }
            protocolMinor = min(initIn.minor, UInt32(FUSE_KERNEL_MINOR_VERSION))
            reply.minor = protocolMinor
            reply.max_readahead = min(initIn.max_readahead, UInt32(Self.maxWrite))
            let wanted = UInt32(FUSE_ASYNC_READ) | UInt32(FUSE_ATOMIC_O_TRUNC) | UInt32(FUSE_BIG_WRITES)
                | UInt32(FUSE_DO_READDIRPLUS) | UInt32(FUSE_READDIRPLUS_AUTO) | UInt32(FUSE_PARALLEL_DIROPS)
                | UInt32(FUSE_MAX_PAGES)
            reply.flags = initIn.flags & wanted
            reply.max_background = 64
            reply.congestion_threshold = 48
            reply.max_write = UInt32(Self.maxWrite)
            reply.time_gran = 1
            reply.max_pages = UInt16(Self.maxWrite / 4096)
            out.storeBytes(of: reply, as: fuse_init_out.self)
            let rc = writeReply(fd: sessionFD, buffer: buf, unique: h.unique, error: 0, payload: MemoryLayout<fuse_init_out>.size)
            if rc != 0 { throw FUSEError.handshakeFailed("INIT reply errno \(rc)") }
            return
        }
    }

    // MARK: channels

    private func startChannels() throws {
        for cpu in system.cpus {
            let fd: Int32
            if cpu.id == 0 {
                fd = sessionFD
            } else {
                let clone = lb_fuse_clone_channel(sessionFD, 1)
                // Without the right to open /dev/fuse (an unprivileged mount through
                // fusermount3 on a mode-0600 device), CPUs read the session descriptor
                // together: the kernel still hands each request to exactly one reader.
                fd = clone >= 0 ? clone : sessionFD
                if clone < 0 { sharedChannels = true }
            }
            channels.append(FUSEChannel(server: self, cpu: cpu.id, fd: fd))
        }
        for ch in channels {
            let t = LWKTThread.spawn(on: system.cpus[ch.cpu], priority: .kernel, name: "fuse\(ch.cpu)") { [ch] in
                await ch.run()
            }
            threads.append(t)
            for w in 0..<ch.workerCount {
                workers.append(LWKTThread.spawn(on: system.cpus[ch.cpu], priority: .kernel, name: "fuse\(ch.cpu).\(w)") { [ch] in
                    await ch.work()
                })
            }
        }
    }

    /// Per-channel counters, one entry per CPU.
    public var statistics: [FUSEChannelStatistics] { channels.map { $0.counters.snapshot(cpu: $0.cpu) } }

    /// Node ids the kernel holds now (besides the root).
    public var knownNodes: Int { nodes.count }

    /// Channels, node ids and namecache counters together (for `/_stats`-style reports).
    public var fullStatistics: FUSEStatistics {
        let n = vfs.namecache.statistics
        return FUSEStatistics(mountPoint: mountPoint, channels: statistics, knownNodes: nodes.count,
                              namecacheHits: n.hits, namecacheNegativeHits: n.negativeHits, namecacheMisses: n.misses,
                              namecacheResolves: n.resolves, namecacheRecords: n.records,
                              namecachePositives: n.positives, namecacheNegatives: n.negatives)
    }

    /// Whether the kernel ended the session (the file system was unmounted from outside).
    public var isFinished: Bool { threads.allSatisfy { $0.isFinished } }

    /// Waits until every channel has stopped serving.
    public func wait() async {
        for t in threads + workers { await t.join() }
    }

    /// Unmounts (lazily if something still uses the mount) and closes every channel, which
    /// aborts the connection: processes with files still open get errors, never a hang.
    /// Call it from outside the LWKT CPUs. Safe to call more than once.
    public func stop() {
        let first = stopped.withLock { s -> Bool in
            if s { return false }
            s = true
            return true
        }
        guard first else { return }
        Self.unmountPath(mountPoint, bySyscall: usedMountSyscall)
        for ch in channels { ch.requestStop() }
        for t in threads + workers { t.cancel() }
        let deadline = MonotonicSeconds.now() + 10
        while !(threads + workers).allSatisfy({ $0.isFinished }) && MonotonicSeconds.now() < deadline { usleep(1000) }
        while syncsInFlight.load(ordering: .relaxed) > 0 && MonotonicSeconds.now() < deadline { usleep(1000) }
        for ch in channels where ch.fd != sessionFD { Glibc.close(ch.fd) }
        Glibc.close(sessionFD)
        nodes.clear()
    }

    deinit { stop() }
}

/// Writes a reply whose payload is already at `buffer + 16`; returns 0 or the errno.
@discardableResult
func writeReply(fd: Int32, buffer: UnsafeMutableRawPointer, unique: UInt64, error: Int32, payload: Int) -> Int32 {
    let total = MemoryLayout<fuse_out_header>.size + payload
    buffer.storeBytes(of: fuse_out_header(len: UInt32(total), error: error, unique: unique), as: fuse_out_header.self)
    let n = Glibc.write(fd, buffer, total)
    return n < 0 ? errno : 0
}

/// Seconds on the monotonic clock.
enum MonotonicSeconds {
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
