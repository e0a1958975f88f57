import CLibellula
@testable import LWKT
import Synchronization
import Testing

/// The IPI function the test leaves waiting (named in the pending list).
let pendingProbeFunction: IPIFunction = { _, _ in }

@Suite struct PendingMessagesTests {
    /// While CPU 1 runs one long job it drains nothing: messages CPU 0 sends it wait on
    /// ring 0 → 1 and are listed with their function's name.
    @Test func waitingMessagesAreListedWithTheirFunction() async throws {
        let system = try LWKT.boot(cpus: 2, configuration: LWKTConfiguration(idleSpin: .microseconds(20)))
        let release = Flag(), started = Flag()
        let busy = LWKTThread.spawn(on: system.cpus[1], name: "busy") {
            started.value.store(true, ordering: .releasing)
            let until = lb_now_ns() &+ 5_000_000_000
            while !release.value.load(ordering: .acquiring) && lb_now_ns() < until { lb_cpu_relax() }
        }
        // Until the busy job runs, CPU 1 would drain the messages at once.
        for _ in 0..<1000 where !started.value.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(2)) }
        try await system.run(on: 0) {
            for _ in 0..<5 { system.crossbar.sendPassive(to: 1, pendingProbeFunction, nil, 0) }
        }
        let pending = system.pendingMessages()
        release.value.store(true, ordering: .releasing)
        await busy.join()
        try await system.shutdown()
        let ring = pending.first { $0.source == 0 && $0.target == 1 }
        #expect((ring?.count ?? 0) >= 5, "\(pending)")
        #expect(ring?.functions.keys.contains { $0.contains("pendingProbeFunction") } == true, "\(pending)")
    }
}

final class Flag: Sendable {
    let value = Atomic<Bool>(false)
}
