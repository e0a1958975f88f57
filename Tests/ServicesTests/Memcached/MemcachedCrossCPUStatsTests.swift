import Foundation
import LWKT
import Testing
@testable import Services

/// `stats` says where cross-CPU time goes: how many messages went to other CPUs, how many
/// key operations each carried (a histogram), how often a connection waited for them, and
/// the LWKT CPUs' own sleep, spin, IPI and wakeup counters.
@Suite(.serialized) struct MemcachedCrossCPUStatsTests {
    static func values(_ text: String) -> [String: Int] {
        var v: [String: Int] = [:]
        for line in text.split(separator: "\r\n") {
            let w = line.split(separator: " ")
            if w.count == 3, w[0] == "STAT", let n = Int(w[2]) { v[String(w[1])] = n }
        }
        return v
    }

    @Test func batchSizesAndSchedulerCountersAreReported() async throws {
        try await withService(cpus: 2) { s in
            var keys: [[String]] = [[], []]
            var i = 0
            while keys[0].count < 8 || keys[1].count < 8 {
                let k = "b\(i)"
                if keys[s.owner(ofKey: k)].count < 8 { keys[s.owner(ofKey: k)].append(k) }
                i += 1
            }
            let c = try TestClient(port: s.port)
            var setup = ""
            for k in keys[0] + keys[1] { setup += "set \(k) 0 0 1\r\nv\r\n" }
            _ = c.roundTrip(setup)
            // Single remote gets, one per window, then a pipeline of 16 gets on both CPUs
            // in one write, then a 16-key get: batches of 1 and of 8.
            for k in keys[0] + keys[1] { #expect(c.roundTrip("get \(k)\r\n") == "VALUE \(k) 0 1\r\nv\r\nEND\r\n") }
            var pipeline = ""
            var expected = ""
            for j in 0..<8 {
                for o in 0..<2 { pipeline += "get \(keys[o][j])\r\n"; expected += "VALUE \(keys[o][j]) 0 1\r\nv\r\nEND\r\n" }
            }
            #expect(c.roundTrip(pipeline) == expected)
            let all = (keys[0] + keys[1]).joined(separator: " ")
            #expect(c.roundTrip("get \(all)\r\n").hasSuffix("END\r\n"))
            c.send("stats\r\n")
            let v = Self.values(c.read(until: "END\r\n"))
            let sent = try #require(v["remote_requests_sent"])
            let ops = try #require(v["remote_ops_sent"])
            let b1 = try #require(v["remote_batches_1"])
            let b2 = try #require(v["remote_batches_2_3"])
            let b4 = try #require(v["remote_batches_4_7"])
            let b8 = try #require(v["remote_batches_8_up"])
            let waits = try #require(v["remote_waits"])
            // Every message lands in exactly one bucket, and the buckets bound the ops.
            #expect(b1 + b2 + b4 + b8 == sent)
            #expect(ops >= b1 + 2 * b2 + 4 * b4 + 8 * b8)
            #expect(ops <= b1 + 3 * b2 + 7 * b4 + 16 * b8)
            // 8 remote single gets (setup and pipeline aside) travel alone; the 16-key
            // get carries its 8 remote keys in one message.
            #expect(b1 >= 8)
            #expect(b8 >= 1)
            #expect(waits <= sent)
            // The scheduler's side: messages went out as IPIs, and the CPUs ran.
            #expect((v["lwkt_ipis_sent"] ?? 0) >= sent)
            #expect((v["lwkt_busy_usec"] ?? 0) > 0)
            for name in ["lwkt_sleep_usec", "lwkt_sleeps", "lwkt_idle_spins", "lwkt_ipi_publishes", "lwkt_ipi_wakeups", "lwkt_io_events"] {
                #expect(v[name] != nil, "stats lacks \(name)")
            }
        }
    }
}
