/// TCP settings of a stack (part of ``NetStackConfiguration``).
public struct TCPConfiguration: Sendable {
    /// Congestion control algorithms.
    public enum CongestionControl: Sendable { case cubic, newReno }

    /// Send buffer a connection starts with, bytes.
    public var sendBufferSize = 256 << 10
    /// Largest send buffer of a connection: while the window could carry at least half of
    /// a full send buffer, a writer that finds it full doubles it (up to this, within
    /// ``memoryLimitPerCPU``). At most ``sendBufferSize``: no growth.
    public var sendBufferLimit = 4 << 20
    /// Largest receive buffer of a connection, bytes (sets the window scale).
    public var receiveBufferSize = 256 << 10
    /// Receive buffer a connection starts with; it doubles (up to ``receiveBufferSize``,
    /// within ``memoryLimitPerCPU``) while the reader drains a nearly full buffer, that is
    /// while the window, not the reader, limits the transfer.
    public var initialReceiveBufferSize = 64 << 10
    /// Buffer memory all connections of one CPU may hold; past it new connections are
    /// refused (ENOBUFS, or the SYN is dropped).
    public var memoryLimitPerCPU = 256 << 20
    /// Maximum segment lifetime; TIME-WAIT lasts twice this.
    public var msl: Duration = .seconds(30)
    /// Retransmission timeout bounds and the initial value (RFC 6298).
    public var minimumRTO: Duration = .milliseconds(200)
    public var maximumRTO: Duration = .seconds(60)
    public var initialRTO: Duration = .seconds(1)
    /// Retransmissions of one segment before the connection is dropped (ETIMEDOUT).
    public var maxRetransmissions = 12
    /// SYN (or SYN-ACK) retransmissions before a handshake is given up.
    public var synRetries = 6
    /// Longest delay of an acknowledgment (RFC 9293 §3.8.6.3: under 500 ms; 40 ms here).
    public var delayedACK: Duration = .milliseconds(40)
    /// Keepalive: idle time before the first probe, time between probes, probes sent.
    public var keepaliveIdle: Duration = .seconds(7200)
    public var keepaliveInterval: Duration = .seconds(75)
    public var keepaliveProbes = 9
    /// How long an orphaned connection (closed by its socket) waits in FIN-WAIT-2.
    public var finWait2Timeout: Duration = .seconds(60)
    /// The default congestion control.
    public var congestionControl: CongestionControl = .cubic
    /// Offer SACK, timestamps and window scaling.
    public var sack = true
    public var timestamps = true
    public var windowScaling = true
    /// Half-open connections one listener holds on one CPU; past it SYN cookies answer.
    public var synQueueLimit = 256
    /// Out-of-order segments one connection holds.
    public var outOfOrderLimit = 256
    /// Challenge ACKs (RFC 5961) each CPU sends per second at most.
    public var challengeACKsPerSecond = 1000
    /// Initial congestion window in segments (RFC 6928).
    public var initialWindow = 10
    /// Hold a socket write that leaves less than a segment unsent until the writing thread
    /// gives up its CPU (parks, waits, yields or ends its job), so that a close() or more
    /// writes made before then leave in the same segment: a reply and its FIN go together
    /// (like Linux's `tcp_autocorking`, but bounded by the writer's own job, never by a
    /// timer). Off: every write transmits at once. `serve` and `bench tcp` turn it off
    /// when the environment has `LIBELLULA_TCP_HOLD_SMALL_WRITES=0` (for A/B measurement).
    public var holdSmallWrites = true
    /// Secret for ISNs and SYN cookies (nil: random at start).
    public var secret: (UInt64, UInt64)? = nil

    public init() {}
}
