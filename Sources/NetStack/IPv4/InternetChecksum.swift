/// The Internet checksum (RFC 1071): a ones' complement sum of 16-bit big-endian words.
public struct InternetChecksum: Sendable {
    /// The running sum, not yet folded.
    public var sum: UInt64 = 0

    @inlinable public init() {}

    /// Adds `count` bytes at `p`. Odd-length runs are padded with a zero byte, so only the
    /// last run added may have an odd length.
    @inlinable
    public mutating func add(_ p: UnsafeRawPointer, count: Int) {
        var i = 0
        var s = sum
        while i + 8 <= count {
            let w = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            s &+= w >> 32
            s &+= w & 0xffff_ffff
            i += 8
        }
        while i + 2 <= count {
            s &+= UInt64(NetworkBytes.u16(p, i))
            i += 2
        }
        if i < count { s &+= UInt64(NetworkBytes.u8(p, i)) << 8 }
        sum = s
    }

    /// Adds a 16-bit word.
    @inlinable public mutating func add(_ v: UInt16) { sum &+= UInt64(v) }
    /// Adds a 32-bit word (as two 16-bit words).
    @inlinable public mutating func add(_ v: UInt32) { sum &+= UInt64(v >> 16) &+ UInt64(v & 0xffff) }

    /// Adds the IPv4 pseudo-header of a transport segment.
    @inlinable
    public mutating func addPseudoHeader(source: IPv4Address, destination: IPv4Address, protocol proto: UInt8, length: Int) {
        add(source.value); add(destination.value)
        add(UInt16(proto)); add(UInt16(truncatingIfNeeded: length))
    }

    /// The folded sum (not complemented).
    @inlinable public var folded: UInt16 {
        var s = sum
        while s >> 16 != 0 { s = (s & 0xffff) &+ (s >> 16) }
        return UInt16(s)
    }

    /// The checksum to store in a header: the complement of the folded sum.
    @inlinable public var value: UInt16 { ~folded }

    /// The checksum over `count` bytes at `p`.
    @inlinable
    public static func compute(_ p: UnsafeRawPointer, count: Int) -> UInt16 {
        var c = InternetChecksum()
        c.add(p, count: count)
        return c.value
    }

    /// Adds every byte of an mbuf chain from `offset` on (buffers of odd length are handled
    /// by carrying the odd byte).
    public mutating func add(packet: Mbuf, from offset: Int, count: Int) {
        var skip = offset
        var left = count
        var m: Mbuf? = packet
        var odd: UInt8? = nil
        while let c = m, left > 0 {
            if skip >= c.length { skip -= c.length; m = c.next; continue }
            var p = UnsafeRawPointer(c.data + skip)
            var n = min(c.length - skip, left)
            left -= n; skip = 0
            if let o = odd, n > 0 {
                add(UInt16(o) << 8 | UInt16(NetworkBytes.u8(p, 0)))
                p += 1; n -= 1; odd = nil
            }
            let even = n & ~1
            add(p, count: even)
            if n & 1 == 1 { odd = NetworkBytes.u8(p, even) }
            m = c.next
        }
        if let o = odd { add(UInt16(o) << 8) }
    }
}
