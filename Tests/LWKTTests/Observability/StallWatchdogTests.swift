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
    /// priority, a duration of at least the threshold, and a frame of the spinning function.
    /// (On a heavily loaded host the CPU thread itself can be descheduled around the
    /// capture; the spin is tried up to ten times and one complete report is required.)
    @Test func spinningJobIsReportedWithItsThreadAndFrame() async throws {
        let system = try LWKT.boot(cpus: 2, configuration: LWKTConfiguration(idleSpin: .microseconds(20)))
        let seen = ReportBox()
        let dog = StallWatchdog(system: system, threshold: .milliseconds(5), poll: .milliseconds(1),
                                minimumInterval: .zero) { seen.add($0) }
        var found: StallReport?
        for attempt in 0..<10 where found == nil {
            let name = "stall-spinner\(attempt)"
            let spinner = LWKTThread.spawn(on: system.cpus[1], priority: .user, name: name) {
                _ = spinForStallTest(milliseconds: 20)
            }
            await spinner.join()
            // The report is closed (duration final) at the watchdog's next look.
            let deadline = ContinuousClock.now + .seconds(10)
            while dog.statistics.recent.first(where: { $0.thread == name && !$0.ongoing }) == nil && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            found = dog.statistics.recent.first {
                $0.thread == name && !$0.ongoing && $0.backtrace.contains { $0.contains("spinForStallTest") }
            }
            if found == nil { print("stall attempt \(attempt): \(dog.statistics.recent.filter { $0.thread == name })") }
        }
        dog.stop()
        try await system.shutdown()
        let stats = dog.statistics
        #expect(stats.detected >= 1)
        #expect(stats.thresholdNanos == 5_000_000)
        guard let r = found else {
            Issue.record("no complete report for the spinner: \(stats)")
            return
        }
        #expect(r.cpu == 1)
        #expect(r.priority == "\(LWKTPriority.user)")
        #expect(r.durationNanos >= 5_000_000 && r.durationNanos < 2_000_000_000, "duration \(r.durationNanos)")
        #expect(seen.count >= 1)
    }

    /// With every CPU in its idle sleep the watchdog parks (no timer wakeups); the first CPU
    /// to leave its sleep for a job wakes it, so a 20 ms stall that starts while it is parked
    /// is still caught (the parking timeout is 1 s: without the wake it would be missed).
    @Test func parkedWatchdogIsWokenByTheStallingCPU() async throws {
        let system = try LWKT.boot(cpus: 2, configuration: LWKTConfiguration(idleSpin: .microseconds(20)))
        let dog = StallWatchdog(system: system, threshold: .milliseconds(5), poll: .milliseconds(1), minimumInterval: .zero)
        var caught = false
        var parkedSeen = 0
        for attempt in 0..<10 where !caught {
            // Wait (bounded) until the watchdog has parked.
            let deadline = ContinuousClock.now + .seconds(3)
            while lb_u32_load_seq(system.latencies.watchdogParked) == 0 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(2))
            }
            guard lb_u32_load_seq(system.latencies.watchdogParked) != 0 else { continue }
            parkedSeen += 1
            let name = "parked-spinner\(attempt)"
            let t = LWKTThread.spawn(on: system.cpus[1], name: name) { _ = spinForStallTest(milliseconds: 20) }
            await t.join()
            let until = ContinuousClock.now + .seconds(2)
            while !dog.statistics.recent.contains(where: { $0.thread == name }) && ContinuousClock.now < until {
                try await Task.sleep(for: .milliseconds(5))
            }
            caught = dog.statistics.recent.contains { $0.thread == name }
        }
        dog.stop()
        try await system.shutdown()
        let s = dog.statistics
        #expect(parkedSeen >= 1, "the watchdog never parked: \(s)")
        #expect(s.parks >= 1)
        #expect(caught, "no report for a stall that started while the watchdog was parked: \(s)")
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
            // 200 ms, far over the 5 ms threshold: a loaded machine can keep the watchdog's own
            // thread off a core for longer than a short spin lasts.
            let t = LWKTThread.spawn(on: system.cpus[0], name: "spin\(k)") { _ = spinForStallTest(milliseconds: 200) }
            await t.join()
            try await Task.sleep(for: .milliseconds(5))
        }
        dog.stop()
        try await system.shutdown()
        let s = dog.statistics
        #expect(s.detected == 2)
        #expect(s.reported == 1 && s.suppressed == 1)
        // Its own cost is accounted when it stops.
        #expect(s.polls > 0 && s.watchdogCPUSeconds > 0, "\(s.polls) polls, \(s.watchdogCPUSeconds) s")
    }
}

final class ReportBox: @unchecked Sendable {
    private let lock = NSLock()
    private var reports: [StallReport] = []
    func add(_ r: StallReport) { lock.lock(); reports.append(r); lock.unlock() }
    var count: Int { lock.lock(); defer { lock.unlock() }; return reports.count }
}
