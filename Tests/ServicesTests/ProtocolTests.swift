import Foundation
import Glibc
import Testing
import VFS
@testable import Services

/// Requests no well-behaved client sends: pipelining, every error status, malformed and
/// oversized input, slow clients.
@Suite(.serialized) struct ProtocolTests {
    /// Sends `request` on a fresh connection; returns the first response.
    func exchange(_ port: UInt16, _ request: [UInt8], head: Bool = false) async throws -> RawResponse? {
        try await blocking {
            let c = try RawClient(port: port)
            c.send(request)
            return c.response(head: head)
        }
    }

    func exchange(_ port: UInt16, _ request: String, head: Bool = false) async throws -> RawResponse? {
        try await exchange(port, Array(request.utf8), head: head)
    }

    @Test func pipelinedRequestsAnsweredInOrder() async throws {
        let s = try TestServer()
        let port = s.port
        let responses = try await blocking {
            let c = try RawClient(port: port)
            var req = ""
            for p in ["/hello.txt", "/missing", "/style.css", "/docs/lwkt.txt"] { req += "GET \(p) HTTP/1.1\r\nHost: t\r\n\r\n" }
            req += "HEAD /hello.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            c.send(req)
            var out: [RawResponse?] = []
            for i in 0..<6 { out.append(c.response(head: i == 4)) }
            return (out, c.closedByServer())
        }
        #expect(responses.0.map { $0?.status } == [200, 404, 200, 200, 200, 200])
        #expect(responses.0[0]?.text == "hello\n")
        #expect(responses.0[2]?.text.hasPrefix("body{") == true)
        #expect(responses.0[3]?.text.hasPrefix("Each CPU") == true)
        #expect(responses.0[5]?.headers["connection"] == "close")
        #expect(responses.1, "the server closes after Connection: close")
        try await s.shutdown()
    }

    @Test func pipelinedBurstLargerThanBuffers() async throws {
        let s = try TestServer()
        let port = s.port
        let n = 400
        let statuses = try await blocking {
            let c = try RawClient(port: port)
            let one = "GET /docs/slab.txt HTTP/1.1\r\nHost: t\r\n\r\n"
            c.send(String(repeating: one, count: n))
            return (0..<n).map { _ in c.response()?.status ?? 0 }
        }
        #expect(statuses.allSatisfy { $0 == 200 })
        try await s.shutdown()
    }

    @Test func everyErrorStatus() async throws {
        var limits = HTTPLimits()
        limits.maxRequestLine = 1024
        limits.maxHeaderBytes = 4096
        limits.maxHeaderCount = 20
        limits.maxBody = 1000
        let s = try TestServer(configure: { $0.limits = limits })
        let port = s.port
        let cases: [(String, String, Int)] = [
            ("garbage", "\u{1}\u{2}\u{3} nonsense\r\n\r\n", 400),
            ("missing Host", "GET / HTTP/1.1\r\n\r\n", 400),
            ("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
            ("obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
            ("lowercase version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400),
            ("relative target", "GET hello.txt HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("bad percent", "GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("bad content-length", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400),
            ("chunked GET", "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
            ("traversal", "GET /../x HTTP/1.1\r\nHost: a\r\n\r\n", 403),
            ("missing", "GET /nothing/here HTTP/1.1\r\nHost: a\r\n\r\n", 404),
            ("POST", "POST /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", 405),
            ("DELETE", "DELETE /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n", 405),
            ("big body", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n", 413),
            ("long URI", "GET /" + String(repeating: "a", count: 2000) + " HTTP/1.1\r\nHost: a\r\n\r\n", 414),
            ("range", "GET /hello.txt HTTP/1.1\r\nHost: a\r\nRange: bytes=100-\r\n\r\n", 416),
            ("big header", "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "b", count: 5000) + "\r\n\r\n", 431),
            ("many headers", "GET / HTTP/1.1\r\nHost: a\r\n" + String(repeating: "X-A: b\r\n", count: 30) + "\r\n", 431),
            ("HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ]
        for (name, req, want) in cases {
            let r = try await exchange(port, req)
            #expect(r?.status == want, "\(name): got \(r?.status ?? -1)")
            if want >= 400 { #expect(r?.text.contains("\(want)") == true, "\(name): error page names the status") }
        }
        // A NUL byte in a header value.
        var nul = Array("GET / HTTP/1.1\r\nHost: a\r\nX: a".utf8)
        nul += [0] + Array("b\r\n\r\n".utf8)
        #expect(try await exchange(port, nul)?.status == 400)
        // GET with a small body: the body is skipped and the next request is served.
        let skipped = try await blocking {
            let c = try RawClient(port: port)
            c.send("GET /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nXXXXXGET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n")
            return [c.response()?.status, c.response()?.status]
        }
        #expect(skipped == [200, 200])
        try await s.shutdown()
    }

    @Test func internalErrorIs500() async throws {
        let s = try TestServer(populate: { p in
            try p.mkdir("/broken")
            try p.mkdir("/broken/mnt")
            try p.vfs.mount(FailingFS(), at: "/broken/mnt", by: p)
        })
        let r = try await exchange(s.port, "GET /broken/mnt/file HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(r?.status == 500)
        try await s.shutdown()
    }

    @Test func connectionLimitGives503() async throws {
        let s = try TestServer(cpus: 1, configure: { $0.maxConnectionsPerCPU = 1 })
        let port = s.port
        let statuses = try await blocking {
            let first = try RawClient(port: port)
            first.send("GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n")
            let a = first.response()?.status
            let second = try RawClient(port: port)
            let b = second.response()?.status
            let closed = second.closedByServer()
            return (a, b, closed)
        }
        #expect(statuses.0 == 200)
        #expect(statuses.1 == 503)
        #expect(statuses.2)
        #expect(s.server.statistics().http[0].connectionsRejected == 1)
        try await s.shutdown()
    }

    @Test func slowClientIsServed() async throws {
        // 3 ms a byte is 0.14 s for the head; the limit is generous because on a loaded
        // machine each pause can take far longer than asked.
        let s = try TestServer(configure: { $0.requestTimeout = .seconds(30) })
        let port = s.port
        let r = try await blocking {
            let c = try RawClient(port: port)
            for b in "GET /hello.txt HTTP/1.1\r\nHost: slow\r\n\r\n".utf8 {
                c.send([b])
                usleep(3000)
            }
            return c.response()
        }
        #expect(r?.status == 200)
        #expect(r?.text == "hello\n")
        try await s.shutdown()
    }

    @Test func stalledAndIdleClientsAreClosed() async throws {
        let s = try TestServer(configure: {
            $0.requestTimeout = .milliseconds(300)
            $0.idleTimeout = .milliseconds(300)
        })
        let port = s.port
        let closed = try await blocking {
            // Half a request head, then silence (slowloris).
            let stalled = try RawClient(port: port)
            stalled.send("GET /hello.txt HTTP/1.1\r\nHo")
            // A keep-alive connection that goes quiet after one request.
            let idle = try RawClient(port: port)
            idle.send("GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n")
            let ok = idle.response()?.status == 200
            return (stalled.closedByServer(), ok && idle.closedByServer())
        }
        #expect(closed.0)
        #expect(closed.1)
        let timeouts = s.server.statistics().http.reduce(0) { $0 + $1.timeouts }
        #expect(timeouts >= 2)
        try await s.shutdown()
    }

    @Test func tricklingClientGets408() async throws {
        let s = try TestServer(configure: { $0.requestTimeout = .milliseconds(400) })
        let port = s.port
        let r = try await blocking {
            let c = try RawClient(port: port)
            // One byte every 50 ms: each read is quick, but the head as a whole is too slow.
            var header = Array("GET /hello.txt HTTP/1.1\r\nHost: a\r\nX-Slow: ".utf8)
            header += Array(repeating: UInt8(ascii: "z"), count: 200)
            var pfd = pollfd(fd: c.fd, events: Int16(POLLIN), revents: 0)
            for b in header {
                c.send([b])
                if poll(&pfd, 1, 50) > 0 { break }  // the server answered
            }
            return (c.response(), c.closedByServer())
        }
        #expect(r.0?.status == 408)
        #expect(r.1)
        try await s.shutdown()
    }

    @Test func slowReaderGetsLargeFileWithBackPressure() async throws {
        let big = (0..<600_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let s = try TestServer(populate: { p in
            let fd = try p.open("/big.bin", [.writeOnly, .create])
            _ = try p.write(fd, big)
            try p.close(fd)
        })
        let port = s.port
        let body = try await blocking {
            let c = try RawClient(port: port)
            var small: Int32 = 65536
            setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
            c.send("GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
            usleep(200_000)  // let the server hit a full send buffer
            return c.response()?.body
        }
        #expect(body == big)
        try await s.shutdown()
    }
}

/// A file system whose files all fail to open with EIO (for the 500 path).
final class FailingFS: FileSystem, @unchecked Sendable {
    let inner = MemFS()
    init() {
        let p = VirtualFileSystem(rootFileSystem: inner).makeProcess()
        if let fd = try? p.open("/file", [.writeOnly, .create]) { try? p.close(fd) }
    }
    var rootNode: any FSNode { inner.rootNode }
    var deviceID: UInt64 { 4242 }
    var changesBehindCache: Bool { false }
    func resolve(_ name: [UInt8], in directory: any FSNode) throws(VFSError) -> (any FSNode)? { try inner.resolve(name, in: directory) }
    func revalidate(_ name: [UInt8], in directory: any FSNode, cached: (any FSNode)?) -> Bool { true }
    func attributes(of node: any FSNode) throws(VFSError) -> FileAttributes { try inner.attributes(of: node) }
    func setAttributes(of node: any FSNode, _ change: AttributeChange) throws(VFSError) { throw .rofs }
    func create(_ name: [UInt8], in directory: any FSNode, mode: UInt32, credentials: Credentials) throws(VFSError) -> any FSNode { throw .rofs }
    func makeDirectory(_ name: [UInt8], in directory: any FSNode, mode: UInt32, credentials: Credentials) throws(VFSError) -> any FSNode { throw .rofs }
    func makeSymlink(_ name: [UInt8], in directory: any FSNode, target: [UInt8], credentials: Credentials) throws(VFSError) -> any FSNode { throw .rofs }
    func link(_ node: any FSNode, as name: [UInt8], in directory: any FSNode) throws(VFSError) { throw .rofs }
    func unlink(_ name: [UInt8], in directory: any FSNode, node: any FSNode) throws(VFSError) { throw .rofs }
    func removeDirectory(_ name: [UInt8], in directory: any FSNode, node: any FSNode) throws(VFSError) { throw .rofs }
    func rename(_ name: [UInt8], in directory: any FSNode, to newName: [UInt8], in newDirectory: any FSNode) throws(VFSError) { throw .rofs }
    func readSymlink(_ node: any FSNode) throws(VFSError) -> [UInt8] { try inner.readSymlink(node) }
    func open(_ node: any FSNode, name: [UInt8], in directory: (any FSNode)?, read: Bool, write: Bool) throws(VFSError) -> any FSOpenFile { throw .io }
}
