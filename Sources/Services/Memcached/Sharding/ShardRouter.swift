import LWKT

/// Sends a connection's key operations to the CPUs that own the keys, DragonFly style: an
/// operation on a key owned here runs here; one owned elsewhere travels to the owner's
/// shard port in a message.
///
/// The router works in windows. While a window holds no remote operation, replies go
/// straight to the connection's output. From the first remote operation on, every reply
/// of the window is queued in order (one entry per operation or literal), and ``flush()``
/// sends at most one message per owner CPU carrying all of that CPU's operations of the
/// window (a pipeline or a multi-get alike), waits for all of them at once, and splices
/// the replies into the output in command order.
///
/// Rules: used only by its connection's thread on the connection's CPU. Operations on the
/// same key keep their order (they go to the same owner, in order); operations on different
/// keys are independent, as in memcached. Whole-cache commands flush the window first.
final class ShardRouter {
    let service: MemcachedService
    let cpu: Int
    /// How many CPUs own keys (the service's, kept here so routing reads no array).
    let cpuCount: Int
    // Strong `let`s: a use borrows them from the router without reference counting. (As
    // `unowned(unsafe)` each use loaded a new strong reference: three retains and releases
    // per operation.)
    let store: ItemStore
    let out: OutputBuffer
    let requests: [ShardRequest]
    /// The owner CPUs' shard ports (the service's, kept here: no array copy per flush).
    let ports: [Port]
    /// The window's mutable state, behind a pointer so that no access to it pays Swift's
    /// run-time exclusivity check (see ``ItemStore/HotState``).
    struct Window {
        /// The owner CPU of each queued entry, in command order.
        var order: UnsafeMutablePointer<Int32>
        var orderCapacity = 64
        var orderCount = 0
        /// Whether the window holds a remote operation (and so replies are being queued).
        var staging = false
    }
    private let window: UnsafeMutablePointer<Window>
    var order: UnsafeMutablePointer<Int32> {
        @inline(__always) get { window.pointee.order }
        @inline(__always) set { window.pointee.order = newValue }
    }
    var orderCapacity: Int {
        @inline(__always) get { window.pointee.orderCapacity }
        @inline(__always) set { window.pointee.orderCapacity = newValue }
    }
    var orderCount: Int {
        @inline(__always) get { window.pointee.orderCount }
        @inline(__always) set { window.pointee.orderCount = newValue }
    }
    /// Whether the window holds a remote operation (and so replies are being queued).
    var staging: Bool {
        @inline(__always) get { window.pointee.staging }
        @inline(__always) set { window.pointee.staging = newValue }
    }
    /// The most entries a window holds before it is flushed.
    static let windowLimit = 256

    init(service: MemcachedService, cpu: Int, out: OutputBuffer) {
        self.service = service
        self.cpu = cpu
        self.store = service.stores[cpu]
        self.out = out
        cpuCount = service.stores.count
        requests = (0..<service.stores.count).map { _ in ShardRequest(slab: service.slab, type: service.bufferType) }
        ports = service.ports
        window = .allocate(capacity: 1)
        window.initialize(to: Window(order: .allocate(capacity: 64)))
    }

    deinit {
        order.deallocate()
        window.deinitialize(count: 1)
        window.deallocate()
    }

    var isFull: Bool { orderCount >= ShardRouter.windowLimit }

    @inline(__always) private func push(_ o: Int) {
        if orderCount == orderCapacity {
            let c = orderCapacity * 2
            let n = UnsafeMutablePointer<Int32>.allocate(capacity: c)
            n.moveInitialize(from: order, count: orderCount)
            order.deallocate()
            order = n
            orderCapacity = c
        }
        order[orderCount] = Int32(truncatingIfNeeded: o)
        orderCount += 1
    }

    /// Runs (here) or queues (for its owner) one key operation.
    @inline(__always) func submit(_ op: KeyOp) {
        assert(CPU.current?.id == cpu, "a ShardRouter runs only on its connection's CPU")
        let o = MemcachedService.owner(op.hash, cpus: cpuCount)
        if o == cpu {
            store.counters.localRequests += 1
            if !staging {
                var op = op
                CommandExecutor.execute(&op, store: store, out: out)
                return
            }
            requests[cpu].addLocal(op, store: store)
        } else {
            staging = true
            requests[o].add(op)
        }
        push(o)
    }

    /// A reply that needs no shard (END, MN, an error), in its place among the others.
    @inline(__always) func literal(_ s: StaticString) {
        if s.utf8CodeUnitCount == 0 { return }
        if !staging { out.append(s); return }
        requests[cpu].addReply(s)
        push(cpu)
    }

    /// Sends the window's remote operations (one message per owner, all in flight at
    /// once), waits for them, and writes every queued reply to the output in order.
    nonisolated(nonsending) func flush() async {
        assert(CPU.current?.id == cpu, "a ShardRouter runs only on its connection's CPU")
        guard staging else { return }
        var pending = false
        for o in 0..<requests.count where o != cpu {
            let r = requests[o]
            guard r.count > 0 else { continue }
            r.kind = .batch
            store.counters.remoteSent += 1
            store.counters.remoteOps += r.count
            store.counters.countBatch(r.count)
            do {
                // nil: in flight (the usual case); a status: the port finished it at once,
                // and anything but ok means it did not run the operations.
                if let status = try LWKT.beginDoMsg(r, to: ports[o]) {
                    if status != MessageStatus.ok { r.failUnanswered() }
                } else {
                    pending = true
                }
            } catch {
                r.failUnanswered()
            }
        }
        if pending {
            store.counters.remoteWaits += 1
            for o in 0..<requests.count where o != cpu {
                let r = requests[o]
                if r.count > 0 && !r.isDone { _ = try? await LWKT.waitMsg(r) }
            }
        }
        for k in 0..<orderCount {
            let r = requests[Int(order[k])]
            let (p, n) = r.replyRange(r.cursor)
            if n > 0 { out.append(p, n) }
            r.cursor += 1
        }
        for r in requests where r.count > 0 {
            if r.reply.failed { out.markFailed() }
            r.reset()
        }
        orderCount = 0
        staging = false
    }

    // MARK: - Whole-cache operations (the window is flushed first by the caller)

    /// Runs `flush_all` on every CPU.
    nonisolated(nonsending) func flushAll(delay: Int64, now: Int64) async {
        for o in 0..<requests.count {
            if o == cpu {
                store.flush(delay: delay, now: now)
            } else {
                let r = requests[o]
                r.kind = .flush
                r.delay = delay
                r.now = now
                _ = try? await LWKT.doMsg(r, to: service.ports[o])
            }
        }
    }

    /// Zeroes every CPU's counters (`stats reset`).
    nonisolated(nonsending) func resetStats() async {
        for o in 0..<requests.count {
            let r = requests[o]
            r.kind = .resetStats
            if o == cpu { r.run(on: store) } else { _ = try? await LWKT.doMsg(r, to: service.ports[o]) }
        }
    }

    /// Every CPU's counters and tables, each copied on its own CPU.
    nonisolated(nonsending) func gather(now: Int64) async -> [ShardRequest] {
        var all: [ShardRequest] = []
        for o in 0..<requests.count {
            let r = ShardRequest()
            r.kind = .stats
            r.now = now
            if o == cpu { r.run(on: store) } else { _ = try? await LWKT.doMsg(r, to: service.ports[o]) }
            all.append(r)
        }
        return all
    }
}
