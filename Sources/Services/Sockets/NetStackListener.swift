import LWKT
import NetStack

/// One CPU's replica of a listening port on Libellula's own stack (see
/// ``NetStackSocketStack/listen(on:cpus:backlog:)``): it accepts the connections whose
/// 4-tuple hashes to its CPU, whose PCBs were made there. Use it only on that CPU.
public final class NetStackListener: StreamListener, @unchecked Sendable {
    /// NetStack's listener replica.
    public let replica: TCPListener
    /// The listening address (the real port when 0 was asked for).
    public let address: SocketAddress
    /// The CPU whose connections it accepts.
    public var cpuID: Int { replica.cpuID }

    init(_ replica: TCPListener, address: SocketAddress) {
        self.replica = replica
        self.address = address
    }

    /// Waits on this CPU for the next connection made here. Nagle is turned off, as the
    /// host backend sets `TCP_NODELAY`.
    public func accept() async throws(SocketError) -> NetStackConnection {
        do {
            let c = try await replica.accept()
            c.noDelay = true
            return NetStackConnection(c)
        } catch {
            throw SocketError(error, call: "accept")
        }
    }

    /// Stops listening on this CPU; connections not yet accepted are reset.
    public func close() { replica.close() }
}
