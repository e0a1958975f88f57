import LWKT
import Slab

/// A message from a connection to one CPU's shard port, sent by the connection's
/// ``ShardRouter``. Each connection keeps one per CPU and reuses it, so the steady state
/// allocates nothing.
///
/// Rules: the connection fills a request, sends it, and touches it again only after the
/// owner replied (the IPI rings order the hand-off both ways); the owner touches only the
/// request while it runs it. Replies go to the request's own ``reply`` buffer, never to the
/// connection's: one convention for single keys, multi-gets and pipelines alike.
final class ShardRequest: Message, @unchecked Sendable {
    enum Kind: UInt8 {
        /// Run `ops[0..<count]` in order, appending each reply to `reply` and its end to `ends`.
        case batch
        /// Copy the shard's counters and per-class tables into this request.
        case stats
        /// `flush_all` with `delay` seconds.
        case flush
        /// Zero the shard's counters (`stats reset`).
        case resetStats
    }

    var kind: Kind = .batch
    /// The batch's bookkeeping, behind a pointer so that no access to it pays Swift's
    /// run-time exclusivity check (see ``ItemStore/HotState``).
    struct Batch {
        var ops: UnsafeMutablePointer<KeyOp>
        var ends: UnsafeMutablePointer<Int>
        var capacity = 16
        var count = 0
        var cursor = 0
    }
    private let batch: UnsafeMutablePointer<Batch>
    /// The operations of a batch (pointers into the connection's input, which stays put
    /// until the reply).
    private(set) var ops: UnsafeMutablePointer<KeyOp> {
        @inline(__always) get { batch.pointee.ops }
        @inline(__always) set { batch.pointee.ops = newValue }
    }
    private(set) var ends: UnsafeMutablePointer<Int> {
        @inline(__always) get { batch.pointee.ends }
        @inline(__always) set { batch.pointee.ends = newValue }
    }
    private(set) var capacity: Int {
        @inline(__always) get { batch.pointee.capacity }
        @inline(__always) set { batch.pointee.capacity = newValue }
    }
    /// Operations (or literal replies, for the connection's own CPU) queued.
    private(set) var count: Int {
        @inline(__always) get { batch.pointee.count }
        @inline(__always) set { batch.pointee.count = newValue }
    }
    /// The replies, back to back; `ends[j]` is where reply `j` ends.
    let reply: IOBuffer
    /// Replies already spliced into the connection's output.
    var cursor: Int {
        @inline(__always) get { batch.pointee.cursor }
        @inline(__always) set { batch.pointee.cursor = newValue }
    }
    var delay: Int64 = 0
    var now: Int64 = 0
    var counters = ShardCounters()
    var classItems: [Int] = []
    var classBytes: [Int] = []
    var classEvictions: [Int] = []
    var connections: [Int: ConnectionInfo] = [:]
    var prefixes: [String: PrefixCounters] = [:]

    /// A request whose replies take slab memory of `type` (malloc when no slab is given).
    init(slab: SlabAllocator? = nil, type: MallocType? = nil) {
        reply = IOBuffer(capacity: 4096, allocator: slab, type: type)
        batch = .allocate(capacity: 1)
        batch.initialize(to: Batch(ops: .allocate(capacity: 16), ends: .allocate(capacity: 16)))
        super.init(replyPort: nil, options: [])
    }

    deinit {
        ops.deallocate()
        ends.deallocate()
        batch.deinitialize(count: 1)
        batch.deallocate()
    }

    @inline(__always) private func makeRoom() {
        guard count == capacity else { return }
        let c = capacity * 2
        let no = UnsafeMutablePointer<KeyOp>.allocate(capacity: c)
        no.moveInitialize(from: ops, count: count)
        ops.deallocate()
        ops = no
        let ne = UnsafeMutablePointer<Int>.allocate(capacity: c)
        ne.moveInitialize(from: ends, count: count)
        ends.deallocate()
        ends = ne
        capacity = c
    }

    /// Queues an operation to run on the owner.
    @inline(__always) func add(_ op: KeyOp) {
        makeRoom()
        (ops + count).initialize(to: op)
        ends[count] = -1
        count += 1
    }

    /// Queues a reply that needs no shard (a literal, or a reply made on this CPU).
    @inline(__always) func addReply(_ s: StaticString) {
        makeRoom()
        reply.append(s)
        (ops + count).initialize(to: KeyOp())
        ends[count] = reply.count
        count += 1
    }

    /// Runs an operation here at once and queues its reply (the connection's own CPU, in
    /// order with its literals).
    @inline(__always) func addLocal(_ op: KeyOp, store: ItemStore) {
        makeRoom()
        (ops + count).initialize(to: op)
        CommandExecutor.execute(&ops[count], store: store, out: reply)
        ends[count] = reply.count
        count += 1
    }

    /// The reply of entry `j` (in order of queueing).
    @inline(__always) func replyRange(_ j: Int) -> (UnsafeRawPointer, Int) {
        var from = 0
        var k = j - 1
        while k >= 0 && ends[k] < 0 { k -= 1 }
        if k >= 0 { from = ends[k] }
        // An entry that never ran (the message could not be sent) has no reply.
        return (UnsafeRawPointer(reply.base + from), ends[j] < 0 ? 0 : ends[j] - from)
    }

    /// Answers every operation that did not run (its message could not be delivered) with
    /// an error, so the connection still gets one reply per command.
    func failUnanswered() {
        for j in 0..<count where ends[j] < 0 {
            reply.append("SERVER_ERROR cross-CPU request failed\r\n")
            ends[j] = reply.count
        }
    }

    /// Empties the request for the next window.
    @inline(__always) func reset() {
        (ops).deinitialize(count: count)
        count = 0
        cursor = 0
        reply.clear()
        reply.trim(limit: 256 * 1024)
    }

    /// Runs the request against `store` on the owner CPU.
    func run(on store: ItemStore) {
        assert(CPU.current == nil || CPU.current?.id == store.cpuID, "a shard request runs on the owner's CPU")
        switch kind {
        case .batch:
            for j in 0..<count where ends[j] < 0 {
                CommandExecutor.execute(&ops[j], store: store, out: reply)
                ends[j] = reply.count
            }
        case .stats:
            store.tick(now)
            counters = store.counters
            classItems = store.classItems
            classBytes = store.classBytes
            classEvictions = store.classEvictions
            connections = store.connections.mapValues(\.snapshot)
            prefixes = store.prefixes
        case .flush:
            store.flush(delay: delay, now: now)
        case .resetStats:
            let keep = store.counters
            store.counters = ShardCounters()
            store.counters.currItems = keep.currItems
            store.counters.bytes = keep.bytes
            store.counters.chargedBytes = keep.chargedBytes
            store.counters.currConnections = keep.currConnections
        }
    }
}
