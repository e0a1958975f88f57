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
