import CLibellula
import Foundation
@testable import LWKT
import Testing

/// Spins on the calling thread for `milliseconds` (never inlined, so it is a frame of its own).
@inline(never)
func spinForStallTest(milliseconds: UInt64) -> Int {
    let until = lb_now_ns() &+ milliseconds &* 1_000_000
    var turns = 0
    while lb_now_ns() < until { turns &+= 1 }
    return turns
}

@Suite(.serialized) struct StallWatchdogTests {
    /// A job that spins 20 ms on CPU 1 is reported with its CPU, its thread's name and
    /// priority, a duration of at least the spin, and a frame of the spinning function.
    @Test func spinningJobIsReportedWithItsThreadAndFrame() async throws {
        let system = try LWKT.boot(cpus: 2, configuration: LWKTConfiguration(idleSpin: .microseconds(20)))
        let seen = ReportBox()
        let dog = StallWatchdog(system: system, threshold: .milliseconds(5), poll: .milliseconds(1)) { seen.add($0) }
        let spinner = LWKTThread.spawn(on: system.cpus[1], priority: .user, name: "stall-spinner") {
            _ = spinForStallTest(milliseconds: 20)
        }
        await spinner.join()
        // The report is closed (duration final) at the watchdog's next look.
        for _ in 0..<200 where dog.statistics.recent.first(where: { !$0.ongoing }) == nil {
            try await Task.sleep(for: .milliseconds(5))
        }
        dog.stop()
        try await system.shutdown()
        let stats = dog.statistics
        #expect(stats.detected >= 1)
        #expect(stats.thresholdNanos == 5_000_000)
        guard let r = stats.recent.first(where: { $0.thread == "stall-spinner" }) else {
            Issue.record("no report for stall-spinner: \(stats)")
            return
        }
        #expect(r.cpu == 1)
        #expect(r.priority == "\(LWKTPriority.user)")
        #expect(!r.ongoing)
        #expect(r.durationNanos >= 15_000_000 && r.durationNanos < 2_000_000_000, "duration \(r.durationNanos)")
        #expect(r.backtrace.contains { $0.contains("spinForStallTest") }, "backtrace: \(r.backtrace.joined(separator: "\n"))")
        #expect(seen.count >= 1)
    }

    /// Short jobs are never reported; the rate limit counts what it suppresses.
    @Test func shortJobsAreNotStallsAndReportsAreRateLimited() async throws {
        let system = try LWKT.boot(cpus: 2, configuration: LWKTConfiguration(idleSpin: .microseconds(20)))
        let dog = StallWatchdog(system: system, threshold: .milliseconds(5), poll: .milliseconds(1), minimumInterval: .seconds(60))
        try await system.run(on: 0) {
            for _ in 0..<200 { _ = spinForStallTest(milliseconds: 0); await LWKT.yield() }
        }
        #expect(dog.statistics.detected == 0)
        for k in 0..<2 {
            let t = LWKTThread.spawn(on: system.cpus[0], name: "spin\(k)") { _ = spinForStallTest(milliseconds: 15) }
            await t.join()
            try await Task.sleep(for: .milliseconds(5))
        }
        dog.stop()
        try await system.shutdown()
        let s = dog.statistics
        #expect(s.detected == 2)
        #expect(s.reported == 1 && s.suppressed == 1)
    }
}

final class ReportBox: @unchecked Sendable {
    private let lock = NSLock()
    private var reports: [StallReport] = []
    func add(_ r: StallReport) { lock.lock(); reports.append(r); lock.unlock() }
    var count: Int { lock.lock(); defer { lock.unlock() }; return reports.count }
}
