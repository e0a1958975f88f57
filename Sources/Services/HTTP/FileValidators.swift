import Glibc
import VFS

/// A regular file's validators rendered once as the header bytes every 200, 206 and 304 for
/// it carries: `ETag: "…"\r\nLast-Modified: <IMF-fixdate>\r\n`. The open-file cache keeps
/// one per entry, rendered when the entry is made (an entry whose file changed is dropped
/// and made again, so the bytes are re-rendered only then); a request answered from the
/// entry copies them and compares `If-None-Match` against ``etag`` in place, allocating
/// nothing. Immutable, so any thread may read it.
struct FileValidators: Sendable {
    /// The two header fields, CRLF-terminated.
    let fields: [UInt8]
    /// Where the quoted entity tag sits in ``fields``.
    private let etagRange: Range<Int>

    static let etagPrefix: StaticString = "ETag: "
    static let lastModifiedPrefix: StaticString = "\r\nLast-Modified: "

    /// Renders the fields for the quoted strong entity tag `etag` and the modification time
    /// `mtime` (seconds since the epoch).
    init(etag: String, mtime: Int64) {
        var f = [UInt8]()
        f.reserveCapacity(Self.etagPrefix.utf8CodeUnitCount + etag.utf8.count + Self.lastModifiedPrefix.utf8CodeUnitCount + 31)
        Self.append(Self.etagPrefix, to: &f)
        let start = f.count
        f.append(contentsOf: etag.utf8)
        etagRange = start..<f.count
        Self.append(Self.lastModifiedPrefix, to: &f)
        let d = f.count
        f.append(contentsOf: repeatElement(0, count: 29))
        f.withUnsafeMutableBytes { HTTPDate.write(mtime, into: $0.baseAddress! + d) }
        f.append(13)
        f.append(10)
        fields = f
    }

    /// The validators of a file with attributes `a` (the entity tag from ``etag(_:)``).
    init(_ a: FileAttributes) {
        self.init(etag: Self.etag(a), mtime: a.mtime.seconds)
    }

    private static func append(_ s: StaticString, to f: inout [UInt8]) {
        f.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    /// A strong validator from inode, size and modification time.
    static func etag(_ a: FileAttributes) -> String {
        "\"" + String(a.inode, radix: 16) + "-" + String(a.size, radix: 16) + "-" + String(a.mtime.seconds, radix: 16)
            + String(a.mtime.nanoseconds, radix: 16) + "\""
    }

    /// Calls `body` with the quoted entity tag's bytes.
    @inline(__always)
    func withETag<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try fields.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[etagRange])) }
    }

    /// Whether the `If-None-Match` field value `list` names this file (RFC 9110 §13.1.2).
    func noneMatchHits(_ list: UnsafeRawBufferPointer) -> Bool {
        withETag { Self.noneMatchHits(list, etag: $0) }
    }

    /// Whether the `If-None-Match` field value `list` (`*` or a comma-separated list of
    /// entity tags, RFC 9110 §8.8.3 and §13.1.2) matches the quoted strong tag `etag` under
    /// the weak comparison: `*` matches any current file; a tag matches when its opaque part
    /// (quotes included) equals `etag`'s, whether or not it carries the case-sensitive `W/`
    /// prefix. Commas inside a quoted tag belong to the tag, empty list elements and
    /// whitespace around elements are skipped, and a malformed list matches nothing (the
    /// full response is always a safe answer). Reads the bytes in place; allocates nothing.
    static func noneMatchHits(_ list: UnsafeRawBufferPointer, etag: UnsafeRawBufferPointer) -> Bool {
        let n = list.count
        guard n > 0, let l = list.baseAddress else { return false }
        var i = 0
        var found = false
        @inline(__always) func byte(_ k: Int) -> UInt8 { l.load(fromByteOffset: k, as: UInt8.self) }
        @inline(__always) func skipSpace() { while i < n && (byte(i) == 32 || byte(i) == 9) { i += 1 } }
        // The whole list is read (lists are short), so that a malformed one never matches.
        while true {
            // Empty elements and optional whitespace (RFC 9110 §5.6.1).
            while i < n && (byte(i) == 32 || byte(i) == 9 || byte(i) == 44) { i += 1 }
            if i == n { return found }
            if byte(i) == 42 {  // '*'
                i += 1
                found = true
            } else {
                if i + 1 < n && byte(i) == 87 && byte(i + 1) == 47 { i += 2 }  // "W/"
                guard i < n, byte(i) == 34 else { return false }  // an opaque tag opens with DQUOTE
                let start = i
                i += 1
                while i < n && byte(i) != 34 { i += 1 }
                guard i < n else { return false }  // unterminated
                i += 1
                let length = i - start
                if !found && length == etag.count, let e = etag.baseAddress, memcmp(l + start, e, length) == 0 { found = true }
            }
            skipSpace()
            guard i == n || byte(i) == 44 else { return false }
        }
    }
}

/// One CPU's `Date` field value: the 29 bytes of the current second, rendered at most once
/// per second and copied into every response head after that. Used only by its CPU's
/// threads, without locks.
final class HTTPDateCache: @unchecked Sendable {
    /// The second ``bytes`` shows.
    private(set) var second: Int64 = .min
    /// How many times the value was rendered (a statistic for tests).
    private(set) var renders = 0
    private let bytes = UnsafeMutableRawPointer.allocate(byteCount: 29, alignment: 8)

    init() {}

    deinit { bytes.deallocate() }

    /// Writes the date for `now` (seconds since the epoch) at `p`, rendering it only when the
    /// second changed.
    @inline(__always)
    func write(_ now: Int64, into p: UnsafeMutableRawPointer) {
        if now != second {
            HTTPDate.write(now, into: bytes)
            second = now
            renders += 1
        }
        p.copyMemory(from: bytes, byteCount: 29)
    }
}
