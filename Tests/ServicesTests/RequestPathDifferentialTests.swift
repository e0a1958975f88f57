import Testing
@testable import Services

/// `RequestPath.decode` builds its path in one buffer; this checks it against a plain
/// segment-list model of the same rules on random targets made of the pieces that matter
/// (dots, encoded dots and slashes, NULs, queries, absolute forms, bad escapes).
struct RequestPathDifferentialTests {
    /// The rules, written the slow way: split, percent-decode, resolve `.` and `..`.
    static func model(_ target: String) -> Result<RequestPath.Decoded, HTTPStatus> {
        var raw = Array(target.utf8)
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
        var lastWasDirectory = false
        for piece in raw.split(separator: 47, omittingEmptySubsequences: false).dropFirst() {
            var seg: [UInt8] = []
            var i = piece.startIndex
            while i < piece.endIndex {
                var c = piece[i]
                if c == 37 {
                    guard i + 2 < piece.endIndex, let h = RequestPath.hex(piece[i + 1]), let l = RequestPath.hex(piece[i + 2]) else {
                        return .failure(.badRequest)
                    }
                    c = h << 4 | l
                    i += 3
                    if c == 0 { return .failure(.badRequest) }
                    if c == 47 || c == 92 { return .failure(.forbidden) }
                } else {
                    i += 1
                    if c == 92 { return .failure(.forbidden) }
                }
                if c < 0x20 || c == 0x7f { return .failure(.badRequest) }
                seg.append(c)
            }
            lastWasDirectory = true
            if seg.isEmpty || seg == [46] { continue }
            if seg == [46, 46] {
                if segments.isEmpty { return .failure(.forbidden) }
                segments.removeLast()
                continue
            }
            lastWasDirectory = false
            segments.append(seg)
        }
        var joined: [UInt8] = segments.isEmpty ? [47] : []
        for s in segments { joined += [47] + s }
        guard let path = String(validating: joined, as: UTF8.self) else { return .failure(.badRequest) }
        return .success(.init(path: path, trailingSlash: lastWasDirectory || segments.isEmpty))
    }

    @Test func decodeAgreesWithTheModel() {
        let pieces = ["/", "/", "a", "bc", ".", "..", "%2e", "%2E%2e", "%2f", "%5c", "%00", "%41", "%", "%z", "%4",
                      "?", "#", "?x=/..", "\\", "%C3%A9", "%ff", "\u{7f}", "é"]
        let prefixes = ["", "/", "http://h", "https://h:1", "HTTP://h/", "http:/", "*"]
        var g = SystemRandomNumberGenerator()
        for _ in 0..<3000 {
            var t = prefixes.randomElement(using: &g)!
            for _ in 0..<Int.random(in: 0...8, using: &g) { t += pieces.randomElement(using: &g)! }
            let got = RequestPath.decode(t), want = Self.model(t)
            #expect(got == want, "\(t.debugDescription)")
        }
    }

    /// A target that `isPlain` accepts is answered from its own bytes (the cached-missing
    /// path of the handler), so it must decode to exactly itself, with no trailing slash.
    @Test func plainTargetsDecodeToThemselves() {
        let pieces = ["/", "/", "a", "bc", ".", "..", ".a", "a.", "...", "%2e", "%41", "%", "?", "#", "\\", "é", " ",
                      "\u{7f}", "\u{01}", "~", "-_"]
        let prefixes = ["", "/", "//", "http://h"]
        var g = SystemRandomNumberGenerator()
        var plain = 0
        for _ in 0..<5000 {
            var t = prefixes.randomElement(using: &g)!
            for _ in 0..<Int.random(in: 0...8, using: &g) { t += pieces.randomElement(using: &g)! }
            let bytes = Array(t.utf8)
            let isPlain = bytes.withUnsafeBytes { RequestPath.isPlain($0) }
            guard isPlain else { continue }
            plain += 1
            #expect(RequestPath.decode(t) == .success(.init(path: t, trailingSlash: false)), "\(t.debugDescription)")
        }
        #expect(plain > 100, "the generator makes plain targets too")
        for t in ["/a/b.txt", "/missing/123456789.txt", "/.well-known/x"] {
            #expect(Array(t.utf8).withUnsafeBytes { RequestPath.isPlain($0) }, "\(t)")
        }
        for t in ["/", "/a/", "/a//b", "/a/./b", "/a/../b", "/..", "/a%20b", "/a?b", "/a#b", "/a\\b", "/é", "a/b", "http://h/a"] {
            #expect(!Array(t.utf8).withUnsafeBytes { RequestPath.isPlain($0) }, "\(t)")
        }
    }
}
