/// A SACK block (RFC 2018): the sequence range `start..<end` the receiver holds.
public struct TCPSACKBlock: Equatable, Sendable {
    public var start: UInt32
    public var end: UInt32
    public init(start: UInt32, end: UInt32) { self.start = start; self.end = end }
}

/// The options of a TCP header that this stack sends or understands: MSS, window scale
/// (RFC 7323), SACK-permitted and SACK blocks (RFC 2018), timestamps (RFC 7323). Stored
/// inline (up to four SACK blocks) so parsing allocates nothing.
public struct TCPOptions: Equatable, Sendable {
    public static let kindEnd: UInt8 = 0
    public static let kindNOP: UInt8 = 1
    public static let kindMSS: UInt8 = 2
    public static let kindWindowScale: UInt8 = 3
    public static let kindSACKPermitted: UInt8 = 4
    public static let kindSACK: UInt8 = 5
    public static let kindTimestamp: UInt8 = 8
    /// Largest shift RFC 7323 allows.
    public static let maxWindowScale: UInt8 = 14
    /// Most bytes of options a header can carry.
    public static let maxLength = 40

    public var mss: UInt16?
    public var windowScale: UInt8?
    public var sackPermitted = false
    /// TSval and TSecr, when the timestamp option is present.
    public var timestamp: (value: UInt32, echo: UInt32)? {
        get { hasTimestamp ? (tsValue, tsEcho) : nil }
        set {
            hasTimestamp = newValue != nil
            tsValue = newValue?.value ?? 0
            tsEcho = newValue?.echo ?? 0
        }
    }
    var hasTimestamp = false
    var tsValue: UInt32 = 0
    var tsEcho: UInt32 = 0
    /// Number of SACK blocks (0...4).
    public private(set) var sackCount = 0
    private var sack: (TCPSACKBlock, TCPSACKBlock, TCPSACKBlock, TCPSACKBlock) =
        (.init(start: 0, end: 0), .init(start: 0, end: 0), .init(start: 0, end: 0), .init(start: 0, end: 0))

    public init() {}

    public static func == (a: TCPOptions, b: TCPOptions) -> Bool {
        a.mss == b.mss && a.windowScale == b.windowScale && a.sackPermitted == b.sackPermitted
            && a.hasTimestamp == b.hasTimestamp && a.tsValue == b.tsValue && a.tsEcho == b.tsEcho
            && a.sackBlocks == b.sackBlocks
    }

    /// SACK block `i` (`0..<sackCount`).
    public func sackBlock(_ i: Int) -> TCPSACKBlock {
        switch i { case 0: return sack.0; case 1: return sack.1; case 2: return sack.2; default: return sack.3 }
    }

    /// Adds a SACK block; false when four are there already.
    @discardableResult
    public mutating func appendSACK(_ b: TCPSACKBlock) -> Bool {
        switch sackCount {
        case 0: sack.0 = b
        case 1: sack.1 = b
        case 2: sack.2 = b
        case 3: sack.3 = b
        default: return false
        }
        sackCount += 1
        return true
    }

    /// Removes every SACK block.
    public mutating func removeSACKBlocks() { sackCount = 0 }

    /// The SACK blocks as an array (tests and diagnostics; allocates).
    public var sackBlocks: [TCPSACKBlock] { (0..<sackCount).map(sackBlock) }

    /// Why options were refused.
    public enum ParseError: Error, Equatable, Sendable {
        /// An option's length byte is below 2 or runs past the header.
        case badLength
        /// A known option with the wrong length (MSS not 4, SACK not 2 + 8n, ...).
        case badOption(UInt8)
    }

    /// Parses `count` bytes of options at `p`.
    public static func parse(_ p: UnsafeRawPointer, count: Int) -> Result<TCPOptions, ParseError> {
        var o = TCPOptions()
        // The layout almost every segment of a timestamped connection carries (RFC 7323
        // appendix A): NOP, NOP, timestamp. One compare instead of the walk.
        if count == 12, NetworkBytes.u32(p, 0) == 0x0101_080a {
            o.timestamp = (NetworkBytes.u32(p, 4), NetworkBytes.u32(p, 8))
            return .success(o)
        }
        var i = 0
        while i < count {
            let kind = NetworkBytes.u8(p, i)
            if kind == kindEnd { break }
            if kind == kindNOP { i += 1; continue }
            guard i + 1 < count else { return .failure(.badLength) }
            let len = Int(NetworkBytes.u8(p, i + 1))
            guard len >= 2, i + len <= count else { return .failure(.badLength) }
            switch kind {
            case kindMSS:
                guard len == 4 else { return .failure(.badOption(kind)) }
                o.mss = NetworkBytes.u16(p, i + 2)
            case kindWindowScale:
                guard len == 3 else { return .failure(.badOption(kind)) }
                o.windowScale = Swift.min(NetworkBytes.u8(p, i + 2), maxWindowScale)
            case kindSACKPermitted:
                guard len == 2 else { return .failure(.badOption(kind)) }
                o.sackPermitted = true
            case kindSACK:
                guard len >= 10, (len - 2) % 8 == 0 else { return .failure(.badOption(kind)) }
                o.sackCount = 0
                var j = i + 2
                while j < i + len {
                    o.appendSACK(TCPSACKBlock(start: NetworkBytes.u32(p, j), end: NetworkBytes.u32(p, j + 4)))
                    j += 8
                }
            case kindTimestamp:
                guard len == 10 else { return .failure(.badOption(kind)) }
                o.timestamp = (NetworkBytes.u32(p, i + 2), NetworkBytes.u32(p, i + 6))
            default:
                break // unknown options are skipped by their length
            }
            i += len
        }
        return .success(o)
    }

    /// Bytes ``write(to:capacity:)`` emits (a multiple of 4).
    public var encodedLength: Int {
        var n = 0
        if mss != nil { n += 4 }
        if windowScale != nil { n += 4 }
        if hasTimestamp { n += 12 } else if sackPermitted { n += 4 }
        if sackCount > 0 { n += 4 + 8 * sackCount }
        return n
    }

    /// Writes the options at `p` (NOP-padded to 4-byte words); returns the bytes written,
    /// or nil when they need more than `capacity` bytes or more than 40.
    public func write(to p: UnsafeMutableRawPointer, capacity: Int) -> Int? {
        let n = encodedLength
        guard n <= capacity, n <= Self.maxLength else { return nil }
        var i = 0
        if let mss {
            NetworkBytes.put8(p, i, Self.kindMSS); NetworkBytes.put8(p, i + 1, 4); NetworkBytes.put16(p, i + 2, mss)
            i += 4
        }
        if let ws = windowScale {
            NetworkBytes.put8(p, i, Self.kindNOP); NetworkBytes.put8(p, i + 1, Self.kindWindowScale)
            NetworkBytes.put8(p, i + 2, 3); NetworkBytes.put8(p, i + 3, ws)
            i += 4
        }
        if hasTimestamp {
            if sackPermitted {
                NetworkBytes.put8(p, i, Self.kindSACKPermitted); NetworkBytes.put8(p, i + 1, 2)
            } else {
                NetworkBytes.put8(p, i, Self.kindNOP); NetworkBytes.put8(p, i + 1, Self.kindNOP)
            }
            NetworkBytes.put8(p, i + 2, Self.kindTimestamp); NetworkBytes.put8(p, i + 3, 10)
            NetworkBytes.put32(p, i + 4, tsValue); NetworkBytes.put32(p, i + 8, tsEcho)
            i += 12
        } else if sackPermitted {
            NetworkBytes.put8(p, i, Self.kindNOP); NetworkBytes.put8(p, i + 1, Self.kindNOP)
            NetworkBytes.put8(p, i + 2, Self.kindSACKPermitted); NetworkBytes.put8(p, i + 3, 2)
            i += 4
        }
        if sackCount > 0 {
            NetworkBytes.put8(p, i, Self.kindNOP); NetworkBytes.put8(p, i + 1, Self.kindNOP)
            NetworkBytes.put8(p, i + 2, Self.kindSACK); NetworkBytes.put8(p, i + 3, UInt8(2 + 8 * sackCount))
            i += 4
            for k in 0..<sackCount {
                let b = sackBlock(k)
                NetworkBytes.put32(p, i, b.start); NetworkBytes.put32(p, i + 4, b.end)
                i += 8
            }
        }
        return i
    }
}
