import Testing
import Synchronization
@testable import LWKT

@Suite("Globaldata")
struct GlobaldataTests {
    @Test func slotRegistrationIsIdempotentAndDistinct() throws {
        let a = try GlobaldataSlot.register("test.globaldata.a")
        let b = try GlobaldataSlot.register("test.globaldata.b")
        let again = try GlobaldataSlot.register("test.globaldata.a")
        #expect(a == again)
        #expect(a.index != b.index)
        #expect(GlobaldataSlot.registered.contains(a))
        #expect(GlobaldataSlot.registered.contains(b))
    }

    @Test func slotsArePerCPUAndReadFromTheCurrentCPU() async throws {
        let slot = try GlobaldataSlot.register("test.globaldata.per-cpu")
        #expect(CPU.currentGlobaldata(slot) == nil)   // not on a CPU
        try await withSystem(cpus: 2) { system in
            // Each CPU stores its own id + 1 in the slot, on its own thread.
            for c in 0..<2 {
                try await system.run(on: c) {
                    guard let cpu = CPU.current else { return }
                    #expect(CPU.currentGlobaldata(slot) == nil)
                    cpu.setGlobaldata(slot, UnsafeMutableRawPointer(bitPattern: cpu.id + 1))
                }
            }
            for c in 0..<2 {
                let seen = try await system.run(on: c) { Int(bitPattern: CPU.currentGlobaldata(slot)) }
                #expect(seen == c + 1)
            }
        }
    }

    @Test func subsystemsHangOffTheGlobaldata() async throws {
        try await withSystem(cpus: 2) { system in
            for cpu in system.cpus {
                // The accessors are the globaldata's members, not copies.
                #expect(cpu.timers === cpu.local.pointee.timers)
                #expect(cpu.sleepQueues === cpu.local.pointee.sleepQueues)
                #expect(cpu.events === cpu.local.pointee.events)
                #expect(cpu.local.pointee.cpu.takeUnretainedValue() === cpu)
            }
            #expect(system.cpus[0].events.epollFD != system.cpus[1].events.epollFD)
        }
    }
}
