/// An IPv4 header (RFC 791). Options are kept in the header length and skipped.
public struct IPv4Header: Equatable, Sendable {
    public static let minimumSize = 20
    public static let protocolICMP: UInt8 = 1
    public static let protocolTCP: UInt8 = 6
    public static let protocolUDP: UInt8 = 17
    /// "More fragments" flag in ``flagsAndOffset``.
    public static let moreFragments: UInt16 = 0x2000
    /// "Don't fragment" flag.
    public static let dontFragment: UInt16 = 0x4000

    public var headerLength: Int = 20
    public var tos: UInt8 = 0
    public var totalLength: Int
    public var identification: UInt16 = 0
    public var flagsAndOffset: UInt16 = 0
    public var ttl: UInt8 = 64
    public var proto: UInt8
    public var checksum: UInt16 = 0
    public var source: IPv4Address
    public var destination: IPv4Address

    public init(totalLength: Int, proto: UInt8, source: IPv4Address, destination: IPv4Address,
                identification: UInt16 = 0, flagsAndOffset: UInt16 = 0, ttl: UInt8 = 64, tos: UInt8 = 0) {
        self.totalLength = totalLength; self.proto = proto; self.source = source; self.destination = destination
        self.identification = identification; self.flagsAndOffset = flagsAndOffset; self.ttl = ttl; self.tos = tos
    }

    /// Fragment offset in bytes.
    @inlinable public var fragmentOffset: Int { Int(flagsAndOffset & 0x1fff) * 8 }
    /// Whether more fragments follow.
    @inlinable public var hasMoreFragments: Bool { flagsAndOffset & Self.moreFragments != 0 }
    /// Whether this is a fragment (of any position).
    @inlinable public var isFragment: Bool { flagsAndOffset & 0x3fff != 0 }

    /// Why a header was refused.
    public enum ParseError: Error, Equatable, Sendable {
        case truncated, badVersion, badHeaderLength, badTotalLength, badChecksum
    }

    /// Parses and validates the header at `p` (`count` bytes available): version, header
    /// length, total length against what is there, and the checksum.
    @inlinable
    public static func parse(_ p: UnsafeRawPointer, count: Int, verifyChecksum: Bool = true) -> Result<IPv4Header, ParseError> {
        guard count >= minimumSize else { return .failure(.truncated) }
        let vihl = NetworkBytes.u8(p, 0)
        guard vihl >> 4 == 4 else { return .failure(.badVersion) }
        let hl = Int(vihl & 0x0f) * 4
        guard hl >= minimumSize else { return .failure(.badHeaderLength) }
        guard hl <= count else { return .failure(.truncated) }
        let total = Int(NetworkBytes.u16(p, 2))
        guard total >= hl, total <= count else { return .failure(.badTotalLength) }
        if verifyChecksum, InternetChecksum.compute(p, count: hl) != 0 { return .failure(.badChecksum) }
        var h = IPv4Header(totalLength: total, proto: NetworkBytes.u8(p, 9),
                           source: IPv4Address(NetworkBytes.u32(p, 12)), destination: IPv4Address(NetworkBytes.u32(p, 16)),
                           identification: NetworkBytes.u16(p, 4), flagsAndOffset: NetworkBytes.u16(p, 6),
                           ttl: NetworkBytes.u8(p, 8), tos: NetworkBytes.u8(p, 1))
        h.headerLength = hl
        h.checksum = NetworkBytes.u16(p, 10)
        return .success(h)
    }

    /// Writes a 20-byte header (no options) at `p` with a fresh checksum.
    @inlinable
    public func write(to p: UnsafeMutableRawPointer) {
        NetworkBytes.put8(p, 0, 0x45)
        NetworkBytes.put8(p, 1, tos)
        NetworkBytes.put16(p, 2, UInt16(truncatingIfNeeded: totalLength))
        NetworkBytes.put16(p, 4, identification)
        NetworkBytes.put16(p, 6, flagsAndOffset)
        NetworkBytes.put8(p, 8, ttl)
        NetworkBytes.put8(p, 9, proto)
        NetworkBytes.put16(p, 10, 0)
        NetworkBytes.put32(p, 12, source.value)
        NetworkBytes.put32(p, 16, destination.value)
        NetworkBytes.put16(p, 10, InternetChecksum.compute(p, count: 20))
    }
}
