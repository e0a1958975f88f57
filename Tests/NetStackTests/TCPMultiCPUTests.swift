import Testing
import Synchronization
import LWKT
@testable import NetStack

/// Connections opened from every CPU: each is owned by the CPU its 4-tuple hashes to on
/// both stacks (active opens pick their port for that), accepted and served there, and
/// every segment is processed there (`tcpProcess` asserts it in debug builds).
@Suite(.serialized) struct TCPMultiCPUTests {
    @Test(.timeLimit(.minutes(2)), arguments: [2, 4])
    func connectionsStayOnTheirOwnerCPU(_ cpus: Int) async throws {
        try await withSimPair(cpus: cpus, steering: .roundRobin, configure: { a, b in tcpTestConfiguration(&a); tcpTestConfiguration(&b) }) { (p: SimPair) async throws in
            let server = try EchoServer(p.b, port: 8080)
            let opened = Mutex<[(port: UInt16, cpu: Int)]>([])
            var threads: [LWKTThread] = []
            let perCPU = 3
            for cpu in 0..<cpus {
                for k in 0..<perCPU {
                    threads.append(LWKTThread.spawn(on: try p.system.cpu(cpu), name: "client") {
                        do {
                            let c = try await echoRoundTrip(p.a, to: IPv4Endpoint(SimPair.addressB, 8080),
                                                            payload: pattern(48_000 + k * 1000, tag: cpu * 10 + k))
                            opened.withLock { $0.append((c.local.port, cpu)) }
                        } catch {
                            Issue.record("client on CPU \(cpu): \(error)")
                        }
                    })
                }
            }
            for t in threads { await t.join() }
            let list = opened.withLock { $0 }
            #expect(list.count == cpus * perCPU)
            for (port, cpu) in list {
                #expect(p.a.owner(IPv4Endpoint(SimPair.addressA, port), IPv4Endpoint(SimPair.addressB, 8080)) == cpu)
            }
            let served = server.served.withLock { $0 }
            #expect(served.count == cpus * perCPU)
            for (port, ran, owner) in served {
                let expected = list.first { $0.port == port }?.cpu
                #expect(ran == owner && owner == expected, "port \(port): handler on \(ran), owner \(owner), client \(String(describing: expected))")
            }
            #expect(Set(served.map(\.2)).count == cpus, "connections use every CPU")
            // Segments were counted on every CPU, by the owner only.
            for cpu in 0..<cpus {
                #expect(p.b.counters.value(.tcpSegmentsReceived, cpu: cpu) > 0)
                #expect(p.b.counters.value(.tcpPassiveOpens, cpu: cpu) == perCPU)
                #expect(p.a.counters.value(.tcpActiveOpens, cpu: cpu) == perCPU)
            }
            // Round-robin steering delivers most frames to the wrong queue: they were forwarded.
            #expect(p.b.counters.total(.forwarded) > 0)
            let a = try await p.a.waitForNoConnections(), b = try await p.b.waitForNoConnections()
            #expect(a.connections == 0 && b.connections == 0 && a.bufferBytes == 0 && b.bufferBytes == 0)
            try await server.stop()
        }
    }
}
