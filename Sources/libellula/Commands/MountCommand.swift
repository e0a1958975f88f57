import ArgumentParser
import CLibellula
import FUSE
import Foundation
import LWKT
import Logging
import Services
import Slab
import VFS

/// `libellula mount`: serves a VFS namespace (MemFS, or HostFS over a host directory) as a
/// real file system over FUSE until SIGINT/SIGTERM or an outside unmount, then unmounts and
/// prints the per-CPU channel counters.
struct MountCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount the VFS (MemFS or a host directory through HostFS) over FUSE, one channel per CPU."
    )

    @Argument(help: "The directory to mount on.")
    var mountPoint: String

    @Option(help: "Serve this host directory (HostFS).")
    var root: String?

    @Flag(help: "Serve an empty in-memory file system (the default without --root).")
    var memfs = false

    @OptionGroup var cpuOptions: CPUOptions

    @Option(help: "Seconds the kernel may cache a name (0: ask the namecache every time).")
    var entryTimeout: Double = 1

    @Option(help: "Seconds the kernel may cache attributes.")
    var attrTimeout: Double = 1

    @Option(help: "Seconds the kernel may cache that a name does not exist (default: the entry timeout).")
    var negativeTimeout: Double?

    @Flag(help: "Let other users use the mount.")
    var allowOther = false

    @Option(help: "Unmount after this many seconds (default: run until interrupted).")
    var seconds: Double?

    @Option(help: "Write the per-CPU channel and namecache counters as JSON to this file every second.")
    var statsFile: String?

    @Option(help: "Serve the statistics pages (/_stats, /_stats.json, /metrics, /_health) with the FUSE channels' counters on ADDR:PORT, for a browser, Prometheus or `libellula stat --url http://ADDR:PORT`.")
    var stats: String?

    func validate() throws {
        if root != nil && memfs { throw ValidationError("--root and --memfs exclude each other") }
        if let stats { _ = try parseAddress(stats, option: "--stats") }
        if entryTimeout < 0 || attrTimeout < 0 || (negativeTimeout ?? 0) < 0 { throw ValidationError("timeouts must be 0 or more") }
    }

    func run() async throws {
        let fs: any FileSystem
        if let root {
            do { fs = try HostFS(hostPath: root) } catch {
                throw runtimeFailure(ExitStatus.forErrno(error.rawValue), "cannot open --root \(root): \(errorText(error.rawValue))")
            }
        } else {
            // The mount's root belongs to whoever mounts it (a non-root user can use their
            // own MemFS mount; the kernel checks everyone else against it).
            fs = MemFS(rootMode: 0o755, owner: Credentials(uid: geteuid(), gid: getegid()))
        }
        let vfs = VirtualFileSystem(rootFileSystem: fs)
        let system = try LWKT.boot(cpus: cpuOptions.cpus)
        let options = FUSEMountOptions(entryTimeout: entryTimeout, attributeTimeout: attrTimeout,
                                       negativeTimeout: negativeTimeout, allowOther: allowOther)
        let server: FUSEServer
        do {
            server = try FUSEServer.mount(vfs, at: mountPoint, system: system, options: options,
                                          hostRoot: root.map { URL(fileURLWithPath: $0).path })
        } catch let e as FUSEError {
            _ = try? await system.shutdown()
            throw runtimeFailure(Self.exitStatus(e), e.description)
        }
        // The statistics pages: an HTTP server on the mount's own CPUs that serves nothing
        // but them (its namespace is an empty MemFS), with the channels' counters.
        var statsServer: HTTPServer<HostSocketStack>?
        var statsSource: FUSEStatisticsSource?
        if let stats {
            var config = HTTPServerConfiguration()
            config.address = try parseAddress(stats, option: "--stats")
            let http = try HTTPServer(system: system, stack: HostSocketStack(system: system),
                                      vfs: VirtualFileSystem(rootFileSystem: MemFS()), slab: SlabAllocator(system: system),
                                      configuration: config, logger: Logger(label: "libellula.mount.stats"))
            statsSource = FUSEStatisticsSource.register(on: system) { [server] in server.fullStatistics }
            do { try http.start() } catch {
                server.stop()
                _ = try? await system.shutdown()
                throw ServeCommand.listenFailure("--stats", stats, error)
            }
            statsServer = http
            print("libellula mount: statistics on http://\(http.address)/_stats (also /_stats.json, /metrics)")
        }
        print("libellula mount: \(root.map { "HostFS \($0)" } ?? "MemFS") on \(mountPoint), \(system.cpuCount) CPUs (one FUSE channel each)")
        fflush(nil)
        let stop = DispatchSemaphore(value: 0)
        // SIGINT/SIGTERM: a handler that writes one byte to a pipe (safe in a signal handler,
        // whichever thread the kernel picks), and a thread that waits on the pipe.
        let signalThread = try SignalPipe.install([SIGINT, SIGTERM]) { stop.signal() }
        if let seconds {
            DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { stop.signal() }
        }
        let statsWriter = statsFile.map { path in
            Task.detached {
                while !Task.isCancelled {
                    Self.writeStatistics(server, to: path)
                    try? await Task.sleep(for: .seconds(1))
                }
            }
        }
        // An unmount from outside (fusermount3 -u) ends the channels: stop then too.
        let watcher = Task.detached {
            await server.wait()
            stop.signal()
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async { stop.wait(); c.resume() }
        }
        _ = signalThread
        statsWriter?.cancel()
        if let statsFile { Self.writeStatistics(server, to: statsFile) }
        server.stop()
        watcher.cancel()
        for s in server.statistics {
            print("cpu\(s.cpu): requests \(s.requests) errors \(s.errors) lookups \(s.lookups) negative \(s.negativeLookups) getattr \(s.getattrs) reads \(s.reads) (\(s.bytesRead) B) writes \(s.writes) (\(s.bytesWritten) B) forgets \(s.forgets)")
        }
        if let statsServer { await statsServer.stop() }
        _ = statsSource
        print("libellula mount: unmounted \(mountPoint)")
        try await system.shutdown()
    }

    /// The exit status for a mount that could not be made.
    static func exitStatus(_ e: FUSEError) -> Int32 {
        switch e {
        case .deviceMissing, .fusermountMissing, .fusermountFailed, .mountPointBusy: ExitStatus.unavailable
        case .deviceNotPermitted: ExitStatus.noPermission
        case .mountPointMissing, .mountPointNotDirectory: ExitStatus.noInput
        case .mountFailed(_, let code): ExitStatus.forErrno(code)
        case .handshakeFailed, .rootFailed: ExitStatus.osError
        }
    }

    /// Replaces `path` with the server's statistics as JSON (write, then rename).
    static func writeStatistics(_ server: FUSEServer, to path: String) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? encoder.encode(server.fullStatistics) else { return }
        let tmp = path + ".tmp"
        if FileManager.default.createFile(atPath: tmp, contents: data) { rename(tmp, path) }
    }
}

/// Turns signals into a callback on an ordinary thread, with the self-pipe pattern.
enum SignalPipe {
    nonisolated(unsafe) static var writeEnd: Int32 = -1

    /// Installs handlers for `signals`; `body` runs on a dedicated thread after each delivery.
    static func install(_ signals: [Int32], _ body: @escaping @Sendable () -> Void) throws -> Thread {
        var fds: [Int32] = [0, 0]
        guard lb_pipe_cloexec(&fds) == 0 else { throw ValidationError("pipe failed: errno \(errno)") }
        _ = fcntl(fds[1], F_SETFL, O_NONBLOCK)
        writeEnd = fds[1]
        let readEnd = fds[0]
        for s in signals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { _ in
                var byte: UInt8 = 1
                _ = write(SignalPipe.writeEnd, &byte, 1)
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(s, &action, nil)
        }
        let t = Thread {
            var byte: UInt8 = 0
            while true {
                let n = read(readEnd, &byte, 1)
                if n == 1 { body() } else if n < 0 && errno == EINTR { continue } else { return }
            }
        }
        t.start()
        return t
    }
}
