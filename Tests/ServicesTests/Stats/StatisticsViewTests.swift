import Foundation
import Glibc
import LWKT
@testable import Services
import Testing

/// What an operator sees: `libellula stat --watch` in a terminal (driven in tmux) and the
/// `/_stats` page in a browser (headless Chromium).
@Suite(.serialized) struct StatisticsViewTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let binary = root.appendingPathComponent(".build/debug/libellula").path

    /// A server with some traffic and two seconds of samples.
    static func busyServer() async throws -> TestServer {
        let s = try TestServer()
        s.server.showMemcachedStatistics(limitBytes: 64 << 20) {
            [["get_hits": 30, "get_misses": 10, "curr_items": 5, "bytes": 4096], ["get_hits": 2, "get_misses": 1, "curr_items": 1, "bytes": 512]]
        }
        let port = s.port
        for _ in 0..<3 {
            _ = try await blocking { try StatisticsEndpointTests.get(port, "/hello.txt", requests: Array(repeating: "/", count: 20)) }
            try await Task.sleep(for: .milliseconds(800))
        }
        return s
    }

    /// `stat --watch` redraws a screen with rates, per-CPU bars, latency and memcached.
    @Test func statWatchInTmux() async throws {
        guard findTool(["/usr/bin/tmux", "/usr/local/bin/tmux"]) != nil else {
            print("skipping: tmux not installed (Scripts/test.sh installs Scripts/test-deps.txt)")
            return
        }
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            print("skipping: \(Self.binary) not built")
            return
        }
        let s = try await Self.busyServer()
        let session = "libellula-stat-\(getpid())"
        let socket = "/tmp/libellula-tmux-\(getpid())"
        let command = "\(Self.binary) stat --url http://127.0.0.1:\(s.port) --watch --interval 0.5 --iterations 40"
        // One shell runs every tmux command (a tmux server started directly by Foundation's
        // Process was not reachable from later clients here); the screen is polled until
        // the memcached section is drawn (at most ~6 s).
        let script = """
        S=\(socket); tmux -S $S new-session -d -s \(session) -x 110 -y 40 '\(command)' </dev/null >/dev/null 2>&1
        out=""
        for i in $(seq 60); do
          sleep 0.1
          out=$(tmux -S $S capture-pane -p -t \(session) 2>/dev/null)
          case "$out" in *cpu1*memcached*) break;; esac
        done
        printf '%s\\n' "$out"
        tmux -S $S kill-server >/dev/null 2>&1; rm -f $S
        """
        let screen = try await blocking { runTool("/bin/sh", ["-c", script], timeout: 30)?.1 ?? "" }
        try await s.shutdown()
        print("stat --watch screen:\n\(screen)")
        for needle in ["req/s", "IPIs/s", "cpu0", "cpu1", "[", "latency", "p90", "p99.9", "http", "memcached", "hit ratio", "of 64 MiB"] {
            #expect(screen.contains(needle), "screen lacks \(needle)")
        }
    }

    /// `/_stats` in headless Chromium: the DOM has the operator charts, each with a drawn
    /// line, and a screenshot is saved (its path is printed).
    @Test func statsPageInHeadlessChromium() async throws {
        guard let chromium = findTool(["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]) else {
            print("skipping: chromium not installed (Scripts/test.sh installs Scripts/test-deps.txt)")
            return
        }
        let s = try await Self.busyServer()
        let url = "http://127.0.0.1:\(s.port)/_stats"
        let dir = makeTempDir("stats-page")
        let shot = dir + "/stats.png"
        let flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--user-data-dir=\(dir)/profile"]
        let dom = try await blocking { runTool(chromium, flags + ["--dump-dom", url], timeout: 60) }
        let picture = try await blocking {
            runTool(chromium, flags + ["--hide-scrollbars", "--window-size=1280,2400", "--screenshot=\(shot)", url], timeout: 60)
        }
        try await s.shutdown()
        guard let (status, html) = dom, status == 0 else { Issue.record("chromium --dump-dom failed: \(String(describing: dom))"); return }
        let charts = html.components(separatedBy: "<figure class=\"chart\"").count - 1
        #expect(charts >= 7, "charts in the DOM: \(charts)")
        for title in ["Request rate", "Error rate", "HTTP service time p99", "Open connections", "Memory against the limit", "memcached hit ratio"] {
            #expect(html.contains("<h3>\(title)"), "no chart titled \(title)")
        }
        // Every chart drew at least one line with two or more points.
        let lines = html.components(separatedBy: "<polyline").dropFirst().map { part -> Int in
            guard let r = part.range(of: "points=\""), let end = part[r.upperBound...].firstIndex(of: "\"") else { return 0 }
            return part[r.upperBound..<end].split(separator: " ").count
        }
        #expect(lines.count >= charts, "lines: \(lines.count)")
        #expect(lines.allSatisfy { $0 >= 2 }, "points per line: \(lines)")
        #expect(html.contains("<table>") && html.contains("HTTP request service"))
        #expect(picture?.0 == 0)
        let size = (try? FileManager.default.attributesOfItem(atPath: shot)[.size] as? Int) ?? 0
        #expect(size > 10_000, "screenshot \(shot) is \(size) bytes")
        print("stats page screenshot: \(shot)")
    }
}
