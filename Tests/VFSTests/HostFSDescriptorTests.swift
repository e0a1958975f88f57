import Glibc
import Testing
@testable import VFS

/// HostFS keeps descriptors for directories only (HostFSNode rules 1–4): a cached regular
/// file is reached by its directory's descriptor and its name, checked by device and inode,
/// never by following a link out of the root, and it still works after the VFS renames it
/// or removes its name while a record holds it.
@Suite struct HostFSDescriptorTests {
    /// Descriptors of this process that refer to something at or below `path` (other tests
    /// running in parallel open descriptors of their own, elsewhere).
    func openDescriptors(under path: String) -> Int {
        guard let d = opendir("/proc/self/fd") else { return -1 }
        defer { closedir(d) }
        var n = 0
        var target = [CChar](repeating: 0, count: 4096)
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.first?.isNumber == true else { continue }
            let len = readlink("/proc/self/fd/" + name, &target, target.count - 1)
            guard len > 0 else { continue }
            let t = String(decoding: target[0..<len].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if t == path || t.hasPrefix(path + "/") { n += 1 }
        }
        return n
    }

    func setUp() throws -> (String, VirtualFileSystem, VFSProcess, HostFS) {
        let dir = makeTempDir("hostfs-fds")
        let fs = try HostFS(hostPath: dir)
        let vfs = VirtualFileSystem(rootFileSystem: fs)
        return (dir, vfs, vfs.makeProcess(), fs)
    }

    /// 20,000 names cached (looked up and stat'ed, so their records hold nodes) in 20
    /// directories hold O(directories) descriptors, not one per name.
    @Test func cachedNamesHoldDescriptorsPerDirectoryOnly() throws {
        let (dir, vfs, p, _) = try setUp()
        defer { removeTree(dir) }
        let directories = 20, perDirectory = 1_000
        for d in 0..<directories {
            #expect(Glibc.mkdir("\(dir)/d\(d)", 0o755) == 0)
            for f in 0..<perDirectory {
                let fd = Glibc.open("\(dir)/d\(d)/f\(f)", O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
                #expect(fd >= 0)
                Glibc.close(fd)
            }
        }
        let before = openDescriptors(under: dir)
        var records: [NCRecord] = []
        records.reserveCapacity(directories * perDirectory)
        for d in 0..<directories {
            let dr = try #require(try p.lookup(Array("d\(d)".utf8), in: vfs.rootRecord))
            for f in 0..<perDirectory {
                let r = try #require(try p.lookup(Array("f\(f)".utf8), in: dr))
                p.hold(r)
                records.append(r)
                #expect(try p.attributes(of: r).type == .regular)
            }
        }
        let after = openDescriptors(under: dir)
        // One O_PATH descriptor per directory (the root's was open before).
        #expect(after - before == directories, "20,000 cached names took \(after - before) descriptors")
        // Every cached name still answers from the namecache, and opening one works.
        #expect(try p.stat("/d7/f123").type == .regular)
        let fd = try p.open("/d19/f999")
        try p.close(fd)
        for r in records { p.release(r) }
    }

    /// A cached file whose name is swapped on the host for a symbolic link out of the root is
    /// not followed: the node's object is gone from that name, so its operations fail with
    /// ESTALE (never reading the link's target), and a fresh lookup sees the link.
    @Test func nameReplacedByEscapingSymlinkIsNotFollowed() throws {
        let (dir, vfs, p, fs) = try setUp()
        defer { removeTree(dir) }
        let outside = makeTempDir("hostfs-outside")
        defer { removeTree(outside) }
        #expect(writeHostFile(outside + "/secret", "SECRET"))
        #expect(writeHostFile(dir + "/f", "inside"))
        let r = try #require(try p.lookup(Array("f".utf8), in: vfs.rootRecord))
        p.hold(r)
        defer { p.release(r) }
        #expect(try p.attributes(of: r).size == 6)
        #expect(Glibc.unlink(dir + "/f") == 0)
        #expect(Glibc.symlink(outside + "/secret", dir + "/f") == 0)
        // The held record's node is the old file: it must not reach the link's target.
        #expect(throws: VFSError.stale) { _ = try p.openFile(r, read: true, write: false) }
        #expect(throws: VFSError.stale) { try p.setAttributes(of: r, AttributeChange(mode: 0o600)) }
        var st = stat()
        #expect(lstat(outside + "/secret", &st) == 0 && st.st_mode & 0o777 == 0o644)
        fs.settle()
        // A path lookup sees the link, and following it stays inside the root (absolute
        // targets resolve against the VFS root, where no such path exists).
        #expect(try p.lookup("/f", follow: false) == .symlink)
        #expect(throws: VFSError.noent) { _ = try p.open("/f") }
    }

    /// The VFS renames a cached file (to another directory too): the node follows its name,
    /// so a held record still opens, reads, stats and changes the file.
    @Test func renamedNodeFollowsItsName() throws {
        let (dir, vfs, p, _) = try setUp()
        defer { removeTree(dir) }
        #expect(Glibc.mkdir(dir + "/a", 0o755) == 0 && Glibc.mkdir(dir + "/b", 0o755) == 0)
        #expect(writeHostFile(dir + "/a/x", "hello"))
        let a = try #require(try p.lookup(Array("a".utf8), in: vfs.rootRecord))
        let b = try #require(try p.lookup(Array("b".utf8), in: vfs.rootRecord))
        let x = try #require(try p.lookup(Array("x".utf8), in: a))
        p.hold(x)
        defer { p.release(x) }
        try p.rename(Array("x".utf8), in: a, to: Array("y".utf8), in: b)
        try p.setAttributes(of: x, AttributeChange(mode: 0o640))
        #expect(try p.attributes(of: x).mode == 0o640)
        let f = try p.openFile(x, read: true, write: false)
        var buf = [UInt8](repeating: 0, count: 16)
        let n = try buf.withUnsafeMutableBytes { (raw) throws(VFSError) in try f.read(into: raw, at: 0) }
        f.close()
        #expect(String(decoding: buf[0..<n], as: UTF8.self) == "hello")
        // Path rename and exchange too.
        #expect(writeHostFile(dir + "/b/z", "zz"))
        let z = try #require(try p.lookup(Array("z".utf8), in: b))
        p.hold(z)
        defer { p.release(z) }
        try p.rename(Array("y".utf8), in: b, to: Array("z2".utf8), in: a, mode: .noReplace)
        try p.rename(Array("z2".utf8), in: a, to: Array("z".utf8), in: b, mode: .exchange)
        #expect(try p.attributes(of: x).size == 5)
        #expect(try p.attributes(of: z).size == 2)
        try p.rename("/b/z", "/a/w")
        #expect(try p.attributes(of: x).size == 5)
        #expect(try readFile(p, "/a/w") == "hello")
    }

    /// A held file whose name the VFS removes keeps answering for its attributes, as an open
    /// but unlinked file does (HostFSNode rule 4).
    @Test func unlinkedHeldNodeKeepsItsAttributes() throws {
        let (dir, vfs, p, _) = try setUp()
        defer { removeTree(dir) }
        #expect(writeHostFile(dir + "/gone", "12345678"))
        let r = try #require(try p.lookup(Array("gone".utf8), in: vfs.rootRecord))
        p.hold(r)
        defer { p.release(r) }
        try p.unlink(Array("gone".utf8), in: vfs.rootRecord)
        let a = try p.attributes(of: r)
        #expect(a.size == 8 && a.nlink == 0)
        #expect(errno { try p.stat("/gone") } == .noent)
    }

    /// A held file whose name a rename gives to another file keeps answering for its own
    /// attributes (HostFSNode rule 4), not ESTALE: a thread that resolved the name just
    /// before a concurrent rename still reaches the object it found.
    @Test func heldNodeRenamedOverKeepsItsAttributes() throws {
        let (dir, vfs, p, _) = try setUp()
        defer { removeTree(dir) }
        #expect(writeHostFile(dir + "/old", "12345678"))
        #expect(writeHostFile(dir + "/new", "abc"))
        let r = try #require(try p.lookup(Array("old".utf8), in: vfs.rootRecord))
        p.hold(r)
        defer { p.release(r) }
        try p.rename("/new", "/old")
        let a = try p.attributes(of: r)
        #expect(a.size == 8 && a.nlink == 0)
        #expect(try p.stat("/old").size == 3)
    }

    func writeHostFile(_ path: String, _ text: String) -> Bool {
        let fd = Glibc.open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        let bytes = Array(text.utf8)
        return Glibc.write(fd, bytes, bytes.count) == bytes.count
    }
}
