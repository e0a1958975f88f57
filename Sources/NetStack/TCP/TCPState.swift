/// The eleven connection states of RFC 9293 §3.3.2.
public enum TCPState: Int, CaseIterable, Sendable, CustomStringConvertible {
    case closed, listen, synSent, synReceived, established, finWait1, finWait2, closeWait, closing, lastAck, timeWait

    /// Whether the handshake has completed (RFC 9293's "synchronized" states).
    public var isSynchronized: Bool { rawValue >= TCPState.established.rawValue }

    /// Whether this side may still send data.
    public var canSend: Bool { self == .established || self == .closeWait }

    /// Whether data from the peer is still accepted.
    public var canReceive: Bool { self == .established || self == .finWait1 || self == .finWait2 }

    /// The counter that tracks how many connections are in this state.
    var gauge: NetCounter? {
        switch self {
        case .closed: return nil
        case .listen: return .tcpListen
        case .synSent: return .tcpSynSent
        case .synReceived: return .tcpSynReceived
        case .established: return .tcpEstablished
        case .finWait1: return .tcpFinWait1
        case .finWait2: return .tcpFinWait2
        case .closeWait: return .tcpCloseWait
        case .closing: return .tcpClosing
        case .lastAck: return .tcpLastAck
        case .timeWait: return .tcpTimeWait
        }
    }

    public var description: String {
        switch self {
        case .closed: return "CLOSED"
        case .listen: return "LISTEN"
        case .synSent: return "SYN-SENT"
        case .synReceived: return "SYN-RECEIVED"
        case .established: return "ESTABLISHED"
        case .finWait1: return "FIN-WAIT-1"
        case .finWait2: return "FIN-WAIT-2"
        case .closeWait: return "CLOSE-WAIT"
        case .closing: return "CLOSING"
        case .lastAck: return "LAST-ACK"
        case .timeWait: return "TIME-WAIT"
        }
    }
}
