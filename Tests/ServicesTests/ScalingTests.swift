import Foundation
import Glibc
import Testing
@testable import Services

/// Many connections over every CPU, statistics, and shutdown with connections open.
@Suite(.serialized) struct ScalingTests {
    @Test func connectionsSpreadOverEveryCPU() async throws {
        let cpus = 4
        let s = try TestServer(cpus: cpus)
        let port = s.port
        let connections = 64, perConnection = 5
        let ok = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<connections {
                group.addTask {
                    try await blocking {
                        let c = try RawClient(port: port)
                        var good = 0
                        for _ in 0..<perConnection {
                            c.send("GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n")
                            if c.response()?.text == "hello\n" { good += 1 }
                        }
                        return good
                    }
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(ok == connections * perConnection)
        let http = s.server.statistics().http
        #expect(http.count == cpus)
        #expect(http.reduce(0) { $0 + $1.connectionsAccepted } == connections)
        #expect(http.reduce(0) { $0 + $1.requests } == connections * perConnection)
        for c in http { #expect(c.connectionsAccepted > 0, "cpu\(c.cpu) accepted no connection: \(http.map { $0.connectionsAccepted })") }
        // Each CPU's epoll delivered I/O events: the connections really lived there.
        for c in s.system.snapshot().cpus { #expect((c.counters["ioEvents"] ?? 0) > 0) }
        let report = try await s.shutdown()
        #expect(report.leakedThreads == 0)
    }

    @Test func statisticsPages() async throws {
        let s = try TestServer()
        let port = s.port
        let (json, html, head) = try await blocking {
            let c = try RawClient(port: port)
            c.send("GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\nGET /_stats.json HTTP/1.1\r\nHost: a\r\n\r\nGET /_stats HTTP/1.1\r\nHost: a\r\n\r\nHEAD /_stats HTTP/1.1\r\nHost: a\r\n\r\n")
            _ = c.response()
            return (c.response(), c.response(), c.response(head: true))
        }
        #expect(json?.status == 200)
        #expect(json?.headers["content-type"] == "application/json")
        let stats = try ServerStatistics.decoder().decode(ServerStatistics.self, from: Data(json?.body ?? []))
        #expect(stats.lwkt.cpuCount == 2)
        #expect(stats.http.count == 2)
        #expect(stats.http.reduce(0) { $0 + $1.requests } >= 2)
        #expect(stats.slab.types.contains { $0.name == "http-buffers" && $0.allocations > 0 })
        #expect(stats.lwkt.giant.contains { $0.name == "http.connection" && $0.mpSafe })
        #expect(stats.namecache.hits + stats.namecache.misses > 0)
        #expect(html?.status == 200)
        let page = html?.text ?? ""
        for needle in ["<svg", "IPI matrix", "Requests per CPU", "Zones per CPU", "hit rate", "Giant coverage", "http-equiv=\"refresh\""] {
            #expect(page.contains(needle), "stats page lacks \(needle)")
        }
        #expect(head?.status == 200)
        #expect(head?.body.isEmpty == true)
        try await s.shutdown()
    }

    @Test func cleanShutdownWithConnectionsOpen() async throws {
        let s = try TestServer()
        let port = s.port
        let clients = try await blocking {
            try (0..<16).map { i -> RawClient in
                let c = try RawClient(port: port, receiveTimeout: 10)
                if i % 2 == 0 {
                    c.send("GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n")
                    _ = c.response()
                } else {
                    c.send("GET /hello.txt HTTP/1.1\r\nHo")  // mid-request
                }
                return c
            }
        }
        // Let the half-sent requests reach the server.
        try await Task.sleep(for: .milliseconds(50))
        #expect(s.server.statistics().http.reduce(0) { $0 + $1.connectionsOpen } == 16)
        let report = try await s.shutdown()
        #expect(report.leakedThreads == 0)
        #expect(report.joinedCPUs == 2)
        let closed = try await blocking { clients.map { $0.closedByServer() } }
        #expect(closed.allSatisfy { $0 })
        #expect(s.server.statistics().http.reduce(0) { $0 + $1.connectionsOpen } == 0)
    }
}

extension RawClient: @unchecked Sendable {}

/// The per-CPU hot-file cache answers repeated requests and notices changed files.
@Suite(.serialized) struct HotCacheTests {
    @Test func changedFileIsServedAfterRevalidation() async throws {
        let root = makeTempDir("hotcache")
        defer { _ = try? FileManager.default.removeItem(atPath: root) }
        try "one\n".write(toFile: root + "/f.txt", atomically: true, encoding: .utf8)
        let s = try TestServer(cpus: 1, hostRoot: root)
        let port = s.port
        let first = try await blocking {
            let c = try RawClient(port: port)
            var out: [String] = []
            for _ in 0..<3 {
                c.send("GET /f.txt HTTP/1.1\r\nHost: a\r\n\r\n")
                out.append(c.response()?.text ?? "?")
            }
            return out
        }
        #expect(first == ["one\n", "one\n", "one\n"])
        #expect(s.server.core.caches[0].hits == 2)
        try "second\n".write(toFile: root + "/f.txt", atomically: true, encoding: .utf8)
        // The cache trusts an entry for at most HotFileCache.revalidateAfter (1 s).
        try await Task.sleep(for: .milliseconds(1200))
        let after = try await blocking {
            let c = try RawClient(port: port)
            c.send("GET /f.txt HTTP/1.1\r\nHost: a\r\n\r\n")
            return c.response()
        }
        #expect(after?.text == "second\n")
        #expect(after?.headers["content-length"] == "7")
        try FileManager.default.removeItem(atPath: root + "/f.txt")
        try await Task.sleep(for: .milliseconds(1200))
        let gone = try await blocking {
            let c = try RawClient(port: port)
            c.send("GET /f.txt HTTP/1.1\r\nHost: a\r\n\r\n")
            return c.response()?.status
        }
        #expect(gone == 404)
        try await s.shutdown()
    }
}
