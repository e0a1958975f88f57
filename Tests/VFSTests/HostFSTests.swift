import Glibc
import Testing
@testable import VFS

/// HostFS: pass-through behaviour and changes made on the host behind the cache (property 11).
@Suite struct HostFSTests {
    func setUp() throws -> (String, VirtualFileSystem, VFSProcess) {
        let (dir, vfs, p, _) = try setUpWithFS()
        return (dir, vfs, p)
    }

    func setUpWithFS(watch: Bool = true) throws -> (String, VirtualFileSystem, VFSProcess, HostFS) {
        let dir = makeTempDir("hostfs-stale")
        let vfs = VirtualFileSystem(rootFileSystem: MemFS())
        let p = vfs.makeProcess()
        try p.mkdir("/host")
        let fs = try HostFS(hostPath: dir, watch: watch)
        try vfs.mount(fs, at: "/host", by: p)
        return (dir, vfs, p, fs)
    }

    /// Host changes are seen by the next lookup once inotify has reported them (`settle`
    /// waits for that); without a watch every use asks the host.
    @Test(arguments: [true, false]) func negativeEntryDoesNotHideHostCreation(watch: Bool) throws {
        let (dir, _, p, fs) = try setUpWithFS(watch: watch)
        defer { removeTree(dir) }
        #expect(errno { try p.stat("/host/late") } == .noent)
        #expect(errno { try p.stat("/host/late") } == .noent)
        let fd = Glibc.open(dir + "/late", O_CREAT | O_WRONLY, 0o644)
        Glibc.close(fd)
        fs.settle()
        #expect(try p.stat("/host/late").type == .regular)
        Glibc.mkdir(dir + "/newdir", 0o755)
        fs.settle()
        #expect(errno { try p.stat("/host/newdir/f") } == .noent)
        Glibc.close(Glibc.open(dir + "/newdir/f", O_CREAT | O_WRONLY, 0o644))
        fs.settle()
        #expect(try p.stat("/host/newdir/f").type == .regular)
    }

    @Test(arguments: [true, false]) func renamedOrRemovedHostFileIsNotServedStale(watch: Bool) throws {
        let (dir, _, p, fs) = try setUpWithFS(watch: watch)
        defer { removeTree(dir) }
        try writeFile(p, "/host/a", "AAA")
        try writeFile(p, "/host/b", "B")
        #expect(try readFile(p, "/host/a") == "AAA")
        Glibc.rename(dir + "/a", dir + "/moved")
        fs.settle()
        #expect(errno { try p.stat("/host/a") } == .noent)
        #expect(try readFile(p, "/host/moved") == "AAA")
        Glibc.rename(dir + "/b", dir + "/moved")   // replaced on the host
        fs.settle()
        #expect(try readFile(p, "/host/moved") == "B")
        Glibc.unlink(dir + "/moved")
        fs.settle()
        #expect(errno { try p.stat("/host/moved") } == .noent)
        // a directory renamed on the host takes its subtree with it
        try p.mkdir("/host/d"); try writeFile(p, "/host/d/f", "F")
        #expect(try readFile(p, "/host/d/f") == "F")
        Glibc.rename(dir + "/d", dir + "/e")
        fs.settle()
        #expect(errno { try p.stat("/host/d/f") } == .noent)
        #expect(try readFile(p, "/host/e/f") == "F")
    }

    @Test func passThroughOperations() throws {
        let (dir, vfs, p) = try setUp()
        defer { removeTree(dir) }
        try p.mkdir("/host/sub", mode: 0o750)
        var st = stat()
        #expect(lstat(dir + "/sub", &st) == 0 && st.st_mode & 0o7777 == 0o750)
        try writeFile(p, "/host/sub/f", "hello")
        try p.link("/host/sub/f", "/host/g")
        #expect(try p.stat("/host/g").nlink == 2)
        try p.symlink("sub/f", "/host/l")
        #expect(try p.readlink("/host/l") == "sub/f")
        #expect(try readFile(p, "/host/l") == "hello")
        try p.chmod("/host/g", mode: 0o600)
        #expect(lstat(dir + "/sub/f", &st) == 0 && st.st_mode & 0o7777 == 0o600)
        let t = Timespec(seconds: 12345, nanoseconds: 0)
        try p.utimes("/host/g", access: t, modification: t)
        #expect(try p.stat("/host/sub/f").mtime == t)
        try p.truncate("/host/g", length: 2)
        #expect(try readFile(p, "/host/sub/f") == "he")
        #expect(try p.listDirectory("/host").map(\.name) == ["g", "l", "sub"])
        #expect(try p.stat("/host").device != p.stat("/").device)
        #expect(errno { try p.rename("/host/g", "/outside") } == .xdev)
        try p.rename("/host/sub", "/host/sub2")
        #expect(try readFile(p, "/host/sub2/f") == "he")
        try p.unlink("/host/g"); try p.unlink("/host/l"); try p.unlink("/host/sub2/f"); try p.rmdir("/host/sub2")
        #expect(try p.listDirectory("/host").isEmpty)
        #expect(vfs.namecache.checkTopology().isEmpty)
        try vfs.unmount("/host", by: p)
    }
}
