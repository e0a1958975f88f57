/// Settings of one stack instance (one host with one interface).
public struct NetStackConfiguration: Sendable {
    /// The interface's IPv4 address.
    public var address: IPv4Address
    /// Prefix length of the attached network.
    public var prefixLength: Int
    /// Next hop for destinations off the attached network (none: on-link only).
    public var gateway: IPv4Address?
    /// TTL of datagrams this stack sends.
    public var ttl: UInt8 = 64
    /// Answer ICMP echo requests.
    public var answersPing = true
    /// A UDP port answered by the stack itself (echo), or nil.
    public var udpEchoPort: UInt16?
    /// How long a learned ARP entry is trusted.
    public var arpLifetime: Duration = .seconds(60)
    /// Interval between ARP request retries.
    public var arpRetryInterval: Duration = .seconds(1)
    /// Requests sent before an address is given up.
    public var arpMaxRequests = 3
    /// Packets each CPU may hold while their next hop is being resolved.
    public var arpHoldLimit = 64
    /// Entries in each CPU's ARP cache.
    public var arpCacheLimit = 1024
    /// How long an incomplete datagram waits for its missing fragments.
    public var reassemblyTimeout: Duration = .seconds(30)
    /// Incomplete datagrams each CPU keeps at once (each holds one 64 KiB cluster).
    public var reassemblyLimit = 16
    /// Fragments one datagram may consist of.
    public var fragmentsPerDatagram = 64
    /// Datagrams a UDP socket queues before it drops.
    public var socketQueueLimit = 1024
    /// ICMP errors each CPU sends per second at most.
    public var icmpErrorsPerSecond = 100
    /// Memory all of the stack's mbufs may hold at once.
    public var mbufLimitBytes = 256 << 20
    /// TCP settings.
    public var tcp = TCPConfiguration()

    public init(address: IPv4Address, prefixLength: Int = 24, gateway: IPv4Address? = nil) {
        self.address = address
        self.prefixLength = prefixLength
        self.gateway = gateway
    }

    /// The directed broadcast address of the attached network.
    public var subnetBroadcast: IPv4Address {
        let host: UInt32 = prefixLength >= 32 ? 0 : (prefixLength <= 0 ? ~0 : (1 << (32 - UInt32(prefixLength))) - 1)
        return IPv4Address(address.value | host)
    }
}

extension Duration {
    /// Whole nanoseconds (saturating at zero).
    var ns: UInt64 {
        let (s, a) = components
        return UInt64(max(0, s)) &* 1_000_000_000 &+ UInt64(max(0, a / 1_000_000_000))
    }
}
