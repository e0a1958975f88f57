import Testing
import Synchronization
@testable import LWKT

@Suite("Ownership checks")
struct OwnershipTests {
    @Test func cpuBoundValueIsUsableOnItsCPU() async throws {
        try await withSystem(cpus: 2) { system in
            let bound = CPUBound([Int](), on: system.cpus[1])
            #expect(!bound.isAccessible)   // this test's task is not cpu1
            let (n, accessible) = try await system.run(on: 1) { () -> (Int, Bool) in
                for i in 0..<10 { bound.withValue { $0.append(i) } }
                bound.value.append(10)
                return (bound.value.count, bound.isAccessible)
            }
            #expect(n == 11)
            #expect(accessible)
            let elsewhere = try await system.run(on: 0) { bound.isAccessible }
            #expect(!elsewhere)
        }
    }

    @Test func ownerChecksPassOnTheOwner() async throws {
        try await withSystem(cpus: 2) { system in
            try await system.run(on: 1) {
                system.cpus[1].assertCurrent("test")
                CPU.assertOnCPU("test")
                CPU.critical { CPU.assertInCritical("test") }
            }
        }
    }

    /// `LWKT.sleep` keeps its timer in a `CPUBound`; a cancellation from a thread that is
    /// not the CPU carries it back by IPI, and the sleeper throws at once.
    @Test(.timeLimit(.minutes(1)))
    func sleepCancelledFromAnotherThreadThrowsThroughItsCPUBoundTimer() async throws {
        try await withSystem(cpus: 2) { system in
            let outcome = Atomic<Int>(0)   // 1: cancelled, 2: slept to the end
            // Bounded: a sleep that is never cancelled still ends after 30 s.
            let sleeper = LWKTThread.spawn(on: system.cpus[1], name: "sleeper") {
                do {
                    try await LWKT.sleep(for: .seconds(30))
                    outcome.store(2, ordering: .releasing)
                } catch {
                    outcome.store(error is CancellationError ? 1 : 3, ordering: .releasing)
                }
            }
            // The timer queue is owner-only: look at it from CPU 1 itself.
            let cpu1 = system.cpus[1]
            var armed = false
            for _ in 0..<2000 where !armed {
                armed = try await system.run(on: 1) { !cpu1.timers.isEmpty }
                if !armed { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(armed)
            sleeper.cancel()   // from this test's task, which is not a CPU
            try await waitUntil("cancelled sleep", seconds: 20) { outcome.load(ordering: .acquiring) != 0 }
            await sleeper.join()
            #expect(outcome.load(ordering: .acquiring) == 1)
            #expect(try await system.run(on: 1) { cpu1.timers.isEmpty })
        }
    }

    #if DEBUG
    /// Debug builds stop a per-CPU value being read on another CPU.
    @Test func cpuBoundValueReadOffItsCPUTraps() async {
        await #expect(processExitsWith: .failure) {
            let system = try LWKT.boot(cpus: 2, configuration: .init(warnings: false))
            let bound = CPUBound(1, on: system.cpus[1])
            _ = try await system.run(on: 0) { bound.value }
        }
    }

    /// Debug builds stop an owner-only entry point called from another thread.
    @Test func assertCurrentOffTheOwnerTraps() async {
        await #expect(processExitsWith: .failure) {
            let system = try LWKT.boot(cpus: 2, configuration: .init(warnings: false))
            system.cpus[1].assertCurrent("test")
        }
    }
    #endif
}
