import Testing
import Synchronization
import LWKT
@testable import NetStack

/// The stack's per-CPU counters reach `LWKTSnapshot` (and so `/_stats`) through the
/// system's stat-section hook while the stack runs, and leave it when the stack stops.
@Suite struct NetStatSectionTests {
    @Test(.timeLimit(.minutes(1))) func countersAppearInTheSnapshot() async throws {
        let captured = Mutex<(LWKTSystem?, String)>((nil, ""))
        try await withSimPair(steering: .flowHash, configure: { a, b in tcpTestConfiguration(&a); tcpTestConfiguration(&b) }) { (p: SimPair) async throws in
            let server = try EchoServer(p.b, port: 7)
            try await echoRoundTrip(p.a, to: IPv4Endpoint(SimPair.addressB, 7), payload: pattern(100_000, tag: 1))
            try await server.stop()
            let snap = p.system.snapshot()
            let name = p.a.statSectionName
            #expect(name == "net 10.0.0.1")
            guard let section = snap.sections?[name] else { Issue.record("no section \(name) in \(snap.sections?.keys.sorted() ?? [])"); return }
            #expect(section.count == p.system.cpuCount)
            let sum = section.reduce(0) { $0 + ($1["tcpSegmentsReceived"] ?? 0) }
            #expect(sum > 0)
            #expect(sum <= Int64(p.a.counters.total(.tcpSegmentsReceived)), "a snapshot taken earlier cannot show more")
            #expect(section.allSatisfy { $0.count == NetCounter.allCases.count }, "every counter, zeros included")
            #expect(snap.sections?[p.b.statSectionName] != nil)
            captured.withLock { $0 = (p.system, name) }
        }
        // withSimPair stopped the stacks: their sections are gone (the system is shut down,
        // but its registry can still be read).
        let (system, name) = captured.withLock { $0 }
        #expect(system?.statSectionCounters()[name] == nil)
    }
}
