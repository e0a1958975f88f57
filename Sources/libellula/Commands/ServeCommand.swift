import ArgumentParser
import Dispatch
import Foundation
import Glibc
import LWKT
import Logging
import Services
import Slab
import Synchronization
import VFS

/// `libellula serve`: the HTTP/1.1 file server on every CPU, until Ctrl-C or SIGTERM.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve files over HTTP/1.1 on every CPU (the built-in demo site, or --root DIR).",
        discussion: "Live statistics are at /_stats (HTML) and /_stats.json; `libellula stat` prints them."
    )

    @Option(help: "Number of CPUs (default: one per online core).")
    var cpus: Int?

    @Option(help: "Address to listen on, ADDR:PORT.")
    var http = "127.0.0.1:8080"

    @Option(help: "Serve this host directory through HostFS instead of the built-in demo site.")
    var root: String?

    @Option(help: "Seconds a keep-alive connection may stay idle.")
    var idleTimeout = 30

    @Option(help: "Open connections allowed per CPU (503 beyond).")
    var maxConnections = 4096

    @Option(help: "Idle spin window in microseconds before a CPU sleeps.")
    var spinMicroseconds: Int?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    @Option(help: "Report a CPU that runs one job longer than this many milliseconds (0: no stall watchdog).")
    var stallMs: Double = 5

    @Flag(help: "Do not serve /_stats and /_stats.json.")
    var noStats = false

    @Option(help: "Address for the memcached-protocol cache, ADDR:PORT.")
    var memcached = "127.0.0.1:11211"

    @Flag(help: "Do not start the memcached-protocol cache.")
    var noMemcached = false

    @Option(help: "Megabytes of items the cache keeps before evicting (memcached's -m).")
    var memory = 64

    func validate() throws {
        guard SocketAddress(parsing: http) != nil else { throw ValidationError("--http wants ADDR:PORT, got '\(http)'") }
        if let cpus, cpus < 1 { throw ValidationError("--cpus must be at least 1") }
        if !noMemcached && SocketAddress(parsing: memcached) == nil {
            throw ValidationError("--memcached wants ADDR:PORT, got '\(memcached)'")
        }
        if memory < 1 { throw ValidationError("--memory must be at least 1 (MB)") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown log level '\(logLevel)'") }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "libellula.serve")
        let system = try LWKT.boot(cpus: cpus, configuration: LWKTConfiguration(idleSpin: spinMicroseconds.map { .microseconds($0) }))
        let slab = SlabAllocator(system: system)
        let vfs: VirtualFileSystem
        if let root {
            do { vfs = VirtualFileSystem(rootFileSystem: try HostFS(hostPath: root)) } catch {
                _ = try? await system.shutdown()
                throw ValidationError("cannot serve --root \(root): \(error)")
            }
        } else {
            vfs = VirtualFileSystem(rootFileSystem: MemFS())
            try DemoSite.install(in: vfs)
        }
        var config = HTTPServerConfiguration()
        config.address = SocketAddress(parsing: http) ?? .loopback(port: 8080)
        config.idleTimeout = .seconds(idleTimeout)
        config.maxConnectionsPerCPU = maxConnections
        config.statisticsEnabled = !noStats
        let server = try HTTPServer(system: system, stack: HostSocketStack(system: system), vfs: vfs, slab: slab,
                                    configuration: config, logger: Logger(label: "libellula.http"))
        do { try server.start() } catch {
            _ = try? await system.shutdown()
            throw ValidationError("cannot listen on \(http): \(error)")
        }
        let stallLogger = logger
        let observability = Observability.start(on: system, stallThreshold: stallMs > 0 ? .microseconds(Int64(stallMs * 1000)) : nil) { r in
            stallLogger.warning("stall: cpu\(r.cpu) ran \(r.thread) (\(r.priority)) for \(r.durationNanos / 1000) µs:\n  \(r.backtrace.prefix(16).joined(separator: "\n  "))")
        }
        let what = root.map { "\($0) (HostFS)" } ?? "the demo site (MemFS)"
        logger.notice("serving \(what) on http://\(server.address)/ with \(system.cpuCount) CPU\(system.cpuCount == 1 ? "" : "s"); statistics at /_stats")

        var cache: MemcachedService?
        var refresher: Task<Void, Never>?
        if !noMemcached, let mc = SocketAddress(parsing: memcached) {
            let host = "\(mc)".split(separator: ":").first.map(String.init) ?? "127.0.0.1"
            do {
                let service = try await MemcachedService.start(system: system, address: host, port: mc.port,
                                                               memoryLimit: memory << 20)
                cache = service
                server.showMemcachedStatistics(limitBytes: memory << 20) { service.lastCounters }
                refresher = Task.detached {
                    while !Task.isCancelled {
                        await service.refreshCounters()
                        try? await Task.sleep(for: .seconds(1))
                    }
                }
                logger.notice("memcached protocol on \(host):\(service.port) (\(memory) MB); --no-memcached to turn it off")
            } catch {
                logger.warning("memcached not started on \(memcached): \(error) (HTTP keeps serving)")
            }
        }

        let signal = await Self.waitForSignal()
        logger.notice("\(signal == SIGINT ? "SIGINT" : "SIGTERM"): shutting down")
        refresher?.cancel()
        await refresher?.value
        await cache?.stop()
        await server.stop()
        observability.stop()
        let report = try await system.shutdown()
        let stats = server.statistics().http
        logger.notice("stopped: \(stats.reduce(0) { $0 + $1.requests }) requests on \(stats.reduce(0) { $0 + $1.connectionsAccepted }) connections; \(report.joinedCPUs) CPUs joined, \(report.leakedThreads) threads leaked")
        if report.leakedThreads > 0 { throw ExitCode(1) }
    }

    /// Waits for SIGINT or SIGTERM (delivered through Dispatch sources, not a handler).
    static func waitForSignal() async -> Int32 {
        Glibc.signal(SIGINT, SIG_IGN)
        Glibc.signal(SIGTERM, SIG_IGN)
        let queue = DispatchQueue(label: "libellula.signals")
        let done = Mutex(false)
        var sources: [DispatchSourceSignal] = []
        let got: Int32 = await withCheckedContinuation { c in
            for sig in [SIGINT, SIGTERM] {
                let s = DispatchSource.makeSignalSource(signal: sig, queue: queue)
                s.setEventHandler {
                    if done.withLock({ d in defer { d = true }; return !d }) { c.resume(returning: sig) }
                }
                s.resume()
                sources.append(s)
            }
        }
        for s in sources { s.cancel() }
        return got
    }
}
