import Testing
import Synchronization
import LWKT
@testable import NetStack

@Suite(.serialized) struct TCPConnectionTests {
    @Test(.timeLimit(.minutes(1))) func handshakeEchoAndClose() async throws {
        try await withSimPair(steering: .flowHash, configure: { a, b in tcpTestConfiguration(&a); tcpTestConfiguration(&b) }) { (p: SimPair) async throws in
            let server = try EchoServer(p.b, port: 80)
            let payload = pattern(100_000, tag: 1)
            let c = try await echoRoundTrip(p.a, to: IPv4Endpoint(SimPair.addressB, 80), payload: payload)
            #expect(c.state == .timeWait || c.state == .closed)
            let a = try await p.a.waitForNoConnections()
            let b = try await p.b.waitForNoConnections()
            #expect(a.connections == 0 && b.connections == 0)
            #expect(a.bufferBytes == 0 && b.bufferBytes == 0)
            #expect(c.state == .closed)
            try await server.stop()
            #expect(server.errors.withLock { $0.isEmpty })
            #expect(p.a.counters.total(.tcpActiveOpens) == 1 && p.b.counters.total(.tcpPassiveOpens) == 1)
            #expect(p.a.counters.total(.tcpRetransmits) == 0)
            for s in TCPState.allCases { if let g = s.gauge { #expect(p.a.counters.total(g) == 0 && p.b.counters.total(g) == 0, "\(s)") } }
        }
    }
}
