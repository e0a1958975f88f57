import Testing
import LWKT
@testable import NetStack

/// Byte-exact transfers over a seeded faulty wire: every fault of `LinkFaults` at once, in
/// both directions, at several loss rates. Afterwards no connection, buffer or mbuf is left.
@Suite(.serialized) struct TCPLossyLinkTests {
    static let cases: [(loss: Double, size: Int, seed: UInt64)] = [(0, 4 << 20, 1), (0.01, 2 << 20, 2), (0.05, 1 << 20, 3), (0.20, 256 << 10, 4)]

    @Test(.timeLimit(.minutes(4)), arguments: 0..<Self.cases.count)
    func echoIsByteExactUnderFaults(_ index: Int) async throws {
        let k = Self.cases[index]
        let faults = LinkFaults(loss: k.loss, duplication: k.loss > 0 ? 0.02 : 0, corruption: k.loss > 0 ? 0.01 : 0,
                                reordering: k.loss > 0 ? 0.05 : 0, delay: .microseconds(200), jitter: .microseconds(200), seed: k.seed)
        var back = faults
        back.seed = k.seed &+ 100
        try await withSimPair(aToB: faults, bToA: back, configure: { a, b in tcpTestConfiguration(&a); tcpTestConfiguration(&b) }) { (p: SimPair) async throws in
            let server = try EchoServer(p.b, port: 7)
            let baseA = p.a.pool.outstanding, baseB = p.b.pool.outstanding
            let payload = pattern(k.size, tag: index)
            do {
                try await echoRoundTrip(p.a, to: IPv4Endpoint(SimPair.addressB, 7), payload: payload, timeout: .seconds(150))
            } catch {
                Issue.record("client: \(error); server: \(server.errors.withLock { $0 })\nA\n\(p.a.counters.table())\nB\n\(p.b.counters.table())")
            }
            let a = try await p.a.waitForNoConnections(), b = try await p.b.waitForNoConnections()
            #expect(a.connections == 0 && b.connections == 0, "PCBs left: \(a.connections) + \(b.connections)")
            #expect(a.bufferBytes == 0 && b.bufferBytes == 0)
            try await server.stop()
            #expect(server.errors.withLock { $0.isEmpty })
            try await LWKT.sleep(for: .milliseconds(50))
            #expect(p.a.pool.outstanding <= baseA && p.b.pool.outstanding <= baseB, "mbufs leaked")
            if k.loss >= 0.05 {
                #expect(p.a.counters.total(.tcpRetransmits) + p.b.counters.total(.tcpRetransmits) > 0)
            }
        }
    }

    /// A slow line (50 Mbit/s each way, 2 ms delay) in front of a short queue: the sender
    /// overruns it, the queue tail-drops, and congestion control has to find the rate.
    @Test(.timeLimit(.minutes(2))) func bandwidthLimitAndQueueOverflow() async throws {
        var faults = LinkFaults(delay: .milliseconds(2), bandwidth: 50_000_000, seed: 21)
        faults.queueLimit = 24
        try await withSimPair(aToB: faults, bToA: faults, steering: .flowHash,
                              configure: { a, b in tcpTestConfiguration(&a); tcpTestConfiguration(&b) }) { (p: SimPair) async throws in
            let server = try EchoServer(p.b, port: 7)
            try await echoRoundTrip(p.a, to: IPv4Endpoint(SimPair.addressB, 7), payload: pattern(1 << 20, tag: 99), timeout: .seconds(60))
            let overflowed = p.link.a.statistics.overflowed + p.link.b.statistics.overflowed
            #expect(overflowed > 0, "the queue overflowed")
            #expect(p.a.counters.total(.tcpRetransmits) + p.b.counters.total(.tcpRetransmits) > 0)
            let a = try await p.a.waitForNoConnections(), b = try await p.b.waitForNoConnections()
            #expect(a.connections == 0 && b.connections == 0 && a.bufferBytes == 0 && b.bufferBytes == 0)
            try await server.stop()
            #expect(server.errors.withLock { $0.isEmpty })
        }
    }
}
