/// Sequence-number arithmetic modulo 2^32 (RFC 9293 §3.4): comparisons are by the sign of
/// the 32-bit difference, valid while the two numbers are less than 2^31 apart.
enum TCPSequence {
    @inline(__always) static func lt(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) < 0 }
    @inline(__always) static func le(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) <= 0 }
    @inline(__always) static func gt(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) > 0 }
    @inline(__always) static func ge(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) >= 0 }
    @inline(__always) static func max(_ a: UInt32, _ b: UInt32) -> UInt32 { gt(a, b) ? a : b }
    @inline(__always) static func min(_ a: UInt32, _ b: UInt32) -> UInt32 { lt(a, b) ? a : b }
    /// `b - a` as a signed distance.
    @inline(__always) static func distance(_ a: UInt32, _ b: UInt32) -> Int { Int(Int32(bitPattern: b &- a)) }
}
