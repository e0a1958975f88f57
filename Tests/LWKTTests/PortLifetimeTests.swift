import Testing
import Synchronization
import CLibellula
@testable import LWKT

/// Set while a test holds a CPU hostage with `holdCPUIPI`.
nonisolated(unsafe) let hostageRelease = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1)

/// Spins (on its CPU, inside the IPI) until `hostageRelease` is set.
let holdCPUIPI: IPIFunction = { _, _ in
    while hostageRelease.pointee.load(ordering: .acquiring) == 0 { lb_cpu_relax() }
}

@Suite("Port lifetime and remote puts")
struct PortLifetimeTests {
    @Test func remotePutsToAPinnedPortLeaveNothingInFlight() async throws {
        try await withSystem(cpus: 2) { system in
            let port = Port.function(name: "pinned", on: system.cpus[1]) { m in
                statusFor((m as? IntMsg)?.payload ?? 0)
            }
            let statuses = try await system.run(on: 0) {
                var out: [Int32] = []
                for i in 0..<200 { out.append(try await LWKT.doMsg(IntMsg(i), to: port)) }
                return out
            }
            #expect(statuses == (0..<200).map { statusFor($0) })
            #if DEBUG
            #expect(port.inFlight.load(ordering: .sequentiallyConsistent) == 0)
            #endif
        }
    }

    #if DEBUG
    /// A port destroyed while a message is on its way to it through the crossbar traps in
    /// a debug build (the put itself holds no reference to the port).
    @Test func destroyingAPortWithAMessageInFlightTraps() async {
        await #expect(processExitsWith: .failure) {
            hostageRelease.initialize(to: Atomic(0))
            let system = try LWKT.boot(cpus: 2, configuration: .init(warnings: false))
            // CPU 1 is held inside an IPI, so nothing sent to it is delivered.
            system.cpus[1].sendIPI(holdCPUIPI, nil, 0)
            _ = try await system.run(on: 0) {
                let port = Port.function(name: "doomed", on: system.cpus[1]) { _ in MessageStatus.ok }
                let msg = IntMsg(1, replyPort: Port.replyOnly())
                try LWKT.sendMsg(msg, to: port)
                // `port` is released here, with the message still in CPU 1's ring.
                return 0
            }
        }
    }
    #endif
}
