import Glibc

/// Limits on what a client may send, each answered with its own status.
public struct HTTPLimits: Sendable {
    /// Longest request line (414 beyond).
    public var maxRequestLine: Int = 8192
    /// Largest request head: request line plus header fields (431 beyond).
    public var maxHeaderBytes: Int = 12288
    /// Most header fields (431 beyond).
    public var maxHeaderCount: Int = 100
    /// Largest body the server reads and discards on GET and HEAD (413 beyond).
    public var maxBody: Int = 65536

    /// The default limits.
    public init() {}
}

/// What parsing the start of a connection's input found.
enum HTTPParseResult {
    /// More bytes are needed.
    case incomplete
    /// A request head of `length` bytes.
    case complete(HTTPRequestHead, length: Int)
    /// The request is broken or too big; answer with the status and close.
    case failure(HTTPStatus)
}

/// A strict HTTP/1.1 request-head parser over raw bytes (RFC 9112), allocating only the
/// strings of the fields it keeps (the target and If-None-Match stay in the buffer as
/// offsets).
enum HTTPParser {
    static let cr: UInt8 = 13, lf: UInt8 = 10, sp: UInt8 = 32, ht: UInt8 = 9

    /// Parses the request head at the start of `b`.
    static func parse(_ b: UnsafeRawBufferPointer, limits: HTTPLimits) -> HTTPParseResult {
        let n = b.count
        guard n > 0, let base = b.baseAddress else { return .incomplete }
        // Robustness (RFC 9112 §2.2): ignore empty lines before the request line, up to
        // the length of a request line (a client that sends only those is cut off).
        var start = 0
        while start < n && (b[start] == cr || b[start] == lf) {
            start += 1
            if start > limits.maxRequestLine { return .failure(.badRequest) }
        }
        if start == n { return .incomplete }
        guard let lineEnd = find(lf, base, from: start, to: n) else {
            return n - start > limits.maxRequestLine ? .failure(.uriTooLong) : .incomplete
        }
        var lineStop = lineEnd
        if lineStop > start && b[lineStop - 1] == cr { lineStop -= 1 }
        if lineStop - start > limits.maxRequestLine { return .failure(.uriTooLong) }

        var head = HTTPRequestHead()
        // Request line: method SP target SP version.
        guard let sp1 = find(sp, base, from: start, to: lineStop), sp1 > start else { return .failure(.badRequest) }
        for i in start..<sp1 where !isTokenChar(b[i]) { return .failure(.badRequest) }
        guard let sp2 = find(sp, base, from: sp1 + 1, to: lineStop), sp2 > sp1 + 1 else { return .failure(.badRequest) }
        for i in (sp1 + 1)..<sp2 where b[i] <= 0x20 || b[i] >= 0x7f { return .failure(.badRequest) }
        let mlen = sp1 - start
        if mlen == 3 && b[start] == 71 && b[start + 1] == 69 && b[start + 2] == 84 { head.method = .get }
        else if mlen == 4 && b[start] == 72 && b[start + 1] == 69 && b[start + 2] == 65 && b[start + 3] == 68 { head.method = .head }
        else { head.method = .other }
        // The target stays in the buffer: the connection makes a String of it only when the
        // hot-file cache cannot answer from the bytes.
        head.targetOffset = sp1 + 1
        head.targetLength = sp2 - sp1 - 1
        // Version: exactly HTTP/D.D
        let v = sp2 + 1
        guard lineStop - v == 8, b[v] == 72, b[v + 1] == 84, b[v + 2] == 84, b[v + 3] == 80, b[v + 4] == 47,
              isDigit(b[v + 5]), b[v + 6] == 46, isDigit(b[v + 7]) else { return .failure(.badRequest) }
        if b[v + 5] != 49 { return .failure(.versionNotSupported) }
        head.minorVersion = Int(b[v + 7] - 48)

        // Header fields.
        var pos = lineEnd + 1
        var count = 0
        var sawClose = false, sawKeepAlive = false, sawLength = false
        while true {
            guard let lf2 = find(lf, base, from: pos, to: n) else {
                return n - start > limits.maxHeaderBytes ? .failure(.headerFieldsTooLarge) : .incomplete
            }
            if lf2 + 1 - start > limits.maxHeaderBytes { return .failure(.headerFieldsTooLarge) }
            var stop = lf2
            if stop > pos && b[stop - 1] == cr { stop -= 1 }
            if stop == pos {
                // End of the head.
                if head.minorVersion >= 1 && !head.hasHost { return .failure(.badRequest) }
                if head.hasTransferEncoding && sawLength { return .failure(.badRequest) }
                head.keepAlive = head.minorVersion >= 1 ? !sawClose : (sawKeepAlive && !sawClose)
                return .complete(head, length: lf2 + 1)
            }
            count += 1
            if count > limits.maxHeaderCount { return .failure(.headerFieldsTooLarge) }
            if b[pos] == sp || b[pos] == ht { return .failure(.badRequest) }  // obsolete line folding
            guard let colon = find(58, base, from: pos, to: stop), colon > pos else { return .failure(.badRequest) }
            for i in pos..<colon where !isTokenChar(b[i]) { return .failure(.badRequest) }
            var vs = colon + 1, ve = stop
            while vs < ve && (b[vs] == sp || b[vs] == ht) { vs += 1 }
            while ve > vs && (b[ve - 1] == sp || b[ve - 1] == ht) { ve -= 1 }
            for i in vs..<ve where b[i] == 0 || b[i] == cr || b[i] == lf { return .failure(.badRequest) }
            let name = UnsafeRawBufferPointer(rebasing: b[pos..<colon])
            let value = UnsafeRawBufferPointer(rebasing: b[vs..<ve])
            switch name.count {
            case 4 where equalsLower(name, "host"):
                if head.hasHost { return .failure(.badRequest) }
                head.hasHost = true
            case 5 where equalsLower(name, "range"):
                head.range = String(decoding: value, as: UTF8.self)
            case 8 where equalsLower(name, "if-range"):
                head.ifRange = String(decoding: value, as: UTF8.self)
            case 10 where equalsLower(name, "connection"):
                var s = 0
                while s <= value.count {
                    var e = s
                    while e < value.count && value[e] != 44 { e += 1 }
                    var ts = s, te = e
                    while ts < te && (value[ts] == sp || value[ts] == ht) { ts += 1 }
                    while te > ts && (value[te - 1] == sp || value[te - 1] == ht) { te -= 1 }
                    let tok = UnsafeRawBufferPointer(rebasing: value[ts..<te])
                    if tok.count == 5 && equalsLower(tok, "close") { sawClose = true }
                    if tok.count == 10 && equalsLower(tok, "keep-alive") { sawKeepAlive = true }
                    s = e + 1
                }
            case 13 where equalsLower(name, "if-none-match"):
                // Left in place: the file server compares it against the cached ETag there.
                head.hasIfNoneMatch = true
                head.ifNoneMatchOffset = vs
                head.ifNoneMatchLength = ve - vs
            case 14 where equalsLower(name, "content-length"):
                guard !value.isEmpty, value.count <= 18 else { return .failure(value.isEmpty ? .badRequest : .contentTooLarge) }
                var len = 0
                for c in value {
                    guard isDigit(c) else { return .failure(.badRequest) }
                    len = len * 10 + Int(c - 48)
                }
                if sawLength && len != head.contentLength { return .failure(.badRequest) }
                sawLength = true
                head.contentLength = len
            case 17 where equalsLower(name, "if-modified-since"):
                head.ifModifiedSince = String(decoding: value, as: UTF8.self)
            case 17 where equalsLower(name, "transfer-encoding"):
                head.hasTransferEncoding = true
            default:
                break
            }
            pos = lf2 + 1
        }
    }

    @inline(__always)
    static func find(_ byte: UInt8, _ base: UnsafeRawPointer, from: Int, to: Int) -> Int? {
        guard to > from, let p = memchr(base + from, Int32(byte), to - from) else { return nil }
        return UnsafeRawPointer(p) - base
    }

    @inline(__always)
    static func isDigit(_ c: UInt8) -> Bool { c >= 48 && c <= 57 }

    /// RFC 9110 `tchar`.
    @inline(__always)
    static func isTokenChar(_ c: UInt8) -> Bool {
        switch c {
        case 48...57, 65...90, 97...122: true
        case 33, 35, 36, 37, 38, 39, 42, 43, 45, 46, 94, 95, 96, 124, 126: true
        default: false
        }
    }

    /// Whether `bytes`, lowercased, equal the lowercase ASCII `literal` (same length assumed checked).
    static func equalsLower(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
        guard bytes.count == literal.utf8CodeUnitCount else { return false }
        let l = literal.utf8Start
        for i in 0..<bytes.count {
            var c = bytes[i]
            if c >= 65 && c <= 90 { c |= 0x20 }
            if c != l[i] { return false }
        }
        return true
    }
}
