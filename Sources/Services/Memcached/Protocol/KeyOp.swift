/// The kinds of single-key operation a connection can hand to a key's owner.
enum OpKind: UInt8 {
    case get, gets, gat, gats
    case set, add, replace, append, prepend, cas
    case delete, incr, decr, touch
    case metaGet, metaSet, metaDelete, metaArithmetic, metaDebug
}

/// One parsed single-key operation. Its pointers point into the connection's input
/// buffer, which stays put while the connection waits for the owner to run it.
struct KeyOp {
    var kind: OpKind = .get
    var key: UnsafeRawPointer? = nil
    var keyLength = 0
    var hash: UInt64 = 0
    var flags: UInt32 = 0
    /// Absolute expiry (Unix seconds; 0 = never).
    var expiry: Int64 = 0
    var value: UnsafeRawPointer? = nil
    var valueLength = 0
    var cas: UInt64 = 0
    var delta: UInt64 = 0
    var noreply = false
    /// A storage command refused as larger than memcached's `-I` (its data is swallowed).
    var tooLarge = false
    /// Unix seconds at the connection when the command was read.
    var now: Int64 = 0
    var meta = MetaFlags()
}

/// The flags of a meta command, parsed once on the connection's CPU. The text of the
/// flags stays available (`text`) so that returned flags come back in the order asked.
struct MetaFlags {
    /// One bit per flag letter present (`A`–`Z` bits 0–25, `a`–`z` bits 32–57).
    var present: UInt64 = 0
    var text: UnsafeRawPointer? = nil
    var textLength = 0
    var ttl: Int64 = 0            // T
    var vivifyTTL: Int64 = 0      // N
    var recache: Int64 = 0        // R
    /// An `O` token longer than memcached's 32 bytes.
    var opaqueTooLong = false
    var cas: UInt64 = 0           // C
    var clientFlags: UInt32 = 0   // F
    var initial: UInt64 = 0       // J
    var delta: UInt64 = 1         // D
    var mode: UInt8 = 0           // M

    @inline(__always) static func bit(_ c: UInt8) -> UInt64 {
        if c >= 0x41 && c <= 0x5A { return 1 << UInt64(c - 0x41) }
        if c >= 0x61 && c <= 0x7A { return 1 << UInt64(c - 0x61 + 32) }
        return 0
    }

    @inline(__always) func has(_ c: Unicode.Scalar) -> Bool {
        present & MetaFlags.bit(UInt8(ascii: c)) != 0
    }

    /// The bits of every letter in `s`.
    static func mask(_ s: StaticString) -> UInt64 {
        var m: UInt64 = 0
        for i in 0..<s.utf8CodeUnitCount { m |= bit(s.utf8Start[i]) }
        return m
    }

    @inline(__always) func has(byte c: UInt8) -> Bool { present & MetaFlags.bit(c) != 0 }

    @inline(__always) mutating func mark(_ c: UInt8) { present |= MetaFlags.bit(c) }
}

/// memcached's `realtime()`: 0 is never, a negative time has already passed, up to 30
/// days is relative to now, anything larger is an absolute Unix time.
@inline(__always)
func absoluteExpiry(_ t: Int64, now: Int64) -> Int64 {
    if t == 0 { return 0 }
    if t < 0 { return 1 }
    if t > 60 * 60 * 24 * 30 { return t }
    return now + t
}
