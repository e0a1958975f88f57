import Glibc
import Synchronization

/// A process context: credentials, working directory, root (chroot) and jail root, and a
/// table of open files. Every path operation of the VFS is a method of a process.
///
/// The directory fields are read by lock-free lookups and change only inside namecache write
/// sections; one process may be used from several threads at once.
public final class VFSProcess: @unchecked Sendable {
    /// The namespace this process lives in.
    public let vfs: VirtualFileSystem
    var cwd: NCRecord
    var root: NCRecord
    var jailRoot: NCRecord
    // What the lock-free walk reads, as plain pointers (no reference counting).
    var fastCwd: UnsafeMutablePointer<NCHot>
    var fastRoot: UnsafeMutablePointer<NCHot>
    var fastJail: UnsafeMutablePointer<NCHot>
    var fastUID: UInt32
    let gateView: ReadGateView
    let table: UnsafeMutablePointer<NCTable>
    private var creds: Credentials
    let files = Mutex<[Int32: OpenFile]>([:])

    init(vfs: VirtualFileSystem, credentials: Credentials) {
        self.vfs = vfs
        let r = vfs.rootRecord
        cwd = r; root = r; jailRoot = r
        fastCwd = r.hot; fastRoot = r.hot; fastJail = r.hot
        gateView = vfs.namecache.gate.view
        table = vfs.namecache.table
        creds = credentials
        fastUID = credentials.uid
        r.hold(); r.hold(); r.hold()
    }

    deinit {
        closeAll()
        cwd.drop(); root.drop(); jailRoot.drop()
    }

    var namecache: Namecache { vfs.namecache }

    /// The process's credentials.
    public var credentials: Credentials {
        get { namecache.gate.read { creds } }
        set {
            namecache.exclusive {
                creds = newValue
                fastUID = newValue.uid
            }
        }
    }

    /// Runs VFS work that may call into the host kernel where it cannot stop an LWKT CPU:
    /// when the namespace has a file system whose calls can block (HostFS) and the caller is
    /// an LWKT thread, `body` runs on the namespace's host-I/O pool while the thread parks
    /// and its CPU runs on; otherwise it runs at once. For example
    /// `let fd = try await p.offCPU { try p.open(path) }`.
    /// Errors other than `VFSError` become `EIO`. Every call makes the trip, even when the
    /// answer is cached: prefer the parking API (`parking`), which answers on the CPU what it
    /// can and parks on held locks instead of waiting for them.
    public func offCPU<R>(_ body: () throws -> R) async throws(VFSError) -> R {
        func typed() throws(VFSError) -> R {
            do { return try body() } catch let e as VFSError { throw e } catch { throw .io }
        }
        if !vfs.mayBlock { return try typed() }
        return try await vfs.hostIO.perform(typed)
    }

    /// A child process: same credentials, directories and (shared) open files.
    public func fork() -> VFSProcess {
        let (c, r, j, cr) = snapshot()
        let p = VFSProcess(vfs: vfs, credentials: cr.credentials)
        p.replaceDirectories(cwd: c, root: r, jail: j)
        let table = files.withLock { $0 }
        p.files.withLock { $0 = table }
        return p
    }

    struct Context { let credentials: Credentials }

    /// cwd, root, jail root and credentials, read together.
    func snapshot() -> (NCRecord, NCRecord, NCRecord, Context) {
        namecache.gate.read { (cwd, root, jailRoot, Context(credentials: creds)) }
    }

    func replaceDirectories(cwd newCwd: NCRecord? = nil, root newRoot: NCRecord? = nil, jail newJail: NCRecord? = nil) {
        newCwd?.hold(); newRoot?.hold(); newJail?.hold()
        var old: [NCRecord] = []
        // No drain: lock-free readers load each pointer once, and the records replaced stay
        // alive (retired) until every reader that may hold them has left (Namecache rule 5).
        namecache.publishReplacing { retire in
            if let c = newCwd { old.append(cwd); retire(cwd); fastCwd = c.hot; cwd = c }
            if let r = newRoot { old.append(root); retire(root); fastRoot = r.hot; root = r }
            if let j = newJail { old.append(jailRoot); retire(jailRoot); fastJail = j.hot; jailRoot = j }
        }
        for o in old { o.drop() }
    }

    /// Closes every open file. An open file shared with a forked process stays open there.
    public func closeAll() {
        let all = files.withLock { t -> [OpenFile] in
            let v = Array(t.values)
            t.removeAll()
            return v
        }
        _ = all.count
    }

    // MARK: descriptors

    func install(_ f: OpenFile) throws(VFSError) -> Int32 {
        try files.withLock { (t: inout [Int32: OpenFile]) throws(VFSError) -> Int32 in
            var fd: Int32 = 0
            while t[fd] != nil { fd += 1 }
            if fd >= 65536 { throw .mfile }
            t[fd] = f
            return fd
        }
    }

    func file(_ fd: Int32) throws(VFSError) -> OpenFile {
        guard let f = files.withLock({ $0[fd] }) else { throw .badf }
        return f
    }
}
