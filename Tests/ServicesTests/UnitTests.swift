import Testing
@testable import Services

@Suite struct UnitTests {
    @Test func httpDateRoundTrip() {
        #expect(HTTPDate.format(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.format(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HTTPDate.parse("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777)
        for t: Int64 in [0, 951_782_400, 1_709_164_800, 4_102_444_799] {
            #expect(HTTPDate.parse(HTTPDate.format(t)) == t)
        }
        #expect(HTTPDate.parse("Sunday, 06-Nov-94 08:49:37 GMT") == nil)
        #expect(HTTPDate.parse("garbage") == nil)
    }

    @Test func ranges() {
        typealias H = HTTPConnectionHandler<HostConnection>
        #expect(H.parseRange("bytes=0-0", size: 10) == .range(0, 0))
        #expect(H.parseRange("bytes=2-", size: 10) == .range(2, 9))
        #expect(H.parseRange("bytes=-3", size: 10) == .range(7, 9))
        #expect(H.parseRange("bytes=-30", size: 10) == .range(0, 9))
        #expect(H.parseRange("bytes=5-100", size: 10) == .range(5, 9))
        #expect(H.parseRange("bytes=10-", size: 10) == .unsatisfiable)
        #expect(H.parseRange("bytes=-0", size: 10) == .unsatisfiable)
        #expect(H.parseRange("bytes=0-", size: 0) == .unsatisfiable)
        #expect(H.parseRange("bytes=5-2", size: 10) == .ignore)
        #expect(H.parseRange("items=0-1", size: 10) == .ignore)
        #expect(H.parseRange("bytes=0-1,4-5", size: 10) == .ignore)
        #expect(H.parseRange("bytes=x-1", size: 10) == .ignore)
    }

    @Test func parserLimitsAndPieces() {
        func parse(_ s: String, _ limits: HTTPLimits = HTTPLimits()) -> HTTPParseResult {
            Array(s.utf8).withUnsafeBytes { HTTPParser.parse($0, limits: limits) }
        }
        guard case .complete(let h, let n) = parse("\r\nGET /a HTTP/1.0\r\nconnection: Keep-Alive\r\nRange: bytes=1-\r\n\r\nrest") else {
            Issue.record("not parsed"); return
        }
        #expect(n == 62)
        #expect(h.method == .get && h.targetOffset == 6 && h.targetLength == 2 && h.minorVersion == 0 && h.keepAlive && h.range == "bytes=1-")
        guard case .incomplete = parse("GET /a HTTP/1.1\r\nHost: x\r\n") else { Issue.record("should be incomplete"); return }
        var small = HTTPLimits()
        small.maxRequestLine = 16
        guard case .failure(.uriTooLong) = parse("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaa", small) else { Issue.record("414 expected"); return }
        guard case .complete(let c, _) = parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n") else { Issue.record(); return }
        #expect(!c.keepAlive)
    }

    @Test func addressesAndMIME() {
        #expect(SocketAddress(parsing: "127.0.0.1:8080") == .loopback(port: 8080))
        #expect(SocketAddress(parsing: ":80")?.ipv4 == 0)
        #expect(SocketAddress(parsing: "1.2.3:80") == nil)
        #expect(SocketAddress(parsing: "1.2.3.4") == nil)
        #expect(SocketAddress(parsing: "10.0.0.1:65535")?.description == "10.0.0.1:65535")
        #expect(MIMETypes.type(forPath: "/a/b.HTML") == "text/html; charset=utf-8")
        #expect(MIMETypes.type(forPath: "/a.d/noext") == "application/octet-stream")
        #expect(MIMETypes.type(forPath: "/x.png") == "image/png")
    }
}
