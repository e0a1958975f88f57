import Glibc
import Testing
@testable import VFS

/// The correctness properties of vfs-and-allocator-notes §4, one test (or a few) per property.
@Suite struct NamecachePropertyTests {
    // 1. rename into own subtree
    @Test func renameIntoOwnSubtreeIsRefused() throws {
        let (vfs, p) = makeMemVFS()
        try p.mkdir("/a"); try p.mkdir("/a/b")
        #expect(errno { try p.rename("/a", "/a/b/x") } == .inval)
        #expect(errno { try p.rename("/a", "/a/b") } == .inval)
        #expect(vfs.namecache.checkTopology().isEmpty)
    }

    // 2. rename(a, a) and rename between hard links
    @Test func renameToItselfAndBetweenHardLinksDoesNothing() throws {
        let (_, p) = makeMemVFS()
        try writeFile(p, "/f", "x")
        try p.rename("/f", "/f")
        #expect(try p.stat("/f").nlink == 1)
        try p.link("/f", "/g")
        try p.rename("/f", "/g")
        #expect(try p.stat("/f").nlink == 2)
        #expect(try p.stat("/g").inode == p.stat("/f").inode)
    }

    // 3. type rules and final . / ..
    @Test func renameTypeRules() throws {
        let (_, p) = makeMemVFS()
        try p.mkdir("/d1"); try p.mkdir("/d2"); try writeFile(p, "/d2/x", "")
        try writeFile(p, "/f", "")
        try p.mkdir("/empty")
        #expect(errno { try p.rename("/d1", "/d2") } == .notempty)
        #expect(errno { try p.rename("/d1", "/f") } == .notdir)
        #expect(errno { try p.rename("/f", "/d1") } == .isdir)
        #expect(errno { try p.rename("/d1/.", "/z") } == .busy)
        #expect(errno { try p.rename("/d1/..", "/z") } == .busy)
        #expect(errno { try p.rename("/d2/x/", "/z") } == .notdir)
        try p.rename("/d1", "/empty")
        #expect(errno { try p.stat("/d1") } == .noent)
        #expect(try p.stat("/empty").type == .directory)
    }

    // 4. mounts: EXDEV and EBUSY
    @Test func renameAcrossMountsAndOfMountPoints() throws {
        let (vfs, p) = makeMemVFS()
        try p.mkdir("/mnt"); try writeFile(p, "/f", "")
        try vfs.mount(MemFS(), at: "/mnt", by: p)
        #expect(errno { try p.rename("/f", "/mnt/f") } == .xdev)
        #expect(errno { try p.link("/f", "/mnt/g") } == .xdev)
        #expect(errno { try p.rename("/mnt", "/other") } == .busy)
        #expect(errno { try p.rmdir("/mnt") } == .busy)
    }

    // 5. rename keeps the record; fds and cwd below it keep working
    @Test func renameMovesTheRecord() throws {
        let (vfs, p) = makeMemVFS()
        try p.mkdir("/d1"); try p.mkdir("/d1/sub"); try writeFile(p, "/d1/sub/f", "data")
        let before = try p.nlookup(Array("/d1/sub".utf8), follow: true).record
        let fd = try p.open("/d1/sub/f", .readOnly)
        try p.chdir("/d1/sub")
        try p.rename("/d1", "/d2")
        let after = try p.nlookup(Array("/d2/sub".utf8), follow: true).record
        #expect(before === after)
        #expect(try p.getcwd() == "/d2/sub")
        #expect(try p.read(fd, count: 10) == Array("data".utf8))
        #expect(try readFile(p, "f") == "data")
        #expect(errno { try p.stat("/d1") } == .noent)
        let old = vfs.namecache.probe(vfs.rootRecord, Array("d1".utf8))
        #expect(old?.state == .negative)
        try p.close(fd)
    }

    // 8. negative entries are invalidated by every way of creating the name
    @Test(arguments: ["create", "mkdir", "link", "symlink", "rename"])
    func negativeEntryInvalidatedBy(_ how: String) throws {
        let (vfs, p) = makeMemVFS()
        try p.mkdir("/d"); try writeFile(p, "/src", "s")
        try p.symlink("d", "/alias")
        #expect(errno { try p.stat("/d/x") } == .noent)
        #expect(errno { try p.stat("/alias/x") } == .noent)
        #expect(vfs.namecache.statistics.negatives >= 1)
        switch how {
        case "create": try writeFile(p, "/d/x", "")
        case "mkdir": try p.mkdir("/d/x")
        case "link": try p.link("/src", "/d/x")
        case "symlink": try p.symlink("../src", "/d/x")
        default: try p.rename("/src", "/d/x")
        }
        #expect(try p.stat("/d/x").nlink >= 1)
        #expect(try p.stat("/alias/x").nlink >= 1)
        #expect(try p.stat("/d/../d/x").nlink >= 1)
    }

    // 9. unlink while open
    @Test func unlinkWhileOpen() throws {
        let (vfs, p) = makeMemVFS()
        try writeFile(p, "/f", "still here")
        let fd = try p.open("/f", .readWrite)
        try p.unlink("/f")
        #expect(errno { try p.stat("/f") } == .noent)
        #expect(vfs.namecache.probe(vfs.rootRecord, Array("f".utf8))?.state == .negative)
        #expect(try p.fstat(fd).nlink == 0)
        #expect(try p.pread(fd, count: 100, at: 0) == Array("still here".utf8))
        try p.pwrite(fd, Array("S".utf8), at: 0)
        #expect(try p.pread(fd, count: 1, at: 0) == Array("S".utf8))
        try p.close(fd)
    }

    // 10. negative entries are bounded
    @Test func negativeEntriesAreBounded() throws {
        let (vfs, p) = makeMemVFS(negativeRatio: 1, minimumNegatives: 256)
        try p.mkdir("/d")
        for i in 0..<20_000 {
            #expect(errno { try p.stat("/d/missing\(i)") } == .noent)
        }
        let s = vfs.namecache.statistics
        #expect(s.negatives <= vfs.namecache.negativeLimit + 32)
        #expect(s.evictions >= 20_000 - vfs.namecache.negativeLimit - 32)
        #expect(s.records < 1_000)
        #expect(vfs.namecache.checkTopology().isEmpty)
    }

    // 12. .. at the root and in a jail
    @Test func dotDotStaysAtRootAndJail() throws {
        let (vfs, p) = makeMemVFS()
        try p.mkdir("/jail"); try p.mkdir("/jail/inner"); try writeFile(p, "/top", "")
        let root = try p.stat("/")
        #expect(try p.stat("/..") == root)
        #expect(try p.stat("/../../..") == root)
        let child = p.fork()
        try child.jail("/jail")
        let jailRoot = try child.stat("/")
        #expect(jailRoot.inode == (try p.stat("/jail")).inode)
        #expect(try child.stat("/..") == jailRoot)
        #expect(try child.stat("/inner/../..") == jailRoot)
        #expect(try child.stat("..") == jailRoot)
        #expect(errno { try child.stat("/../top") } == .noent)
        try child.chdir("/inner")
        #expect(try child.getcwd() == "/inner")
        // an absolute symlink target restarts at the jail root, not at the namespace root
        try p.symlink("/inner", "/jail/abs")
        #expect(try child.stat("/abs").inode == (try p.stat("/jail/inner")).inode)
        #expect(vfs.namecache.checkTopology().isEmpty)
    }

    // 13 / 14. mount crossings in both directions
    @Test func mountCrossings() throws {
        let (vfs, p) = makeMemVFS()
        try p.mkdir("/up"); try p.mkdir("/up/mp"); try writeFile(p, "/up/sibling", "")
        let covered = try p.stat("/up/mp")
        try vfs.mount(MemFS(), at: "/up/mp", by: p)
        let mounted = try p.stat("/up/mp")
        #expect(mounted.device != covered.device)
        try p.mkdir("/up/mp/d")
        #expect(try p.stat("/up/mp/d/../..") == p.stat("/up"))
        #expect(try p.stat("/up/mp/..").inode == p.stat("/up").inode)
        #expect(try p.stat("/up/mp/../sibling").type == .regular)
        try p.chdir("/up/mp/d")
        #expect(try p.getcwd() == "/up/mp/d")
        #expect(try p.lookupLocked("..").device == mounted.device)
        try p.chdir("/")
        // stacked mounts
        try vfs.mount(MemFS(), at: "/up/mp", by: p)
        #expect(try p.stat("/up/mp").device != mounted.device)
        #expect(errno { try p.stat("/up/mp/d") } == .noent)
        try vfs.unmount("/up/mp", by: p)
        #expect(try p.stat("/up/mp/d").type == .directory)
    }

    // 15. a removed working directory
    @Test func removedWorkingDirectory() throws {
        let (_, p) = makeMemVFS()
        try p.mkdir("/a"); try p.mkdir("/a/gone")
        try p.chdir("/a/gone")
        try p.rmdir("/a/gone")
        #expect(errno { try p.getcwd() } == .noent)
        #expect(errno { try p.open("new", [.create, .writeOnly]) } == .noent)
        #expect(errno { try p.mkdir("x") } == .noent)
        #expect(try p.stat("..").inode == p.stat("/a").inode)
    }

    // 16. symlink limits
    @Test func symlinkLimits() throws {
        let (_, p) = makeMemVFS()
        try writeFile(p, "/target", "t")
        try p.symlink("target", "/l0")
        for i in 1...40 { try p.symlink("l\(i - 1)", "/l\(i)") }
        #expect(try p.stat("/l39").type == .regular)   // 40 links followed
        #expect(errno { try p.stat("/l40") } == .loop) // 41
        try p.symlink("self", "/self")
        #expect(errno { try p.stat("/self") } == .loop)
        #expect(errno { try p.open("/l0", [.noFollow]) } == .loop)
        #expect(errno { try p.symlink("", "/empty") } == .noent)
        #expect(try p.lstat("/l0").type == .symlink)
        #expect(try p.readlink("/l0") == "target")
        #expect(errno { try p.readlink("/target") } == .inval)
    }

    // 17. path syntax
    @Test func pathSyntax() throws {
        let (_, p) = makeMemVFS()
        try writeFile(p, "/f", ""); try p.mkdir("/d"); try writeFile(p, "/d/x", "")
        #expect(errno { try p.stat("/f/") } == .notdir)
        #expect(errno { try p.stat("/f/x") } == .notdir)
        #expect(errno { try p.stat("") } == .noent)
        #expect(errno { try p.stat("/" + String(repeating: "n", count: 256)) } == .nametoolong)
        #expect(errno { try p.stat("/" + String(repeating: "n", count: 255)) } == .noent)
        #expect(errno { try p.stat(String(repeating: "/d", count: 2100)) } == .nametoolong)
        #expect(try p.stat("//d///x").type == .regular)
        #expect(errno { try p.link("/d", "/d2") } == .perm)
        #expect(errno { try p.rmdir("/d/.") } == .inval)
        #expect(errno { try p.rmdir("/d") } == .notempty)
        #expect(errno { try p.rmdir("/") } == .busy)
        #expect(errno { try p.mkdir("/") } == .exist)
        #expect(errno { try p.unlink("/d") } == .isdir)
        #expect(errno { try p.rmdir("/f") } == .notdir)
    }

    // 18. search permission on intermediate directories only
    @Test func searchPermission() throws {
        let (_, rootProc) = makeMemVFS()
        try rootProc.mkdir("/locked", mode: 0o700)
        try writeFile(rootProc, "/locked/f", "secret")
        try rootProc.mkdir("/open", mode: 0o755)
        try writeFile(rootProc, "/open/f", "")
        try rootProc.chmod("/open/f", mode: 0o000)
        let user = rootProc.fork()
        user.credentials = Credentials(uid: 1000, gid: 1000)
        #expect(errno { try user.stat("/locked/f") } == .acces)
        #expect(errno { try user.lookupLocked("/locked/f") } == .acces)
        #expect(try user.stat("/locked").type == .directory)   // the leaf needs no permission
        #expect(try user.stat("/open/f").mode == 0)
        #expect(errno { try user.open("/open/f", .readOnly) } == .acces)
        #expect(errno { try user.mkdir("/open/x") } == .acces)
        #expect(errno { try user.chmod("/open/f", mode: 0o777) } == .perm)
        #expect(errno { try user.chown("/open/f", uid: 1000, gid: nil) } == .perm)
        #expect(errno { try user.chroot("/open") } == .perm)
        try rootProc.chmod("/locked", mode: 0o711)
        #expect(try readFile(rootProc, "/locked/f") == "secret")
        #expect(try user.stat("/locked/f").size == 6)
    }

    // 19. getcwd after an ancestor's rename, and ERANGE
    @Test func getcwdAfterAncestorRename() throws {
        let (_, p) = makeMemVFS()
        try p.mkdir("/P"); try p.mkdir("/P/q"); try p.mkdir("/P/q/r")
        try p.chdir("/P/q/r")
        try p.rename("/P", "/P2")
        #expect(try p.getcwd() == "/P2/q/r")
        #expect(errno { try p.getcwd(bufferSize: 5) } == .range)
        #expect(try p.getcwd(bufferSize: 8) == "/P2/q/r")
    }

    // 20. holds back to zero, unmount busy while in use
    @Test func holdsReturnToZeroAndUnmountBusy() throws {
        let (vfs, p) = makeMemVFS()
        try p.mkdir("/mnt")
        try vfs.mount(MemFS(), at: "/mnt", by: p)
        try p.mkdir("/mnt/d"); try writeFile(p, "/mnt/d/f", "x")
        let fd = try p.open("/mnt/d/f", .readOnly)
        #expect(errno { try vfs.unmount("/mnt", by: p) } == .busy)
        try p.close(fd)
        try p.chdir("/mnt/d")
        #expect(errno { try vfs.unmount("/mnt", by: p) } == .busy)
        try p.chdir("/")
        #expect(vfs.namecache.heldRecordCount() == 1) // only the covered mount point is pinned
        try vfs.unmount("/mnt", by: p)
        #expect(errno { try p.stat("/mnt/d") } == .noent)
        #expect(vfs.namecache.checkTopology().isEmpty)
        #expect(vfs.namecache.heldRecordCount() == 0)
    }

    @Test func stickyDirectory() throws {
        let (_, rootProc) = makeMemVFS()
        try rootProc.mkdir("/tmp", mode: 0o1777)
        let alice = rootProc.fork(); alice.credentials = Credentials(uid: 1001, gid: 100)
        let bob = rootProc.fork(); bob.credentials = Credentials(uid: 1002, gid: 100)
        try writeFile(alice, "/tmp/a", "")
        #expect(errno { try bob.unlink("/tmp/a") } == .perm)
        #expect(errno { try bob.rename("/tmp/a", "/tmp/b") } == .perm)
        try alice.unlink("/tmp/a")
    }

    @Test func attributeChanges() throws {
        let (_, p) = makeMemVFS()
        try writeFile(p, "/f", "abc")
        try p.chmod("/f", mode: 0o640)
        try p.chown("/f", uid: 5, gid: 6)
        let t = Timespec(seconds: 1_000_000, nanoseconds: 5)
        try p.utimes("/f", access: t, modification: t)
        let a = try p.stat("/f")
        #expect(a.mode == 0o640 && a.uid == 5 && a.gid == 6 && a.mtime == t && a.atime == t)
        try p.truncate("/f", length: 1)
        #expect(try readFile(p, "/f") == "a")
        #expect(errno { try p.truncate("/f", length: -1) } == .inval)
    }

    @Test func readdirAndFchdir() throws {
        let (_, p) = makeMemVFS()
        try p.mkdir("/d"); try writeFile(p, "/d/b", ""); try p.mkdir("/d/a"); try p.symlink("x", "/d/c")
        #expect(try p.listDirectory("/d").map(\.name) == ["a", "b", "c"])
        #expect(try p.listDirectory("/d").map(\.type) == [.directory, .regular, .symlink])
        let fd = try p.open("/d", [.directory])
        try p.fchdir(fd)
        #expect(try p.getcwd() == "/d")
        try p.close(fd)
        #expect(errno { try p.readdir(fd) } == .badf)
    }

    @Test func chrootConfinesLookups() throws {
        let (_, p) = makeMemVFS()
        try p.mkdir("/r"); try p.mkdir("/r/in"); try writeFile(p, "/outside", "")
        try p.chroot("/r")
        #expect(errno { try p.stat("/outside") } == .noent)
        #expect(try p.stat("/in").type == .directory)
        #expect(try p.stat("/..").inode == p.stat("/").inode)
    }

    @Test func fastAndLockedWalksAgree() throws {
        let (vfs, p) = makeMemVFS()
        try p.mkdir("/a"); try p.mkdir("/a/b"); try writeFile(p, "/a/b/f", "x")
        try p.symlink("b", "/a/lb")
        let paths = ["/a/b/f", "/a/./b/../b/f", "/a/lb/f", "/a", "/", "/..", "/a/b/", "/a/missing", "/a/b/f/", "a/b"]
        for path in paths {
            // twice, so the second answer comes from a warm cache
            for _ in 0..<2 {
                let fast = Result { () throws(VFSError) in try p.stat(path) }
                let slow = Result { () throws(VFSError) in try p.lookupLocked(path) }
                #expect(fast == slow, "\(path)")
            }
        }
        #expect(vfs.namecache.statistics.fastLookups > 0)
        #expect(vfs.namecache.statistics.hits > 0)
        #expect(vfs.namecache.statistics.negativeHits > 0)
    }
}
