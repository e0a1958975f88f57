/// The Toeplitz hash used by RSS, computed with per-byte-position lookup tables.
///
/// With the default key (the two bytes 0x6d 0x5a repeated, as DragonFly uses) the hash
/// of (source, destination, source port, destination port) equals that of the swapped
/// tuple, so both directions of a flow land on one CPU.
public struct ToeplitzHash: @unchecked Sendable {
    /// Input bytes the tables cover: two addresses and two ports.
    public static let inputBytes = 12
    @usableFromInline let tables: UnsafeMutablePointer<UInt32>

    /// The symmetric key: 40 bytes of 0x6d, 0x5a repeated.
    public static let symmetricKey: [UInt8] = (0..<40).map { $0 & 1 == 0 ? 0x6d : 0x5a }

    /// The shared instance with the symmetric key.
    public static let symmetric = ToeplitzHash(key: symmetricKey)

    /// Builds the tables for `key` (at least 16 bytes).
    public init(key: [UInt8]) {
        precondition(key.count >= Self.inputBytes + 4, "Toeplitz key too short")
        tables = .allocate(capacity: Self.inputBytes * 256)
        for pos in 0..<Self.inputBytes {
            for v in 0..<256 {
                var r: UInt32 = 0
                for bit in 0..<8 where (v >> (7 - bit)) & 1 == 1 {
                    r ^= Self.window(key, bitOffset: pos * 8 + bit)
                }
                tables[pos * 256 + v] = r
            }
        }
    }

    /// The 32 key bits starting at `bitOffset`.
    static func window(_ key: [UInt8], bitOffset: Int) -> UInt32 {
        var w: UInt32 = 0
        for i in 0..<32 {
            let b = bitOffset + i
            let bit = (key[b / 8] >> (7 - UInt8(b % 8))) & 1
            w = w << 1 | UInt32(bit)
        }
        return w
    }

    @inlinable @inline(__always)
    func mix(_ pos: Int, _ word: UInt32, bytes: Int) -> UInt32 {
        var r: UInt32 = 0
        for i in 0..<bytes {
            let b = Int((word >> (UInt32(bytes - 1 - i) * 8)) & 0xff)
            r ^= tables[(pos + i) * 256 + b]
        }
        return r
    }

    /// Hash of an address pair.
    @inlinable
    public func hash(_ src: IPv4Address, _ dst: IPv4Address) -> UInt32 {
        mix(0, src.value, bytes: 4) ^ mix(4, dst.value, bytes: 4)
    }

    /// Hash of a 4-tuple.
    @inlinable
    public func hash(_ src: IPv4Address, _ dst: IPv4Address, _ sport: UInt16, _ dport: UInt16) -> UInt32 {
        hash(src, dst) ^ mix(8, UInt32(sport), bytes: 2) ^ mix(10, UInt32(dport), bytes: 2)
    }

    /// The CPU a hash selects among `cpus`: the low 7 bits, modulo the count (DragonFly's
    /// indirection, which mirrors a NIC's 128-entry RSS table).
    @inlinable @inline(__always)
    public static func cpu(for hash: UInt32, cpus: Int) -> Int { Int(hash & 127) % cpus }
}
