/// A connection's 4-tuple as seen from this host: the key of the per-CPU PCB tables.
struct TCPFlowKey: Hashable, Sendable {
    /// Local address (high half) and remote address (low half).
    let addresses: UInt64
    /// Local port (high half) and remote port (low half).
    let ports: UInt64

    init(local: IPv4Address, localPort: UInt16, remote: IPv4Address, remotePort: UInt16) {
        addresses = UInt64(local.value) << 32 | UInt64(remote.value)
        ports = UInt64(localPort) << 16 | UInt64(remotePort)
    }

    var localAddress: IPv4Address { IPv4Address(UInt32(truncatingIfNeeded: addresses >> 32)) }
    var remoteAddress: IPv4Address { IPv4Address(UInt32(truncatingIfNeeded: addresses)) }
    var localPort: UInt16 { UInt16(truncatingIfNeeded: ports >> 16) }
    var remotePort: UInt16 { UInt16(truncatingIfNeeded: ports) }
}
