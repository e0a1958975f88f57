import ArgumentParser
import CLibellula
import Dispatch
import Foundation
import Glibc
import LWKT
import Logging
import NetStack
import Services
import Slab
import Synchronization
import VFS

/// `libellula serve`: the HTTP/1.1 file server on every CPU, until Ctrl-C or SIGTERM.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve files over HTTP/1.1 on every CPU (the built-in demo site, or --root DIR).",
        discussion: """
            Live statistics are at /_stats (HTML) and /_stats.json; `libellula stat` prints them.
            --net tap:NAME serves on Libellula's own TCP/IP stack over a multi-queue TAP device \
            (one queue per CPU; needs CAP_NET_ADMIN): `Scripts/netrig.sh up` builds a rig for it \
            and prints the commands to run.
            """
    )

    @OptionGroup var cpuOptions: CPUOptions

    @Option(help: ArgumentHelp("Network: host (the host kernel's sockets) or tap:NAME[,address=A/P][,gateway=G][,steering=ebpf|off] (Libellula's own TCP/IP stack on TAP device NAME, one queue per CPU; address defaults to \(NetBackend.rigAddress)/24 and gateway to \(NetBackend.rigGateway), as Scripts/netrig.sh sets them up; gateway=none for none; steering=ebpf, the default, has the kernel queue each flow on the CPU that owns it, off leaves the queue choice to the kernel).", valueName: "net"))
    var net = "host"

    @Option(help: "HTTP address (default: 127.0.0.1:8080; with --net tap 0.0.0.0:8080, the stack's address): ADDR:PORT, [IPV6]:PORT, or [::]:PORT for IPv6 and IPv4.")
    var http: String?

    @Option(help: "Serve this host directory through HostFS instead of the built-in demo site.")
    var root: String?

    @Option(parsing: .unconditional, help: "Seconds a keep-alive connection may stay idle.")
    var idleTimeout = 30

    @Option(parsing: .unconditional, help: "Open connections allowed per CPU (503 beyond).")
    var maxConnections = 4096

    @Option(parsing: .unconditional, help: "Idle spin window in microseconds before a CPU sleeps (default: 50, or 2 when CPUs outnumber cores).")
    var spinMicroseconds: Int?

    @Option(help: "Hot-file cache: on (small files' responses kept per CPU) or off (every request goes through the VFS).")
    var hotCache: HotCacheSetting = .on

    @Option(help: "Open-file cache: on (host files kept open with their attributes between requests, as nginx's open_file_cache) or off.")
    var openFileCache: HotCacheSetting = .on

    @Option(parsing: .unconditional, help: "Seconds a hot-file or open-file cache entry is trusted before the file is checked again (inode, size, mtime, ctime); 0 checks on every request.")
    var cacheValidity: Double = 1

    @Option(parsing: .unconditional, help: "Seconds to wait for connections and CPUs to stop at shutdown before giving up with status 70.")
    var shutdownTimeout: Double = 15

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    @Option(help: "Report a CPU that runs one job longer than this many milliseconds (0: no stall watchdog).")
    var stallMs: Double = 5

    @Flag(help: "Do not serve /_stats and /_stats.json.")
    var noStats = false

    @Option(help: "Cache address (default: 127.0.0.1:11211; with --net tap 0.0.0.0:11211): ADDR:PORT for the memcached-protocol cache, as `libellula memcached --memcached`.")
    var memcached: String?

    @Flag(help: "Do not start the memcached-protocol cache.")
    var noMemcached = false

    @Option(parsing: .unconditional, help: "MiB of items the cache keeps before evicting (memcached's -m).")
    var memory = 64

    /// Test hook: blocks the last CPU in a host call that never returns, to check that
    /// shutdown stays bounded.
    @Flag(help: .hidden)
    var debugBlockCPU = false

    /// The parsed `--net`.
    var backend: NetBackend { (try? NetBackend(parsing: net)) ?? .host }
    /// `--http` or its default for the backend.
    var httpText: String { http ?? (backend == .host ? "127.0.0.1:8080" : "0.0.0.0:8080") }
    /// `--memcached` or its default for the backend.
    var memcachedText: String { memcached ?? (backend == .host ? "127.0.0.1:11211" : "0.0.0.0:11211") }

    func validate() throws {
        let backend = try NetBackend(parsing: net)
        var addresses = [("--http", try parseAddress(httpText, option: "--http"))]
        if !noMemcached { addresses.append(("--memcached", try parseAddress(memcachedText, option: "--memcached"))) }
        if case .tap(_, let own, _, _, _) = backend {
            for (option, a) in addresses where a.isIPv6 || (a.ipv4 != 0 && a.ipv4 != own.value) {
                throw ValidationError("\(option) \(a) is not an address of the own stack: with --net tap use 0.0.0.0:PORT or \(own):PORT")
            }
        }
        if memory < 1 { throw ValidationError("--memory must be at least 1 (MiB), got \(memory)") }
        if memory > 1 << 20 { throw ValidationError("--memory must be at most \(1 << 20) (MiB), got \(memory)") }
        if maxConnections < 1 { throw ValidationError("--max-connections must be at least 1, got \(maxConnections)") }
        if !(stallMs >= 0 && stallMs <= 60_000) { throw ValidationError("--stall-ms must be between 0 (off) and 60000, got \(stallMs)") }
        if idleTimeout < 1 { throw ValidationError("--idle-timeout must be at least 1 (second), got \(idleTimeout)") }
        if let spinMicroseconds, spinMicroseconds < 0 || spinMicroseconds > 1_000_000 {
            throw ValidationError("--spin-microseconds must be between 0 and 1000000, got \(spinMicroseconds)")
        }
        if !(cacheValidity >= 0 && cacheValidity <= 86400) {
            throw ValidationError("--cache-validity must be between 0 and 86400 (seconds), got \(cacheValidity)")
        }
        if !(shutdownTimeout > 0 && shutdownTimeout <= 3600) {
            throw ValidationError("--shutdown-timeout must be between 0 and 3600 (seconds), got \(shutdownTimeout)")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown log level '\(logLevel)'") }
    }

    func run() async throws {
        let signals = SignalWaiter()
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "libellula.serve")
        let httpAddress = try parseAddress(httpText, option: "--http")
        let system: LWKTSystem
        do {
            system = try LWKT.boot(cpus: cpuOptions.cpus, configuration: LWKTConfiguration(idleSpin: spinMicroseconds.map { .microseconds($0) }))
        } catch {
            throw runtimeFailure(ExitStatus.osError, "cannot boot the CPUs: \(error)")
        }
        let slab = SlabAllocator(system: system)
        let vfs: VirtualFileSystem
        if let root {
            // --cache-validity 0 asks for every change to be seen by the next request: HostFS
            // then applies inotify's reports before each path operation (strict).
            do { vfs = VirtualFileSystem(rootFileSystem: try HostFS(hostPath: root, strict: cacheValidity == 0)) } catch {
                _ = try? await system.shutdown()
                let e = error.rawValue
                throw runtimeFailure(ExitStatus.forErrno(e), "cannot serve --root \(root): \(errorText(e))")
            }
        } else {
            vfs = VirtualFileSystem(rootFileSystem: MemFS())
            try DemoSite.install(in: vfs)
        }
        var config = HTTPServerConfiguration()
        config.address = httpAddress
        config.idleTimeout = .seconds(idleTimeout)
        config.maxConnectionsPerCPU = maxConnections
        config.statisticsEnabled = !noStats
        config.hotCacheEnabled = hotCache == .on
        config.openFileCacheEnabled = openFileCache == .on
        config.cacheValidity = .milliseconds(Int64((cacheValidity * 1000).rounded()))
        switch backend {
        case .host:
            try await serve(on: HostSocketStack(system: system), shownHost: nil, system: system, slab: slab, vfs: vfs,
                            config: config, signals: signals, logger: logger, stopNetwork: {})
        case .tap(let name, let address, let prefix, let gateway, let steering):
            // Opening a device that does not exist creates it here, down and without an
            // address: say what to do, since nothing could reach the server then.
            let existed = FileManager.default.fileExists(atPath: "/sys/class/net/\(name)")
            let device: TAPInterface
            do { device = try TAPInterface(name: name, queues: system.cpuCount) } catch {
                _ = try? await system.shutdown()
                let hint = system.cpuCount == 1 ? " (a multi-queue TAP, as the rig makes, needs 2 or more CPUs)" : ""
                throw runtimeFailure(ExitStatus.osError, "cannot open TAP device \(name) (--net): \(error)\(hint)")
            }
            // Flow steering: the kernel queues each frame on its owner CPU (needs root for
            // bpf()); without it first packets of flows are forwarded between CPUs.
            let steered = steering ? device.installFlowSteering(cpus: system.cpuCount) : { device.removeFlowSteering(); return device.flowSteering }()
            let own: NetStack
            var netConfig = NetStackConfiguration(address: address, prefixLength: prefix, gateway: gateway)
            // A/B switch for measurements (Scripts/bench-serve-net.sh TAP_AB=1).
            if ProcessInfo.processInfo.environment["LIBELLULA_TCP_HOLD_SMALL_WRITES"] == "0" { netConfig.tcp.holdSmallWrites = false }
            do {
                own = try NetStack(system: system, allocator: slab, interface: device, configuration: netConfig)
                try own.start()
            } catch {
                device.close()
                _ = try? await system.shutdown()
                throw runtimeFailure(ExitStatus.osError, "cannot start the network stack on \(name): \(error)")
            }
            if !existed {
                logger.warning("TAP \(name) did not exist and was created down, without an address: give the host side one and bring it up (ip addr add \(gateway.map { "\($0)" } ?? "ADDRESS")/\(prefix) dev \(name); ip link set \(name) up), or start from Scripts/netrig.sh up")
            }
            if case .unavailable = steered {
                logger.warning("flow steering \(steered)")
            } else {
                logger.notice("flow steering: \(steered)")
            }
            logger.notice("network: \(backend), \(system.cpuCount) queue\(system.cpuCount == 1 ? "" : "s"), offloads \(device.offloads.contains(.segmentation) ? "checksum+TSO" : device.offloads.contains(.checksum) ? "checksum" : "none")")
            try await serve(on: NetStackSocketStack(stack: own), shownHost: "\(address)", system: system, slab: slab, vfs: vfs,
                            config: config, signals: signals, logger: logger, stopNetwork: { try? await own.stop() })
        }
    }

    /// Runs HTTP (and memcached) on `stack` until a signal, then shuts everything down;
    /// `shownHost` replaces a wildcard listening address in the log (the own stack's address).
    private func serve<Stack: StreamSocketStack>(on stack: Stack, shownHost: String?, system: LWKTSystem, slab: SlabAllocator,
                                                 vfs: VirtualFileSystem, config: HTTPServerConfiguration, signals: SignalWaiter,
                                                 logger: Logger, stopNetwork: @Sendable () async -> Void) async throws {
        let server = try HTTPServer(system: system, stack: stack, vfs: vfs, slab: slab,
                                    configuration: config, logger: Logger(label: "libellula.http"))
        do { try server.start() } catch {
            await stopNetwork()
            _ = try? await system.shutdown()
            throw Self.listenFailure("--http", httpText, error)
        }
        let stallLogger = logger
        let observability = Observability.start(on: system, stallThreshold: stallMs > 0 ? .microseconds(Int64(stallMs * 1000)) : nil) { r in
            stallLogger.warning("stall: cpu\(r.cpu) ran \(r.thread) (\(r.priority)) for \(r.durationNanos / 1000) µs:\n  \(r.backtrace.prefix(16).joined(separator: "\n  "))")
        }
        let what = root.map { "\($0) (HostFS)" } ?? "the demo site (MemFS)"
        logger.notice("serving \(what) on http://\(shownHost.map { "\($0):\(server.address.port)" } ?? "\(server.address)")/ with \(system.cpuCount) CPU\(system.cpuCount == 1 ? "" : "s"); statistics at /_stats")

        var cache: MemcachedService?
        var refresher: Task<Void, Never>?
        if !noMemcached {
            let mc = try parseAddress(memcachedText, option: "--memcached")
            do {
                let service = try await MemcachedService.start(system: system, stack: stack, address: mc.host, port: mc.port,
                                                               memoryLimit: memory << 20)
                cache = service
                server.showMemcachedStatistics(limitBytes: memory << 20) { service.lastCounters }
                refresher = Task.detached {
                    while !Task.isCancelled {
                        await service.refreshCounters()
                        try? await Task.sleep(for: .seconds(1))
                    }
                }
                logger.notice("memcached protocol on \(shownHost ?? mc.host):\(service.port) (\(memory) MiB); --no-memcached to turn it off")
            } catch {
                await server.stop()
                await stopNetwork()
                _ = try? await system.shutdown()
                throw Self.listenFailure("--memcached", memcachedText, error, hint: "; --no-memcached serves HTTP without it")
            }
        }
        if debugBlockCPU, let last = system.cpus.last {
            // A thread that blocks its CPU in a host call (what a FIFO open once did).
            LWKTThread.spawn(on: last, priority: .user, name: "debug-block") {
                var fds: [Int32] = [0, 0]
                _ = lb_pipe_cloexec(&fds)
                var byte: UInt8 = 0
                _ = Glibc.read(fds[0], &byte, 1)
            }
            logger.notice("debug: CPU \(last.id) is blocked")
        }

        let signal = await signals.wait()
        logger.notice("\(signal == SIGINT ? "SIGINT" : "SIGTERM"): shutting down")
        let limit = shutdownTimeout
        Self.exitIfStuck(after: limit, logger: logger)
        refresher?.cancel()
        await refresher?.value
        await cache?.stop()
        await server.stop()
        observability.stop()
        await stopNetwork()
        let report = try await system.shutdown(timeout: .seconds(max(1, limit / 2)))
        let stats = server.statistics().http
        logger.notice("stopped: \(stats.reduce(0) { $0 + $1.requests }) requests on \(stats.reduce(0) { $0 + $1.connectionsAccepted }) connections; \(report.joinedCPUs) CPUs joined, \(report.leakedThreads) threads leaked")
        if report.leakedThreads > 0 { throw ExitCode(ExitStatus.software) }
    }

    /// What `--hot-cache` takes.
    enum HotCacheSetting: String, ExpressibleByArgument, CaseIterable {
        case on, off
    }

    /// The failure to report when a listener cannot open.
    static func listenFailure(_ option: String, _ text: String, _ error: any Error, hint: String = "") -> ExitCode {
        var e: Int32?
        if let s = error as? SocketError, case .system(_, let code) = s { e = code }
        if let m = error as? MemcachedNetworkError, case .socket(let s) = m, case .system(_, let code) = s { e = code }
        if let e { return runtimeFailure(ExitStatus.forErrno(e), "cannot listen on \(text) (\(option)): \(errorText(e))\(hint)") }
        return runtimeFailure(ExitStatus.osError, "cannot listen on \(text) (\(option)): \(error)\(hint)")
    }

    /// Starts a watchdog that ends the process with status 70 if shutdown has not finished
    /// after `seconds` (a CPU stuck in a host call cannot be joined), saying so.
    static func exitIfStuck(after seconds: Double, logger: Logger) {
        let t = Thread {
            Thread.sleep(forTimeInterval: seconds)
            let text = "libellula: error: shutdown did not finish within \(seconds) s (a CPU is stuck and cannot be joined); exiting with status \(ExitStatus.software)\n"
            text.utf8CString.withUnsafeBufferPointer { _ = Glibc.write(2, $0.baseAddress, $0.count - 1) }
            _exit(ExitStatus.software)
        }
        t.name = "shutdown-watchdog"
        t.start()
    }
}
