import LWKT
import Logging
import Slab
import Synchronization
import VFS

/// An HTTP/1.1 static file server on every CPU, serving a VFS subtree.
///
/// Each CPU runs an accept thread on its own listener of `Stack` (for the host stack, a
/// `SO_REUSEPORT` socket on that CPU's epoll) and one LWKT thread per connection it
/// accepted, so a connection lives and dies on one CPU. File data is read through a VFS
/// process jailed at the served root into slab buffers.
public final class HTTPServer<Stack: StreamSocketStack>: @unchecked Sendable {
    /// The system whose CPUs serve.
    public let system: LWKTSystem
    /// The socket stack.
    public let stack: Stack
    let core: HTTPServerCore
    private let state = Mutex<State>(State())
    /// Holds the provider in a class so reading it copies a reference. (Copying a closure out
    /// of `Mutex.withLock { $0 }` wrapped the stored closure in one more reabstraction thunk
    /// on every call: ~160 bytes leaked per `/_stats` request and a call chain that grew
    /// without bound. Issue 11 item 4.)
    private let extraMemcached = Mutex<MemcachedStatisticsProvider?>(nil)
    /// The bound address (the real port when port 0 was asked for); set by ``start()``.
    public private(set) var address: SocketAddress

    struct State {
        var acceptors: [LWKTThread] = []
        var connections: [ObjectIdentifier: LWKTThread] = [:]
        var stopping = false
    }

    /// A server for `vfs`'s subtree at `root`, not yet listening.
    ///
    /// - Parameters:
    ///   - slab: the allocator for connection buffers and file data (its CPUs must be `system`'s).
    ///   - root: the served directory inside `vfs`; clients cannot leave it.
    public init(system: LWKTSystem, stack: Stack, vfs: VirtualFileSystem, root: String = "/", slab: SlabAllocator,
                configuration: HTTPServerConfiguration = .init(),
                logger: Logger = Logger(label: "libellula.http")) throws(VFSError) {
        self.system = system
        self.stack = stack
        core = try HTTPServerCore(configuration: configuration, system: system, slab: slab, vfs: vfs, root: root, logger: logger)
        address = configuration.address
        core.statistics = { [unowned self] in self.statistics() }
    }

    /// The configuration.
    public var configuration: HTTPServerConfiguration { core.configuration }

    /// Opens a listener on every CPU and starts accepting.
    public func start() throws(SocketError) {
        let listeners = try stack.listen(on: core.configuration.address, cpus: system.cpus, backlog: core.configuration.backlog)
        if let first = listeners.first { address = first.address }
        if core.configuration.statisticsEnabled { core.sampler.start(system: system, http: core.counters) { [weak self] in self?.statistics() } }
        var threads: [LWKTThread] = []
        for l in listeners {
            let cpu = system.cpus[l.cpuID]
            let box = UncheckedBox(l)
            threads.append(LWKTThread.spawn(on: cpu, priority: .kernel, name: "http-accept") { [self] in
                await self.acceptLoop(box.value)
            })
        }
        state.withLock { $0.acceptors = threads }
        core.logger.info("HTTP listening", metadata: ["address": "\(address)", "cpus": "\(listeners.count)"])
    }

    /// Stops accepting and closes every open connection (their threads are cancelled and
    /// close their sockets on their CPUs); returns once all of them have finished.
    public func stop() async {
        core.sampler.stop()
        let (acceptors, conns) = state.withLock { s -> ([LWKTThread], [LWKTThread]) in
            s.stopping = true
            return (s.acceptors, Array(s.connections.values))
        }
        for t in acceptors { t.cancel() }
        for t in conns { t.cancel() }
        for t in acceptors { await t.join() }
        for t in conns { await t.join() }
    }

    private func acceptLoop(_ listener: Stack.Listener) async {
        let counters = core.counters[listener.cpuID]
        let cpu = system.cpus[listener.cpuID]
        let logger = core.logger
        await AcceptLoop.run(listener, onError: { error in
            logger.warning("accept failed", metadata: ["error": "\(error)"])
        }) { conn in
            HTTPCounters.add(counters.accepted)
            core.logger.debug("connection accepted", metadata: ["peer": "\(conn.peer)", "cpu": "\(listener.cpuID)"])
            let over = counters.open.load(ordering: .relaxed) >= core.configuration.maxConnectionsPerCPU
            // Counted here, on the accepting CPU, so a burst of accepts cannot overshoot the limit.
            HTTPCounters.add(counters.open)
            let box = UncheckedBox(conn)
            let core = self.core
            let slot = Mutex<ObjectIdentifier?>(nil)
            let t = LWKTThread.spawn(on: cpu, priority: .user, name: "http-conn") { [self] in
                if over {
                    await Self.reject(box.value, core: core)
                } else if let h = HTTPConnectionHandler(conn: box.value, core: core) {
                    await core.giantEntry.run { await h.run() }
                } else {
                    await Self.reject(box.value, core: core)
                }
                HTTPCounters.add(core.counters[cpu.id].open, -1)
                if let id = slot.withLock({ $0 }) { _ = self.state.withLock { $0.connections.removeValue(forKey: id) } }
            }
            let id = ObjectIdentifier(t)
            let keep = state.withLock { s -> Bool in
                guard !t.isFinished else { return false }
                s.connections[id] = t
                return true
            }
            if keep {
                slot.withLock { $0 = id }
                if t.isFinished { _ = state.withLock { $0.connections.removeValue(forKey: id) } }
            }
        }
    }

    /// Answers 503 (connection limit or no buffer memory) and closes.
    private static func reject(_ conn: Stack.Listener.Connection, core: HTTPServerCore) async {
        let counters = core.counters[conn.cpuID]
        HTTPCounters.add(counters.rejected)
        counters.count(.serviceUnavailable)
        let body = "<!doctype html><html><body><h1>503 Service Unavailable</h1></body></html>\n"
        let text = "HTTP/1.1 503 Service Unavailable\r\nServer: libellula\r\nRetry-After: 1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        let bytes = Array(text.utf8)
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        defer { raw.deallocate() }
        raw.copyBytes(from: bytes)
        try? await conn.write(UnsafeRawBufferPointer(raw), timeout: .seconds(1))
        await conn.close(linger: core.configuration.closeLinger)
    }

    /// Every subsystem's statistics now.
    public func statistics() -> ServerStatistics { statistics(address: address) }

    /// Adds a memcached service's per-CPU counters to `/_stats` and `/_stats.json`.
    public func showMemcachedStatistics(limitBytes: Int = 0, _ provider: @escaping @Sendable () -> [[String: Int]]?) {
        let box = MemcachedStatisticsProvider(provider, limitBytes: limitBytes)
        extraMemcached.withLock { $0 = box }
    }

    func statistics(address: SocketAddress) -> ServerStatistics {
        var snap = system.snapshot()
        let threadCount = snap.threads.count
        var perCPU = [Int](repeating: 0, count: system.cpuCount)
        for t in snap.threads where t.cpu >= 0 && t.cpu < perCPU.count { perCPU[t.cpu] += 1 }
        if snap.threads.count > 64 { snap.threads = Array(snap.threads.prefix(64)) }
        let mc = extraMemcached.withLock { $0 }
        let memcached = mc?.provide()
        var process = ServerStatistics.ProcessStatistics.current()
        process.memcachedLimitBytes = mc?.limitBytes ?? 0
        var statistics = ServerStatistics(lwkt: snap, slab: core.slab.statistics(),
                                namecache: .init(core.vfs.namecache.statistics),
                                http: core.counters.enumerated().map { $1.snapshot(cpu: $0) },
                                address: "\(address)", threadCount: threadCount, threadsPerCPU: perCPU,
                                memcached: memcached, latency: system.latencies.summaries(), process: process,
                                stalls: system.stallStatistics, rates: core.sampler.latest,
                                pendingMessages: core.sampler.pending, hostIO: core.vfs.hostIO.statistics)
        statistics.network = stack.statistics()
        statistics.lwkt.sections = ModuleCounters.normalized(statistics.lwkt.sections)
        statistics.fuse = FUSEStatisticsSource.current(on: system)
        return statistics
    }
}

/// A memcached statistics provider, boxed (see `extraMemcached`).
final class MemcachedStatisticsProvider: Sendable {
    let provide: @Sendable () -> [[String: Int]]?
    let limitBytes: Int
    init(_ provide: @escaping @Sendable () -> [[String: Int]]?, limitBytes: Int) {
        self.provide = provide
        self.limitBytes = limitBytes
    }
}

/// Moves a non-Sendable value into a thread that is its only user from then on.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}
