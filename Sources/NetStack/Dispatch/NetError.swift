/// Errors of the network stack's control paths.
public enum NetError: Error, Equatable, CustomStringConvertible {
    /// The interface has fewer queues than the system has CPUs.
    case queueMismatch(Int, Int)
    /// The port is already bound.
    case addressInUse(UInt16)
    /// No ephemeral port is free.
    case noPortsAvailable
    /// The datagram is larger than IPv4 can carry.
    case messageTooLong(Int)
    /// The socket is not connected (send without a destination).
    case notConnected
    /// The socket is closed.
    case closed
    /// No buffer memory is left.
    case noBuffers
    /// The process may not create the device (needs CAP_NET_ADMIN).
    case permissionDenied(String)
    /// A system call failed.
    case system(String, Int32)

    public var description: String {
        switch self {
        case .queueMismatch(let q, let c): return "interface has \(q) queues but the system has \(c) CPUs"
        case .addressInUse(let p): return "UDP port \(p) is already bound"
        case .noPortsAvailable: return "no ephemeral UDP port is free"
        case .messageTooLong(let n): return "datagram of \(n) bytes is too long for IPv4"
        case .notConnected: return "socket is not connected"
        case .closed: return "socket is closed"
        case .noBuffers: return "no mbufs available"
        case .permissionDenied(let s): return s
        case .system(let call, let e): return "\(call) failed: errno \(e)"
        }
    }
}
