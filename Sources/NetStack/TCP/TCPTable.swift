import LWKT

/// One CPU's TCP state (DragonFly's per-CPU `tcbinfo`): the connection table keyed by
/// 4-tuple, this CPU's replica of every listening socket (the wildcard table), buffer
/// memory in use, the challenge-ACK budget and the timer schedule. Only its CPU touches
/// it; nothing here is shared or reference-counted across CPUs.
final class TCPTable {
    let cpu: Int
    /// Connections whose flows hash to this CPU.
    var connections: [TCPFlowKey: TCPControlBlock] = [:]
    /// Listening sockets by local port: this CPU's own replica.
    var listeners: [UInt16: TCPListener] = [:]
    /// Buffer bytes held by this CPU's connections.
    var bufferBytes = 0
    /// Challenge ACKs left in the current second, and when it ends.
    var challengeBudget = 0
    var challengeReset: UInt64 = 0
    /// The earliest timer deadline of any connection (UInt64.max: none).
    var nextTimer: UInt64 = .max
    /// Scratch list for the timer scan (capacity kept between scans).
    var due: [TCPControlBlock] = []
    /// The connection the last segment went to (a one-entry cache in front of
    /// ``connections``: segments come in runs of one flow), and its key. Unretained: it is
    /// cleared whenever a PCB leaves or enters the table, so it always names a PCB the
    /// table holds.
    var last: Unmanaged<TCPControlBlock>? = nil
    var lastKey = TCPFlowKey(local: .any, localPort: 0, remote: .any, remotePort: 0)
    /// PCBs taken out of ``connections`` since the last ``reap()``, kept alive until then:
    /// input works on the unretained PCB ``lookup(_:)`` returns, which may leave the table
    /// (and lose its last reference) in the middle of processing a segment.
    var detached: [TCPControlBlock] = []
    /// Whether a receive batch is running: segments that need no immediate answer put
    /// their connection on ``deferred`` instead of calling `tcpOutput`, and the batch's end
    /// runs the output once per connection (one ACK for the batch's in-order segments,
    /// data sent once for all the ACKs that arrived).
    var batching = false
    /// Connections whose output waits for the end of the batch (each at most once).
    var deferred: [TCPControlBlock] = []
    /// Connections with a small socket write not yet sent (each at most once): it goes out
    /// when the writing job gives up the CPU (the CPU's ``NetCPU/heldOutput`` park flush),
    /// so a close() or another write made before that leaves in the same segment.
    var held: [TCPControlBlock] = []

    init(cpu: Int) {
        self.cpu = cpu
        due.reserveCapacity(64)
        deferred.reserveCapacity(64)
        held.reserveCapacity(64)
        detached.reserveCapacity(16)
    }

    /// The connection of `key`, unretained, through the one-entry cache. It stays valid
    /// until the next ``reap()`` (the table or ``detached`` holds it).
    @inline(__always) func lookup(_ key: TCPFlowKey) -> Unmanaged<TCPControlBlock>? {
        if let c = last, lastKey == key { return c }
        guard let c = connections[key] else { return nil }
        let u = Unmanaged.passUnretained(c)
        last = u
        lastKey = key
        return u
    }

    /// Takes a PCB out of the table (its last reference may go at the next ``reap()``).
    @inline(__always) func remove(_ tp: TCPControlBlock) {
        detached.append(tp)
        connections[tp.key] = nil
        last = nil
    }

    /// Drops the PCBs removed since the last call. Runs where no input is in progress: at
    /// the end of a receive batch and on every pass of the protocol thread.
    @inline(__always) func reap() {
        if !detached.isEmpty { detached.removeAll(keepingCapacity: true) }
    }

    /// Timer deadlines by connection (see ``TCPTimerHeap``).
    var timers = TCPTimerHeap<TCPControlBlock>()

    /// Notes a deadline armed by connection `tp` of this CPU: a heap entry unless the PCB
    /// already has one that comes no later.
    @inline(__always) func schedule(_ deadline: UInt64, _ tp: TCPControlBlock) {
        guard tp.scheduled == 0 || deadline < tp.scheduled else { return }
        tp.scheduled = deadline
        timers.push(deadline, tp)
        if deadline < nextTimer { nextTimer = deadline }
        if timers.count > 2 * connections.count + 256 { rebuildTimers() }
    }

    /// Drops the stale entries: one entry per connection in the table with a timer armed.
    func rebuildTimers() {
        timers.removeAll()
        nextTimer = .max
        for tp in connections.values {
            tp.scheduled = 0
            let d = tp.nextDeadline
            if d != 0 {
                tp.scheduled = d
                timers.push(d, tp)
                if d < nextTimer { nextTimer = d }
            }
        }
    }
}
