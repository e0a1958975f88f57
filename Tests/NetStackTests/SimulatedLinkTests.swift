import Testing
import LWKT
@testable import NetStack

@Suite(.serialized) struct SimulatedLinkTests {
    @Test(.timeLimit(.minutes(1))) func pingBothWays() async throws {
        try await withSimPair { (p: SimPair) async throws in
            #expect(try await p.a.ping(SimPair.addressB, count: 3) == 3)
            #expect(try await p.b.ping(SimPair.addressA, count: 3) == 3)
            #expect(p.a.counters.total(.arpRequestsSent) >= 1)
            #expect(p.b.counters.total(.icmpEchoReplies) == 3)
        }
    }

    @Test(.timeLimit(.minutes(1))) func udpSocketsBothWaysAndEchoPort() async throws {
        try await withSimPair(configure: { _, b in b.udpEchoPort = 7 }) { (p: SimPair) async throws in
            let sa = try await UDPSocket.bind(p.a, port: 5000)
            let sb = try await UDPSocket.bind(p.b, port: 6000)
            await #expect(throws: NetError.addressInUse(5000)) { _ = try await UDPSocket.bind(p.a, port: 5000) }
            try await sa.send(pattern(100, tag: 1), to: IPv4Endpoint(SimPair.addressB, 6000))
            let d = try #require(try await sb.receive(timeout: .seconds(5)))
            #expect(d.payload == pattern(100, tag: 1))
            #expect(d.source == IPv4Endpoint(SimPair.addressA, 5000))
            try await sb.send(pattern(33, tag: 2), to: d.source)
            let e = try #require(try await sa.receive(timeout: .seconds(5)))
            #expect(e.payload == pattern(33, tag: 2))
            // The stack's own echo port.
            try await sa.send(pattern(64, tag: 3), to: IPv4Endpoint(SimPair.addressB, 7))
            let echo = try #require(try await sa.receive(timeout: .seconds(5)))
            #expect(echo.payload == pattern(64, tag: 3) && echo.source.port == 7)
            // Connected sockets send without a destination.
            let c = try await UDPSocket.bind(p.a)
            try await c.connect(to: IPv4Endpoint(SimPair.addressB, 7))
            try await c.send(pattern(10, tag: 4))
            #expect(try await c.receive(timeout: .seconds(5))?.payload == pattern(10, tag: 4))
            // Nobody on the port: port unreachable comes back and the drop is counted.
            try await sa.send([1, 2, 3], to: IPv4Endpoint(SimPair.addressB, 9999))
            try await LWKT.sleep(for: .milliseconds(200))
            #expect(p.b.counters.total(.dropNoSocket) == 1)
            #expect(p.b.counters.total(.icmpUnreachableSent) == 1)
            try await sa.close(); try await sb.close(); try await c.close()
            await #expect(throws: NetError.closed) { _ = try await sa.receive(timeout: .milliseconds(1)) }
        }
    }

    @Test(.timeLimit(.minutes(1))) func largeDatagramsAreFragmentedAndReassembled() async throws {
        try await withSimPair { (p: SimPair) async throws in
            let sa = try await UDPSocket.bind(p.a, port: 5001)
            let sb = try await UDPSocket.bind(p.b, port: 6001)
            for size in [1473, 3000, 30000, 65507] {
                try await sa.send(pattern(size, tag: size), to: IPv4Endpoint(SimPair.addressB, 6001))
                let d = try #require(try await sb.receive(timeout: .seconds(5)))
                #expect(d.payload.count == size && d.payload == pattern(size, tag: size))
                try await sb.send(d.payload, to: d.source)
                let back = try #require(try await sa.receive(timeout: .seconds(5)))
                #expect(back.payload == d.payload)
            }
            #expect(p.a.counters.total(.fragmentsSent) > 0 && p.b.counters.total(.datagramsReassembled) == 4)
            await #expect(throws: NetError.messageTooLong(65508)) {
                try await sa.send([UInt8](repeating: 0, count: 65508), to: IPv4Endpoint(SimPair.addressB, 6001))
            }
        }
    }

    @Test(.timeLimit(.minutes(2))) func udpLosesOnlyWhatTheLinkDropped() async throws {
        let faults = LinkFaults(loss: 0.05, duplication: 0.03, corruption: 0.03, reordering: 0.1,
                                delay: .microseconds(200), jitter: .microseconds(300), bandwidth: 500_000_000, seed: 42)
        try await withSimPair(aToB: faults, bToA: .none) { (p: SimPair) async throws in
            let sb = try await UDPSocket.bind(p.b, port: 7000)
            let sa = try await UDPSocket.bind(p.a, port: 7001)
            // Resolve ARP before measuring (ARP frames could be lost too).
            #expect(try await p.a.ping(SimPair.addressB, count: 1, timeout: .seconds(5)) <= 1)
            p.link.a.setFaults(.none)
            _ = try await p.a.ping(SimPair.addressB, count: 1, timeout: .seconds(5))
            let before = p.link.a.statistics
            p.link.a.setFaults(faults)
            let n = 2000
            var seen = [Int](repeating: 0, count: n)
            var received = 0
            for i in 0..<n {
                var payload = pattern(48, tag: i)
                payload[0] = UInt8(i >> 8); payload[1] = UInt8(i & 0xff)
                try await sa.send(payload, to: IPv4Endpoint(SimPair.addressB, 7000))
                if i % 64 == 63 { try await LWKT.sleep(for: .milliseconds(2)) }
                while let d = try await sb.receive(timeout: .zero) { received += 1; check(d, &seen) }
            }
            let deadline = ContinuousClock.now + .seconds(10)
            var s = p.link.a.statistics
            while ContinuousClock.now < deadline {
                while let d = try await sb.receive(timeout: .milliseconds(50)) { received += 1; check(d, &seen) }
                s = p.link.a.statistics
                let expected = n - (s.lost - before.lost) - (s.overflowed - before.overflowed) + (s.duplicated - before.duplicated) - (s.corrupted - before.corrupted)
                if received >= expected { break }
            }
            let lost = s.lost - before.lost, overflowed = s.overflowed - before.overflowed
            let dup = s.duplicated - before.duplicated, corrupt = s.corrupted - before.corrupted
            #expect(lost > 0 && dup > 0 && corrupt > 0 && s.reordered > 0)
            #expect(received == n - lost - overflowed + dup - corrupt, "lost \(lost) overflowed \(overflowed) dup \(dup) corrupt \(corrupt)")
            let detected = p.b.counters.total(.dropBadIPChecksum) + p.b.counters.total(.dropBadTransportChecksum)
                + p.b.counters.total(.dropBadIPHeader) + p.b.counters.total(.dropNotForUs) + p.b.counters.total(.dropNoSocket)
                + p.b.counters.total(.dropTruncated) + p.b.counters.total(.dropBadTransportHeader)
            #expect(detected == corrupt)
            #expect(seen.allSatisfy { $0 <= 2 })
        }
    }

    private func check(_ d: UDPDatagram, _ seen: inout [Int]) {
        let i = Int(d.payload[0]) << 8 | Int(d.payload[1])
        var want = pattern(48, tag: i)
        want[0] = UInt8(i >> 8); want[1] = UInt8(i & 0xff)
        #expect(d.payload == want)
        if i < seen.count { seen[i] += 1 }
    }

    @Test(.timeLimit(.minutes(1))) func everyPacketIsProcessedOnItsOwnerCPU() async throws {
        try await withSimPair(cpus: 4, steering: .roundRobin) { (p: SimPair) async throws in
            let sb = try await UDPSocket.bind(p.b, port: 8000)
            var senders: [UDPSocket] = []
            for _ in 0..<24 { senders.append(try await UDPSocket.bind(p.a)) }
            _ = try await p.a.ping(SimPair.addressB, count: 1)
            var expected: [UInt16: Int] = [:]
            for s in senders {
                expected[s.localPort] = p.b.owner(IPv4Endpoint(SimPair.addressA, s.localPort), IPv4Endpoint(SimPair.addressB, 8000))
                for k in 0..<5 { try await s.send(pattern(20, tag: k), to: IPv4Endpoint(SimPair.addressB, 8000)) }
            }
            var got = 0
            var owners = Set<Int>()
            while got < senders.count * 5, let d = try await sb.receive(timeout: .seconds(5)) {
                got += 1
                #expect(d.cpu == expected[d.source.port], "port \(d.source.port)")
                owners.insert(d.cpu)
            }
            #expect(got == senders.count * 5)
            #expect(owners.count > 1)
            // Round-robin steering puts most frames on the wrong queue: each is forwarded once.
            let fwd = p.b.counters.total(.forwarded)
            #expect(fwd > 0)
            try await LWKT.sleep(for: .milliseconds(50))
            let fwdA = p.a.counters.total(.forwarded), inA = p.a.counters.total(.forwardedIn)
            #expect(p.b.counters.total(.forwardedIn) >= fwd)
            #expect(inA >= fwdA)
            // Sockets hand their sends to the owner CPU: every datagram sent counts there.
            var perCPU = [Int](repeating: 0, count: 4)
            for s in senders {
                perCPU[p.a.owner(IPv4Endpoint(SimPair.addressA, s.localPort), IPv4Endpoint(SimPair.addressB, 8000))] += 5
            }
            #expect((0..<4).map { p.a.counters.value(.udpSent, cpu: $0) } == perCPU)
        }
    }

    @Test(.timeLimit(.minutes(1))) func flowHashSteeringNeedsNoForwarding() async throws {
        try await withSimPair(cpus: 2, steering: .flowHash, configure: { _, b in b.udpEchoPort = 7 }) { (p: SimPair) async throws in
            let s = try await UDPSocket.bind(p.a, port: 40000)
            _ = try await p.a.ping(SimPair.addressB, count: 1)
            let udpFwdBefore = p.b.counters.total(.forwarded)
            for i in 0..<50 {
                try await s.send(pattern(10, tag: i), to: IPv4Endpoint(SimPair.addressB, 7))
                _ = try await s.receive(timeout: .seconds(5))
            }
            #expect(p.b.counters.total(.forwarded) == udpFwdBefore)
        }
    }
}
