/// The network stack's per-CPU counters. Drops are counted by reason.
public enum NetCounter: Int, CaseIterable, Sendable, Codable {
    /// Frames read from an interface on this CPU.
    case framesReceived
    /// Frames handed to an interface on this CPU.
    case framesSent
    /// Packets this CPU read but forwarded to their owner CPU.
    case forwarded
    /// Packets forwarded to this CPU by another one.
    case forwardedIn
    /// Packets processed by this CPU's protocol code (frames and reassembled datagrams).
    case processed
    case arpReceived, arpRequestsSent, arpRepliesSent
    case ipv4Received, ipv4Sent
    case fragmentsReceived, datagramsReassembled, fragmentsSent
    case icmpReceived, icmpEchoReplies, icmpUnreachableSent
    case udpReceived, udpDelivered, udpSent

    // TCP events.
    case tcpSegmentsReceived, tcpSegmentsSent, tcpDataSegmentsSent, tcpRetransmits, tcpRTOExpiries
    case tcpFastRetransmits, tcpSACKRecoveries, tcpNewRenoRecoveries, tcpChallengeACKs
    case tcpCookiesSent, tcpCookiesAccepted, tcpActiveOpens, tcpPassiveOpens, tcpResetsSent, tcpResetsReceived
    case tcpKeepaliveProbes, tcpWindowProbes, tcpDelayedACKs, tcpOutOfOrderQueued, tcpTimeouts
    case tcpConnectionsClosed, tcpTSOSegmentsSent
    // TCP connections by state (gauges: incremented on entry, decremented on exit).
    case tcpListen, tcpSynSent, tcpSynReceived, tcpEstablished, tcpFinWait1, tcpFinWait2
    case tcpCloseWait, tcpClosing, tcpLastAck, tcpTimeWait

    // Drops, by reason.
    case dropTruncated
    case dropBadEthernet
    case dropNotForUs
    case dropUnsupported
    case dropBadARP
    case dropBadIPHeader
    case dropBadIPChecksum
    case dropBadTransportHeader
    case dropBadTransportChecksum
    case dropFragmentOverlap
    case dropReassemblyLimit
    case dropReassemblyTimeout
    case dropNoSocket
    case dropSocketFull
    case dropNoBuffers
    case dropARPUnresolved
    case dropTooBig
    case dropInterface
    // TCP drops.
    case dropTCPOutOfWindow
    case dropTCPPAWS
    case dropTCPBadACK
    case dropTCPBadFlags
    case dropTCPBadCookie
    case dropTCPListenOverflow
    case dropTCPMemory
    case dropTCPOutOfOrderFull
    case dropTCPDuplicate
    case dropTCPChallengeLimit
    case dropTCPReset

    public var name: String { String(describing: self) }
    /// Whether this counter counts dropped packets.
    public var isDrop: Bool { rawValue >= NetCounter.dropTruncated.rawValue }
}
