/// An Ethernet II header.
public struct EthernetHeader: Equatable, Sendable {
    public static let size = 14
    public static let typeIPv4: UInt16 = 0x0800
    public static let typeARP: UInt16 = 0x0806

    public var destination: MACAddress
    public var source: MACAddress
    public var etherType: UInt16

    public init(destination: MACAddress, source: MACAddress, etherType: UInt16) {
        self.destination = destination; self.source = source; self.etherType = etherType
    }

    /// Parses the header at the front of `count` bytes at `p`; nil when too short.
    @inlinable
    public static func parse(_ p: UnsafeRawPointer, count: Int) -> EthernetHeader? {
        guard count >= size else { return nil }
        return EthernetHeader(destination: .load(p, 0), source: .load(p, 6), etherType: NetworkBytes.u16(p, 12))
    }

    /// Writes the header's 14 bytes at `p`.
    @inlinable
    public func write(to p: UnsafeMutableRawPointer) {
        destination.store(p, 0)
        source.store(p, 6)
        NetworkBytes.put16(p, 12, etherType)
    }
}
