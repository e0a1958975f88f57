import Foundation
import Glibc
import LibellulaTestSupport
import LWKT
@testable import Services
import Testing

/// Issue 11 item 4: `/_stats` and `/_stats.json` grew the process with every request and,
/// while flooded, starved file serving.
@Suite(.serialized) struct StatisticsLeakTests {
    static let binary = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(".build/debug/libellula").path

    /// The memcached provider used to be copied out of a `Mutex` as a closure, which wrapped
    /// the stored closure in one more reabstraction thunk per call: memory grew and the
    /// provider was reached through a chain as long as the number of requests served. The
    /// stack depth at which the provider runs must not grow with the number of calls.
    @Test func memcachedProviderIsNotRewrappedPerCall() async throws {
        let s = try TestServer()
        let depth = StackDepthProbe()
        s.server.showMemcachedStatistics { depth.record(); return [["get_hits": 1]] }
        depth.bindToCurrentThread()
        for _ in 0..<2000 { _ = s.server.statistics() }
        try await s.shutdown()
        let (first, last) = depth.range
        // 2000 nested thunks would put the last call at least 32 KB deeper than the first.
        #expect(abs(first - last) < 4096, "provider ran \(abs(first - last)) bytes deeper after 2000 calls")
    }

    /// Each CPU reuses a rendered document for the interval and renders again after it.
    @Test func pageCacheReusesWithinTheInterval() {
        let cache = StatisticsPageCache(cpuCount: 2, interval: .milliseconds(500))
        var renders = 0
        func get(_ cpu: Int, _ now: UInt64) -> [UInt8]? {
            cache.body(.json, cpu: cpu, now: now) { renders += 1; return Array("r\(renders)".utf8) }
        }
        #expect(get(0, 1_000_000_000) == Array("r1".utf8))
        #expect(get(0, 1_400_000_000) == Array("r1".utf8))
        #expect(get(1, 1_400_000_000) == Array("r2".utf8))     // per CPU
        #expect(get(0, 1_500_000_001) == Array("r3".utf8))     // interval passed
        #expect(cache.body(.html, cpu: 0, now: 1_500_000_002) { nil } == nil)  // failure is not cached
        #expect(renders == 3)
        let never = StatisticsPageCache(cpuCount: 1, interval: .zero)
        var n = 0
        for _ in 0..<3 { _ = never.body(.json, cpu: 0, now: 5) { n += 1; return [] } }
        #expect(n == 3)
    }

    /// The real `libellula serve`, memcached on: 10,000 `/_stats.json` requests on one
    /// keep-alive connection after a warm-up must leave its resident anonymous memory flat
    /// (before the fix it grew ~160 bytes per request, 1.6 MB here).
    @Test func realProcessRSSStaysFlatUnderStatsFlood() async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            print("skipping: \(Self.binary) not built")
            return
        }
        // No stall watchdog: naming a stall's frames maps the binary's symbol table, file pages
        // that would count in RSS once; the leak under test is anonymous memory anyway.
        // posix_spawn (LibellulaTestSupport), not Foundation's Process; killed when dropped.
        let p = try Subprocess(Self.binary, ["serve", "--cpus", "2", "--http", "127.0.0.1:0", "--memcached", "127.0.0.1:0", "--stall-ms", "0"],
                               output: .stderrOnly)
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
        guard let port else { Issue.record("no address in the log"); return }
        let pid = p.processIdentifier
        let result = try await blocking { () -> (Int, Int, Int)? in
            let c = try RawClient(port: port, receiveTimeout: 10)
            func flood(_ n: Int) -> Int {
                var ok = 0
                for _ in 0..<n {
                    c.send("GET /_stats.json HTTP/1.1\r\nHost: a\r\n\r\n")
                    guard let r = c.response() else { return ok }
                    if r.status == 200 { ok += 1 }
                }
                return ok
            }
            // Warm up, and let the per-second sampler take its first samples (its thread's
            // malloc arena is a one-time cost).
            guard flood(1000) == 1000 else { return nil }
            Thread.sleep(forTimeInterval: 2.2)
            guard flood(1000) == 1000, let before = Self.rssKiB(pid) else { return nil }
            let ok = flood(10_000)
            guard let after = Self.rssKiB(pid) else { return nil }
            return (before, after, ok)
        }
        kill(pid, SIGTERM)
        p.waitUntilExit()
        guard let (before, after, ok) = result else { Issue.record("flood failed"); return }
        #expect(ok == 10_000)
        #expect(after - before < 400, "RssAnon grew from \(before) KiB to \(after) KiB over 10,000 /_stats.json requests")
    }

    static func rssKiB(_ pid: Int32) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("RssAnon:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }
        return nil
    }
}

/// Records the stack address at which a function runs, first and last call, on the thread
/// bound to it. Calls from other threads (the server's once-a-second statistics
/// sampler also asks the provider) have unrelated stacks and are ignored; the lock only
/// guards the probe's own fields.
final class StackDepthProbe: @unchecked Sendable {
    private var first = 0
    private var last = 0
    private var thread: pthread_t?
    private let lock = NSLock()

    /// Makes the calling thread the one whose calls are recorded.
    func bindToCurrentThread() { lock.lock(); thread = pthread_self(); lock.unlock() }

    @inline(never) func record() {
        var marker = 0
        let here = withUnsafeMutablePointer(to: &marker) { Int(bitPattern: $0) }
        let me = pthread_self()
        lock.lock(); defer { lock.unlock() }
        guard let t = thread, pthread_equal(t, me) != 0 else { return }
        if first == 0 { first = here }
        last = here
    }

    var range: (Int, Int) { lock.lock(); defer { lock.unlock() }; return (first, last) }
}
