import CFUSE
import FUSE
import Foundation
import Glibc
import Testing
import VFS

/// `renameat2`, which Swift's Glibc module does not declare.
let renameat2Call: (@convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32)? = {
    guard let h = dlopen(nil, RTLD_NOW), let s = dlsym(h, "renameat2") else { return nil }
    return unsafeBitCast(s, to: (@convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32).self)
}()

/// The mount itself: operations and their errno, on MemFS and HostFS.
@Suite(.serialized) struct MountBasicsTests {
    func readAll(_ path: String) -> String? {
        guard let d = FileManager.default.contents(atPath: path) else { return nil }
        return String(decoding: d, as: UTF8.self)
    }

    func check(_ rig: MountRig) throws {
        let m = rig.path
        // create, O_EXCL, O_TRUNC, O_APPEND
        var fd = open(m + "/f", O_CREAT | O_EXCL | O_WRONLY, 0o640)
        #expect(fd >= 0)
        #expect(write(fd, "hello", 5) == 5)
        close(fd)
        #expect(open(m + "/f", O_CREAT | O_EXCL | O_WRONLY, 0o640) == -1 && errno == EEXIST)
        fd = open(m + "/f", O_WRONLY | O_APPEND)
        #expect(write(fd, " world", 6) == 6)
        close(fd)
        #expect(readAll(m + "/f") == "hello world")
        var st = stat()
        #expect(lstat(m + "/f", &st) == 0 && st.st_mode & 0o7777 == 0o640 && st.st_size == 11 && st.st_nlink == 1)
        fd = open(m + "/f", O_WRONLY | O_TRUNC)
        close(fd)
        #expect(lstat(m + "/f", &st) == 0 && st.st_size == 0)
        // missing names: ENOENT twice (the second from the kernel's negative dentry)
        #expect(lstat(m + "/nope", &st) == -1 && errno == ENOENT)
        #expect(lstat(m + "/nope", &st) == -1 && errno == ENOENT)
        // and a negative entry turns positive when the name is created
        close(open(m + "/nope", O_CREAT | O_WRONLY, 0o600))
        #expect(lstat(m + "/nope", &st) == 0)
        // directories
        #expect(mkdir(m + "/d", 0o755) == 0)
        #expect(mkdir(m + "/d", 0o755) == -1 && errno == EEXIST)
        #expect(mkdir(m + "/d/e", 0o700) == 0)
        #expect(rmdir(m + "/d") == -1 && errno == ENOTEMPTY)
        #expect(unlink(m + "/d") == -1 && (errno == EISDIR || errno == EPERM))
        #expect(rename(m + "/d", m + "/d/e/x") == -1 && errno == EINVAL)
        // links
        #expect(link(m + "/f", m + "/d/f2") == 0)
        #expect(lstat(m + "/f", &st) == 0 && st.st_nlink == 2)
        var st2 = stat()
        #expect(lstat(m + "/d/f2", &st2) == 0 && st2.st_ino == st.st_ino)
        #expect(symlink("../f", m + "/d/s") == 0)
        var buf = [CChar](repeating: 0, count: 64)
        #expect(readlink(m + "/d/s", &buf, 64) == 4)
        #expect(stat(m + "/d/s", &st2) == 0 && st2.st_ino == st.st_ino)
        // rename variants
        close(open(m + "/g", O_CREAT | O_WRONLY, 0o600))
        if let r2 = renameat2Call {
            #expect(r2(AT_FDCWD, m + "/g", AT_FDCWD, m + "/f", 1) == -1 && errno == EEXIST)  // RENAME_NOREPLACE
            #expect(r2(AT_FDCWD, m + "/g", AT_FDCWD, m + "/d", 2) == 0)  // RENAME_EXCHANGE
            #expect(lstat(m + "/g", &st2) == 0 && st2.st_mode & S_IFMT == S_IFDIR)
            #expect(lstat(m + "/g/e", &st2) == 0)
            #expect(lstat(m + "/d", &st2) == 0 && st2.st_mode & S_IFMT == S_IFREG)
            #expect(r2(AT_FDCWD, m + "/g", AT_FDCWD, m + "/d", 2) == 0)
        }
        #expect(rename(m + "/g", m + "/f") == 0)
        #expect(lstat(m + "/g", &st2) == -1 && errno == ENOENT)
        // setattr: chmod, chown, utimens, truncate
        #expect(chmod(m + "/f", 0o604) == 0)
        #expect(chown(m + "/f", 1234, 5678) == 0)
        #expect(truncate(m + "/f", 100) == 0)
        var times = [timespec(tv_sec: 1_000_000_000, tv_nsec: 5), timespec(tv_sec: 1_100_000_000, tv_nsec: 7)]
        #expect(utimensat(AT_FDCWD, m + "/f", &times, 0) == 0)
        #expect(lstat(m + "/f", &st) == 0)
        #expect(st.st_mode & 0o7777 == 0o604 && st.st_uid == 1234 && st.st_gid == 5678)
        #expect(st.st_mtim.tv_sec == 1_100_000_000 && st.st_mtim.tv_nsec == 7 && st.st_atim.tv_sec == 1_000_000_000 && st.st_size == 100)
        // statfs, fsync
        var sfs = statvfs()
        #expect(statvfs(m, &sfs) == 0 && sfs.f_namemax == 255)
        fd = open(m + "/f", O_RDWR)
        #expect(fsync(fd) == 0)
        // unlink while open: the data stays readable
        #expect(unlink(m + "/f") == 0 && unlink(m + "/d/f2") == 0)
        var fst = stat()
        #expect(fstat(fd, &fst) == 0 && fst.st_size == 100)
        var rb = [UInt8](repeating: 1, count: 8)
        #expect(pread(fd, &rb, 8, 0) == 8 && rb == [0, 0, 0, 0, 0, 0, 0, 0])
        close(fd)
        // flock and POSIX locks (kept by the kernel for this mount)
        fd = open(m + "/nope", O_RDWR)
        #expect(flock(fd, LOCK_EX | LOCK_NB) == 0)
        let other = open(m + "/nope", O_RDWR)
        #expect(flock(other, LOCK_EX | LOCK_NB) == -1 && errno == EWOULDBLOCK)
        close(other)
        close(fd)
    }

    @Test func operationsOnMemFS() throws {
        guard let rig = try MountRig.make() else { return }
        defer { rig.close() }
        try check(rig)
        let stats = rig.server.fullStatistics
        #expect(stats.channels.count == 2)
        #expect(stats.channels.reduce(0) { $0 + $1.requests } > 0)
        #expect(stats.channels.reduce(0) { $0 + $1.lookups } >= stats.channels.reduce(0) { $0 + $1.negativeLookups })
        #expect(stats.channels.reduce(0) { $0 + $1.negativeLookups } > 0)
        #expect(stats.namecacheRecords > 0)
        let decoded = try JSONDecoder().decode(FUSEStatistics.self, from: try JSONEncoder().encode(stats))
        #expect(decoded == stats)
    }

    @Test func operationsOnHostFS() throws {
        guard let rig = try MountRig.make(hostBacked: true) else { return }
        defer { rig.close() }
        try check(rig)
        // the host directory holds what was done through the mount
        var st = stat()
        #expect(lstat(rig.backing! + "/d/e", &st) == 0 && st.st_mode & 0o7777 == 0o700)
    }

    @Test func fifosAndExtendedAttributes() throws {
        guard let rig = try MountRig.make() else { return }
        defer { rig.close() }
        let m = rig.path
        // mknod of a FIFO: the kernel runs the pipe, the mount keeps the name.
        #expect(mkfifo(m + "/fifo", 0o644) == 0)
        var st = stat()
        #expect(lstat(m + "/fifo", &st) == 0 && st.st_mode & S_IFMT == S_IFIFO && st.st_mode & 0o777 == 0o644)
        let r = try shell("(echo through-the-fifo > '\(m)/fifo' &) ; cat '\(m)/fifo'", timeout: 20)
        #expect(r.status == 0 && r.output == "through-the-fifo\n", "\(r.output)")
        // Extended attributes on MemFS.
        close(open(m + "/x", O_CREAT | O_WRONLY, 0o644))
        let x = try shell("""
            set -e
            command -v setfattr >/dev/null || { echo skip; exit 0; }
            setfattr -n user.colour -v blue '\(m)/x'
            setfattr -n user.size -v 42 '\(m)/x'
            [ "$(getfattr --only-values -n user.colour '\(m)/x')" = blue ]
            [ "$(getfattr --absolute-names -d '\(m)/x' | grep -c '^user\\.')" = 2 ]
            setfattr -x user.colour '\(m)/x'
            if getfattr -n user.colour '\(m)/x' 2>/dev/null; then echo "still there"; exit 1; fi
            """, timeout: 20)
        #expect(x.status == 0, "\(x.output)")
        // The same through the system calls, with their errors.
        let sysX = try shell("""
            python3 - '\(m)/x' <<'PY'
            import os, sys, errno
            p = sys.argv[1]
            os.setxattr(p, "user.a", b"1", os.XATTR_CREATE)
            try:
                os.setxattr(p, "user.a", b"2", os.XATTR_CREATE); sys.exit("EEXIST expected")
            except OSError as e:
                assert e.errno == errno.EEXIST, e
            try:
                os.setxattr(p, "user.b", b"2", os.XATTR_REPLACE); sys.exit("ENODATA expected")
            except OSError as e:
                assert e.errno == errno.ENODATA, e
            assert os.getxattr(p, "user.a") == b"1"
            assert "user.a" in os.listxattr(p)
            os.removexattr(p, "user.a")
            try:
                os.getxattr(p, "user.a"); sys.exit("ENODATA expected")
            except OSError as e:
                assert e.errno == errno.ENODATA, e
            PY
            """, timeout: 20)
        #expect(sysX.status == 0, "\(sysX.output)")
    }

    /// Changes made on the host behind a HostFS mount show through once the kernel's
    /// timeouts (here 0) let it ask again: the namecache revalidates each name with the host.
    @Test func hostChangesShowThrough() throws {
        guard let rig = try MountRig.make(hostBacked: true, options: .init(entryTimeout: 0, attributeTimeout: 0)) else { return }
        defer { rig.close() }
        let m = rig.path, h = rig.backing!
        var st = stat()
        #expect(lstat(m + "/later", &st) == -1 && errno == ENOENT)
        close(open(h + "/later", O_CREAT | O_WRONLY, 0o644))
        #expect(lstat(m + "/later", &st) == 0)
        #expect(rename(h + "/later", h + "/moved") == 0)
        #expect(lstat(m + "/later", &st) == -1 && errno == ENOENT)
        #expect(lstat(m + "/moved", &st) == 0 && st.st_size == 0)
        let fd = open(h + "/moved", O_WRONLY)
        #expect(write(fd, "12345", 5) == 5)
        close(fd)
        #expect(lstat(m + "/moved", &st) == 0 && st.st_size == 5)
        #expect(unlink(h + "/moved") == 0 && mkdir(h + "/moved", 0o700) == 0)
        #expect(lstat(m + "/moved", &st) == 0 && st.st_mode & S_IFMT == S_IFDIR)
    }

    @Test func largeSparseFileOnHostFS() throws {
        guard let rig = try MountRig.make(hostBacked: true) else { return }
        defer { rig.close() }
        let fd = open(rig.path + "/big", O_CREAT | O_RDWR, 0o644)
        #expect(fd >= 0)
        let offset: off_t = 5 << 30
        #expect(pwrite(fd, "tail", 4, offset) == 4)
        var st = stat()
        #expect(fstat(fd, &st) == 0 && st.st_size == offset + 4)
        var b = [UInt8](repeating: 0, count: 4)
        #expect(pread(fd, &b, 4, offset) == 4 && String(decoding: b, as: UTF8.self) == "tail")
        var hole = [UInt8](repeating: 9, count: 4096)
        #expect(pread(fd, &hole, 4096, 1 << 30) == 4096 && hole.allSatisfy { $0 == 0 })
        close(fd)
        #expect(lstat(rig.backing! + "/big", &st) == 0 && st.st_size == offset + 4 && st.st_blocks < 1024)
        // The mount reports the host's allocation, so du sees a sparse file as small.
        var through = stat()
        #expect(lstat(rig.path + "/big", &through) == 0 && through.st_blocks == st.st_blocks)
        let du = try shell("du -k '\(rig.path)/big' | cut -f1")
        #expect((Int(du.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 1 << 30) < 1024, "\(du.output)")
    }
}
