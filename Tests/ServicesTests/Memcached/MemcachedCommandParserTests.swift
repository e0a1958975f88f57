import Testing
@testable import Services
import LibellulaTestSupport

/// The parser alone: bytes in, a command, an error or "incomplete" out, with the consumed
/// count covering every data block.
@Suite struct MemcachedCommandParserTests {
    let parser = MemcachedCommandParser()

    /// Parses `text` (copied into a buffer the test owns) and describes the result.
    func parse(_ text: [UInt8]) -> String {
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(1, text.count), alignment: 8)
        defer { p.deallocate() }
        p.copyMemory(from: text, byteCount: text.count)
        return describe(parser.parse(p, count: text.count, now: 1_000_000))
    }

    func parse(_ s: String) -> String { parse(Array(s.utf8)) }

    func describe(_ r: ParseResult) -> String {
        switch r {
        case .incomplete(let need): return "incomplete \(need)"
        case .error(let reply, let consumed, let close):
            return "error \(reply.description.debugDescription) \(consumed)\(close ? " close" : "")"
        case .command(let c, let consumed):
            switch c {
            case .key(let op):
                let key = op.key.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: op.keyLength), as: UTF8.self) } ?? ""
                return "\(op.kind) \(key) v\(op.valueLength)\(op.tooLarge ? " tooLarge" : "")\(op.noreply ? " noreply" : "") \(consumed)"
            case .retrieve(let op, let keys): return "\(op.kind) [\(String(decoding: keys, as: UTF8.self))] \(consumed)"
            case .flushAll(let d, let n): return "flush \(d) \(n) \(consumed)"
            case .stats(let a): return "stats [\(String(decoding: a, as: UTF8.self))] \(consumed)"
            case .version: return "version \(consumed)"
            case .verbosity: return "verbosity \(consumed)"
            case .noop: return "mn \(consumed)"
            case .quit: return "quit \(consumed)"
            }
        }
    }

    @Test func commandsAndConsumedCounts() {
        #expect(parse("get a b\r\n") == "get [a b] 9")
        #expect(parse("set k 0 0 5\r\nhello\r\nget k\r\n") == "set k v5 20")
        #expect(parse("set k 0 0 5\r\nhel") == "incomplete 20")
        #expect(parse("set k 0 0") == "incomplete 0")
        #expect(parse("ms k 2 T10\r\nhi\r\n") == "metaSet k v2 16")
        #expect(parse("mn\r\n") == "mn 4")
        #expect(parse("stats detail on\r\n") == "stats [detail on] 17")
        #expect(parse("\r\n") == #"error "ERROR\r\n" 2"#)
    }

    /// Issue 11 item 5: a refused `ms` swallows its data block (it never runs as commands).
    @Test func refusedMetaSetConsumesItsData() {
        let cases = ["ms k 9 E999\r\nflush_all\r\n", "ms k 9 Z\r\nflush_all\r\n", "ms k 9 T1 T1\r\nflush_all\r\n",
                     "ms k 9 MX\r\nflush_all\r\n", "ms k 9 Tx\r\nflush_all\r\n", "ms @@ 9 b\r\nflush_all\r\n",
                     "ms k 9 O\(String(repeating: "o", count: 32))\r\nflush_all\r\n"]
        for c in cases {
            let r = parse(c)
            #expect(r.hasPrefix("error") && r.hasSuffix(" \(c.utf8.count)"), "\(c.debugDescription) -> \(r)")
        }
        // Too large: the consumed count covers data that has not arrived yet.
        #expect(parse("ms k 2000000\r\nabc") == "metaSet k v0 tooLarge 2000016")
        #expect(parse("set k 0 0 1048517\r\n") == "set k v0 tooLarge 1048538")
        #expect(parse("set k 0 0 1048516\r\n") == "incomplete 1048537")
    }

    /// Where memcached would not read the block (its length unknown), the parser closes.
    @Test func unknownLengthCloses() {
        #expect(parse("set k 0 0 abc\r\nflush_all\r\n") == #"error "CLIENT_ERROR bad command line format\r\n" 15 close"#)
        #expect(parse("set k x 0 5\r\nflush_all\r\n") == #"error "CLIENT_ERROR bad command line format\r\n" 13 close"#)
        #expect(parse("ms k abc\r\n") == #"error "CLIENT_ERROR bad command line format\r\n" 10 close"#)
        #expect(parse("set k 0 0\r\n") == #"error "ERROR\r\n" 11 close"#)
        #expect(parse("set k 0 0 -1 noreply\r\n") == #"error "" 22 close"#)
        #expect(parse([0x80, 0x00, 0x00, 0x05]) == #"error "" 4 close"#)
    }

    @Test func base64KeysDecodeOnlyWhenWhole() {
        let text = Array("ms Zm9v 2 b\r\nhi\r\n".utf8)
        let p = UnsafeMutableRawPointer.allocate(byteCount: text.count, alignment: 8)
        defer { p.deallocate() }
        p.copyMemory(from: text, byteCount: text.count)
        // Incomplete: the bytes stay as they were, so the next parse sees the same key.
        #expect(describe(parser.parse(p, count: 14, now: 0)) == "incomplete 17")
        #expect(memcmpBytes(p, text, text.count))
        #expect(describe(parser.parse(p, count: text.count, now: 0)) == "metaSet foo v2 17")
        #expect(parse("mg Zm9v= b\r\n") == #"error "CLIENT_ERROR error decoding key\r\n" 12"#)
    }

    /// Any input fed in any split gives the same commands as fed whole, never consumes
    /// past what a command covers, and never traps.
    @Test func fuzzSplitsAgreeWithWhole() {
        var rng = SeededRandom(seed: 0x5EED)
        let pieces = ["set k 0 0 3\r\nabc\r\n", "get a b c\r\n", "ms k 2 T1 b\r\nhi\r\n", "ms Zm9v 2 b k\r\nhi\r\n",
                      "mg k v c O123\r\n", "ms k 9 E999\r\nflush_all\r\n", "cas k 0 0 1 5\r\nx\r\n", "incr k 1\r\n",
                      "ms k 3 MX\r\nabc\r\n", "delete k noreply\r\n", "ma k N0 J5 v\r\n", "me k\r\n", "set k 0 0 2\r\nabcd\r\n",
                      "bogus\r\n", "\r\n", "gat 10 k\r\n", "flush_all 0\r\n", "set k 5 0 1 noreply\r\nz\r\n"]
        for _ in 0..<300 {
            var stream: [UInt8] = []
            for _ in 0..<Int(rng.next() % 12 + 1) {
                var b = Array(pieces[Int(rng.next() % UInt64(pieces.count))].utf8)
                if rng.next() % 10 == 0 { b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next()) }
                stream += b
            }
            let whole = run(stream, chunk: stream.count)
            let split = run(stream, chunk: Int(rng.next() % 7 + 1))
            #expect(whole == split)
        }
    }

    /// Feeds `stream` `chunk` bytes at a time the way a session does; returns what it saw.
    func run(_ stream: [UInt8], chunk: Int) -> [String] {
        let p = UnsafeMutableRawPointer.allocate(byteCount: stream.count + 1, alignment: 8)
        defer { p.deallocate() }
        p.copyMemory(from: stream, byteCount: stream.count)
        var seen: [String] = []
        var have = 0
        var pos = 0
        var skip = 0
        while have < stream.count {
            have = min(stream.count, have + chunk)
            loop: while true {
                if skip > 0 { let k = min(skip, have - pos); pos += k; skip -= k; if skip > 0 { break } }
                if pos == have { break }
                let r = parser.parse(p + pos, count: have - pos, now: 0)
                switch r {
                case .incomplete: break loop
                case .error(_, let consumed, let close):
                    seen.append(describe(r))
                    if close { return seen }
                    let k = min(consumed, have - pos); pos += k; skip = consumed - k
                case .command(_, let consumed):
                    seen.append(describe(r))
                    #expect(consumed > 0)
                    let k = min(consumed, have - pos); pos += k; skip = consumed - k
                }
            }
        }
        return seen
    }
}

