import Foundation
import Glibc
import LibellulaTestSupport
import Testing

/// `libellula serve` end to end: the demo site on an ephemeral port, then SIGTERM and SIGINT
/// shut it down cleanly (exit status 0, nothing leaked) with a connection still open.
@Suite(.serialized) struct ServeCommandTests {
    static let binary = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent(".build/debug/libellula").path

    func run(signal: Int32) async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            print("skipping: \(Self.binary) not built")
            return
        }
        // Every address on a port the kernel picks: the default memcached address (11211) may
        // be held by anything else on the machine (another test, a memcached, a benchmark),
        // and then serve fails after it logged the HTTP address. A generous shutdown limit:
        // on a loaded machine joining the CPUs can take longer than the default 15 s allow;
        // a stuck CPU still shows as a leaked thread and a non-zero status.
        // posix_spawn (LibellulaTestSupport), not Foundation's Process.
        let p = try Subprocess(Self.binary, ["serve", "--cpus", "2", "--http", "127.0.0.1:0", "--memcached", "127.0.0.1:0",
                                             "--shutdown-timeout", "120"], output: .stderrOnly)
        // Read the log until the line with the address (bounded).
        let port: UInt16? = try await blocking {
            var text = ""
            for _ in 0..<200 {
                guard let d = p.readAvailable(timeout: 60) else { break }
                text += d
                if let r = text.range(of: "on http://127.0.0.1:"), let end = text[r.upperBound...].firstIndex(of: "/") {
                    return UInt16(text[r.upperBound..<end])
                }
            }
            return nil
        }
        guard let port else {
            p.terminate()
            Issue.record("no address in the log")
            return
        }
        let (page, client) = try await blocking { () -> (RawResponse?, RawClient) in
            let c = try RawClient(port: port, receiveTimeout: 60)
            c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            return (c.response(), c)
        }
        #expect(page?.status == 200)
        #expect(page?.text.contains("Libellula") == true)
        kill(p.processIdentifier, signal)
        // The log to its end (the process exits within the shutdown limit), then the status.
        let (rest, status) = try await blocking { () -> (String, Int32) in
            let r = p.wait(timeout: 180)
            return (r.output, r.status)
        }
        #expect(status == 0, "\(rest)")
        #expect(rest.contains("0 threads leaked"), "\(rest)")
        #expect(try await blocking { client.closedByServer() })
    }

    @Test func sigtermShutsDownCleanly() async throws { try await run(signal: SIGTERM) }

    @Test func sigintShutsDownCleanly() async throws { try await run(signal: SIGINT) }

    @Test func statPrintsTables() async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            print("skipping: \(Self.binary) not built")
            return
        }
        let s = try TestServer()
        let url = "http://127.0.0.1:\(s.port)"
        let (tables, json, refused) = try await blocking {
            (runTool(Self.binary, ["stat", "--url", url]), runTool(Self.binary, ["stat", "--url", url, "--json"]),
             runTool(Self.binary, ["stat", "--url", "http://127.0.0.1:1"]))
        }
        try await s.shutdown()
        #expect(tables?.0 == 0)
        for needle in ["Per-CPU statistics", "IPI matrix", "HTTP per CPU", "connections accepted", "Slab per CPU", "Namecache: hit rate"] {
            #expect(tables?.1.contains(needle) == true, "stat output lacks \(needle)")
        }
        #expect(json?.0 == 0)
        #expect(json?.1.hasPrefix("{") == true)
        #expect(refused?.0 != 0)
    }
}
