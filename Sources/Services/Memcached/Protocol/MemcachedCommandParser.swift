#if canImport(Glibc)
import Glibc
#endif

/// The memcached text protocol, parsed: bytes in, one command (or an error, or "not yet")
/// out. The parser keeps no state between calls and does no I/O; the session feeds it the
/// unread part of its input buffer and acts on what comes back.
///
/// Rules of this file:
/// - The `consumed` count of a result always covers the command's data block, so that a
///   value is never read as commands. When a rejected storage command's data length is
///   unknown (memcached would read the value as commands), the result says `close`.
/// - `consumed` may exceed the bytes given only for a rejected storage command whose data
///   block is still arriving; the caller discards the rest as it comes.
/// - Input bytes are changed only for a command that is returned whole: a base64 key (`b`)
///   is decoded in place then, so a second parse of an incomplete command sees the same bytes.
struct MemcachedCommandParser {
    /// memcached's limits.
    static let maxKeyLength = 250
    static let maxTokens = 24
    static let maxOpaqueLength = 32
    /// memcached's MFLAG_MAX_OPT_LENGTH: a meta command with more tokens is refused.
    static let maxMetaTokens = 20
    /// A line longer than this without a newline closes the connection.
    static let maxLine = 256 * 1024

    /// memcached's `-I`: the largest item, counted as memcached counts it (``itemSize``).
    var maxItemSize: Int

    init(maxItemSize: Int = 1 << 20) {
        self.maxItemSize = maxItemSize
    }

    /// What memcached 1.6 charges for an item against `-I`: its 48-byte header, the 8-byte
    /// CAS, the key and a NUL, 4 bytes of client flags when they are not zero, and the value
    /// with its CRLF.
    @inline(__always)
    static func itemSize(keyLength: Int, valueLength: Int, flags: UInt32) -> Int {
        48 + 8 + keyLength + 1 + (flags != 0 ? 4 : 0) + valueLength + 2
    }

    /// Parses the command at the front of `base[0..<count]`. `now` (Unix seconds) turns
    /// relative expiry times into absolute ones.
    func parse(_ base: UnsafeMutableRawPointer, count: Int, now: Int64) -> ParseResult {
        if count == 0 { return .incomplete(need: 0) }
        // A binary-protocol request (magic 0x80): this server speaks text only.
        if base.load(as: UInt8.self) == 0x80 { return .error("", consumed: count, close: true) }
        guard let nlp = memchr(base, 0x0A, count) else {
            if count > MemcachedCommandParser.maxLine {
                return .error("CLIENT_ERROR line too long\r\n", consumed: count, close: true)
            }
            return .incomplete(need: 0)
        }
        let nl = UnsafeRawPointer(nlp) - UnsafeRawPointer(base)
        var end = nl
        if end > 0 && base.load(fromByteOffset: end - 1, as: UInt8.self) == 0x0D { end -= 1 }
        let lineLength = nl + 1
        return withUnsafeTemporaryAllocation(of: Int.self, capacity: 2 * MemcachedCommandParser.maxTokens) { tb in
            var line = TokenizedLine(base: base, end: end, next: lineLength, starts: tb.baseAddress.unsafelyUnwrapped,
                            lengths: tb.baseAddress.unsafelyUnwrapped + MemcachedCommandParser.maxTokens)
            line.tokenize()
            return parseLine(&line, available: count, now: now)
        }
    }

    // MARK: - Dispatch

    func parseLine(_ l: inout TokenizedLine, available: Int, now: Int64) -> ParseResult {
        if l.count == 0 { return l.reply("ERROR\r\n") }
        switch l.byte(0, 0) {
        case UInt8(ascii: "g"):
            if l.is(0, "get") { return retrieve(&l, .get, keysFrom: 1, expiry: 0, now: now) }
            if l.is(0, "gets") { return retrieve(&l, .gets, keysFrom: 1, expiry: 0, now: now) }
            if l.is(0, "gat") || l.is(0, "gats") {
                guard l.count >= 3 else { return l.reply("ERROR\r\n") }
                guard let e = l.int32(1) else { return l.reply("CLIENT_ERROR invalid exptime argument\r\n") }
                return retrieve(&l, l.is(0, "gat") ? .gat : .gats, keysFrom: 2, expiry: absoluteExpiry(e, now: now), now: now)
            }
        case UInt8(ascii: "s"):
            if l.is(0, "set") { return storage(&l, .set, available: available, now: now) }
            if l.is(0, "stats") {
                let from = l.count > 1 ? l.starts[1] : l.end
                return .command(.stats(UnsafeRawBufferPointer(start: l.base + from, count: l.end - from)), consumed: l.next)
            }
        case UInt8(ascii: "a"):
            if l.is(0, "add") { return storage(&l, .add, available: available, now: now) }
            if l.is(0, "append") { return storage(&l, .append, available: available, now: now) }
        case UInt8(ascii: "r"):
            if l.is(0, "replace") { return storage(&l, .replace, available: available, now: now) }
        case UInt8(ascii: "p"):
            if l.is(0, "prepend") { return storage(&l, .prepend, available: available, now: now) }
        case UInt8(ascii: "c"):
            if l.is(0, "cas") { return storage(&l, .cas, available: available, now: now) }
        case UInt8(ascii: "d"):
            if l.is(0, "delete") { return delete(&l, now: now) }
            if l.is(0, "decr") { return arithmetic(&l, incr: false, now: now) }
        case UInt8(ascii: "i"):
            if l.is(0, "incr") { return arithmetic(&l, incr: true, now: now) }
        case UInt8(ascii: "t"):
            if l.is(0, "touch") { return touch(&l, now: now) }
        case UInt8(ascii: "m"):
            if l.is(0, "mg") { return meta(&l, .metaGet, available: available, now: now) }
            if l.is(0, "ms") { return meta(&l, .metaSet, available: available, now: now) }
            if l.is(0, "md") { return meta(&l, .metaDelete, available: available, now: now) }
            if l.is(0, "ma") { return meta(&l, .metaArithmetic, available: available, now: now) }
            if l.is(0, "me") { return meta(&l, .metaDebug, available: available, now: now) }
            if l.is(0, "mn") { return .command(.noop, consumed: l.next) }
        case UInt8(ascii: "f"):
            if l.is(0, "flush_all") { return flushAll(&l, now: now) }
        case UInt8(ascii: "v"):
            if l.is(0, "version") { return .command(.version, consumed: l.next) }
            if l.is(0, "verbosity") {
                guard l.count >= 2 && l.count <= 3 else { return l.reply("ERROR\r\n") }
                return .command(.verbosity(noreply: l.is(l.count - 1, "noreply")), consumed: l.next)
            }
        case UInt8(ascii: "q"):
            if l.is(0, "quit") { return .command(.quit, consumed: l.next) }
        default: break
        }
        return l.reply("ERROR\r\n")
    }

    // MARK: - Retrieval

    func retrieve(_ l: inout TokenizedLine, _ kind: OpKind, keysFrom first: Int, expiry: Int64, now: Int64) -> ParseResult {
        guard l.count > first else { return l.reply("ERROR\r\n") }
        // Every key of the line (there may be more than the token table holds).
        var i = l.starts[first]
        while i < l.end {
            while i < l.end && l.base.load(fromByteOffset: i, as: UInt8.self) == 0x20 { i += 1 }
            let s = i
            while i < l.end && l.base.load(fromByteOffset: i, as: UInt8.self) != 0x20 { i += 1 }
            if i - s > MemcachedCommandParser.maxKeyLength { return l.reply("CLIENT_ERROR bad command line format\r\n") }
        }
        var op = KeyOp()
        op.kind = kind
        op.expiry = expiry
        op.now = now
        let start = l.starts[first]
        return .command(.retrieve(op, keys: UnsafeRawBufferPointer(start: l.base + start, count: l.end - start)),
                        consumed: l.next)
    }

    // MARK: - Storage

    /// set, add, replace, append, prepend and cas. memcached reads the data block only after
    /// a line it accepts (or one refused as too large); after any other refusal it would run
    /// the value as commands, so here the connection closes instead.
    func storage(_ l: inout TokenizedLine, _ kind: OpKind, available: Int, now: Int64) -> ParseResult {
        let isCAS = kind == .cas
        let base = isCAS ? 6 : 5
        guard l.count == base || l.count == base + 1 else { return l.refuse("ERROR\r\n") }
        // memcached's noreply: the last token, wherever it is; it silences errors too.
        let noreply = l.is(l.count - 1, "noreply")
        guard l.lengths[1] <= MemcachedCommandParser.maxKeyLength,
              let fl = parseUInt64(l.token(2)),
              let ex = l.int32(3),
              let vlen = l.int32(4), vlen >= 0
        else { return l.refuse(noreply ? "" : "CLIENT_ERROR bad command line format\r\n") }
        var casValue: UInt64 = 0
        if isCAS {
            guard let c = parseUInt64(l.token(5)) else { return l.refuse(noreply ? "" : "CLIENT_ERROR bad command line format\r\n") }
            casValue = c
        }
        let n = Int(vlen)
        let need = l.next + n + 2
        var op = l.keyOp(kind, now: now)
        op.flags = UInt32(truncatingIfNeeded: fl)
        op.expiry = absoluteExpiry(ex, now: now)
        op.cas = casValue
        op.noreply = noreply
        if MemcachedCommandParser.itemSize(keyLength: op.keyLength, valueLength: n, flags: op.flags) > maxItemSize {
            // memcached answers, drops any old value of a `set`, and swallows the data.
            op.tooLarge = true
            return .command(.key(op), consumed: need)
        }
        if available < need { return .incomplete(need: need) }
        let dataEnd = l.next + n
        if l.base.load(fromByteOffset: dataEnd, as: UInt8.self) != 0x0D
            || l.base.load(fromByteOffset: dataEnd + 1, as: UInt8.self) != 0x0A {
            return .error(noreply ? "" : "CLIENT_ERROR bad data chunk\r\n", consumed: need, close: false)
        }
        op.value = UnsafeRawPointer(l.base + l.next)
        op.valueLength = n
        return .command(.key(op), consumed: need)
    }

    // MARK: - Other key commands

    func delete(_ l: inout TokenizedLine, now: Int64) -> ParseResult {
        guard l.count >= 2 && l.count <= 4 else { return l.reply("ERROR\r\n") }
        let noreply = l.is(l.count - 1, "noreply")
        if l.count > 2 {
            let holdZero = l.is(2, "0")
            let ok = (l.count == 3 && (holdZero || noreply)) || (l.count == 4 && holdZero && noreply)
            if !ok { return l.reply(noreply ? "" : "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n") }
        }
        guard l.lengths[1] <= MemcachedCommandParser.maxKeyLength else { return l.reply(noreply ? "" : "CLIENT_ERROR bad command line format\r\n") }
        var op = l.keyOp(.delete, now: now)
        op.noreply = l.count > 2 && l.is(l.count - 1, "noreply")
        return .command(.key(op), consumed: l.next)
    }

    func arithmetic(_ l: inout TokenizedLine, incr: Bool, now: Int64) -> ParseResult {
        guard l.count == 3 || l.count == 4 else { return l.reply("ERROR\r\n") }
        let noreply = l.is(l.count - 1, "noreply")
        guard l.lengths[1] <= MemcachedCommandParser.maxKeyLength else { return l.reply(noreply ? "" : "CLIENT_ERROR bad command line format\r\n") }
        guard let d = parseUInt64(l.token(2)) else { return l.reply(noreply ? "" : "CLIENT_ERROR invalid numeric delta argument\r\n") }
        var op = l.keyOp(incr ? .incr : .decr, now: now)
        op.delta = d
        op.noreply = l.count == 4 && l.is(3, "noreply")
        return .command(.key(op), consumed: l.next)
    }

    func touch(_ l: inout TokenizedLine, now: Int64) -> ParseResult {
        guard l.count == 3 || l.count == 4 else { return l.reply("ERROR\r\n") }
        let noreply = l.is(l.count - 1, "noreply")
        guard l.lengths[1] <= MemcachedCommandParser.maxKeyLength else { return l.reply(noreply ? "" : "CLIENT_ERROR bad command line format\r\n") }
        guard let e = l.int32(2) else { return l.reply(noreply ? "" : "CLIENT_ERROR invalid exptime argument\r\n") }
        var op = l.keyOp(.touch, now: now)
        op.expiry = absoluteExpiry(e, now: now)
        op.noreply = l.count == 4 && l.is(3, "noreply")
        return .command(.key(op), consumed: l.next)
    }

    func flushAll(_ l: inout TokenizedLine, now: Int64) -> ParseResult {
        guard l.count <= 3 else { return l.reply("ERROR\r\n") }
        let noreply = l.count > 1 && l.is(l.count - 1, "noreply")
        var delay: Int64 = 0
        if l.count - (noreply ? 1 : 0) == 2 {
            guard let e = l.int32(1) else { return l.reply("CLIENT_ERROR invalid exptime argument\r\n") }
            if e > 0 { delay = max(0, absoluteExpiry(e, now: now) - now) }
        }
        return .command(.flushAll(delay: delay, noreply: noreply), consumed: l.next)
    }

    // MARK: - Meta commands

    /// mg, ms, md, ma and me, with the flags memcached 1.6.18 knows. Errors found before
    /// an `ms` data block is read still swallow the block, as memcached does.
    func meta(_ l: inout TokenizedLine, _ kind: OpKind, available: Int, now: Int64) -> ParseResult {
        let isSet = kind == .metaSet
        guard l.count >= 2 else {
            if kind == .metaDebug { return l.reply("CLIENT_ERROR bad command line format\r\n") }
            return isSet ? l.refuse("ERROR\r\n") : l.reply("ERROR\r\n")
        }
        if l.lengths[1] > MemcachedCommandParser.maxKeyLength {
            return isSet ? l.refuse("CLIENT_ERROR bad command line format\r\n") : l.reply("CLIENT_ERROR bad command line format\r\n")
        }
        if kind == .metaDebug {
            guard l.count <= 3 else { return l.reply("CLIENT_ERROR bad command line format\r\n") }
        }
        var firstFlag = 2
        var dataLength = 0
        if isSet {
            guard l.count >= 3 else { return l.refuse("CLIENT_ERROR bad command line format\r\n") }
            if l.total + 1 > MemcachedCommandParser.maxMetaTokens { return l.refuse("CLIENT_ERROR options flags too long\r\n") }
            guard let v = l.int32(2), v >= 0 else { return l.refuse("CLIENT_ERROR bad command line format\r\n") }
            dataLength = Int(v)
            firstFlag = 3
        } else if l.total + 1 > MemcachedCommandParser.maxMetaTokens {
            return l.reply(kind == .metaGet ? "CLIENT_ERROR options flags are too long\r\n" : "CLIENT_ERROR options flags too long\r\n")
        }
        let need = l.next + (isSet ? dataLength + 2 : 0)
        var m = MetaFlags()
        var decoded = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0),
                       UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0),
                       UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        var decodedLength = 0
        let failure: StaticString? = withUnsafeMutableBytes(of: &decoded) { scratch in
            preparse(&l, from: firstFlag, into: &m, decodedKey: scratch, decodedLength: &decodedLength)
        }
        if let failure {
            if isSet { return .error(failure, consumed: need, close: false) }
            if kind == .metaDelete || kind == .metaArithmetic { return l.reply("CLIENT_ERROR invalid or duplicate flag\r\n") }
            return l.reply(failure)
        }
        if kind == .metaDebug && l.count == 3 && !m.has("b") { return l.reply("CLIENT_ERROR bad command line format\r\n") }
        // Flags that only some commands accept in a form (mode letters, opaque length).
        if m.opaqueTooLong {
            if isSet { return .error("CLIENT_ERROR opaque token too long\r\n", consumed: need, close: false) }
            return l.reply("CLIENT_ERROR opaque token too long\r\n")
        }
        if isSet {
            switch m.mode {
            case 0, UInt8(ascii: "E"), UInt8(ascii: "A"), UInt8(ascii: "P"), UInt8(ascii: "R"), UInt8(ascii: "S"): break
            default: return .error("CLIENT_ERROR invalid mode for ms M token\r\n", consumed: need, close: false)
            }
        } else if kind == .metaArithmetic {
            switch m.mode {
            case 0, UInt8(ascii: "I"), UInt8(ascii: "+"), UInt8(ascii: "D"), UInt8(ascii: "-"): break
            default: return l.reply("CLIENT_ERROR invalid mode for ma M token\r\n")
            }
        }
        let keyLength = m.has("b") ? decodedLength : l.lengths[1]
        var tooLarge = false
        if isSet {
            if MemcachedCommandParser.itemSize(keyLength: keyLength, valueLength: dataLength, flags: m.clientFlags) > maxItemSize {
                tooLarge = true
            } else {
                if available < need { return .incomplete(need: need) }
                let dataEnd = l.next + dataLength
                if l.base.load(fromByteOffset: dataEnd, as: UInt8.self) != 0x0D
                    || l.base.load(fromByteOffset: dataEnd + 1, as: UInt8.self) != 0x0A {
                    return .error("CLIENT_ERROR bad data chunk\r\n", consumed: need, close: false)
                }
            }
        }
        // The command is whole: now the key may be rewritten in place.
        if m.has("b") {
            withUnsafeBytes(of: &decoded) { d in
                (l.base + l.starts[1]).copyMemory(from: d.baseAddress.unsafelyUnwrapped, byteCount: decodedLength)
            }
        }
        var op = KeyOp()
        op.kind = kind
        op.key = UnsafeRawPointer(l.base + l.starts[1])
        op.keyLength = keyLength
        op.hash = keyHash(l.base + l.starts[1], keyLength)
        op.now = now
        if l.count > firstFlag {
            m.text = UnsafeRawPointer(l.base + l.starts[firstFlag])
            m.textLength = l.end - l.starts[firstFlag]
        }
        op.meta = m
        op.noreply = m.has("q")
        if isSet {
            op.tooLarge = tooLarge
            op.flags = m.clientFlags
            if !tooLarge {
                op.value = UnsafeRawPointer(l.base + l.next)
                op.valueLength = dataLength
            }
        }
        return .command(.key(op), consumed: need)
    }

    /// memcached's flag pre-parse: every flag at most once, known letters only, arguments
    /// that parse. Returns the error to answer, or nil. A `b` key is decoded into
    /// `decodedKey` (the input is not touched here).
    func preparse(_ l: inout TokenizedLine, from first: Int, into m: inout MetaFlags,
                  decodedKey: UnsafeMutableRawBufferPointer, decodedLength: inout Int) -> StaticString? {
        var error: StaticString? = nil
        var i = first < l.count ? l.starts[first] : l.end
        m.delta = 1
        while i < l.end {
            while i < l.end && l.base.load(fromByteOffset: i, as: UInt8.self) == 0x20 { i += 1 }
            if i >= l.end { break }
            let s = i
            while i < l.end && l.base.load(fromByteOffset: i, as: UInt8.self) != 0x20 { i += 1 }
            let c = l.base.load(fromByteOffset: s, as: UInt8.self)
            let arg = UnsafeRawBufferPointer(start: l.base + s + 1, count: i - s - 1)
            if c >= 127 || m.has(byte: c) { return "CLIENT_ERROR duplicate flag\r\n" }
            m.mark(c)
            switch c {
            case UInt8(ascii: "b"):
                let k = UnsafeRawBufferPointer(start: l.base + l.starts[1], count: l.lengths[1])
                decodedLength = Base64.decode(k, into: decodedKey)
                if decodedLength == 0 { error = "CLIENT_ERROR error decoding key\r\n" }
            case UInt8(ascii: "N"), UInt8(ascii: "T"), UInt8(ascii: "R"):
                guard let v = parseInt32(arg) else { error = "CLIENT_ERROR bad token in command line format\r\n"; continue }
                if c == UInt8(ascii: "N") { m.vivifyTTL = v } else if c == UInt8(ascii: "T") { m.ttl = v } else { m.recache = v }
            case UInt8(ascii: "F"):
                guard let v = parseUInt64(arg), v <= UInt64(UInt32.max) else { error = "CLIENT_ERROR bad command line format\r\n"; continue }
                m.clientFlags = UInt32(v)
            case UInt8(ascii: "C"):
                guard let v = parseUInt64(arg) else { error = "CLIENT_ERROR bad token in command line format\r\n"; continue }
                m.cas = v
            case UInt8(ascii: "M"):
                guard arg.count == 1 else { error = "CLIENT_ERROR incorrect length for M token\r\n"; continue }
                m.mode = arg[0]
            case UInt8(ascii: "J"):
                guard let v = parseUInt64(arg) else { error = "CLIENT_ERROR invalid numeric initial value\r\n"; continue }
                m.initial = v
            case UInt8(ascii: "D"):
                guard let v = parseUInt64(arg) else { error = "CLIENT_ERROR invalid numeric delta value\r\n"; continue }
                m.delta = v
            case UInt8(ascii: "O"):
                if i - s > MemcachedCommandParser.maxOpaqueLength { m.opaqueTooLong = true }
            case UInt8(ascii: "l"), UInt8(ascii: "P"), UInt8(ascii: "L"), UInt8(ascii: "k"), UInt8(ascii: "s"),
                 UInt8(ascii: "t"), UInt8(ascii: "c"), UInt8(ascii: "f"), UInt8(ascii: "v"), UInt8(ascii: "h"),
                 UInt8(ascii: "u"), UInt8(ascii: "q"), UInt8(ascii: "I"):
                break
            default:
                return "CLIENT_ERROR invalid flag\r\n"
            }
        }
        return error
    }
}

/// What the parser makes of the front of the input.
enum ParseResult {
    /// Not a whole command yet: `need` bytes are needed in all (0: the line is not in yet).
    case incomplete(need: Int)
    /// A command, and the bytes it took (line and data block).
    case command(MemcachedCommand, consumed: Int)
    /// A refused command: the reply to send (possibly empty), the bytes to drop (line and
    /// any data block; possibly more than are in yet), and whether to close afterwards.
    case error(StaticString, consumed: Int, close: Bool)
}

/// One parsed command. Pointers point into the input buffer, which stays put until the
/// command has run.
enum MemcachedCommand {
    /// A single-key operation (storage, delete, incr/decr, touch, meta commands).
    case key(KeyOp)
    /// get, gets, gat, gats: `op` carries the kind and expiry; `keys` is the key list text.
    case retrieve(KeyOp, keys: UnsafeRawBufferPointer)
    /// flush_all with its delay in seconds.
    case flushAll(delay: Int64, noreply: Bool)
    /// stats with the text of its arguments.
    case stats(UnsafeRawBufferPointer)
    case version
    case verbosity(noreply: Bool)
    /// mn
    case noop
    case quit
}

/// One command line split at spaces, as memcached's tokenizer does: the first
/// ``MemcachedCommandParser/maxTokens`` tokens are kept, `total` counts them all.
struct TokenizedLine {
    let base: UnsafeMutableRawPointer
    /// Offset of the end of the line (before CR LF) and of the byte after the LF.
    let end: Int
    let next: Int
    let starts: UnsafeMutablePointer<Int>
    let lengths: UnsafeMutablePointer<Int>
    var count = 0
    var total = 0

    init(base: UnsafeMutableRawPointer, end: Int, next: Int, starts: UnsafeMutablePointer<Int>, lengths: UnsafeMutablePointer<Int>) {
        self.base = base
        self.end = end
        self.next = next
        self.starts = starts
        self.lengths = lengths
    }

    mutating func tokenize() {
        var i = 0
        while i < end {
            while i < end && base.load(fromByteOffset: i, as: UInt8.self) == 0x20 { i += 1 }
            if i >= end { break }
            let s = i
            while i < end && base.load(fromByteOffset: i, as: UInt8.self) != 0x20 { i += 1 }
            if count < MemcachedCommandParser.maxTokens {
                starts[count] = s
                lengths[count] = i - s
                count += 1
            }
            total += 1
        }
    }

    @inline(__always) func byte(_ t: Int, _ at: Int) -> UInt8 { base.load(fromByteOffset: starts[t] + at, as: UInt8.self) }

    @inline(__always) func token(_ t: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + starts[t], count: lengths[t])
    }

    @inline(__always) func `is`(_ t: Int, _ s: StaticString) -> Bool {
        lengths[t] == s.utf8CodeUnitCount && memcmpBytes(base + starts[t], s.utf8Start, lengths[t])
    }

    func int32(_ t: Int) -> Int64? { parseInt32(token(t)) }

    /// An error reply that consumes the line.
    func reply(_ s: StaticString) -> ParseResult { .error(s, consumed: next, close: false) }

    /// A refused storage line whose data block memcached would not swallow: reply, close.
    func refuse(_ s: StaticString) -> ParseResult { .error(s, consumed: next, close: true) }

    func keyOp(_ kind: OpKind, now: Int64) -> KeyOp {
        var op = KeyOp()
        op.kind = kind
        op.key = UnsafeRawPointer(base + starts[1])
        op.keyLength = lengths[1]
        op.hash = keyHash(base + starts[1], lengths[1])
        op.now = now
        return op
    }
}

/// memcached's `safe_strtol`: an optional sign and decimal digits that fit a 64-bit
/// `long`, then kept as memcached keeps them, in 32 bits (so a larger number wraps).
func parseInt32(_ b: UnsafeRawBufferPointer) -> Int64? {
    guard b.count > 0 else { return nil }
    var negative = false
    var digits = b
    if b[0] == 0x2D || b[0] == 0x2B {
        negative = b[0] == 0x2D
        digits = UnsafeRawBufferPointer(rebasing: b[1...])
    }
    guard let v = parseUInt64(digits), v <= UInt64(Int64.max) + (negative ? 1 : 0) else { return nil }
    let long = negative ? 0 &- v : v
    return Int64(Int32(truncatingIfNeeded: long))
}

/// Base64 (RFC 4648, with padding) for meta keys sent with the `b` flag.
enum Base64 {
    static let alphabet: StaticString = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    @inline(__always) static func value(_ c: UInt8) -> UInt32? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return UInt32(c - UInt8(ascii: "A"))
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return UInt32(c - UInt8(ascii: "a")) + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(c - UInt8(ascii: "0")) + 52
        case UInt8(ascii: "+"): return 62
        case UInt8(ascii: "/"): return 63
        default: return nil
        }
    }

    /// Decodes `text` into `out`; returns the decoded length, or 0 when the text is not
    /// base64 (wrong length or character) or does not fit.
    static func decode(_ text: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) -> Int {
        let n = text.count
        guard n > 0, n % 4 == 0 else { return 0 }
        var o = 0
        var i = 0
        while i < n {
            var acc: UInt32 = 0
            var pad = 0
            for j in 0..<4 {
                let c = text[i + j]
                if c == UInt8(ascii: "=") && i + 4 == n && j >= 2 {
                    pad += 1
                    acc <<= 6
                } else {
                    guard pad == 0, let v = value(c) else { return 0 }
                    acc = (acc << 6) | v
                }
            }
            let bytes = 3 - pad
            guard o + bytes <= out.count else { return 0 }
            for j in 0..<bytes { out[o + j] = UInt8(truncatingIfNeeded: acc >> UInt32(16 - 8 * j)) }
            o += bytes
            i += 4
        }
        return o
    }

    /// Appends the base64 text of `p[0..<n]` to `out`.
    static func encode(_ p: UnsafeRawPointer, _ n: Int, to out: OutputBuffer) {
        let a = alphabet.utf8Start
        var i = 0
        while i < n {
            let b0 = UInt32(p.load(fromByteOffset: i, as: UInt8.self))
            let b1 = i + 1 < n ? UInt32(p.load(fromByteOffset: i + 1, as: UInt8.self)) : 0
            let b2 = i + 2 < n ? UInt32(p.load(fromByteOffset: i + 2, as: UInt8.self)) : 0
            let acc = (b0 << 16) | (b1 << 8) | b2
            out.append(byte: a[Int(acc >> 18)])
            out.append(byte: a[Int((acc >> 12) & 63)])
            out.append(byte: i + 1 < n ? a[Int((acc >> 6) & 63)] : UInt8(ascii: "="))
            out.append(byte: i + 2 < n ? a[Int(acc & 63)] : UInt8(ascii: "="))
            i += 3
        }
    }
}
