import Foundation
import Glibc
import Testing

/// The `libellula` command as a user meets it: real processes, their exit statuses and
/// messages. Skipped (with a message) when the binary is not built.
@Suite(.serialized) struct CLITests {
    /// A `serve` with HTTP and memcached on ports the kernel picked; nil when not built.
    static func startServe(_ extra: [String] = []) throws -> (CLIProcess, http: UInt16, memcached: UInt16)? {
        guard let binary = libellulaBinary else {
            print("skipping: libellula is not built (swift build)")
            return nil
        }
        let p = try CLIProcess(binary, ["serve", "--cpus", "2", "--http", "127.0.0.1:0", "--memcached", "127.0.0.1:0"] + extra)
        guard let http = p.port(after: "on http://127.0.0.1:"), let mc = p.port(after: "memcached protocol on 127.0.0.1:") else {
            Issue.record("no addresses in the log: \(p.output)")
            return nil
        }
        return (p, http, mc)
    }

    /// Expects `arguments` to fail at once with "address already in use" and no usage line.
    static func expectAddressInUse(_ arguments: [String]) throws {
        guard let binary = libellulaBinary else { return }
        let p = try CLIProcess(binary, arguments)
        let status = p.waitForExit(timeout: 20)
        let text = p.output
        #expect(status != nil, "`libellula \(arguments.joined(separator: " "))` started beside the first instance: \(text)")
        #expect(status == 69, "status \(String(describing: status)): \(text)")
        #expect(text.lowercased().contains("address already in use"), "\(text)")
        #expect(!text.contains("Usage:"), "\(text)")
    }

    /// Issue 11 item 7: a second instance on an address in use is refused, for every listener.
    @Test func secondInstanceOnTheSameAddressIsRefused() async throws {
        guard let (first, http, mc) = try Self.startServe() else { return }
        try await blocking {
            try Self.expectAddressInUse(["serve", "--cpus", "2", "--http", "127.0.0.1:\(http)", "--no-memcached"])
            try Self.expectAddressInUse(["serve", "--cpus", "2", "--http", "127.0.0.1:0", "--memcached", "127.0.0.1:\(mc)"])
            try Self.expectAddressInUse(["serve", "--cpus", "2", "--http", "127.0.0.1:0", "--memcached", "127.0.0.1:\(http)"])
            try Self.expectAddressInUse(["memcached", "--cpus", "2", "--listen", "127.0.0.1:\(mc)"])
            try Self.expectAddressInUse(["memcached", "--cpus", "2", "--listen", "127.0.0.1:\(http)"])
        }
        // The first instance still serves, and stops cleanly.
        let page = try await blocking { () -> RawResponse? in
            let c = try RawClient(port: http)
            c.send("GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n")
            return c.response()
        }
        #expect(page?.status == 200)
        first.signal(SIGTERM)
        #expect(first.waitForExit(timeout: 30) == 0, "\(first.output)")
    }

    /// Issue 11 item 10: `libellula memcached` stops on SIGTERM and SIGINT, idle or with a
    /// client connected, with status 0.
    @Test(arguments: [SIGTERM, SIGINT]) func memcachedStopsOnSignal(_ sig: Int32) async throws {
        guard let binary = libellulaBinary else {
            print("skipping: libellula is not built (swift build)")
            return
        }
        let p = try CLIProcess(binary, ["memcached", "--cpus", "2", "--listen", "127.0.0.1:0"])
        guard let port = p.port(after: "listening on 127.0.0.1:") else {
            Issue.record("no address in the output: \(p.output)")
            return
        }
        let client = try await blocking { () -> RawClient in
            let c = try RawClient(port: port)
            c.send("set k 0 0 1\r\nx\r\n")
            _ = c.readLine()
            return c
        }
        p.signal(sig)
        let status = try await blocking { p.waitForExit(timeout: 20) }
        #expect(status == 0, "\(p.output)")
        #expect(try await blocking { client.closedByServer() })
        // And the port is free again.
        #expect(throws: (any Error).self) { try RawClient(port: port) }
    }

    /// Issue 11 item 10: `serve` shutdown is bounded when a CPU is stuck in a host call:
    /// a clear message and status 70 instead of hanging.
    @Test func serveShutdownIsBoundedWithAStuckCPU() async throws {
        guard let (p, _, _) = try Self.startServe(["--debug-block-cpu", "--shutdown-timeout", "3"]) else { return }
        guard p.waitForOutput(containing: "is blocked", timeout: 10) != nil else {
            Issue.record("no stuck CPU: \(p.output)")
            return
        }
        p.signal(SIGTERM)
        let status = try await blocking { p.waitForExit(timeout: 30) }
        #expect(status == 70, "\(p.output)")
        #expect(p.output.contains("shutdown did not finish"), "\(p.output)")
    }

    /// Issue 11 item 8: runtime failures exit with a sysexits code and the system's words
    /// for the error, without a usage line; bad values get a clear usage error (64).
    @Test func exitStatusesAndMessages() async throws {
        guard libellulaBinary != nil else {
            print("skipping: libellula is not built (swift build)")
            return
        }
        let dir = makeTempDir("cli-root")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/plain.txt"
        _ = FileManager.default.createFile(atPath: file, contents: Data("x".utf8))
        let quiet = ["--http", "127.0.0.1:0", "--no-memcached", "--cpus", "1"]
        let cases: [(args: [String], status: Int32, says: String)] = [
            (["serve", "--root", dir + "/missing"] + quiet, 66, "No such file or directory"),
            (["serve", "--root", file] + quiet, 66, "Not a directory"),
            (["stat", "--url", "http://127.0.0.1:1"], 69, "Connection refused"),
        ]
        let usage: [(args: [String], says: String)] = [
            (["serve", "--cpus", "1000"], "--oversubscribe"),
            (["serve", "--max-connections", "0"], "--max-connections must be at least 1"),
            (["serve", "--memory", "-5"], "--memory must be at least 1"),
            (["serve", "--idle-timeout", "-1"], "--idle-timeout must be at least 1"),
            (["memcached", "--memory", "-5"], "--memory must be between 1"),
            (["serve", "--http", "[::1:80"], "--http wants ADDR:PORT"),
            (["serve", "--cache-validity", "-1"], "--cache-validity must be"),
        ]
        try await blocking {
            for c in cases {
                let r = try runLibellula(c.args)
                #expect(r?.status == c.status, "\(c.args): \(r?.output ?? "")")
                #expect(r?.output.contains(c.says) == true, "\(c.args): \(r?.output ?? "")")
                #expect(r?.output.contains("Usage:") == false, "\(c.args): \(r?.output ?? "")")
                #expect(r?.output.contains("errno") == false, "\(c.args): \(r?.output ?? "")")
            }
            for c in usage {
                let r = try runLibellula(c.args)
                #expect(r?.status == 64, "\(c.args): \(r?.output ?? "")")
                #expect(r?.output.contains(c.says) == true, "\(c.args): \(r?.output ?? "")")
            }
            let version = try runLibellula(["--version"])
            #expect(version?.status == 0)
            #expect(version?.output.hasPrefix("libellula ") == true, "\(version?.output ?? "")")
            let help = try runLibellula(["serve", "--help"])
            for needle in ["default: 127.0.0.1:8080", "default: 64", "default: 50", "default: 4096", "--cache-validity", "--hot-cache"] {
                #expect(help?.output.contains(needle) == true, "serve --help lacks \(needle)")
            }
            let bench = try runLibellula(["bench", "--help"])
            #expect(bench?.output.contains("ipi, wake, spawn") == true, "\(bench?.output ?? "")")
            let mc = try runLibellula(["memcached", "--help"])
            #expect(mc?.output.contains("--memcached") == true && mc?.output.contains("MiB") == true, "\(mc?.output ?? "")")
        }
    }
}

/// Issue 11 item 2: the hot-file cache never serves stale content past its validity,
/// checked with the real `libellula serve` over a host directory.
@Suite(.serialized) struct HotCacheFreshnessTests {
    static func serve(_ root: String, _ extra: [String]) throws -> (CLIProcess, UInt16)? {
        guard let binary = libellulaBinary else {
            print("skipping: libellula is not built (swift build)")
            return nil
        }
        let p = try CLIProcess(binary, ["serve", "--cpus", "1", "--http", "127.0.0.1:0", "--no-memcached", "--root", root] + extra)
        guard let port = p.port(after: "on http://127.0.0.1:") else {
            Issue.record("no address in the log: \(p.output)")
            return nil
        }
        return (p, port)
    }

    static func get(_ port: UInt16, _ path: String) throws -> RawResponse? {
        let c = try RawClient(port: port)
        c.send("GET \(path) HTTP/1.1\r\nHost: a\r\n\r\n")
        return c.response()
    }

    /// Writes `text` to `path` in place (same inode) and, if given, puts `mtime` back.
    static func rewrite(_ path: String, _ text: String, mtime: timespec? = nil) {
        let fd = open(path, O_WRONLY | O_TRUNC)
        _ = text.withCString { write(fd, $0, strlen($0)) }
        if var m = mtime {
            var times = [timespec(tv_sec: m.tv_sec, tv_nsec: m.tv_nsec), m]
            _ = withUnsafeMutablePointer(to: &m) { _ in futimens(fd, &times) }
        }
        close(fd)
    }

    static func mtime(_ path: String) -> timespec {
        var st = stat()
        _ = stat(path, &st)
        return st.st_mtim
    }

    /// With `--cache-validity 0` every change is seen by the next request, including a
    /// same-size rewrite that restores the old modification time, and an unlink.
    @Test(arguments: [["--cache-validity", "0"], ["--hot-cache", "off", "--cache-validity", "0"],
                      ["--hot-cache", "off", "--open-file-cache", "off"]])
    func changesAreSeenAtOnce(_ options: [String]) async throws {
        let root = makeTempDir("freshness")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let file = root + "/f.txt"
        _ = FileManager.default.createFile(atPath: file, contents: Data("version-1\n".utf8))
        guard let (p, port) = try Self.serve(root, options) else { return }
        try await blocking { () throws in
            for _ in 0..<3 { #expect(try Self.get(port, "/f.txt")?.text == "version-1\n") }
            // Same size, old mtime put back: only the inode's change time tells.
            Self.rewrite(file, "version-2\n", mtime: Self.mtime(file))
            #expect(try Self.get(port, "/f.txt")?.text == "version-2\n")
            Self.rewrite(file, "version three\n")
            #expect(try Self.get(port, "/f.txt")?.text == "version three\n")
            unlink(file)
            #expect(try Self.get(port, "/f.txt")?.status == 404)
        }
        p.signal(SIGTERM)
        #expect(p.waitForExit(timeout: 30) == 0, "\(p.output)")
    }

    /// With a validity window the change is seen once the window has passed (it used to
    /// be never, for a rewrite that restores the modification time).
    @Test(arguments: [[], ["--hot-cache", "off"]])
    func restoredMTimeIsSeenAfterTheWindow(_ options: [String]) async throws {
        let root = makeTempDir("freshness")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let file = root + "/f.txt"
        _ = FileManager.default.createFile(atPath: file, contents: Data("version-1\n".utf8))
        guard let (p, port) = try Self.serve(root, ["--cache-validity", "0.2"] + options) else { return }
        try await blocking {
            for _ in 0..<3 { #expect(try Self.get(port, "/f.txt")?.text == "version-1\n") }
            Self.rewrite(file, "version-2\n", mtime: Self.mtime(file))
            var seen = false
            for _ in 0..<100 where !seen {  // up to 10 s; the window is 0.2 s
                usleep(100_000)
                seen = try Self.get(port, "/f.txt")?.text == "version-2\n"
            }
            #expect(seen, "still the old body after 10 s")
        }
        p.signal(SIGTERM)
        #expect(p.waitForExit(timeout: 30) == 0, "\(p.output)")
    }
}

/// Issue 11 item 9: IPv6 and dual-stack listeners, IPv6 peers in the log.
@Suite(.serialized) struct IPv6Tests {
    @Test func dualStackAndIPv6Listeners() async throws {
        guard let binary = libellulaBinary else {
            print("skipping: libellula is not built (swift build)")
            return
        }
        // Is there an IPv6 loopback at all (containers may lack one)?
        let probe = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        var s6 = sockaddr_in6()
        s6.sin6_family = sa_family_t(AF_INET6)
        _ = inet_pton(AF_INET6, "::1", &s6.sin6_addr)
        let usable = withUnsafePointer(to: &s6) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(probe, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        } == 0
        close(probe)
        guard usable else {
            print("skipping: no IPv6 loopback here")
            return
        }
        let p = try CLIProcess(binary, ["serve", "--cpus", "2", "--http", "[::]:0", "--memcached", "[::1]:0", "--log-level", "debug"])
        guard let port = p.port(after: "on http://[::]:"), let mc = p.port(after: "memcached protocol on [::1]:") else {
            Issue.record("no IPv6 addresses in the log: \(p.output)")
            return
        }
        try await blocking { () throws in
            let v6 = ipv6Exchange(port: port, "GET /hello.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            #expect(v6?.hasPrefix("HTTP/1.1 200") == true && v6?.hasSuffix("hello\n") == true, "\(v6 ?? "no reply")")
            // Dual stack: the same listener takes IPv4.
            let c = try RawClient(port: port)
            c.send("GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n")
            #expect(c.response()?.text == "hello\n")
            let stored = ipv6Exchange(port: mc, "set k 0 0 2\r\nhi\r\nget k\r\nquit\r\n")
            #expect(stored == "STORED\r\nVALUE k 0 2\r\nhi\r\nEND\r\n", "\(stored ?? "no reply")")
            // `stat` reaches an IPv6 URL.
            let stat = try runLibellula(["stat", "--url", "http://[::1]:\(port)"])
            #expect(stat?.status == 0, "\(stat?.output ?? "")")
        }
        // Peers are printed as what they are: [::1] and 127.0.0.1 (not as a mapped address).
        #expect(p.waitForOutput(containing: "peer=[::1]:", timeout: 5) != nil, "\(p.output)")
        #expect(p.output.contains("peer=127.0.0.1:"), "\(p.output)")
        #expect(!p.output.contains("::ffff:"), "\(p.output)")
        p.signal(SIGTERM)
        #expect(p.waitForExit(timeout: 30) == 0, "\(p.output)")
    }
}

/// Issue 18: a client that resets the connection in the middle of a large file (sent by
/// sendfile, which cannot suppress SIGPIPE per call) must not end the server.
@Suite(.serialized) struct SendfileResetTests {
    @Test func clientsResettingMidFileDoNotKillTheServer() async throws {
        let root = makeTempDir("sendfile-reset")
        defer { try? FileManager.default.removeItem(atPath: root) }
        _ = FileManager.default.createFile(atPath: root + "/big.bin", contents: Data(repeating: 7, count: 8 << 20))
        _ = FileManager.default.createFile(atPath: root + "/a.txt", contents: Data("alive\n".utf8))
        guard let (p, port) = try HotCacheFreshnessTests.serve(root, []) else { return }
        try await blocking { () throws in
            for _ in 0..<20 {
                let c = try RawClient(port: port)
                var small: Int32 = 4096
                setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
                c.send("GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
                _ = c.fill()
                var lg = linger(l_onoff: 1, l_linger: 0)
                setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, socklen_t(MemoryLayout<linger>.size))
            }  // each client is dropped here: a reset while the server is still sending
            usleep(200_000)
            #expect(try HotCacheFreshnessTests.get(port, "/a.txt")?.text == "alive\n", "server gone: \(p.output)")
        }
        p.signal(SIGTERM)
        #expect(p.waitForExit(timeout: 30) == 0, "\(p.output)")
    }
}
