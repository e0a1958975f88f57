import Testing
import Synchronization
@testable import LWKT

/// What a park flush in these tests records (touched only on CPU 0, or after it is idle).
final class ParkFlushLog: @unchecked Sendable {
    var entries: [String] = []
    let runs = Atomic<Int>(0)
    var flush: ParkFlush?
    var ctx: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }
}

let parkFlushLogFunction: ParkFlushFunction = { ctx, cpu in
    guard let ctx else { return }
    let log = Unmanaged<ParkFlushLog>.fromOpaque(ctx).takeUnretainedValue()
    log.entries.append("flush\(cpu)")
    log.runs.add(1, ordering: .relaxed)
}

/// Arms the log's park flush from inside an IPI handler (outside any job).
let armParkFlushIPI: IPIFunction = { arg, _ in
    guard let arg else { return }
    let log = Unmanaged<ParkFlushLog>.fromOpaque(arg).takeUnretainedValue()
    log.entries.append("ipi")
    _ = log.flush?.arm()
}

@Suite("Park flushes")
struct ParkFlushTests {
    /// Armed work runs once when the arming job parks, before any other job of the CPU
    /// (here a higher-priority thread made ready before the park), and not earlier.
    @Test func runsOnceWhenTheJobParksBeforeAnyOtherJob() async throws {
        try await withSystem(cpus: 1) { system in
            let log = ParkFlushLog()
            let pf = ParkFlush(context: log.ctx, parkFlushLogFunction)
            let cpu = system.cpus[0]
            try await system.run(on: 0) {
                LWKTThread.spawn(on: cpu, priority: .interrupt, name: "other") { log.entries.append("other") }
                #expect(pf.arm())
                #expect(pf.arm())
                #expect(pf.isArmed)
                log.entries.append("armed")
                try await LWKT.sleep(for: .milliseconds(1))
                log.entries.append("back")
                #expect(!pf.isArmed)
            }
            #expect(log.entries == ["armed", "flush0", "other", "back"])
            pf.deallocate()
        }
    }

    /// `LWKT.yield()` runs armed work even when nothing else is ready (the caller keeps
    /// the CPU); a disarmed record does not run; off a CPU nothing can be armed.
    @Test func yieldRunsItAndDisarmCancelsIt() async throws {
        try await withSystem(cpus: 1) { system in
            let log = ParkFlushLog()
            let pf = ParkFlush(context: log.ctx, parkFlushLogFunction)
            #expect(!pf.arm())
            try await system.run(on: 0) {
                pf.arm()
                await LWKT.yield()
                log.entries.append("after yield")
                pf.arm()
                #expect(pf.disarm())
                #expect(!pf.isArmed)
                try await LWKT.sleep(for: .milliseconds(1))
                log.entries.append("after sleep")
            }
            #expect(log.entries == ["flush0", "after yield", "after sleep"])
            pf.deallocate()
        }
    }

    /// Armed outside a job (in an IPI handler), it runs before the CPU goes idle.
    @Test func armedInAnIPIHandlerRunsBeforeIdle() async throws {
        try await withSystem(cpus: 2) { system in
            let log = ParkFlushLog()
            let pf = ParkFlush(context: log.ctx, parkFlushLogFunction)
            log.flush = pf
            system.cpus[1].sendIPI(armParkFlushIPI, log.ctx, 0)
            try await waitUntil("the park flush ran") { log.runs.load(ordering: .relaxed) == 1 }
            // Quiet for a while: it ran once.
            try await Task.sleep(for: .milliseconds(20))
            #expect(log.runs.load(ordering: .relaxed) == 1)
            try await system.run(on: 1) { #expect(!pf.isArmed) }
            #expect(log.entries == ["ipi", "flush1"])
            pf.deallocate()
        }
    }
}
