import CFUSE
import FUSE
import Foundation
import LibellulaTestSupport
import Glibc
import LWKT
import Testing
import VFS

/// Concurrency through the mount, the namecache's properties seen by real processes, and the
/// mount's life: unmount with files open, signals, clear errors.
@Suite(.serialized) struct MountLifecycleTests {
    static let binary = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent(".build/debug/libellula").path

    static func isMounted(_ path: String) -> Bool {
        let text = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").contains { $0.split(separator: " ").dropFirst().first.map(String.init) == path }
    }

    @Test func concurrentWritersAndRenamersFromProcesses() throws {
        guard let rig = try MountRig.make(cpus: 2) else { return }
        defer { rig.close() }
        let m = rig.path
        try shell("mkdir -p '\(m)/shared/x/inner' && echo keep > '\(m)/shared/x/inner/file'")
        let worker = """
        import os, sys
        root, wid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        os.makedirs(f"{root}/w{wid}", exist_ok=True)
        log = os.open(f"{root}/log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        for k in range(n):
            p = f"{root}/w{wid}/f{k % 10}"
            data = (f"{wid}:{k}:" * 40).encode()
            with open(p + ".tmp", "wb") as f:
                f.write(data)
            os.rename(p + ".tmp", p)
            with open(p, "rb") as f:
                assert f.read() == data, p
            os.write(log, f"{wid} {k} {'z' * 60}\\n".encode())
            for a, b in (("x", "y"), ("y", "x")):
                try:
                    os.rename(f"{root}/shared/{a}", f"{root}/shared/{b}")
                except FileNotFoundError:
                    pass
            for d in ("x", "y"):
                try:
                    with open(f"{root}/shared/{d}/inner/file") as f:
                        assert f.read() == "keep\\n"
                except FileNotFoundError:
                    pass
        os.close(log)
        """
        try worker.write(toFile: rig.scratch + "/worker.py", atomically: true, encoding: .utf8)
        let workers = 4, rounds = 150
        let r = try shell("""
            for i in $(seq 1 \(workers)); do python3 '\(rig.scratch)/worker.py' '\(m)' $i \(rounds) & done
            # The kernel forgets inodes while the workers look them up again (FORGET vs LOOKUP).
            (for k in $(seq 1 10); do echo 2 > /proc/sys/vm/drop_caches; sleep 0.1; done) &
            fail=0; for j in $(jobs -p); do wait $j || fail=1; done; exit $fail
            """, timeout: 240)
        #expect(!r.timedOut, "watchdog: the workers hung")
        #expect(r.status == 0, "\(r.output)")
        // Every appended line is whole and none is lost.
        let log = (try? String(contentsOfFile: m + "/log", encoding: .utf8)) ?? ""
        let lines = log.split(separator: "\n")
        #expect(lines.count == workers * rounds)
        #expect(lines.allSatisfy { $0.hasSuffix(String(repeating: "z", count: 60)) })
        // The renamed directory exists under exactly one name, with its contents.
        var st = stat()
        let x = lstat(m + "/shared/x/inner/file", &st) == 0, y = lstat(m + "/shared/y/inner/file", &st) == 0
        #expect(x != y)
        #expect(rig.vfs.namecache.checkTopology().isEmpty)
        // Once the kernel drops its inodes, every node id it held has been forgotten.
        #expect(rig.server.knownNodes > 0)
        var known = rig.server.knownNodes
        for _ in 0..<50 where known > 0 {
            try "2".write(toFile: "/proc/sys/vm/drop_caches", atomically: false, encoding: .utf8)
            usleep(40_000)
            known = rig.server.knownNodes
        }
        #expect(known == 0, "\(known) node ids still held after the kernel dropped its caches")
    }

    @Test func namecachePropertiesThroughTheMount() throws {
        guard let rig = try MountRig.make() else { return }
        defer { rig.close() }
        let m = rig.path
        // A renamed directory keeps working for a process inside it, and getcwd follows.
        let r = try shell("""
            set -e
            mkdir -p '\(m)/p/a/q'
            cd '\(m)/p/a/q'
            mv '\(m)/p/a' '\(m)/p/b'
            [ "$(/bin/pwd -P)" = '\(m)/p/b/q' ] || { /bin/pwd -P; exit 1; }
            echo here > f
            [ -f '\(m)/p/b/q/f' ] && [ ! -e '\(m)/p/a' ]
            """)
        #expect(r.status == 0, "\(r.output)")
        // A negative entry becomes positive when the name is made through another path.
        var st = stat()
        #expect(lstat(m + "/p/b/new", &st) == -1 && errno == ENOENT)
        #expect(mkdir(m + "/p/b/q/../new", 0o755) == 0)
        #expect(lstat(m + "/p/b/new", &st) == 0)
        // Unlink while open: the name is gone at once, the descriptor works, nlink is 0.
        let fd = open(m + "/p/b/q/f", O_RDONLY)
        #expect(unlink(m + "/p/b/q/f") == 0)
        #expect(lstat(m + "/p/b/q/f", &st) == -1 && errno == ENOENT)
        var fst = stat()
        #expect(fstat(fd, &fst) == 0 && fst.st_nlink == 0)
        var b = [UInt8](repeating: 0, count: 5)
        #expect(read(fd, &b, 5) == 5 && b == Array("here\n".utf8))
        close(fd)
        // A directory cannot move into its own subtree; renaming over a non-empty one fails.
        #expect(rename(m + "/p/b", m + "/p/b/q/x") == -1 && errno == EINVAL)
        #expect(mkdir(m + "/p/c", 0o755) == 0 && mkdir(m + "/p/c/full", 0o755) == 0)
        #expect(rename(m + "/p/b", m + "/p/c") == -1 && errno == ENOTEMPTY)
        // Symlink chains: 40 links resolve, 41 give ELOOP; a self-loop gives ELOOP.
        close(open(m + "/target", O_CREAT | O_WRONLY, 0o644))
        #expect(symlink("target", m + "/l0") == 0)
        for i in 1...40 { #expect(symlink("l\(i - 1)", m + "/l\(i)") == 0) }
        #expect(stat(m + "/l39", &st) == 0)
        #expect(stat(m + "/l40", &st) == -1 && errno == ELOOP)
        #expect(symlink("self", m + "/self") == 0 && stat(m + "/self", &st) == -1 && errno == ELOOP)
        #expect(open(m + "/l0", O_RDONLY | O_NOFOLLOW) == -1 && errno == ELOOP)
        // Path syntax: a trailing slash after a file, long names, rmdir of ".".
        #expect(stat(m + "/target/", &st) == -1 && errno == ENOTDIR)
        #expect(mkdir(m + "/" + String(repeating: "n", count: 256), 0o755) == -1 && errno == ENAMETOOLONG)
        #expect(mkdir(m + "/" + String(repeating: "n", count: 255), 0o755) == 0)
        #expect(rmdir(m + "/p/c/.") == -1 && errno == EINVAL)
        #expect(link(m + "/p", m + "/plink") == -1 && errno == EPERM)
        // ".." of the mount's root is the directory it is mounted on.
        var up = stat(), parent = stat()
        #expect(stat(m + "/..", &up) == 0 && stat(rig.path + "/../mnt/..", &parent) == 0 && up.st_ino == parent.st_ino)
        var rootSt = stat()
        #expect(stat(m, &rootSt) == 0 && rootSt.st_dev != up.st_dev)
        #expect(rig.vfs.namecache.checkTopology().isEmpty)
    }

    @Test func unmountWithFilesStillOpen() throws {
        guard let rig = try MountRig.make() else { return }
        defer { rig.close() }
        let fd = open(rig.path + "/held", O_CREAT | O_RDWR, 0o644)
        #expect(fd >= 0 && write(fd, "x", 1) == 1)
        #expect(Self.isMounted(rig.path))
        rig.server.stop()
        #expect(!Self.isMounted(rig.path))
        #expect(rig.server.isFinished)
        // The open file now fails instead of hanging.
        var b: UInt8 = 0
        #expect(pread(fd, &b, 1, 0) == -1)
        close(fd)
    }

    @Test func clearErrors() throws {
        guard let rig = try MountRig.make() else { return }
        defer { rig.close() }
        let system = try LWKT.boot(cpus: 1)
        defer { _ = try? system.shutdownBlocking() }
        let vfs = VirtualFileSystem(rootFileSystem: MemFS())
        #expect(throws: FUSEError.mountPointBusy(rig.path)) { _ = try FUSEServer.mount(vfs, at: rig.path, system: system) }
        #expect(throws: FUSEError.mountPointMissing(rig.scratch + "/none")) {
            _ = try FUSEServer.mount(vfs, at: rig.scratch + "/none", system: system)
        }
        #expect(FUSEError.mountPointBusy(rig.path).description.contains("fusermount3 -u"))
        #expect(FUSEError.deviceMissing.description.contains("modprobe fuse"))
        #expect(FUSEError.fusermountMissing.description.contains("apt-get install fuse3"))
    }

    /// `libellula mount` as a process: serves, unmounts on SIGTERM or SIGINT with a shell
    /// still inside the mount, and exits 0.
    @Test(arguments: [SIGTERM, SIGINT]) func commandUnmountsOnSignal(signal: Int32) throws {
        if let why = MountRig.skipReason() { print(why); return }
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            print("skipping: \(Self.binary) not built")
            return
        }
        let base = "/tmp/libellula-fuse-cmd-\(getpid())-\(signal)"
        try FileManager.default.createDirectory(atPath: base + "/mnt", withIntermediateDirectories: true)
        defer {
            _ = lb_fuse_kernel_unmount(base + "/mnt", 1)
            try? FileManager.default.removeItem(atPath: base)
        }
        // posix_spawn (LibellulaTestSupport), not Foundation's Process.
        let p = try Subprocess(Self.binary, ["mount", base + "/mnt", "--memfs", "--cpus", "2", "--stats-file", base + "/stats.json"])
        var ready = false
        for _ in 0..<500 where !ready {
            usleep(20_000)
            ready = Self.isMounted(base + "/mnt")
        }
        #expect(ready, "the mount did not appear")
        let holder = try Subprocess("/bin/sh", ["-c", "cd '\(base)/mnt' && echo data > kept && exec sleep 20"], output: .inherited)
        usleep(300_000)
        kill(p.processIdentifier, signal)
        // Collects the output while waiting; the timeout kills it.
        let result = p.wait(timeout: 20)
        let exited = !result.timedOut
        holder.terminate()
        holder.waitUntilExit()
        #expect(exited, "libellula mount did not exit after signal \(signal)")
        if exited { #expect(result.status == 0) }
        #expect(!Self.isMounted(base + "/mnt"))
        let text = result.output
        #expect(text.contains("unmounted"), "\(text)")
        let stats = FileManager.default.contents(atPath: base + "/stats.json").flatMap { try? JSONDecoder().decode(FUSEStatistics.self, from: $0) }
        #expect(stats?.channels.count == 2)
        #expect((stats?.channels.reduce(0) { $0 + $1.requests } ?? 0) > 0)
    }

    @Test func commandExitsWhenUnmountedFromOutside() throws {
        if let why = MountRig.skipReason() { print(why); return }
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else { return }
        let base = "/tmp/libellula-fuse-ext-\(getpid())"
        try FileManager.default.createDirectory(atPath: base + "/mnt", withIntermediateDirectories: true)
        defer {
            _ = lb_fuse_kernel_unmount(base + "/mnt", 1)
            try? FileManager.default.removeItem(atPath: base)
        }
        let r = try shell("""
            '\(Self.binary)' mount '\(base)/mnt' --cpus 2 & pid=$!
            i=0; until grep -q ' \(base)/mnt ' /proc/mounts; do i=$((i+1)); [ $i -lt 200 ] || exit 3; sleep 0.05; done
            echo x > '\(base)/mnt/f'
            umount '\(base)/mnt'
            wait $pid
            """, timeout: 30)
        #expect(!r.timedOut && r.status == 0, "\(r.output)")
        #expect(r.output.contains("unmounted"))
    }

    @Test func commandReportsABusyMountPoint() throws {
        guard let rig = try MountRig.make() else { return }
        defer { rig.close() }
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else { return }
        let r = try shell("'\(Self.binary)' mount '\(rig.path)' --cpus 1", timeout: 30)
        #expect(r.status == 69)  // EX_UNAVAILABLE
        #expect(r.output.contains("busy") && r.output.contains("fusermount3 -u"), "\(r.output)")
    }
}
