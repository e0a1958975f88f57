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

    /// Decodes `target`; on failure returns the status to answer with (400 or 403).
    public static func decode(_ target: String) -> Result<Decoded, HTTPStatus> {
        var raw = Array(target.utf8)
        // Absolute form: drop scheme and authority.
        if raw.count >= 7, raw[0] | 0x20 == 104, raw[1] | 0x20 == 116, raw[2] | 0x20 == 116, raw[3] | 0x20 == 112 {
            var i = 4
            if i < raw.count && raw[i] | 0x20 == 115 { i += 1 }
            guard raw.count >= i + 3, raw[i] == 58, raw[i + 1] == 47, raw[i + 2] == 47 else { return .failure(.badRequest) }
            i += 3
            while i < raw.count && raw[i] != 47 && raw[i] != 63 { i += 1 }
            raw = i < raw.count && raw[i] == 47 ? Array(raw[i...]) : [47]
        }
        guard raw.first == 47 else { return .failure(.badRequest) }
        if let q = raw.firstIndex(where: { $0 == 63 || $0 == 35 }) { raw.removeSubrange(q...) }
        var segments: [[UInt8]] = []
        var current: [UInt8] = []
        var i = 0
        // Whether the last segment named a directory (empty, `.` or `..`).
        var endsInDirectory = false
        func finish() -> HTTPStatus? {
            defer { current.removeAll(keepingCapacity: true) }
            endsInDirectory = true
            if current.isEmpty || current == [46] { return nil }
            if current == [46, 46] {
                // Climbing above the served root is refused, never clamped.
                if segments.isEmpty { return .forbidden }
                segments.removeLast()
                return nil
            }
            endsInDirectory = false
            segments.append(current)
            return nil
        }
        while i < raw.count {
            var c = raw[i]
            if c == 47 {
                if let s = finish() { return .failure(s) }
                i += 1
                continue
            }
            if c == 37 {
                guard i + 2 < raw.count, let h = hex(raw[i + 1]), let l = hex(raw[i + 2]) else { return .failure(.badRequest) }
                c = h << 4 | l
                i += 3
                if c == 0 { return .failure(.badRequest) }
                if c == 47 || c == 92 { return .failure(.forbidden) }
            } else {
                i += 1
                if c == 92 { return .failure(.forbidden) }
            }
            if c < 0x20 || c == 0x7f { return .failure(.badRequest) }
            current.append(c)
        }
        if let s = finish() { return .failure(s) }
        var out: [UInt8] = [47]
        for (k, s) in segments.enumerated() {
            if k > 0 { out.append(47) }
            out.append(contentsOf: s)
        }
        guard let path = String(validating: out, as: UTF8.self) else { return .failure(.badRequest) }
        return .success(Decoded(path: path, trailingSlash: endsInDirectory || segments.isEmpty))
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
