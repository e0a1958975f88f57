/// What a socket stack reports on `/_stats`: per CPU, its listening replicas, the
/// connections accepted there, and (for Libellula's own stack) the packets that arrived on
/// the wrong CPU and were forwarded to their owner through the crossbar — about 0 when the
/// device steers flows by the same symmetric hash.
public struct SocketStackStatistics: Codable, Sendable, Equatable {
    /// The backend, in words (for example "Libellula TCP/IP on TAP lbl-tap").
    public var backend: String
    /// One entry per CPU, index = CPU.
    public var cpus: [CPU]
    /// How frames reach their owner CPU's queue (the own stack on a TAP): the eBPF steering
    /// program, or why there is none; nil for host sockets.
    public var flowSteering: String?

    /// One CPU's share.
    public struct CPU: Codable, Sendable, Equatable {
        /// Listening sockets replicated on this CPU (one per listening port).
        public var listeners: Int
        /// Connections `accept()` returned on this CPU.
        public var accepted: Int
        /// Handshakes completed on this CPU (passive opens).
        public var passiveOpens: Int
        /// Connections established now.
        public var established: Int
        /// Packets this CPU read from its queue but forwarded to their owner CPU.
        public var forwarded: Int
        /// Packets other CPUs forwarded to this one.
        public var forwardedIn: Int

        public init(listeners: Int, accepted: Int, passiveOpens: Int, established: Int, forwarded: Int, forwardedIn: Int) {
            self.listeners = listeners
            self.accepted = accepted
            self.passiveOpens = passiveOpens
            self.established = established
            self.forwarded = forwarded
            self.forwardedIn = forwardedIn
        }
    }

    public init(backend: String, cpus: [CPU], flowSteering: String? = nil) {
        self.backend = backend
        self.cpus = cpus
        self.flowSteering = flowSteering
    }
}

extension StreamSocketStack {
    /// No statistics of its own (the host backend: the kernel keeps them).
    public func statistics() -> SocketStackStatistics? { nil }
}
