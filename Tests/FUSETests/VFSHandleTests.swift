import Foundation
import Glibc
import Testing
import VFS

/// The record-addressed VFS calls the FUSE server is built on, without a mount (no root
/// needed): lookups, creation, the three rename modes, FIFOs and extended attributes.
@Suite struct VFSHandleTests {
    func check(_ vfs: VirtualFileSystem) throws {
        let p = vfs.makeProcess()
        let root = vfs.rootRecord
        let me = Credentials(uid: 1000, gid: 100)
        #expect(try p.lookup(Array("a".utf8), in: root) == nil)
        let (a, created) = try p.create(Array("a".utf8), in: root, mode: 0o640, exclusive: true, credentials: me)
        #expect(created)
        #expect(throws: VFSError.exist) { try p.create(Array("a".utf8), in: root, mode: 0o640, exclusive: true, credentials: me) }
        #expect(try p.create(Array("a".utf8), in: root, mode: 0o640, exclusive: false, credentials: me).created == false)
        let attrs = try p.attributes(of: a)
        #expect(attrs.uid == 1000 && attrs.gid == 100 && attrs.mode == 0o640 && attrs.type == .regular)
        #expect(try p.lookup(Array("a".utf8), in: root) === a)
        let d = try p.makeDirectory(Array("d".utf8), in: root, mode: 0o755, credentials: me)
        let e = try p.makeDirectory(Array("e".utf8), in: d, mode: 0o755, credentials: me)
        // rename: replace, no-replace, exchange, and the subtree rule
        #expect(throws: VFSError.inval) { try p.rename(Array("d".utf8), in: root, to: Array("x".utf8), in: e) }
        let b = try p.create(Array("b".utf8), in: d, mode: 0o600, exclusive: true, credentials: me).record
        #expect(throws: VFSError.exist) { try p.rename(Array("a".utf8), in: root, to: Array("b".utf8), in: d, mode: .noReplace) }
        #expect(throws: VFSError.noent) { try p.rename(Array("a".utf8), in: root, to: Array("zz".utf8), in: d, mode: .exchange) }
        try p.rename(Array("a".utf8), in: root, to: Array("e".utf8), in: d, mode: .exchange)
        #expect(try p.lookup(Array("a".utf8), in: root) === e)
        #expect(try p.lookup(Array("e".utf8), in: d) === a)
        #expect(p.isDirectory(try #require(try p.lookup(Array("a".utf8), in: root))))
        try p.rename(Array("e".utf8), in: d, to: Array("b".utf8), in: d)
        #expect(try p.lookup(Array("b".utf8), in: d) === a)
        #expect(try p.lookup(Array("e".utf8), in: d) == nil)
        _ = b
        // links, symlinks, unlink, rmdir
        let l = try p.link(a, as: Array("l".utf8), in: root)
        #expect(try p.attributes(of: l).nlink == 2)
        let s = try p.makeSymlink(Array("s".utf8), in: root, target: Array("d/b".utf8), credentials: me)
        #expect(try p.readSymlink(s) == Array("d/b".utf8))
        try p.unlink(Array("l".utf8), in: root)
        #expect(throws: VFSError.notempty) { try p.removeDirectory(Array("d".utf8), in: root) }
        #expect(throws: VFSError.isdir) { try p.unlink(Array("d".utf8), in: root) }
        // FIFO
        let f = try p.makeFIFO(Array("fifo".utf8), in: root, mode: 0o644, credentials: me)
        #expect(try p.attributes(of: f).type == .other)
        #expect(vfs.namecache.checkTopology().isEmpty)
    }

    @Test func memFS() throws { try check(VirtualFileSystem(rootFileSystem: MemFS())) }

    @Test func hostFS() throws {
        let dir = "/tmp/libellula-vfs-handles-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try check(VirtualFileSystem(rootFileSystem: try HostFS(hostPath: dir)))
        var st = stat()
        #expect(lstat(dir + "/fifo", &st) == 0 && st.st_mode & S_IFMT == S_IFIFO)
        #expect(lstat(dir + "/a", &st) == 0 && st.st_mode & S_IFMT == S_IFDIR)
    }

    @Test func extendedAttributesOnMemFS() throws {
        let vfs = VirtualFileSystem(rootFileSystem: MemFS())
        let p = vfs.makeProcess()
        let r = try p.create(Array("x".utf8), in: vfs.rootRecord, mode: 0o644, exclusive: true, credentials: .root).record
        try p.setExtendedAttribute(Array("user.b".utf8), [2], of: r)
        try p.setExtendedAttribute(Array("user.a".utf8), [1], of: r, create: true)
        #expect(throws: VFSError.exist) { try p.setExtendedAttribute(Array("user.a".utf8), [3], of: r, create: true) }
        #expect(throws: VFSError.nodata) { try p.setExtendedAttribute(Array("user.c".utf8), [3], of: r, replace: true) }
        #expect(throws: VFSError.notsup) { try p.setExtendedAttribute(Array("system.posix_acl_access".utf8), [0], of: r) }
        #expect(try p.extendedAttribute(Array("user.a".utf8), of: r) == [1])
        #expect(try p.extendedAttributeNames(of: r) == [Array("user.a".utf8), Array("user.b".utf8)])
        try p.removeExtendedAttribute(Array("user.a".utf8), of: r)
        #expect(throws: VFSError.nodata) { try p.extendedAttribute(Array("user.a".utf8), of: r) }
        let host = VirtualFileSystem(rootFileSystem: try HostFS(hostPath: "/tmp"))
        #expect(throws: VFSError.notsup) { try host.makeProcess().extendedAttributeNames(of: host.rootRecord) }
    }
}
