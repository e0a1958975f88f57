/// A received UDP datagram.
public struct UDPDatagram: Sendable {
    /// The payload.
    public var payload: [UInt8]
    /// Who sent it.
    public var source: IPv4Endpoint
    /// The CPU whose protocol thread delivered it (the owner of its flow).
    public var cpu: Int
}
