import Glibc

/// Why a socket operation failed.
public enum SocketError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A system call failed with `errno`.
    case system(call: String, errno: Int32)
    /// The operation's deadline passed (the connection is shut down; close it).
    case timedOut
    /// The peer reset the connection or it was closed under the operation.
    case reset
    /// The calling thread was cancelled (for example at shutdown).
    case cancelled
    /// The operation was attempted on a socket that is already closed.
    case closed

    /// The errno a Linux program would see for this failure (a reset reads as
    /// `ECONNRESET`, a timeout as `ETIMEDOUT`, use after close as `EBADF`).
    public var errno: Int32 {
        switch self {
        case .system(_, let e): e
        case .timedOut: ETIMEDOUT
        case .reset: ECONNRESET
        case .cancelled: ECANCELED
        case .closed: EBADF
        }
    }

    /// A short explanation.
    public var description: String {
        switch self {
        case .system(let call, let e): "\(call): \(String(cString: strerror(e)))"
        case .timedOut: "timed out"
        case .reset: "connection reset"
        case .cancelled: "cancelled"
        case .closed: "socket closed"
        }
    }
}
