/// A TCP header (RFC 9293 §3.1) with its options. The wire layer only: it parses and
/// emits bytes and computes checksums; it knows nothing of connection state.
public struct TCPHeader: Equatable, Sendable {
    public static let minimumSize = 20
    public static let maximumSize = 60
    /// Offset of the checksum field.
    public static let checksumOffset = 16

    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var sequence: UInt32
    public var acknowledgment: UInt32
    /// Header length in bytes (20...60), as parsed; ``write(to:capacity:)`` recomputes it.
    public var headerLength: Int = minimumSize
    public var flags: TCPFlags
    /// The window field as sent (not yet scaled).
    public var window: UInt16
    public var checksum: UInt16 = 0
    public var urgentPointer: UInt16 = 0
    public var options = TCPOptions()

    public init(sourcePort: UInt16, destinationPort: UInt16, sequence: UInt32, acknowledgment: UInt32,
                flags: TCPFlags, window: UInt16, options: TCPOptions = TCPOptions()) {
        self.sourcePort = sourcePort; self.destinationPort = destinationPort
        self.sequence = sequence; self.acknowledgment = acknowledgment
        self.flags = flags; self.window = window; self.options = options
        headerLength = Self.minimumSize + options.encodedLength
    }

    /// Why a header was refused.
    public enum ParseError: Error, Equatable, Sendable {
        /// Fewer than 20 bytes, or fewer than the data offset says.
        case truncated
        /// A data offset below 5 words.
        case badDataOffset
        /// Malformed options.
        case badOptions(TCPOptions.ParseError)
    }

    /// Parses the header at `p`, of which `count` bytes (the whole segment) are there.
    public static func parse(_ p: UnsafeRawPointer, count: Int) -> Result<TCPHeader, ParseError> {
        guard count >= minimumSize else { return .failure(.truncated) }
        let hl = Int(NetworkBytes.u8(p, 12) >> 4) * 4
        guard hl >= minimumSize else { return .failure(.badDataOffset) }
        guard hl <= count else { return .failure(.truncated) }
        var h = TCPHeader(sourcePort: NetworkBytes.u16(p, 0), destinationPort: NetworkBytes.u16(p, 2),
                          sequence: NetworkBytes.u32(p, 4), acknowledgment: NetworkBytes.u32(p, 8),
                          flags: TCPFlags(rawValue: NetworkBytes.u8(p, 13)), window: NetworkBytes.u16(p, 14))
        h.checksum = NetworkBytes.u16(p, 16)
        h.urgentPointer = NetworkBytes.u16(p, 18)
        h.headerLength = hl
        if hl > minimumSize {
            switch TCPOptions.parse(p + minimumSize, count: hl - minimumSize) {
            case .success(let o): h.options = o
            case .failure(let e): return .failure(.badOptions(e))
            }
        }
        return .success(h)
    }

    /// Writes the header and its options at `p` with a zero checksum; returns its length,
    /// or nil when it does not fit in `capacity` bytes.
    public func write(to p: UnsafeMutableRawPointer, capacity: Int) -> Int? {
        guard capacity >= Self.minimumSize,
              let ol = options.write(to: p + Self.minimumSize, capacity: capacity - Self.minimumSize) else { return nil }
        let hl = Self.minimumSize + ol
        NetworkBytes.put16(p, 0, sourcePort)
        NetworkBytes.put16(p, 2, destinationPort)
        NetworkBytes.put32(p, 4, sequence)
        NetworkBytes.put32(p, 8, acknowledgment)
        NetworkBytes.put8(p, 12, UInt8(hl / 4) << 4)
        NetworkBytes.put8(p, 13, flags.rawValue)
        NetworkBytes.put16(p, 14, window)
        NetworkBytes.put16(p, 16, 0)
        NetworkBytes.put16(p, 18, urgentPointer)
        return hl
    }

    /// The partial checksum of the IPv4 pseudo-header of a `length`-byte segment (what a
    /// device that offloads the checksum expects in the checksum field).
    @inlinable
    public static func pseudoHeaderSum(source: IPv4Address, destination: IPv4Address, length: Int) -> UInt16 {
        var c = InternetChecksum()
        c.addPseudoHeader(source: source, destination: destination, protocol: IPv4Header.protocolTCP, length: length)
        return c.folded
    }

    /// The checksum of a whole segment (`length` bytes of `packet` from `offset`, its
    /// checksum field zero) to store in the header.
    public static func checksum(of packet: Mbuf, from offset: Int, length: Int,
                                source: IPv4Address, destination: IPv4Address) -> UInt16 {
        var c = InternetChecksum()
        c.addPseudoHeader(source: source, destination: destination, protocol: IPv4Header.protocolTCP, length: length)
        c.add(packet: packet, from: offset, count: length)
        return c.value
    }

    /// Whether a received segment's checksum (field included) is right.
    public static func verify(_ packet: Mbuf, from offset: Int, length: Int,
                              source: IPv4Address, destination: IPv4Address) -> Bool {
        var c = InternetChecksum()
        c.addPseudoHeader(source: source, destination: destination, protocol: IPv4Header.protocolTCP, length: length)
        c.add(packet: packet, from: offset, count: length)
        return c.folded == 0xffff
    }
}
