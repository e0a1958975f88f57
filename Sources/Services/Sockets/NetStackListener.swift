import LWKT
import NetStack
import Synchronization

/// One CPU's replica of a listening port on Libellula's own stack (see
/// ``NetStackSocketStack/listen(on:cpus:backlog:)``): it accepts the connections whose
/// 4-tuple hashes to its CPU, whose PCBs were made there. Use it only on that CPU, and close
/// it there (``AcceptLoop`` does): a replica dropped without ``close()`` stays in its CPU's
/// table, holding the port, until the stack stops.
public final class NetStackListener: StreamListener, @unchecked Sendable {
    /// NetStack's listener replica.
    public let replica: TCPListener
    /// The listening address (the real port when 0 was asked for).
    public let address: SocketAddress
    /// The CPU whose connections it accepts.
    public var cpuID: Int { replica.cpuID }
    let sockets: NetStackSocketStack
    private var closed = false

    init(_ replica: TCPListener, address: SocketAddress, sockets: NetStackSocketStack) {
        self.replica = replica
        self.address = address
        self.sockets = sockets
    }

    /// Waits on this CPU for the next connection made here. Nagle is turned off, as the
    /// host backend sets `TCP_NODELAY`.
    public func accept() async throws(SocketError) -> NetStackConnection {
        do {
            let c = try await replica.accept()
            c.noDelay = true
            sockets.counts[cpuID].accepted.add(1, ordering: .relaxed)
            return NetStackConnection(c)
        } catch {
            throw SocketError(error, call: "accept")
        }
    }

    /// Stops listening on this CPU; connections not yet accepted are reset.
    public func close() {
        guard !closed else { return }
        closed = true
        replica.close()
        sockets.counts[cpuID].listeners.subtract(1, ordering: .relaxed)
    }
}
