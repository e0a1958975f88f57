import LWKT

/// A connected stream socket (TCP), used only on the CPU that accepted it.
///
/// This is the API that every socket backend implements: the host kernel's TCP
/// (``HostSocketStack``) and Libellula's own TCP/IP stack (``NetStackSocketStack``).
/// Services are written against it (generically, so no existential sits on a hot path).
/// Its metatype is sendable: services start each connection's thread generically.
public protocol StreamConnection: AnyObject, SendableMetatype {
    /// The remote end.
    var peer: SocketAddress { get }
    /// The CPU that owns the connection.
    var cpuID: Int { get }
    /// Reads what is available (at least one byte, waiting for it on the owning CPU);
    /// returns 0 at end of stream. Throws ``SocketError/timedOut`` when nothing came
    /// within `timeout`.
    nonisolated(nonsending) func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration) async throws(SocketError) -> Int
    /// Writes every byte, waiting while the send buffer is full (back-pressure). Throws
    /// ``SocketError/timedOut`` when the peer does not take them within `timeout`.
    nonisolated(nonsending) func write(_ bytes: UnsafeRawBufferPointer, timeout: Duration) async throws(SocketError)
    /// Closes gracefully: sends FIN, then for up to `linger` discards what the peer still
    /// sends until it closes too (so a response is not destroyed by a reset), then releases
    /// the socket. Safe to call more than once.
    func close(linger: Duration) async
}

/// A listening socket on one CPU: it accepts the connections the stack hashed to that CPU.
public protocol StreamListener: AnyObject {
    /// The connection type it produces.
    associatedtype Connection: StreamConnection
    /// The CPU it belongs to.
    var cpuID: Int { get }
    /// The local address (with the real port when 0 was asked for).
    var address: SocketAddress { get }
    /// Waits for the next connection on the listener's CPU.
    func accept() async throws(SocketError) -> Connection
    /// Stops listening. Call it on the listener's CPU.
    func close()
}

/// A network stack that can listen on every CPU.
public protocol StreamSocketStack: Sendable {
    /// Its listener type.
    associatedtype Listener: StreamListener
    /// Opens one listener per CPU of `cpus`, all on the same address (with port 0 they share
    /// the port the first one got); the stack spreads incoming connections over them by a
    /// hash of the connection, as DragonFly spreads them over its per-CPU PCB tables.
    func listen(on address: SocketAddress, cpus: [CPU], backlog: Int) throws(SocketError) -> [Listener]
    /// Per-CPU listeners, accepts and cross-CPU forwarding for `/_stats`, or nil when the
    /// stack keeps none (the default).
    func statistics() -> SocketStackStatistics?
}
