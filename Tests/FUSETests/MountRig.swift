import CFUSE
import FUSE
import Foundation
import Glibc
import LWKT
import LibellulaTestSupport
import VFS

/// A FUSE mount served in this test process: LWKT CPUs answer the kernel while the test
/// thread (and the tools it starts) use the mount. `close()` always unmounts; a rig that
/// cannot be made (not root, no /dev/fuse) is `nil` after printing why the test skips.
final class MountRig: @unchecked Sendable {
    let system: LWKTSystem
    let server: FUSEServer
    let vfs: VirtualFileSystem
    /// The mount point.
    let path: String
    /// The host directory behind a HostFS mount.
    let backing: String?
    /// A scratch host directory for comparisons (not mounted).
    let scratch: String
    private var closed = false

    static func skipReason() -> String? {
        if geteuid() != 0 { return "FUSE tests need root (they mount with mount(2)); skipping" }
        let fd = lb_fuse_open_device(0)
        if fd < 0 { return "cannot open /dev/fuse (errno \(-fd)); skipping FUSE tests" }
        Glibc.close(fd)
        return nil
    }

    /// Mounts MemFS (or HostFS over a fresh directory when `hostBacked`) on a fresh directory.
    static func make(hostBacked: Bool = false, cpus: Int = 2, options: FUSEMountOptions = .init(),
                     caller: String = #function) throws -> MountRig? {
        if let why = skipReason() {
            print("\(caller): \(why)")
            return nil
        }
        FDCensus.note("before mount (\(caller))")
        let base = "/tmp/libellula-fuse-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: base + "/mnt", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: base + "/scratch", withIntermediateDirectories: true)
        let fs: any FileSystem
        var backing: String? = nil
        if hostBacked {
            try FileManager.default.createDirectory(atPath: base + "/backing", withIntermediateDirectories: true)
            backing = base + "/backing"
            fs = try HostFS(hostPath: base + "/backing")
        } else {
            fs = MemFS(rootMode: 0o755)
        }
        let vfs = VirtualFileSystem(rootFileSystem: fs)
        let system = try LWKT.boot(cpus: cpus)
        do {
            let server = try FUSEServer.mount(vfs, at: base + "/mnt", system: system, options: options, hostRoot: backing)
            return MountRig(system: system, server: server, vfs: vfs, path: base + "/mnt", backing: backing, scratch: base + "/scratch")
        } catch {
            _ = try? system.shutdownBlocking()
            try? FileManager.default.removeItem(atPath: base)
            throw error
        }
    }

    private init(system: LWKTSystem, server: FUSEServer, vfs: VirtualFileSystem, path: String, backing: String?, scratch: String) {
        self.system = system
        self.server = server
        self.vfs = vfs
        self.path = path
        self.backing = backing
        self.scratch = scratch
    }

    /// Unmounts, stops the CPUs and removes the directories.
    func close() {
        if closed { return }
        closed = true
        server.stop()
        _ = lb_fuse_kernel_unmount(path, 1)  // belt and braces: nothing stays mounted
        _ = try? system.shutdownBlocking()
        // The namespace lives on with the test's references; its cached HostFS names would
        // keep one host descriptor each (a stock-tools run leaves ~1,700).
        vfs.releaseCachedNames()
        let base = (path as NSString).deletingLastPathComponent
        _ = try? FileManager.default.removeItem(atPath: base)
        FDCensus.note("after unmount \(base)")
    }

    deinit { close() }
}

/// The result of a shell command.
struct ShellResult {
    var status: Int32
    var output: String
    var timedOut: Bool
}

/// Runs `script` with /bin/sh in `directory`, killing it after `timeout` seconds (the watchdog).
@discardableResult
func shell(_ script: String, in directory: String? = nil, timeout: Double = 120) throws -> ShellResult {
    var env = ProcessInfo.processInfo.environment
    env["LC_ALL"] = "C"
    // posix_spawn (LibellulaTestSupport), not Foundation's Process; the child has its own
    // process group, which the timeout kills whole.
    let r = try Subprocess.run("/bin/sh", ["-c", script], environment: env, directory: directory, timeout: timeout)
    return ShellResult(status: r.status, output: r.output, timedOut: r.timedOut)
}

/// Whether a program is on PATH.
func have(_ tool: String) -> Bool {
    (try? shell("command -v \(tool)"))?.status == 0
}
