/// A 48-bit Ethernet address, held in the low bits of a word (first byte most significant).
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    public var value: UInt64

    @inlinable public init(_ value: UInt64) { self.value = value & 0xffff_ffff_ffff }
    public init(_ b: [UInt8]) {
        var v: UInt64 = 0
        for i in 0..<6 { v = v << 8 | UInt64(i < b.count ? b[i] : 0) }
        value = v
    }
    /// Parses `aa:bb:cc:dd:ee:ff`.
    public init?(_ text: String) {
        let parts = text.split(separator: ":")
        guard parts.count == 6 else { return nil }
        var v: UInt64 = 0
        for p in parts {
            guard let b = UInt8(p, radix: 16) else { return nil }
            v = v << 8 | UInt64(b)
        }
        value = v
    }

    public static let broadcast = MACAddress(0xffff_ffff_ffff)
    public static let zero = MACAddress(0)

    public var isBroadcast: Bool { value == 0xffff_ffff_ffff }
    public var isMulticast: Bool { (value >> 40) & 1 == 1 }

    @inlinable public static func load(_ p: UnsafeRawPointer, _ o: Int) -> MACAddress {
        MACAddress(UInt64(NetworkBytes.u16(p, o)) << 32 | UInt64(NetworkBytes.u32(p, o + 2)))
    }
    @inlinable public func store(_ p: UnsafeMutableRawPointer, _ o: Int) {
        NetworkBytes.put16(p, o, UInt16(truncatingIfNeeded: value >> 32))
        NetworkBytes.put32(p, o + 2, UInt32(truncatingIfNeeded: value))
    }

    /// A locally administered unicast address derived from `seed`.
    public static func local(seed: UInt32) -> MACAddress { MACAddress(0x02_00_00_00_00_00 | UInt64(seed)) }

    public var description: String {
        (0..<6).map { i in
            let b = UInt8(truncatingIfNeeded: value >> (40 - 8 * UInt64(i)))
            return (b < 16 ? "0" : "") + String(b, radix: 16)
        }.joined(separator: ":")
    }
}
