import LWKT
import Synchronization

/// One CPU's replica of a listening socket. A listening port has one listener per CPU,
/// each in its own CPU's wildcard table: a SYN is handled by the CPU its 4-tuple hashes
/// to, the connection's PCB is made there, and ``accept(timeout:)`` on that CPU returns
/// it. There is no shared listen queue. Use a listener only on its CPU.
public final class TCPListener: @unchecked Sendable {
    public let stack: NetStack
    /// The CPU whose connections this replica accepts.
    public let cpuID: Int
    /// The local address and port.
    public let address: IPv4Endpoint
    let backlog: Int
    /// Established connections not yet accepted.
    var pending: [TCPControlBlock] = []
    /// Connections in SYN-RECEIVED made by this replica.
    var synCount = 0
    private(set) var isClosed = false
    var waiters = 0

    init(stack: NetStack, cpu: Int, address: IPv4Endpoint, backlog: Int) {
        self.stack = stack
        cpuID = cpu
        self.address = address
        self.backlog = max(1, backlog)
    }

    func enqueue(_ tp: TCPControlBlock) {
        pending.append(tp)
        if waiters > 0 { LWKT.wakeup(WaitChannel(self), in: stack.system) }
    }

    func remove(_ tp: TCPControlBlock) {
        pending.removeAll { $0 === tp }
        tp.listener = nil
    }

    /// Connections waiting to be accepted.
    public var queued: Int { pending.count }

    /// Waits for the next connection made on this CPU (the shape of Services'
    /// `StreamListener.accept()`); throws ``TCPError/closed`` once the listener is closed.
    nonisolated(nonsending) public func accept() async throws(TCPError) -> TCPConnection {
        while true {
            if let c = try await accept(timeout: nil) { return c }
        }
    }

    /// Waits for the next connection made on this CPU; nil when `timeout` (nil: none)
    /// passes first.
    nonisolated(nonsending) public func accept(timeout: Duration?) async throws(TCPError) -> TCPConnection? {
        guard CPU.current?.id == cpuID else { throw .invalidArgument("accept() off the listener's CPU \(cpuID)") }
        let deadline = timeout.map { lb_now_ns_swift() &+ $0.ns }
        while true {
            if isClosed { throw .closed }
            if !pending.isEmpty {
                let tp = pending.removeFirst()
                tp.listener = nil
                return TCPConnection(tp)
            }
            var left: Duration? = nil
            if let deadline {
                let now = lb_now_ns_swift()
                if now >= deadline { return nil }
                left = .nanoseconds(Int64(deadline - now))
            }
            waiters += 1
            defer { waiters -= 1 }
            do {
                _ = try await LWKT.tsleep(on: WaitChannel(self), timeout: left, until: { [self] in !pending.isEmpty || isClosed })
            } catch {
                throw .cancelled
            }
        }
    }

    /// Stops listening on this CPU: the replica leaves the table and connections not yet
    /// accepted are reset. Call it on the listener's CPU.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        let st = stack.cpus[cpuID]
        if st.tcp.listeners[address.port] === self { st.tcp.listeners[address.port] = nil }
        st.now = lb_now_ns_swift()
        for tp in pending {
            tp.listener = nil
            tp.orphaned = true
            stack.tcpAbort(tp, st)
        }
        pending.removeAll()
        // Half-open connections this replica made go too.
        var embryos: [TCPControlBlock] = []
        for tp in st.tcp.connections.values where tp.state == .synReceived && tp.listener === self { embryos.append(tp) }
        for tp in embryos {
            tp.orphaned = true
            stack.tcpAbort(tp, st)
        }
        stack.tcpListenerClosed(port: address.port)
        LWKT.wakeup(WaitChannel(self), in: stack.system)
    }
}
