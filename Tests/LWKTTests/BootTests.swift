import Testing
import Synchronization
@testable import LWKT

@Suite("Boot and shutdown")
struct BootTests {
    @Test(arguments: [1, 2, 8])
    func bootsAndShutsDownCleanly(cpus: Int) async throws {
        try await withSystem(cpus: cpus) { system in
            #expect(system.cpus.count == cpus)
            for (i, cpu) in system.cpus.enumerated() {
                #expect(cpu.id == i)
                #expect(cpu.osThreadID != 0)
                let ran = try await system.run(on: i) { CPU.current?.id ?? -1 }
                #expect(ran == i)
            }
        }
    }

    @Test func currentIsNilOffCPU() {
        #expect(CPU.current == nil)
        #expect(CPU.criticalDepth == 0)
    }

    @Test func shutdownCancelsSleepingThreads() async throws {
        let system = try LWKT.boot(cpus: 2, configuration: .init(idleSpin: .microseconds(10), warnings: false))
        let cancelled = Counter()
        for c in 0..<2 {
            for k in 0..<5 {
                LWKTThread.spawn(on: system.cpus[c], name: "sleeper\(k)") {
                    do {
                        _ = try await LWKT.tsleep(on: WaitChannel(cancelled))
                    } catch is CancellationError {
                        cancelled.value.add(1, ordering: .relaxed)
                    } catch {}
                }
                LWKTThread.spawn(on: system.cpus[c], name: "timer\(k)") {
                    do { try await LWKT.sleep(for: .seconds(3600)) } catch { cancelled.value.add(1, ordering: .relaxed) }
                }
            }
        }
        // Let them all go to sleep.
        while system.snapshot().total(.tsleeps) < 10 { try await Task.sleep(for: .milliseconds(1)) }
        let report = try await system.shutdown()
        #expect(report.cancelledThreads == 20)
        #expect(report.leakedThreads == 0)
        #expect(report.joinedCPUs == 2)
        #expect(cancelled.value.load(ordering: .relaxed) == 20)
        #expect(system.liveThreads.isEmpty)
        // A second shutdown is harmless.
        _ = try await system.shutdown()
    }

    @Test func shutdownFromACPUIsRefused() async throws {
        try await withSystem(cpus: 1) { system in
            let refused = try await system.run(on: 0) { () -> Bool in
                do { _ = try await system.shutdown(); return false } catch { return true }
            }
            #expect(refused)
        }
    }

    @Test func invalidCPUCountsAreRejected() {
        #expect(throws: LWKTError.invalidCPUCount(0)) { _ = try LWKT.boot(cpus: 0) }
        #expect(throws: LWKTError.invalidCPUCount(5000)) { _ = try LWKT.boot(cpus: 5000) }
    }
}
