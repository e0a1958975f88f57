/// An ICMPv4 header: type, code, checksum and the 4-byte rest-of-header.
public struct ICMPHeader: Equatable, Sendable {
    public static let size = 8
    public static let echoReply: UInt8 = 0
    public static let destinationUnreachable: UInt8 = 3
    public static let echoRequest: UInt8 = 8
    public static let timeExceeded: UInt8 = 11
    /// Codes of destination unreachable.
    public static let codeProtocolUnreachable: UInt8 = 2
    public static let codePortUnreachable: UInt8 = 3

    public var type: UInt8
    public var code: UInt8
    public var checksum: UInt16 = 0
    /// Identifier and sequence for echo; unused (or next-hop MTU) for errors.
    public var rest: UInt32

    public init(type: UInt8, code: UInt8, rest: UInt32 = 0) { self.type = type; self.code = code; self.rest = rest }

    @inlinable public var identifier: UInt16 { UInt16(rest >> 16) }
    @inlinable public var sequence: UInt16 { UInt16(truncatingIfNeeded: rest) }

    /// Parses the first 8 bytes of `count`; nil when too short.
    public static func parse(_ p: UnsafeRawPointer, count: Int) -> ICMPHeader? {
        guard count >= size else { return nil }
        var h = ICMPHeader(type: NetworkBytes.u8(p, 0), code: NetworkBytes.u8(p, 1), rest: NetworkBytes.u32(p, 4))
        h.checksum = NetworkBytes.u16(p, 2)
        return h
    }

    /// Writes the header at `p` and the checksum over it and `payloadCount` bytes after it.
    public func write(to p: UnsafeMutableRawPointer, payloadCount: Int) {
        NetworkBytes.put8(p, 0, type); NetworkBytes.put8(p, 1, code)
        NetworkBytes.put16(p, 2, 0); NetworkBytes.put32(p, 4, rest)
        NetworkBytes.put16(p, 2, InternetChecksum.compute(p, count: Self.size + payloadCount))
    }
}
