import Foundation
import Glibc
import Testing
@testable import Services
import VFS

/// Issue 11 item 3: path and framing details nginx gets right, over a HostFS root.
@Suite(.serialized) struct HardeningTests {
    static func makeRoot() -> String {
        let root = makeTempDir("hardening")
        mkdir(root + "/sub", 0o755)
        _ = FileManager.default.createFile(atPath: root + "/a.txt", contents: Data("hello a\n".utf8))
        _ = FileManager.default.createFile(atPath: root + "/index.html", contents: Data("<p>index</p>\n".utf8))
        _ = FileManager.default.createFile(atPath: root + "/sub/b.txt", contents: Data("bee\n".utf8))
        return root
    }

    static func get(_ port: UInt16, _ target: String, _ extra: String = "", prefix: String = "") throws -> RawResponse? {
        let c = try RawClient(port: port)
        c.send(prefix + "GET \(target) HTTP/1.1\r\nHost: a\r\n\(extra)\r\n")
        return c.response()
    }

    @Test func pathsAndFramingAsNginx() async throws {
        let root = Self.makeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let s = try TestServer(cpus: 1, hostRoot: root)
        let port = s.port
        try await blocking {
            // A file asked for as a directory: ENOTDIR, 404.
            for t in ["/a.txt/", "/index.html/.", "/a.txt/.", "/sub/b.txt/", "/a.txt/%2e"] {
                #expect(try Self.get(port, t)?.status == 404, "\(t)")
            }
            // Dot segments inside the root are resolved; above the root they are refused.
            for t in ["/sub/./../a.txt", "/sub/../a.txt", "/./a.txt", "/sub/%2e%2e/a.txt", "/sub/x/../../a.txt"] {
                let r = try Self.get(port, t)
                #expect(r?.status == 200 && r?.text == "hello a\n", "\(t): \(String(describing: r?.status))")
            }
            #expect(try Self.get(port, "/sub/../../a.txt")?.status == 403)
            #expect(try Self.get(port, "/a.txt/..")?.status == 200)  // that is "/", as nginx resolves it
            #expect(try Self.get(port, "/sub/.")?.status == 200)
            // Empty lines before the request line are ignored (RFC 9112 §2.2).
            for count in [1, 33, 100, 2000] {
                let lines = String(repeating: "\r\n", count: count)
                let r = try Self.get(port, "/a.txt", prefix: lines)
                #expect(r?.status == 200 && r?.text == "hello a\n", "\(count) empty lines: \(String(describing: r?.status))")
            }
            // …but not without end.
            #expect(try Self.get(port, "/a.txt", prefix: String(repeating: "\r\n", count: 5000))?.status == 400)
            // An impossible If-Modified-Since date is ignored; a real later one gives 304.
            let bad = try Self.get(port, "/a.txt", "If-Modified-Since: Mon, 29 Feb 2100 00:00:00 GMT\r\n")
            #expect(bad?.status == 200 && bad?.text == "hello a\n")
            #expect(try Self.get(port, "/a.txt", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n")?.status == 304)
            #expect(try Self.get(port, "/a.txt", "If-Modified-Since: Sat, 31 Apr 2100 00:00:00 GMT\r\n")?.status == 200)
            // A range whose end is past any size is clamped (206), however many digits.
            for end in ["9223372036854775807", "9223372036854775808", "99999999999999999999999999"] {
                let r = try Self.get(port, "/a.txt", "Range: bytes=0-\(end)\r\n")
                #expect(r?.status == 206, "end \(end)")
                #expect(r?.headers["content-range"] == "bytes 0-7/8", "end \(end)")
                #expect(r?.text == "hello a\n")
            }
            let suffix = try Self.get(port, "/a.txt", "Range: bytes=-99999999999999999999999\r\n")
            #expect(suffix?.status == 206 && suffix?.text == "hello a\n")
            #expect(try Self.get(port, "/a.txt", "Range: bytes=99999999999999999999999-\r\n")?.status == 416)
        }
        try await s.shutdown()
    }

    @Test func unitLevelDetails() throws {
        #expect(HTTPDate.parse("Mon, 29 Feb 2100 00:00:00 GMT") == nil)
        #expect(HTTPDate.parse("Tue, 29 Feb 2000 00:00:00 GMT") != nil)
        #expect(HTTPDate.parse("Thu, 31 Jun 2024 00:00:00 GMT") == nil)
        typealias H = HTTPConnectionHandler<HostConnection>
        #expect(H.parseRange("bytes=0-9223372036854775807", size: 10) == .range(0, 9))
        #expect(H.parseRange("bytes=3-99999999999999999999999", size: 10) == .range(3, 9))
        #expect(H.parseRange("bytes=-99999999999999999999999", size: 10) == .range(0, 9))
        #expect(H.parseRange("bytes=99999999999999999999999-", size: 10) == .unsatisfiable)
        #expect(try RequestPath.decode("/sub/./../a.txt").get() == .init(path: "/a.txt", trailingSlash: false))
        #expect(try RequestPath.decode("/index.html/.").get() == .init(path: "/index.html", trailingSlash: true))
        #expect(try RequestPath.decode("/a/b/..").get() == .init(path: "/a", trailingSlash: true))
        #expect(H.matches("\"abc\"", "\"abc\""))
        #expect(H.matches(" W/\"abc\" ", "\"abc\""))
        #expect(H.matches("\"x\", \"abc\"", "\"abc\""))
        #expect(H.matches("\"x\",*", "\"abc\""))
        #expect(!H.matches("\"ab\"", "\"abc\""))
        #expect(!H.matches("", "\"abc\""))
        #expect(!H.matches(",, ,", "\"abc\""))
        guard case .failure(.forbidden) = RequestPath.decode("/a/../..") else { Issue.record("escaped the root"); return }
    }

    /// Issue 18: large host files go out by sendfile; full bodies, ranges and the request
    /// pipelined behind them all arrive intact, on both hot-cache settings.
    @Test(arguments: [true, false]) func largeFilesBySendfile(_ hotCache: Bool) async throws {
        let root = Self.makeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        var rng = SystemRandomNumberGenerator()
        let big = (0..<(1 << 20) + 17).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let mid = (0..<20_000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        _ = FileManager.default.createFile(atPath: root + "/big.bin", contents: Data(big))
        _ = FileManager.default.createFile(atPath: root + "/mid.bin", contents: Data(mid))
        let s = try TestServer(cpus: 1, hostRoot: root) { $0.hotCacheEnabled = hotCache }
        let port = s.port
        try await blocking { () throws in
            let c = try RawClient(port: port)
            c.send("GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\nGET /mid.bin HTTP/1.1\r\nHost: a\r\n\r\n"
                   + "GET /big.bin HTTP/1.1\r\nHost: a\r\nRange: bytes=100000-899999\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n")
            let r1 = c.response(), r2 = c.response(), r3 = c.response(), r4 = c.response()
            #expect(r1?.status == 200 && r1?.body == big)
            #expect(r2?.status == 200 && r2?.body == mid)
            #expect(r3?.status == 206 && r3?.body == Array(big[100000...899999]))
            #expect(r4?.text == "hello a\n")
        }
        let sent = s.server.statistics().http.reduce(0) { $0 + $1.bytesSent }
        #expect(sent > big.count + 800_000 + mid.count)
        try await s.shutdown()
    }

    /// Issue 18: with the hot cache off, repeated requests for a host file are answered from
    /// the open-file cache (no lookup, no open): full bodies, HEAD, 304 and ranges alike.
    @Test func openFileCacheAnswersRepeatedRequests() async throws {
        let root = Self.makeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let s = try TestServer(cpus: 1, hostRoot: root) { $0.hotCacheEnabled = false }
        let port = s.port
        let etag = try await blocking { () throws -> String? in
            let first = try Self.get(port, "/a.txt")
            #expect(first?.text == "hello a\n")
            return first?.headers["etag"]
        }
        guard let etag else { Issue.record("no ETag"); return }
        try await blocking { () throws in
            let c = try RawClient(port: port)
            for _ in 0..<5 {
                c.send("GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\n")
                #expect(c.response()?.text == "hello a\n")
                c.send("HEAD /a.txt HTTP/1.1\r\nHost: a\r\n\r\n")
                let h = c.response(head: true)
                #expect(h?.status == 200 && h?.headers["content-length"] == "8")
                c.send("GET /a.txt HTTP/1.1\r\nHost: a\r\nIf-None-Match: \(etag)\r\n\r\n")
                #expect(c.response()?.status == 304)
                c.send("GET /a.txt HTTP/1.1\r\nHost: a\r\nRange: bytes=6-\r\n\r\n")
                let r = c.response()
                #expect(r?.status == 206 && r?.text == "a\n")
            }
        }
        let cache = s.server.core.openFiles[0]
        #expect(cache.hits >= 20, "hits \(cache.hits), misses \(cache.misses)")
        try await s.shutdown()
    }

    /// The open-file cache never holds more descriptors than its budget, and closes the
    /// ones it drops.
    @Test func openFileCacheKeepsToItsBudget() throws {
        let root = Self.makeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fd = open(root + "/a.txt", O_RDONLY)
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        let attrs = FileAttributes(type: .regular, mode: 0o644, uid: 0, gid: 0, nlink: 1, size: 8, device: 1, inode: UInt64(st.st_ino),
                                   atime: .init(seconds: 0, nanoseconds: 0), mtime: .init(seconds: 0, nanoseconds: 0),
                                   ctime: .init(seconds: 0, nanoseconds: 0))
        // Only descriptors of this file count: suites running in parallel open their own.
        let file = URL(fileURLWithPath: root + "/a.txt").resolvingSymlinksInPath().path
        let countOpen = { () -> Int in
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
            return fds.filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0)) == file }.count
        }
        let before = countOpen()
        do {
            let cache = OpenFileCache(budget: 3, validity: .seconds(60))
            for k in 0..<200 {
                let key = Array("/file\(k)".utf8)
                _ = key.withUnsafeBytes { cache.insert(key: $0, path: "/a.txt", hostFD: fd, attrs: attrs, etag: "\"e\"", contentType: "text/plain") }
                #expect(cache.live <= 3)
            }
            #expect(cache.live == 3)
            #expect(countOpen() - before <= 3)
        }
        #expect(countOpen() <= before)
    }
}
