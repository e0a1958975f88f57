/// Turns a request target into a VFS path, refusing anything that could step outside the
/// served root: a `..` segment (plain or percent-encoded) with nothing left to climb out of,
/// encoded slashes and backslashes, NUL bytes, and invalid encodings. Inside the root, `.`
/// and `..` are resolved as nginx does (`/sub/./../a.txt` is `/a.txt`). The VFS jail root is the second line of defence: it
/// keeps `..` inside symlink targets and absolute symlinks within the root.
public enum RequestPath {
    /// A decoded path: absolute, with `.`, `..` and empty segments resolved.
    public struct Decoded: Sendable, Equatable {
        /// The path to look up, always starting with `/`.
        public var path: String
        /// Whether the target ended with `/`, `/.` or `/..` (a directory was asked for: a
        /// regular file there is not found, as the kernel's ENOTDIR says).
        public var trailingSlash: Bool
    }

    /// Decodes `target`; on failure returns the status to answer with (400 or 403). Builds
    /// the path in one byte array as it goes (two allocations in all: that array and the
    /// resulting string).
    public static func decode(_ target: String) -> Result<Decoded, HTTPStatus> {
        if let r = target.utf8.withContiguousStorageIfAvailable({ decode($0) }) {
            return r
        }
        let bytes = Array(target.utf8)
        return bytes.withUnsafeBufferPointer { decode($0) }
    }

    /// Decodes the bytes of a request target.
    static func decode(_ raw: UnsafeBufferPointer<UInt8>) -> Result<Decoded, HTTPStatus> {
        var i = 0
        var end = raw.count
        // Absolute form: skip scheme and authority.
        if raw.count >= 7, raw[0] | 0x20 == 104, raw[1] | 0x20 == 116, raw[2] | 0x20 == 116, raw[3] | 0x20 == 112 {
            i = 4
            if i < raw.count && raw[i] | 0x20 == 115 { i += 1 }
            guard raw.count >= i + 3, raw[i] == 58, raw[i + 1] == 47, raw[i + 2] == 47 else { return .failure(.badRequest) }
            i += 3
            while i < raw.count && raw[i] != 47 && raw[i] != 63 { i += 1 }
            if i == raw.count || raw[i] != 47 {
                // No path after the authority: the root.
                return .success(Decoded(path: "/", trailingSlash: true))
            }
        }
        guard i < raw.count, raw[i] == 47 else { return .failure(.badRequest) }
        // The query or fragment is not part of the path.
        var q = i
        while q < end && raw[q] != 63 && raw[q] != 35 { q += 1 }
        end = q
        // `out` holds "/seg" for each segment kept so far; `segmentStart` is where the
        // segment being decoded begins (at its slash).
        var out: [UInt8] = []
        out.reserveCapacity(end - i + 1)
        var segments = 0
        var segmentStart = 0
        // Whether the last segment named a directory (empty, `.` or `..`).
        var endsInDirectory = false
        func finish() -> HTTPStatus? {
            endsInDirectory = true
            let length = out.count - segmentStart - 1
            if length == 0 || (length == 1 && out[segmentStart + 1] == 46) {
                out.removeSubrange(segmentStart...)
                return nil
            }
            if length == 2 && out[segmentStart + 1] == 46 && out[segmentStart + 2] == 46 {
                out.removeSubrange(segmentStart...)
                // Climbing above the served root is refused, never clamped.
                if segments == 0 { return .forbidden }
                segments -= 1
                var k = out.count - 1
                while k > 0 && out[k] != 47 { k -= 1 }
                out.removeSubrange(k...)
                return nil
            }
            endsInDirectory = false
            segments += 1
            return nil
        }
        i += 1
        segmentStart = out.count
        out.append(47)
        while i < end {
            var c = raw[i]
            if c == 47 {
                if let s = finish() { return .failure(s) }
                segmentStart = out.count
                out.append(47)
                i += 1
                continue
            }
            if c == 37 {
                guard i + 2 < end, let h = hex(raw[i + 1]), let l = hex(raw[i + 2]) else { return .failure(.badRequest) }
                c = h << 4 | l
                i += 3
                if c == 0 { return .failure(.badRequest) }
                if c == 47 || c == 92 { return .failure(.forbidden) }
            } else {
                i += 1
                if c == 92 { return .failure(.forbidden) }
            }
            if c < 0x20 || c == 0x7f { return .failure(.badRequest) }
            out.append(c)
        }
        if let s = finish() { return .failure(s) }
        if out.isEmpty { return .success(Decoded(path: "/", trailingSlash: true)) }
        guard let path = String(validating: out, as: UTF8.self) else { return .failure(.badRequest) }
        return .success(Decoded(path: path, trailingSlash: endsInDirectory))
    }

    /// Whether `target` decodes to itself: an origin-form path of printable ASCII with no
    /// percent escape, query, fragment or backslash, no empty, `.` or `..` segment, and no
    /// trailing slash. Such a target can be looked up as it stands, with no decoded copy.
    static func isPlain(_ target: UnsafeRawBufferPointer) -> Bool {
        let n = target.count
        guard n >= 2, target[0] == 47, target[n - 1] != 47 else { return false }
        var segmentStart = 1
        var i = 1
        while i <= n {
            let c: UInt8 = i < n ? target[i] : 47
            if c == 47 {
                let length = i - segmentStart
                if length == 0 { return false }
                if target[segmentStart] == 46 && (length == 1 || (length == 2 && target[segmentStart + 1] == 46)) { return false }
                segmentStart = i + 1
            } else if c <= 0x20 || c >= 0x7f || c == 37 || c == 63 || c == 35 || c == 92 {
                return false
            }
            i += 1
        }
        return true
    }

    static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: c - 48
        case 65...70: c - 55
        case 97...102: c - 87
        default: nil
        }
    }
}
