import LWKT
import Slab
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A memcached-protocol cache on an LWKT system, sharded the DragonFly way: every key is
/// owned by the CPU its hash names, and only that CPU touches the key's item. Connections
/// live on the CPU that accepted them; an operation on a key owned elsewhere travels to the
/// owner's shard port as a message (`doMsg`) and the reply comes back the same way, while
/// the connection's CPU goes on running other work.
///
/// Items live in the slab (one arena per CPU); the memory limit is divided evenly among
/// the CPUs, each evicting from its own LRU list.
public final class MemcachedService: @unchecked Sendable {
    /// The LWKT system the service runs on.
    public let system: LWKTSystem
    /// The address it listens on.
    public let address: String
    /// The TCP port it listens on (the one the kernel picked, if 0 was asked for).
    public private(set) var port: UInt16 = 0
    /// The memory limit for items, in bytes, across all CPUs.
    public let memoryLimit: Int
    /// The largest value accepted, in bytes.
    public let maxValueSize: Int
    /// The version string reported by `version` and `stats`.
    public static let version = "1.6.18-libellula"

    let slab: SlabAllocator
    let stores: [ItemStore]
    let ports: [Port]
    let startTime: Int64
    let threads = Mutex<[ObjectIdentifier: LWKTThread]>([:])
    let stopping = Atomic<Bool>(false)
    let counterCache = Mutex<[[String: Int]]>([])
    /// memcached's `-c`: connections beyond it are answered with an error and closed.
    public let maxConnections: Int
    let openConnections = Atomic<Int>(0)
    let rejectedConnections = Atomic<Int>(0)
    let connectionIDs = Atomic<Int>(0)
    let detail = DetailSwitch()
    /// The malloc type of connection buffers (input, output, request replies).
    let bufferType: MallocType

    /// A fresh id for `stats conns`.
    func nextConnectionID() -> Int { connectionIDs.add(1, ordering: .relaxed).newValue }

    init(system: LWKTSystem, address: String, memoryLimit: Int, maxValueSize: Int, maxConnections: Int = 1024) {
        self.system = system
        self.maxConnections = maxConnections
        self.address = address
        self.memoryLimit = memoryLimit
        self.maxValueSize = maxValueSize
        slab = SlabAllocator.shared(for: system)
        let type = slab.makeType(name: "memcached-items")
        bufferType = slab.makeType(name: "memcached-buffers")
        let n = system.cpuCount
        let perCPU = max(64 * 1024, memoryLimit / n)
        var s: [ItemStore] = []
        var p: [Port] = []
        for i in 0..<n {
            let store = ItemStore(cpuID: i, cpuCount: n, slab: slab, type: type, limit: perCPU, maxItemSize: maxValueSize,
                                  detail: detail)
            s.append(store)
            p.append(Port.function(name: "memcached-shard\(i)", on: system.cpus[i]) { msg in
                let req = unsafeDowncast(msg, to: ShardRequest.self)
                store.counters.remoteServed += 1
                req.run(on: store)
                return MessageStatus.ok
            })
        }
        stores = s
        ports = p
        startTime = Int64(time(nil))
    }

    /// Starts the cache on host sockets: one nonblocking `SO_REUSEPORT` listening socket per
    /// CPU, each accepting and serving its connections on its own CPU (see
    /// ``start(system:stack:address:port:memoryLimit:maxValueSize:maxConnections:)``).
    public static func start(system: LWKTSystem, address: String = "127.0.0.1", port: UInt16 = 11211,
                             memoryLimit: Int = 64 << 20, maxValueSize: Int = 1 << 20,
                             maxConnections: Int = 1024) async throws -> MemcachedService {
        try await start(system: system, stack: HostSocketStack(system: system), address: address, port: port,
                        memoryLimit: memoryLimit, maxValueSize: maxValueSize, maxConnections: maxConnections)
    }

    /// Starts the cache on `stack`: one listener per CPU, each accepting and serving its
    /// connections on its own CPU.
    ///
    /// - Parameters:
    ///   - system: the booted LWKT system.
    ///   - stack: the sockets to listen on (the host kernel's, or Libellula's own stack).
    ///   - address: an IPv4 address to listen on, such as `127.0.0.1`.
    ///   - port: the TCP port; 0 picks a free one (read it back from ``port``).
    ///   - memoryLimit: bytes of items to keep before evicting (memcached's `-m`).
    ///   - maxValueSize: the largest item (memcached's `-I`, 1 MiB by default), counted as
    ///     memcached counts it: header, CAS, key, flags and value.
    ///   - maxConnections: memcached's `-c` (1024 by default).
    public static func start<Stack: StreamSocketStack>(system: LWKTSystem, stack: Stack, address: String = "127.0.0.1",
                                                       port: UInt16 = 11211, memoryLimit: Int = 64 << 20,
                                                       maxValueSize: Int = 1 << 20,
                                                       maxConnections: Int = 1024) async throws -> MemcachedService {
        let service = MemcachedService(system: system, address: address, memoryLimit: memoryLimit, maxValueSize: maxValueSize,
                                       maxConnections: maxConnections)
        guard let where_ = SocketAddress(parsing: "\(address):\(port)") else { throw MemcachedNetworkError.badAddress(address) }
        let listeners: [Stack.Listener]
        do {
            listeners = try stack.listen(on: where_, cpus: system.cpus, backlog: 1024)
        } catch {
            throw MemcachedNetworkError.socket(error)
        }
        service.port = listeners.first?.address.port ?? port
        for l in listeners {
            let box = UncheckedBox(l)
            let t = LWKTThread.spawn(on: system.cpus[l.cpuID], priority: .kernel, name: "memcached-listen\(l.cpuID)") {
                await Listener.acceptLoop(box.value, service: service)
            }
            service.track(t)
        }
        return service
    }

    /// Stops listening, closes every connection and waits for their threads to end.
    public func stop() async {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let list = threads.withLock { Array($0.values) }
        for t in list { t.cancel() }
        for t in list { await t.join() }
    }

    func track(_ t: LWKTThread) {
        threads.withLock { $0[ObjectIdentifier(t)] = t }
    }

    func untrack(_ t: LWKTThread) {
        _ = threads.withLock { $0.removeValue(forKey: ObjectIdentifier(t)) }
    }

    /// The owner CPU of a key hash.
    @inline(__always) func owner(_ hash: UInt64) -> Int {
        MemcachedService.owner(hash, cpus: stores.count)
    }

    /// The owner of a key hash among `cpus` CPUs (the high 32 bits of the hash, scaled).
    @inline(__always) static func owner(_ hash: UInt64, cpus: Int) -> Int {
        Int(truncatingIfNeeded: ((hash >> 32) &* UInt64(cpus)) >> 32)
    }

    /// The owner CPU of `key` (for tests and tools).
    public func owner(ofKey key: String) -> Int {
        var k = key
        return k.withUTF8 { b in b.baseAddress.map { owner(keyHash($0, b.count)) } ?? 0 }
    }

    /// Per-CPU counters, each read by its own CPU (a message to each).
    public func perCPUCounters() async throws -> [ShardCounters] {
        var result: [ShardCounters] = []
        for i in 0..<stores.count {
            let store = stores[i]
            let c = try await system.run(on: i) { () -> ShardCounters in store.counters }
            result.append(c)
        }
        return result
    }

    /// The per-CPU counters as of the last ``refreshCounters()`` (memcached's names), read
    /// without messaging any CPU: for statistics pages that must not wait.
    public var lastCounters: [[String: Int]] { counterCache.withLock { $0 } }

    /// Copies every CPU's counters (a message to each) into ``lastCounters``.
    public func refreshCounters() async {
        guard let list = try? await perCPUCounters() else { return }
        let dicts = list.map { c in Dictionary(c.pairs, uniquingKeysWith: { a, _ in a }) }
        counterCache.withLock { $0 = dicts }
    }

    /// Totals over all CPUs.
    public func totals() async throws -> ShardCounters {
        var t = ShardCounters()
        for c in try await perCPUCounters() { t.add(c) }
        return t
    }
}

extension MemcachedService {
    /// Measures what a cross-CPU request adds: from CPU 0, `iterations` GET hits of a key
    /// owned by CPU 0 (run in place) and of a key owned by another CPU (sent to its shard
    /// port with `doMsg` and answered there), each writing its response to a reused
    /// buffer. Returns nanoseconds per local and per remote GET. Needs 2 or more CPUs.
    public func measureHop(iterations: Int = 200_000) async throws -> (local: Double, remote: Double) {
        guard stores.count >= 2 else { return (0, 0) }
        let service = self
        return try await system.run(on: 0) { () -> (Double, Double) in
            var keys: [[UInt8]] = [[], []]
            var i = 0
            while keys[0].isEmpty || keys[1].isEmpty {
                let k = Array("hop\(i)".utf8)
                let o = k.withUnsafeBytes { service.owner(keyHash($0.baseAddress.unsafelyUnwrapped, $0.count)) }
                if o == 0 && keys[0].isEmpty { keys[0] = k }
                if o != 0 && keys[1].isEmpty { keys[1] = k }
                i += 1
            }
            let out = OutputBuffer()
            let value: [UInt8] = Array(repeating: 0x78, count: 32)
            var result: [Double] = []
            for which in 0..<2 {
                let key = keys[which]
                let owner = key.withUnsafeBytes { service.owner(keyHash($0.baseAddress.unsafelyUnwrapped, $0.count)) }
                let req = ShardRequest()
                let kp = UnsafeMutableRawPointer.allocate(byteCount: key.count, alignment: 8)
                let vp = UnsafeMutableRawPointer.allocate(byteCount: value.count, alignment: 8)
                defer { kp.deallocate(); vp.deallocate() }
                kp.copyMemory(from: key, byteCount: key.count)
                vp.copyMemory(from: value, byteCount: value.count)
                var op = KeyOp()
                op.key = UnsafeRawPointer(kp)
                op.keyLength = key.count
                op.hash = keyHash(kp, key.count)
                op.now = Int64(time(nil))
                op.kind = .set
                op.value = UnsafeRawPointer(vp)
                op.valueLength = value.count
                req.add(op)
                _ = try await LWKT.doMsg(req, to: service.ports[owner])
                req.reset()
                op.kind = .get
                let t0 = ContinuousClock.now
                for _ in 0..<iterations {
                    out.count = 0
                    if owner == 0 {
                        CommandExecutor.execute(&op, store: service.stores[0], out: out)
                    } else {
                        req.add(op)
                        _ = try await LWKT.doMsg(req, to: service.ports[owner])
                        let (p, n) = req.replyRange(0)
                        out.append(p, n)
                        req.reset()
                    }
                }
                let d = ContinuousClock.now - t0
                let ns = Double(d.components.seconds) * 1e9 + Double(d.components.attoseconds) / 1e9
                result.append(ns / Double(iterations))
            }
            return (result[0], result[1])
        }
    }
}

/// What ``MemcachedService/measureRouting(iterations:)`` found, in nanoseconds.
public struct RoutingCosts: Sendable {
    /// A 10-key get whose keys the connection's CPU owns.
    public var multiGetLocal: Double
    /// A 10-key get whose keys alternate between the connection's CPU and another.
    public var multiGetMixed: Double
    /// 8 pipelined gets on keys alternating owners, one message per remote command (the
    /// path before the router batched a pipeline window).
    public var pipelineOneByOne: Double
    /// The same 8 gets as one window: one message per owner CPU.
    public var pipelineBatched: Double
}

extension MemcachedService {
    /// Measures the router in place (no sockets): from CPU 0, multi-gets all-local and
    /// mixed-owner, and an 8-command mixed-owner pipeline sent one message per command
    /// against one message per owner. Needs 2 or more CPUs.
    public func measureRouting(iterations: Int = 100_000) async throws -> RoutingCosts {
        guard stores.count >= 2 else { return RoutingCosts(multiGetLocal: 0, multiGetMixed: 0, pipelineOneByOne: 0, pipelineBatched: 0) }
        let service = self
        return try await system.run(on: 0) { () -> RoutingCosts in
            // 10 keys owned by CPU 0 and 10 owned elsewhere, stored, laid out in one buffer.
            var local: [[UInt8]] = []
            var remote: [[UInt8]] = []
            var i = 0
            while local.count < 10 || remote.count < 10 {
                let k = Array("route\(i)".utf8)
                let o = k.withUnsafeBytes { service.owner(keyHash($0.baseAddress.unsafelyUnwrapped, $0.count)) }
                if o == 0 { if local.count < 10 { local.append(k) } } else if remote.count < 10 { remote.append(k) }
                i += 1
            }
            let all = local + remote
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 8)
            defer { buffer.deallocate() }
            var offsets: [Int] = []
            var at = 0
            for k in all { buffer.advanced(by: at).copyMemory(from: k, byteCount: k.count); offsets.append(at); at += k.count }
            func op(_ j: Int, _ kind: OpKind) -> KeyOp {
                var o = KeyOp()
                o.kind = kind
                o.key = UnsafeRawPointer(buffer + offsets[j])
                o.keyLength = all[j].count
                o.hash = keyHash(buffer + offsets[j], all[j].count)
                o.now = Int64(time(nil))
                o.value = o.key
                o.valueLength = o.keyLength
                return o
            }
            let out = OutputBuffer()
            let router = ShardRouter(service: service, cpu: 0, out: out)
            for j in 0..<all.count { router.submit(op(j, .set)) }
            await router.flush()
            func measure(_ body: () async -> Void) async -> Double {
                let t0 = ContinuousClock.now
                for _ in 0..<iterations { out.count = 0; await body() }
                let d = ContinuousClock.now - t0
                return (Double(d.components.seconds) * 1e9 + Double(d.components.attoseconds) / 1e9) / Double(iterations)
            }
            let localGet = await measure {
                for j in 0..<10 { router.submit(op(j, .get)) }
                router.literal("END\r\n")
                await router.flush()
            }
            let mixedGet = await measure {
                for j in 0..<10 { router.submit(op(j % 2 == 0 ? j / 2 : 10 + j / 2, .get)) }
                router.literal("END\r\n")
                await router.flush()
            }
            let oneByOne = await measure {
                for j in 0..<8 {
                    router.submit(op(j % 2 == 0 ? j / 2 : 10 + j / 2, .get))
                    router.literal("END\r\n")
                    await router.flush()
                }
            }
            let batched = await measure {
                for j in 0..<8 {
                    router.submit(op(j % 2 == 0 ? j / 2 : 10 + j / 2, .get))
                    router.literal("END\r\n")
                }
                await router.flush()
            }
            return RoutingCosts(multiGetLocal: localGet, multiGetMixed: mixedGet, pipelineOneByOne: oneByOne, pipelineBatched: batched)
        }
    }
}

extension MemcachedService {
    /// How the memcached command places its CPUs when the user did not say: pinned, with
    /// LWKT's default idle spin, while the machine keeps cores to spare (for the clients,
    /// the kernel's network work, other processes); not pinned and with a 5 µs spin when
    /// the CPUs take every core. Then the cores are shared: a pinned CPU thread that is
    /// preempted cannot move to a free core, and a long spin takes the time the clients and
    /// the kernel need (on 2 cores, 2 CPUs with a client: about 1.5× the CPU per operation
    /// and half the throughput at pipeline depth 8, see BENCHMARKS.md). An explicit `pin`
    /// or `spinMicroseconds` wins.
    public static func cpuPlacement(cpus: Int, cores: Int, pin: Bool?, spinMicroseconds: Int?)
        -> (pin: Bool, spinMicroseconds: Int?) {
        let shared = cpus >= cores
        return (pin ?? !shared, spinMicroseconds ?? (shared && cpus == cores ? 5 : nil))
    }
}
