/// An IPv4 address, held in host order.
public struct IPv4Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The address as a number (192.0.2.1 is 0xC000_0201).
    public var value: UInt32

    @inlinable public init(_ value: UInt32) { self.value = value }
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }
    /// Parses dotted-quad text.
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for p in parts {
            guard let b = UInt8(p) else { return nil }
            v = v << 8 | UInt32(b)
        }
        value = v
    }

    public static let any = IPv4Address(0)
    public static let broadcast = IPv4Address(0xffff_ffff)

    public var isMulticast: Bool { value >> 28 == 0xe }
    public var description: String {
        "\(value >> 24).\((value >> 16) & 0xff).\((value >> 8) & 0xff).\(value & 0xff)"
    }
    public static func < (a: IPv4Address, b: IPv4Address) -> Bool { a.value < b.value }

    /// Whether `other` is in the same `/prefix` network.
    public func sameNetwork(as other: IPv4Address, prefix: Int) -> Bool {
        let mask: UInt32 = prefix <= 0 ? 0 : (prefix >= 32 ? ~0 : ~((1 << (32 - UInt32(prefix))) - 1))
        return value & mask == other.value & mask
    }
}
