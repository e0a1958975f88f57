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

    init(cpu: Int) {
        self.cpu = cpu
        due.reserveCapacity(64)
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
