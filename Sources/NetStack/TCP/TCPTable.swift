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
    /// ``connections``: segments come in runs of one flow). Unretained: it is cleared
    /// whenever a PCB leaves or enters the table, so it always names a PCB the table holds.
    unowned(unsafe) var last: TCPControlBlock? = nil
    /// Whether a receive batch is running: segments that need no immediate answer put
    /// their connection on ``deferred`` instead of calling `tcpOutput`, and the batch's end
    /// runs the output once per connection (one ACK for the batch's in-order segments,
    /// data sent once for all the ACKs that arrived).
    var batching = false
    /// Connections whose output waits for the end of the batch (each at most once).
    var deferred: [TCPControlBlock] = []

    init(cpu: Int) {
        self.cpu = cpu
        due.reserveCapacity(64)
        deferred.reserveCapacity(64)
    }

    /// The connection of `key`, through the one-entry cache.
    @inline(__always) func lookup(_ key: TCPFlowKey) -> TCPControlBlock? {
        if let c = last, c.key == key { return c }
        let c = connections[key]
        if c != nil { last = c }
        return c
    }

    /// Notes a deadline armed by a connection of this CPU.
    @inline(__always) func schedule(_ deadline: UInt64) {
        if deadline < nextTimer { nextTimer = deadline }
    }
}
