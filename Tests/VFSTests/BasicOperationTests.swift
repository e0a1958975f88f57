import Testing
@testable import VFS

@Suite struct BasicOperationTests {
    @Test func createWriteReadStat() throws {
        let (_, p) = makeMemVFS()
        try p.mkdir("/a")
        try p.mkdir("/a/b")
        try writeFile(p, "/a/b/f", "hello")
        #expect(try readFile(p, "/a/b/f") == "hello")
        let st = try p.stat("/a/b/f")
        #expect(st.type == .regular)
        #expect(st.size == 5)
        #expect(st.nlink == 1)
        #expect(try p.stat("/a/b").type == .directory)
        #expect(try p.lookupLocked("/a/b/f") == st)
    }

    @Test func openFlags() throws {
        let (_, p) = makeMemVFS()
        try writeFile(p, "/f", "abcdef")
        #expect(errno { try p.open("/f", [.writeOnly, .create, .exclusive]) } == .exist)
        let fd = try p.open("/f", [.writeOnly, .append])
        try p.write(fd, Array("gh".utf8))
        try p.close(fd)
        #expect(try readFile(p, "/f") == "abcdefgh")
        let t = try p.open("/f", [.readWrite, .truncate])
        #expect(try p.fstat(t).size == 0)
        try p.pwrite(t, Array("xyz".utf8), at: 4)
        #expect(try p.pread(t, count: 10, at: 0) == [0, 0, 0, 0] + Array("xyz".utf8))
        #expect(try p.seek(t, -1, from: .end) == 6)
        #expect(try p.read(t, count: 5) == Array("z".utf8))
        try p.ftruncate(t, length: 2)
        #expect(try p.fstat(t).size == 2)
        try p.close(t)
        #expect(errno { try p.close(t) } == .badf)
        try p.mkdir("/d")
        #expect(errno { try p.open("/d", .writeOnly) } == .isdir)
        #expect(errno { try p.open("/f", [.directory]) } == .notdir)
        try p.symlink("/f", "/l")
        #expect(errno { try p.open("/l", [.noFollow]) } == .loop)
        #expect(errno { try p.open("/x/", [.create, .writeOnly]) } == .isdir)
    }
}
