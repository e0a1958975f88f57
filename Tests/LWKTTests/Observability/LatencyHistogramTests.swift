import Foundation
@testable import LWKT
import Testing

@Suite struct LatencyHistogramTests {
    /// Every value lands in a bucket whose bounds contain it, buckets are in value order
    /// and no bucket is wider than 1/16 of its lower bound (above the exact range).
    @Test func bucketsContainTheirValues() {
        var rng = SystemRandomNumberGenerator()
        var values: [UInt64] = Array(0..<200) + [1 << 20, (1 << 20) - 1, (1 << 40) - 1, 1 << 40, (1 << 41) - 1]
        for _ in 0..<20_000 { values.append(UInt64.random(in: 0..<(1 << 41), using: &rng) >> UInt64.random(in: 0..<40, using: &rng)) }
        var previous = (value: UInt64(0), index: 0)
        for v in values.sorted() {
            let i = HistogramBuckets.index(of: v)
            #expect(i >= 0 && i < HistogramBuckets.count)
            #expect(HistogramBuckets.lowerBound(of: i) <= v && v <= HistogramBuckets.upperBound(of: i), "value \(v) bucket \(i)")
            #expect(i >= previous.index, "bucket order broken at \(v)")
            previous = (v, i)
            let lo = HistogramBuckets.lowerBound(of: i), hi = HistogramBuckets.upperBound(of: i)
            if lo >= 32 && i < HistogramBuckets.count - 1 { #expect((hi - lo + 1) * 16 <= lo, "bucket \(i) too wide") }
        }
        // Consecutive buckets tile the range with no gap.
        for i in 0..<(HistogramBuckets.count - 1) {
            #expect(HistogramBuckets.upperBound(of: i) + 1 == HistogramBuckets.lowerBound(of: i + 1))
        }
        #expect(HistogramBuckets.index(of: UInt64.max) == HistogramBuckets.count - 1)
        #expect(HistogramBuckets.index(of: 1 << 41) == HistogramBuckets.count - 1)
    }

    /// Quantiles from the buckets are within the bucket error of the exact ones.
    @Test func quantilesMatchExactWithinBucketError() {
        let h = LatencyHistogram(name: "t", help: "t", cpuCount: 2)
        var all: [UInt64] = []
        var rng = SystemRandomNumberGenerator()
        for k in 0..<50_000 {
            let v = UInt64(exp(Double.random(in: 3...18, using: &rng)))   // 20 ns … 65 ms, log-uniform
            all.append(v)
            h.record(v, cpu: k % 3 == 2 ? -1 : k % 2)
        }
        all.sort()
        let m = h.merged()
        #expect(m.count == 50_000)
        #expect(m.sum == Int64(all.reduce(0, +)))
        #expect(m.max == Int64(all.last!))
        for q in [0.5, 0.9, 0.99, 0.999] {
            let exact = Double(all[Int((q * Double(all.count)).rounded(.up)) - 1])
            let got = Double(m.quantile(q))
            #expect(got >= exact && got <= exact * (1 + 1.0 / 16) + 1, "q\(q): \(got) vs \(exact)")
        }
        #expect(m.quantile(1) == m.max)
        #expect(HistogramSnapshot().quantile(0.5) == 0)
    }

    /// Merging per-CPU snapshots equals recording everything in one block.
    @Test func mergingEqualsRecordingTogether() {
        let split = LatencyHistogram(name: "a", help: "a", cpuCount: 4)
        let one = LatencyHistogram(name: "b", help: "b", cpuCount: 1)
        for v in stride(from: UInt64(1), to: 5_000_000, by: 997) {
            split.record(v, cpu: Int(v % 5) - 1)     // CPUs 0…3 and the shared block
            one.record(v, cpu: 0)
        }
        #expect(split.merged() == one.merged())
        var manual = HistogramSnapshot()
        for c in 0...4 { manual.merge(split.snapshot(cpu: c)) }
        #expect(manual == one.snapshot(cpu: 0))
        #expect(split.snapshot(cpu: 0).count > 0 && split.snapshot(cpu: 4).count > 0)
        let m = one.merged()
        #expect(m.countAtOrBelow(UInt64.max) == m.count)
        #expect(m.countAtOrBelow(0) == 0)
    }

    /// Threads that are not CPUs record into the shared block with atomic adds: nothing
    /// is lost under contention (bounded: 4 threads × 20,000).
    @Test func sharedBlockCountsEveryConcurrentRecord() async {
        let h = LatencyHistogram(name: "c", help: "c", cpuCount: 2)
        await withTaskGroup(of: Void.self) { g in
            for t in 0..<4 {
                g.addTask { for i in 0..<20_000 { h.record(UInt64(i * (t + 1)), cpu: -1) } }
            }
        }
        let s = h.snapshot(cpu: 2)
        #expect(s.count == 80_000)
        #expect(s.buckets.reduce(0, +) == 80_000)
        #expect(s.max == 19_999 * 4)
    }

    /// The live hooks: cross-CPU doMsg round trips and IPI probes land in the system's
    /// histograms.
    @Test func systemHooksRecord() async throws {
        let system = try LWKT.boot(cpus: 2, configuration: LWKTConfiguration(idleSpin: .microseconds(20)))
        let probes = SystemLatencies.startIPIProbes(on: system, interval: .milliseconds(1))
        let port = Port.thread(on: system.cpus[1], name: "echo")
        let server = startServer(system, cpu: 1, port: port)
        try await system.run(on: 0) {
            for k in 0..<50 { _ = try await LWKT.doMsg(IntMsg(k), to: port) }
        }
        try await stopServer(port, server)
        #expect(system.latencies.doMsgRoundTrip.snapshot(cpu: 0).count >= 50)
        for _ in 0..<200 where system.latencies.ipiDelivery.merged().count < 5 { try await Task.sleep(for: .milliseconds(5)) }
        for p in probes { p.cancel() }
        #expect(system.latencies.ipiDelivery.merged().count >= 5)
        try await system.shutdown()
    }
}
