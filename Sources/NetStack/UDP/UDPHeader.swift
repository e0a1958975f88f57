/// A UDP header (RFC 768).
public struct UDPHeader: Equatable, Sendable {
    public static let size = 8

    public var sourcePort: UInt16
    public var destinationPort: UInt16
    /// Header plus payload.
    public var length: Int
    public var checksum: UInt16 = 0

    public init(sourcePort: UInt16, destinationPort: UInt16, length: Int) {
        self.sourcePort = sourcePort; self.destinationPort = destinationPort; self.length = length
    }

    /// Parses the header; nil when shorter than 8 bytes or its length field disagrees with
    /// the `count` bytes the IP layer says the datagram has.
    @inlinable
    public static func parse(_ p: UnsafeRawPointer, count: Int) -> UDPHeader? {
        guard count >= size else { return nil }
        let len = Int(NetworkBytes.u16(p, 4))
        guard len >= size, len <= count else { return nil }
        var h = UDPHeader(sourcePort: NetworkBytes.u16(p, 0), destinationPort: NetworkBytes.u16(p, 2), length: len)
        h.checksum = NetworkBytes.u16(p, 6)
        return h
    }

    /// Writes the header with a zero checksum.
    @inlinable
    public func write(to p: UnsafeMutableRawPointer) {
        NetworkBytes.put16(p, 0, sourcePort); NetworkBytes.put16(p, 2, destinationPort)
        NetworkBytes.put16(p, 4, UInt16(truncatingIfNeeded: length)); NetworkBytes.put16(p, 6, checksum)
    }
}
