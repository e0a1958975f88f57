import Testing
import Synchronization
import Foundation
@testable import LWKT

/// A log appended to only from one CPU (so no lock is needed).
final class CPULog: @unchecked Sendable {
    var entries: [String] = []
}

let flagIPI: IPIFunction = { arg, _ in
    guard let arg else { return }
    let c = Unmanaged<Counter>.fromOpaque(arg).takeUnretainedValue()
    c.log.append(CPU.criticalDepth)
    c.value.add(1, ordering: .relaxed)
}

@Suite("Scheduler, critical sections, migration")
struct SchedulerTests {
    @Test func higherBandsRunFirstAndBandsAreFIFO() async throws {
        try await withSystem(cpus: 1) { system in
            let log = CPULog()
            let cpu = system.cpus[0]
            var spawned: [LWKTThread] = []
            try await system.run(on: 0, priority: .interrupt) {
                // Nothing below runs until this job returns: the CPU does not preempt.
                let order: [(LWKTPriority, String)] = [
                    (.idle, "idle"), (.user, "user1"), (.kernel, "kernel1"), (.softInterrupt, "soft"),
                    (.user, "user2"), (.interrupt, "intr"), (.kernel, "kernel2"),
                ]
                for (p, name) in order {
                    LWKTThread.spawn(on: cpu, priority: p, name: name) { log.entries.append(name) }
                }
            }
            _ = spawned
            try await waitUntil("all ran") { system.snapshot().total(.threadsExited) >= 8 }
            spawned = []
            #expect(log.entries == ["intr", "soft", "kernel1", "kernel2", "user1", "user2", "idle"])
        }
    }

    @Test func equalPriorityThreadsRoundRobinOnYield() async throws {
        try await withSystem(cpus: 1) { system in
            let log = CPULog()
            let cpu = system.cpus[0]
            let threads = try await system.run(on: 0, priority: .interrupt) { () -> [LWKTThread] in
                (0..<3).map { k in
                    LWKTThread.spawn(on: cpu, priority: .user, name: "rr\(k)") {
                        for _ in 0..<4 {
                            log.entries.append("\(k)")
                            await LWKT.yield()
                        }
                    }
                }
            }
            for t in threads { await t.join() }
            #expect(log.entries.joined() == "012012012012")
            #expect(cpu.counter(.yieldSwitches) >= 9)
        }
    }

    @Test func yieldDoesNotSwitchToALowerBand() async throws {
        try await withSystem(cpus: 1) { system in
            let log = CPULog()
            let cpu = system.cpus[0]
            try await system.run(on: 0, priority: .kernel) {
                LWKTThread.spawn(on: cpu, priority: .idle, name: "low") { log.entries.append("low") }
                let before = cpu.counter(.yieldSwitches)
                await LWKT.yield()
                log.entries.append(cpu.counter(.yieldSwitches) == before ? "no-switch" : "switched")
            }
            try await waitUntil("low ran") { log.entries.count == 2 }
            #expect(log.entries == ["no-switch", "low"])
        }
    }

    @Test func criticalSectionsDeferIPIsUntilTheOutermostExit() async throws {
        try await withSystem(cpus: 2) { system in
            let counter = Counter()
            let cpu1 = system.cpus[1]
            let sender = Task.detached {
                // Wait until CPU 1 is inside its critical section, then send from a thread
                // that is not a CPU (the inbox path).
                while counter.value.load(ordering: .acquiring) != 100 { usleep(50) }
                cpu1.sendIPI(flagIPI, counter.ctx, 0)
            }
            let observed = try await system.run(on: 1) { () -> [Int] in
                var seen: [Int] = []
                CPU.critical {
                    CPU.critical {
                        counter.value.store(100, ordering: .releasing)
                        // Wait for the doorbell, then hit a preemption point: it must defer.
                        while cpu1.signals.pointee.doorbell.load(ordering: .acquiring) == 0 { usleep(10) }
                        CPU.processPending()
                        seen.append(counter.value.load(ordering: .acquiring))   // 100: not run
                        seen.append(CPU.criticalDepth)                           // 2
                    }
                    CPU.processPending()
                    seen.append(counter.value.load(ordering: .acquiring))       // still 100
                }
                seen.append(counter.value.load(ordering: .acquiring))           // 101: ran at exit
                return seen
            }
            await sender.value
            #expect(observed == [100, 2, 100, 101])
            #expect(counter.log == [1])   // the IPI itself ran inside a critical section
            #expect(cpu1.counter(.criticalDeferrals) >= 1)
        }
    }

    @Test func criticalOffCPUJustRuns() {
        let r = CPU.critical { 42 }
        #expect(r == 42)
    }

    @Test func migrationMovesTheThreadAndComesBack() async throws {
        try await withSystem(cpus: 2) { system in
            let result = try await system.run(on: 0, name: "migrant") { () -> [Int] in
                var ids = [CPU.current?.id ?? -1]
                let there = await LWKT.migrate(to: system.cpus[1]) { CPU.current?.id ?? -1 }
                ids.append(there)
                ids.append(CPU.current?.id ?? -1)
                ids.append(Int(LWKTThread.current?.migrations ?? -1))
                return ids
            }
            #expect(result[0] == 0)
            #expect(result[1] == 1)
            #expect(result[2] == 0)
            #expect(result[3] == 2)
        }
    }

    @Test func perThreadCountersAccumulate() async throws {
        try await withSystem(cpus: 1) { system in
            let t = LWKTThread.spawn(on: system.cpus[0], priority: .user, name: "counted") {
                for _ in 0..<10 { try? await LWKT.sleep(for: .microseconds(100)) }
            }
            await t.join()
            #expect(t.runs >= 10)
            #expect(t.runTimeNanos > 0)
            #expect(t.isFinished)
        }
    }

    @Test func actorsPinnedToACPURunThere() async throws {
        try await withSystem(cpus: 2) { system in
            let actor = PinnedCounter(cpu: system.cpus[1])
            for _ in 0..<100 { await actor.bump() }
            let (n, cpu) = await actor.read()
            #expect(n == 100)
            #expect(cpu == 1)
            #expect(system.cpus[1].counter(.actorJobs) > 0)
        }
    }

    @Test func sleepForWaitsAtLeastTheDuration() async throws {
        try await withSystem(cpus: 1) { system in
            let elapsed = try await system.run(on: 0) { () -> Duration in
                let clock = ContinuousClock()
                let t0 = clock.now
                try await LWKT.sleep(for: .milliseconds(20))
                return clock.now - t0
            }
            #expect(elapsed >= .milliseconds(20))
        }
    }

    @Test(arguments: [2, 8])
    func crossCPUPingPongStress(cpus: Int) async throws {
        // Tasks hop between CPUs with continuations resumed from other CPUs: every remote
        // enqueue travels the crossbar and must wake its target.
        try await withWatchdog(seconds: 60, "ping-pong") {
            try await withSystem(cpus: cpus, spin: .zero) { system in
                let rounds = cpus == 2 ? 2_000 : 500
                try await withThrowingTaskGroup(of: Int.self) { g in
                    for c in 0..<cpus {
                        g.addTask {
                            try await system.run(on: c) { () -> Int in
                                var hops = 0
                                for r in 0..<rounds {
                                    let target = system.cpus[(c + 1 + r) % cpus]
                                    let id = await LWKT.migrate(to: target) { CPU.current?.id ?? -1 }
                                    if id == target.id { hops += 1 }
                                }
                                return hops
                            }
                        }
                    }
                    var total = 0
                    for try await h in g { total += h }
                    #expect(total == rounds * cpus)
                }
            }
        }
    }
}

actor PinnedCounter {
    let cpu: CPU
    var n = 0
    init(cpu: CPU) { self.cpu = cpu }
    nonisolated var unownedExecutor: UnownedSerialExecutor { cpu.serialExecutor.asUnownedSerialExecutor() }
    func bump() { n += 1 }
    func read() -> (Int, Int) { (n, CPU.current?.id ?? -1) }
}
