import Foundation
import Glibc
import Testing
@testable import Services

/// Nothing outside the served root is ever served, however the path is spelled.
@Suite(.serialized) struct TraversalTests {
    static let attempts: [String] = [
        "/../secret.txt", "/docs/../../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt",
        "/.%2e/secret.txt", "/%2e./secret.txt", "/docs/%2e%2e/%2e%2e/secret.txt", "/..%2fsecret.txt",
        "/docs/..%2F..%2Fsecret.txt", "/%2e%2e%2fsecret.txt", "/..%5csecret.txt", "/..\\secret.txt",
        "/docs%2f..%2f..%2fsecret.txt", "/secret.txt%00.html", "/%00", "/docs/%00/../../secret.txt",
        "/%252e%252e/secret.txt", "/%c0%ae%c0%ae/secret.txt", "/./.././secret.txt", "//../secret.txt",
        "http://host/../secret.txt", "http://host/%2e%2e/secret.txt", "/outside/secret.txt", "/abs/secret.txt",
        "/up/secret.txt", "/loop/x",
    ]

    @Test func requestPathRefusesEscapes() throws {
        for t in ["/../a", "/a/../../b", "/%2e%2e/a", "/.%2E/a", "/a%2fb", "/a%2Fb", "/a%5cb", "/a\\b"] {
            guard case .failure(let s) = RequestPath.decode(t) else { Issue.record("accepted \(t)"); continue }
            #expect(s == .forbidden, "\(t)")
        }
        for t in ["/a%00b", "/%zz", "relative", "*", "/a\u{7f}"] {
            guard case .failure(let s) = RequestPath.decode(t) else { Issue.record("accepted \(t)"); continue }
            #expect(s == .badRequest, "\(t)")
        }
        #expect(try RequestPath.decode("/a/./b//c/?q=1").get() == .init(path: "/a/b/c", trailingSlash: true))
        #expect(try RequestPath.decode("/caf%C3%A9.txt").get().path == "/café.txt")
        #expect(try RequestPath.decode("http://h:80/x/y").get().path == "/x/y")
        #expect(try RequestPath.decode("/").get() == .init(path: "/", trailingSlash: true))
    }

    /// A host directory served through HostFS, with a secret beside it and symlinks in it
    /// that point outside (absolute, relative, through a directory).
    @Test func hostRootWithSymlinksOutside() async throws {
        let top = makeTempDir("traversal")
        defer { _ = try? FileManager.default.removeItem(atPath: top) }
        let secret = "TOP-SECRET-\(UInt32.random(in: 0...UInt32.max))"
        let root = top + "/www"
        try FileManager.default.createDirectory(atPath: root + "/docs", withIntermediateDirectories: true)
        try secret.write(toFile: top + "/secret.txt", atomically: true, encoding: .utf8)
        try "public\n".write(toFile: root + "/index.html", atomically: true, encoding: .utf8)
        try "doc\n".write(toFile: root + "/docs/a.txt", atomically: true, encoding: .utf8)
        symlink(top + "/secret.txt", root + "/abs-secret.txt")
        symlink("../secret.txt", root + "/rel-secret.txt")
        symlink(top, root + "/outside")
        symlink("/", root + "/abs")
        symlink("..", root + "/up")
        symlink("loop", root + "/loop")
        symlink("docs/a.txt", root + "/inside-link.txt")

        let s = try TestServer(hostRoot: root)
        let port = s.port
        let targets = Self.attempts + ["/abs-secret.txt", "/rel-secret.txt", "/outside/secret.txt", "/up/secret.txt"]
        let results = try await blocking {
            try targets.map { t -> (String, Int, String) in
                let c = try RawClient(port: port)
                c.send("GET \(t) HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                let r = c.response()
                return (t, r?.status ?? -1, r?.text ?? "")
            }
        }
        for (t, status, body) in results {
            #expect([400, 403, 404].contains(status), "\(t) → \(status)")
            #expect(!body.contains(secret), "\(t) leaked the secret")
        }
        // A symlink that stays inside the root is followed.
        let inside = try await blocking {
            let c = try RawClient(port: port)
            c.send("GET /inside-link.txt HTTP/1.1\r\nHost: a\r\n\r\n")
            return c.response()
        }
        #expect(inside?.status == 200)
        #expect(inside?.text == "doc\n")
        try await s.shutdown()
    }

    /// The same attempts against the demo site in MemFS, served from a subdirectory.
    @Test func memFSSubtreeRoot() async throws {
        let s = try TestServer(servedRoot: "/site", populate: { p in
            try p.mkdir("/site")
            try p.mkdir("/site/docs")
            let fd = try p.open("/secret.txt", [.writeOnly, .create])
            _ = try p.write(fd, Array("MEMFS-SECRET".utf8))
            try p.close(fd)
            try p.symlink("/secret.txt", "/site/abs-secret.txt")
            try p.symlink("../secret.txt", "/site/rel-secret.txt")
            try p.symlink("..", "/site/up")
        })
        let port = s.port
        let results = try await blocking {
            try (Self.attempts + ["/abs-secret.txt", "/rel-secret.txt", "/up/secret.txt"]).map { t -> (String, Int, String) in
                let c = try RawClient(port: port)
                c.send("GET \(t) HTTP/1.1\r\nHost: a\r\n\r\n")
                let r = c.response()
                return (t, r?.status ?? -1, r?.text ?? "")
            }
        }
        for (t, status, body) in results {
            #expect([400, 403, 404].contains(status), "\(t) → \(status)")
            #expect(!body.contains("MEMFS-SECRET"), "\(t) leaked the secret")
        }
        try await s.shutdown()
    }
}
