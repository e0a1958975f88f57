import LWKT
import NetStack

/// A TCP connection on Libellula's own stack as a ``StreamConnection``: a thin handle over
/// NetStack's ``TCPConnection``. It belongs to the CPU its 4-tuple hashes to; every call
/// runs there and touches the PCB directly (no lock, no IPI).
public final class NetStackConnection: StreamConnection, @unchecked Sendable {
    /// NetStack's socket.
    public let tcp: TCPConnection
    /// The client's address.
    public let peer: SocketAddress
    /// The CPU that owns the connection (it never changes; kept here because services ask
    /// for it on every request).
    public let cpuID: Int
    /// Whether ``close(linger:)`` or ``abort()`` was called.
    private var finished = false

    init(_ tcp: TCPConnection) {
        self.tcp = tcp
        cpuID = tcp.cpuID
        peer = SocketAddress(ipv4: tcp.peer.address.value, port: tcp.peer.port)
    }

    /// A connection dropped without a close is reset (as closing a host socket's descriptor
    /// ends it), so its PCB does not outlive it; this happens only when the last reference
    /// goes on the owner CPU, where the connection's thread drops it.
    deinit { if !finished { tcp.abort() } }

    /// Reads what has arrived (waiting for at least one byte); 0 at end of stream.
    public nonisolated(nonsending) func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration) async throws(SocketError) -> Int {
        do { return try await tcp.read(into: buffer, timeout: timeout) } catch { throw SocketError(error, call: "recv") }
    }

    /// Writes every byte into the send buffer, waiting while it is full.
    public nonisolated(nonsending) func write(_ bytes: UnsafeRawBufferPointer, timeout: Duration) async throws(SocketError) {
        do { try await tcp.write(bytes, timeout: timeout) } catch { throw SocketError(error, call: "send") }
    }

    /// Sends FIN, discards what the peer still sends for up to `linger`, and leaves the rest
    /// of the close (TIME-WAIT) to the stack.
    public func close(linger: Duration) async {
        finished = true
        await tcp.close(linger: linger)
    }

    /// Closes abortively (a reset; unsent data is discarded).
    public func abort() {
        finished = true
        tcp.abort()
    }
}
