/// The virtio-net header the kernel puts in front of every TAP frame with
/// `IFF_VNET_HDR` (10 bytes, little-endian fields).
public struct VirtioNetHeader: Equatable, Sendable {
    public static let size = 10
    /// The transport checksum is partial: the receiver completes it.
    public static let needsChecksum: UInt8 = 1
    /// The checksum was already verified.
    public static let dataValid: UInt8 = 2
    public static let gsoNone: UInt8 = 0
    public static let gsoTCPv4: UInt8 = 1
    public static let gsoUDP: UInt8 = 3
    public static let gsoTCPv6: UInt8 = 4

    public var flags: UInt8 = 0
    public var gsoType: UInt8 = 0
    /// Bytes of headers before the payload (GSO).
    public var headerLength: UInt16 = 0
    /// Payload bytes per segment (GSO).
    public var segmentSize: UInt16 = 0
    /// Where checksumming starts, from the start of the frame.
    public var checksumStart: UInt16 = 0
    /// Where the checksum goes, from ``checksumStart``.
    public var checksumOffset: UInt16 = 0

    public init(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, segmentSize: UInt16 = 0,
                checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0) {
        self.flags = flags; self.gsoType = gsoType; self.headerLength = headerLength
        self.segmentSize = segmentSize; self.checksumStart = checksumStart; self.checksumOffset = checksumOffset
    }

    @inline(__always) static func le16(_ p: UnsafeRawPointer, _ o: Int) -> UInt16 {
        UInt16(p.load(fromByteOffset: o, as: UInt8.self)) | UInt16(p.load(fromByteOffset: o + 1, as: UInt8.self)) << 8
    }
    @inline(__always) static func putLE16(_ p: UnsafeMutableRawPointer, _ o: Int, _ v: UInt16) {
        p.storeBytes(of: UInt8(truncatingIfNeeded: v), toByteOffset: o, as: UInt8.self)
        p.storeBytes(of: UInt8(v >> 8), toByteOffset: o + 1, as: UInt8.self)
    }

    public static func parse(_ p: UnsafeRawPointer, count: Int) -> VirtioNetHeader? {
        guard count >= size else { return nil }
        return VirtioNetHeader(flags: p.load(as: UInt8.self), gsoType: p.load(fromByteOffset: 1, as: UInt8.self),
                               headerLength: le16(p, 2), segmentSize: le16(p, 4), checksumStart: le16(p, 6), checksumOffset: le16(p, 8))
    }

    public func write(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: flags, as: UInt8.self)
        p.storeBytes(of: gsoType, toByteOffset: 1, as: UInt8.self)
        Self.putLE16(p, 2, headerLength); Self.putLE16(p, 4, segmentSize)
        Self.putLE16(p, 6, checksumStart); Self.putLE16(p, 8, checksumOffset)
    }
}
