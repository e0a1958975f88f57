/// Errors of TCP sockets, each carrying the errno a Linux program would see.
public enum TCPError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The peer answered the SYN with a reset (ECONNREFUSED).
    case connectionRefused
    /// The peer reset the connection (ECONNRESET).
    case connectionReset
    /// Retransmissions, the handshake or keepalive probes went unanswered, or a call's
    /// own timeout passed (ETIMEDOUT).
    case timedOut
    /// Writing after this side shut down writing or closed (EPIPE).
    case brokenPipe
    /// The connection is not (yet or any more) established (ENOTCONN).
    case notConnected
    /// The port is already in use (EADDRINUSE).
    case addressInUse
    /// No local port is free (EADDRNOTAVAIL).
    case addressNotAvailable
    /// The per-CPU buffer memory limit or the mbuf pool is exhausted (ENOBUFS).
    case noBuffers
    /// The call was made off the CPU that owns the socket, or with a bad argument (EINVAL).
    case invalidArgument(String)
    /// The socket was closed by this side (EBADF).
    case closed
    /// The waiting thread was cancelled (ECANCELED).
    case cancelled

    /// The Linux errno value.
    public var errno: Int32 {
        switch self {
        case .connectionRefused: return 111
        case .connectionReset: return 104
        case .timedOut: return 110
        case .brokenPipe: return 32
        case .notConnected: return 107
        case .addressInUse: return 98
        case .addressNotAvailable: return 99
        case .noBuffers: return 105
        case .invalidArgument: return 22
        case .closed: return 9
        case .cancelled: return 125
        }
    }

    public var description: String {
        switch self {
        case .connectionRefused: return "connection refused (ECONNREFUSED)"
        case .connectionReset: return "connection reset by peer (ECONNRESET)"
        case .timedOut: return "connection timed out (ETIMEDOUT)"
        case .brokenPipe: return "broken pipe (EPIPE)"
        case .notConnected: return "socket is not connected (ENOTCONN)"
        case .addressInUse: return "address already in use (EADDRINUSE)"
        case .addressNotAvailable: return "no local port available (EADDRNOTAVAIL)"
        case .noBuffers: return "no buffer space available (ENOBUFS)"
        case .invalidArgument(let s): return "invalid argument (EINVAL): \(s)"
        case .closed: return "socket is closed (EBADF)"
        case .cancelled: return "operation cancelled (ECANCELED)"
        }
    }
}
