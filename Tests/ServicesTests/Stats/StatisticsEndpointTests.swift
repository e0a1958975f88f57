import Foundation
import Glibc
import LWKT
@testable import Services
import Testing

/// `/metrics`, `/_health` and `/_stats.json` as a monitoring system reads them.
@Suite struct StatisticsEndpointTests {
    static let checker = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Scripts/check_metrics.py").path

    static func get(_ port: UInt16, _ path: String, requests: [String] = []) throws -> [RawResponse] {
        let c = try RawClient(port: port)
        var out: [RawResponse] = []
        for p in requests + [path] {
            c.send("GET \(p) HTTP/1.1\r\nHost: a\r\n\r\n")
            if let r = c.response() { out.append(r) }
        }
        return out
    }

    /// The exposition parses with prometheus_client's parser; every family has TYPE and
    /// HELP; counters carry a `cpu` label; histograms have cumulative `_bucket`s ending in
    /// `+Inf`, `_sum` and `_count` (Scripts/check_metrics.py).
    @Test func metricsParseWithPrometheusClient() async throws {
        // The python3 on PATH: the one Scripts/test.sh installs Scripts/test-pip-deps.txt into.
        guard let env = findTool(["/usr/bin/env"]) else { print("skipping: no /usr/bin/env"); return }
        let s = try TestServer()
        s.server.showMemcachedStatistics { [["get_hits": 3, "curr_items": 2], ["get_hits": 1, "curr_items": 0]] }
        let port = s.port
        let responses = try await blocking { try Self.get(port, "/metrics", requests: ["/hello.txt", "/", "/missing"]) }
        try await s.shutdown()
        guard let metrics = responses.last, responses.count == 4 else { Issue.record("no /metrics response"); return }
        #expect(metrics.status == 200)
        #expect(metrics.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
        let file = makeTempDir("metrics") + "/metrics.txt"
        try Data(metrics.body).write(to: URL(fileURLWithPath: file))
        let result = try await blocking { runTool(env, ["python3", Self.checker, file]) }
        guard let (status, output) = result else { Issue.record("could not run \(Self.checker)"); return }
        if status == 2 {
            print("skipping: prometheus_client not installed (Scripts/test.sh installs Scripts/test-pip-deps.txt)")
            return
        }
        #expect(status == 0, "\(output)")
        #expect(output.hasPrefix("OK"), "\(output)")
        #expect(metrics.text.contains("libellula_memcached_get_hits_total{cpu=\"0\"} 3"))
        #expect(metrics.text.contains("# TYPE libellula_memcached_curr_items gauge"))
    }

    /// `/_health` answers from a CPU with a small JSON document.
    @Test func healthAnswers() async throws {
        let s = try TestServer()
        let port = s.port
        let r = try await blocking { try Self.get(port, "/_health") }
        try await s.shutdown()
        #expect(r.first?.status == 200)
        let doc = try JSONSerialization.jsonObject(with: Data(r.first?.body ?? [])) as? [String: Any]
        #expect(doc?["status"] as? String == "ok")
        #expect(doc?["schema_version"] as? Int == ServerStatistics.currentSchemaVersion)
        #expect((doc?["timestamp"] as? Double ?? 0) > 1_600_000_000)
        #expect((doc?["stalled_cpus"] as? [Int]) == [])
    }

    /// `/_health` names the CPUs with a stall in progress (status `stalled`), not those whose
    /// reported stall has ended.
    @Test func healthNamesStalledCPUs() throws {
        var st = StallStatistics()
        st.thresholdNanos = 5_000_000
        func report(_ cpu: Int, ongoing: Bool) -> StallReport {
            StallReport(cpu: cpu, thread: "t", priority: "user", durationNanos: 6_000_000, ongoing: ongoing, backtrace: [], timestamp: 0)
        }
        st.recent = [report(1, ongoing: false), report(3, ongoing: true), report(2, ongoing: true), report(3, ongoing: true)]
        let doc = try JSONSerialization.jsonObject(with: Data(StatsPage.health(cpus: 4, uptimeNanos: 2_000_000_000, stalls: st, now: 1_800_000_000))) as? [String: Any]
        #expect(doc?["status"] as? String == "stalled")
        #expect(doc?["stalled_cpus"] as? [Int] == [2, 3])
        #expect(doc?["uptime_seconds"] as? Double == 2)
        st.recent = [report(1, ongoing: false)]
        let ok = try JSONSerialization.jsonObject(with: Data(StatsPage.health(cpus: 4, uptimeNanos: 0, stalls: st, now: 1_800_000_000))) as? [String: Any]
        #expect(ok?["status"] as? String == "ok")
        #expect(ok?["stalled_cpus"] as? [Int] == [])
    }

    /// `/_stats.json` uses one key style (snake_case, memcached's names included), carries a
    /// schema version, a timestamp and latency quantiles, and reads back with the decoder.
    @Test func jsonHasOneKeyStyleAndRoundTrips() async throws {
        let s = try TestServer()
        s.server.showMemcachedStatistics { [["get_hits": 7]] }
        let port = s.port
        let r = try await blocking { try Self.get(port, "/_stats.json", requests: ["/hello.txt"]) }
        try await s.shutdown()
        guard let body = r.last?.body else { Issue.record("no response"); return }
        let tree = try JSONSerialization.jsonObject(with: Data(body))
        var bad: [String] = []
        func walk(_ v: Any, _ path: String) {
            if let d = v as? [String: Any] {
                for (k, x) in d {
                    if k.range(of: "^[a-z][a-z0-9_]*$", options: .regularExpression) == nil { bad.append(path + "." + k) }
                    walk(x, path + "." + k)
                }
            } else if let a = v as? [Any] {
                for x in a { walk(x, path + "[]") }
            }
        }
        walk(tree, "")
        #expect(bad.isEmpty, "keys not in snake_case: \(Set(bad).sorted().prefix(20))")
        let top = tree as? [String: Any]
        #expect(top?["schema_version"] as? Int == 2)
        #expect(top?["timestamp"] is Double)
        #expect((top?["latency"] as? [String: Any])?["http_service"] != nil)
        let decoded = try ServerStatistics.decoder().decode(ServerStatistics.self, from: Data(body))
        #expect(decoded.schemaVersion == 2)
        #expect(decoded.memcached?.first?["get_hits"] == 7)
        #expect(decoded.lwkt.cpus.count == 2)
        #expect(decoded.lwkt.cpus.allSatisfy { $0.osThreadID > 0 && $0.counters["busyNanos"] != nil })
        #expect((decoded.latency["http_service"]?.count ?? 0) >= 1)
        #expect(decoded.http.reduce(0) { $0 + $1.requests } >= 1)
    }
}

/// Each CPU's own per-second series, merged into the samples `/_stats` draws.
@Suite(.serialized) struct PerCPUSeriesTests {
    /// Requests served are counted in the CPUs' own rings (their per-second rates add up to
    /// the requests made over the samples that cover them), and every sample carries each
    /// CPU's ready-queue depth, which `/metrics` and `/_stats.json` show.
    static func counted(_ samples: [RateSample]) -> Double {
        samples.reduce(0.0) { sum, r in
            guard let secs = r.cpuSeconds else { return sum }
            return sum + zip(r.requests, secs).reduce(0.0) { $0 + $1.0 * $1.1 }
        }
    }

    @Test func samplesCarryEachCPUsRatesAndReadyDepth() async throws {
        let s = try TestServer()
        let port = s.port
        var made = 0
        for _ in 0..<3 {
            made += try await blocking { try StatisticsEndpointTests.get(port, "/hello.txt", requests: Array(repeating: "/", count: 24)) }.count
            try await Task.sleep(for: .milliseconds(700))
        }
        // Let the recorders close the second of the last requests.
        let deadline = ContinuousClock.now + .seconds(10)
        var samples: [RateSample] = []
        while ContinuousClock.now < deadline {
            samples = s.server.core.sampler.samples
            if Self.counted(samples) >= Double(made) - 0.5 && samples.count >= 3 { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        let metrics = try await blocking { try StatisticsEndpointTests.get(port, "/metrics") }.first?.text ?? ""
        let json = try await blocking { try StatisticsEndpointTests.get(port, "/_stats.json") }.first?.body ?? []
        try await s.shutdown()
        // Each CPU's rate times the seconds its sample covers is its count: together, every
        // request made (the system samples cover every recorded second since the start).
        let counted = Self.counted(samples)
        #expect(abs(counted - Double(made)) < 0.5, "counted \(counted) of \(made) requests in \(samples.count) samples")
        let withDepth = samples.filter { $0.readyDepth?.count == 2 }
        #expect(!withDepth.isEmpty, "no sample with both CPUs' ready depth")
        #expect(withDepth.allSatisfy { $0.readyDepth?.allSatisfy { $0 >= 0 } == true })
        #expect(withDepth.allSatisfy { $0.readyDepthMax?.count == 2 })
        #expect(metrics.contains("# TYPE libellula_lwkt_ready_depth gauge"))
        #expect(metrics.contains("libellula_lwkt_ready_depth{cpu=\"1\"}"))
        #expect(metrics.contains("# TYPE libellula_lwkt_ready_depth_max gauge"))
        let doc = try JSONSerialization.jsonObject(with: Data(json)) as? [String: Any]
        let rates = doc?["rates"] as? [String: Any]
        #expect((rates?["ready_depth"] as? [Any])?.count == 2, "rates: \(String(describing: rates))")
    }
}
