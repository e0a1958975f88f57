import Testing
import LWKT
import Slab
@testable import NetStack
import LibellulaTestSupport

/// One stack on one CPU behind a simulated wire whose other end the test drives by hand.
struct Lone: @unchecked Sendable {
    let system: LWKTSystem
    let link: SimulatedLink
    let stack: NetStack
    static let address = IPv4Address(10, 0, 0, 2)

    /// Feeds raw bytes to the stack as a received frame (on CPU 0, processed at once).
    func feed(_ bytes: [UInt8]) {
        guard let m = bytes.withUnsafeBytes({ stack.pool.packet(copying: $0) }) else { return }
        stack.inject(frame: m, cpu: 0)
    }

    /// Frees whatever the stack sent back.
    @discardableResult func drainWire() -> Int { link.a.drain { $0.free() } }
}

func withLoneStack(configure: (inout NetStackConfiguration) -> Void = { _ in },
                   _ body: @escaping @Sendable (Lone) async throws -> Void) async throws {
    let system = try LWKT.boot(cpus: 1, configuration: .init(idleSpin: .microseconds(20), pin: false, warnings: false))
    let slab = SlabAllocator(system: system, configuration: .init(debug: false))
    let link = SimulatedLink(queues: 1)
    var c = NetStackConfiguration(address: Lone.address)
    c.udpEchoPort = 7
    configure(&c)
    let stack = try NetStack(system: system, allocator: slab, interface: link.b, configuration: c)
    try stack.start()
    let lone = Lone(system: system, link: link, stack: stack)
    let result: Result<Void, any Error>
    do { result = .success(try await system.run(on: 0) { try await body(lone) }) } catch { result = .failure(error) }
    try await stack.stop()
    lone.drainWire()
    #expect(stack.pool.outstanding == 0, "mbufs leaked")
    _ = try await system.shutdown(timeout: .seconds(20))
    try result.get()
}

@Suite(.serialized) struct MalformedInputTests {
    typealias F = FrameBuilder

    @Test(.timeLimit(.minutes(1))) func corpusIsRejectedAndCountedByReason() async throws {
        try await withLoneStack(configure: { $0.reassemblyLimit = 4 }) { (l: Lone) async throws in
            let mac = l.link.b.macAddress
            let me = Lone.address
            let goodUDP = F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 17, to: me, F.udp(to: me, sport: 1000, dport: 7, Array(0..<20))))
            var cases: [(String, [UInt8], NetCounter)] = []
            cases.append(("empty", [], .dropTruncated))
            cases.append(("runt", [1, 2, 3, 4, 5], .dropTruncated))
            cases.append(("other MAC", F.ethernet(to: .local(seed: 99), type: 0x0800, Array(goodUDP[14...])), .dropNotForUs))
            cases.append(("IPv6 ethertype", F.ethernet(to: mac, type: 0x86dd, Array(repeating: 0, count: 40)), .dropUnsupported))
            cases.append(("ARP truncated", F.ethernet(to: .broadcast, type: 0x0806, Array(F.arp(target: me)[0..<10])), .dropBadARP))
            var arpBad = F.arp(target: me); arpBad[4] = 8
            cases.append(("ARP bad hlen", F.ethernet(to: .broadcast, type: 0x0806, arpBad), .dropBadARP))
            cases.append(("IP truncated", F.ethernet(to: mac, type: 0x0800, Array(repeating: 0x45, count: 12)), .dropTruncated))
            var v6 = goodUDP; v6[14] = 0x65; F.fixIPChecksum(&v6)
            cases.append(("IP version 6", v6, .dropBadIPHeader))
            var ihl = goodUDP; ihl[14] = 0x44
            cases.append(("IHL 4", ihl, .dropBadIPHeader))
            var longTotal = goodUDP; longTotal[17] = longTotal[17] &+ 40; F.fixIPChecksum(&longTotal)
            cases.append(("total length past frame", longTotal, .dropBadIPHeader))
            var badSum = goodUDP; badSum[24] ^= 0xff
            cases.append(("IP checksum", badSum, .dropBadIPChecksum))
            cases.append(("not our address", F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 17, to: IPv4Address(10, 0, 0, 77), F.udp(to: IPv4Address(10, 0, 0, 77), sport: 1, dport: 7, [1]))), .dropNotForUs))
            cases.append(("broadcast source", F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 17, to: me, from: .broadcast, F.udp(to: me, from: .broadcast, sport: 1, dport: 7, [1]))), .dropBadIPHeader))
            var udpLen = F.udp(to: me, sport: 1000, dport: 7, Array(0..<20)); udpLen[5] = 200
            cases.append(("UDP length past datagram", F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 17, to: me, udpLen)), .dropBadTransportHeader))
            cases.append(("UDP header truncated", F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 17, to: me, [0, 1, 0, 7])), .dropTruncated))
            var udpSum = goodUDP; udpSum[goodUDP.count - 1] ^= 0x55
            cases.append(("UDP checksum", udpSum, .dropBadTransportChecksum))
            var icmpSum = F.icmpEcho(); icmpSum[10] ^= 1
            cases.append(("ICMP checksum", F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 1, to: me, icmpSum)), .dropBadTransportChecksum))
            cases.append(("ICMP truncated", F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 1, to: me, [8, 0, 0])), .dropTruncated))
            cases.append(("unknown protocol", F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 47, to: me, [0, 0, 0, 0])), .dropUnsupported))
            cases.append(("UDP to a closed port", F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 17, to: me, F.udp(to: me, sport: 1, dport: 4444, [1]))), .dropNoSocket))
            cases.append(("odd fragment length", F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 17, to: me, id: 50, flagsAndOffset: IPv4Header.moreFragments, Array(repeating: 1, count: 13))), .dropBadIPHeader))
            cases.append(("fragment past 64 KiB", F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 17, to: me, id: 51, flagsAndOffset: 8190, Array(repeating: 1, count: 64))), .dropTooBig))
            for (name, frame, counter) in cases {
                let before = l.stack.counters.total(counter)
                let drops = l.stack.counters.totalDrops
                l.feed(frame)
                #expect(l.stack.counters.total(counter) == before + 1, "\(name): \(counter) not counted")
                #expect(l.stack.counters.totalDrops == drops + 1, "\(name): counted more than one drop")
                l.drainWire()
            }
            // Overlapping fragments: the second one overlaps the first partially, and the
            // whole datagram goes.
            l.feed(F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 17, to: me, id: 60, flagsAndOffset: IPv4Header.moreFragments, Array(repeating: 1, count: 64))))
            #expect(l.stack.reassemblyCount(cpu: 0) == 1)
            l.feed(F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 17, to: me, id: 60, flagsAndOffset: IPv4Header.moreFragments | 4, Array(repeating: 1, count: 64))))
            #expect(l.stack.counters.total(.dropFragmentOverlap) == 1)
            #expect(l.stack.reassemblyCount(cpu: 0) == 0)
            // A fragment flood fills the reassembly table to its limit and no further.
            for id in 100..<120 {
                l.feed(F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 17, to: me, id: UInt16(id), flagsAndOffset: IPv4Header.moreFragments, Array(repeating: 2, count: 8))))
            }
            #expect(l.stack.reassemblyCount(cpu: 0) == 4)
            #expect(l.stack.counters.total(.dropReassemblyLimit) == 16)
            // The valid frame still works: the echo port answers.
            let sent = l.stack.counters.total(.udpSent)
            l.feed(goodUDP)
            #expect(l.stack.counters.total(.udpSent) == sent + 1)
            l.drainWire()
        }
    }

    @Test(.timeLimit(.minutes(1))) func incompleteDatagramsTimeOut() async throws {
        try await withLoneStack(configure: { $0.reassemblyTimeout = .milliseconds(50) }) { (l: Lone) async throws in
            let mac = l.link.b.macAddress
            for id in 0..<3 {
                l.feed(F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 17, to: Lone.address, id: UInt16(id), flagsAndOffset: IPv4Header.moreFragments, Array(repeating: 2, count: 16))))
            }
            #expect(l.stack.reassemblyCount(cpu: 0) == 3)
            let deadline = ContinuousClock.now + .seconds(5)
            while l.stack.reassemblyCount(cpu: 0) > 0, ContinuousClock.now < deadline { try await LWKT.sleep(for: .milliseconds(20)) }
            #expect(l.stack.reassemblyCount(cpu: 0) == 0)
            #expect(l.stack.counters.total(.dropReassemblyTimeout) == 3)
        }
    }

    @Test(.timeLimit(.minutes(2))) func randomisedFuzzNeverCrashesAndStaysBounded() async throws {
        try await withLoneStack(configure: { $0.reassemblyLimit = 8 }) { (l: Lone) async throws in
            let mac = l.link.b.macAddress
            let me = Lone.address
            let sock = try await UDPSocket.bind(l.stack, port: 9000)
            let seeds: [[UInt8]] = [
                F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 17, to: me, F.udp(to: me, sport: 1000, dport: 7, Array(0..<40)))),
                F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 17, to: me, F.udp(to: me, sport: 1000, dport: 9000, Array(0..<40)))),
                F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 1, to: me, F.icmpEcho())),
                F.ethernet(to: .broadcast, type: 0x0806, F.arp(target: me)),
                F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 17, to: me, id: 7, flagsAndOffset: IPv4Header.moreFragments, Array(repeating: 3, count: 48))),
                F.ethernet(to: mac, type: 0x0800, F.ipv4(proto: 17, to: me, id: 7, flagsAndOffset: 6, Array(repeating: 3, count: 20))),
            ]
            var rng = SeededRandom(seed: 0x5eed)
            let rounds = 30_000
            var maxOutstanding = 0
            for i in 0..<rounds {
                var f = seeds[Int(rng.next() % UInt64(seeds.count))]
                switch rng.next() % 6 {
                case 0: f = Array(f[0..<Int(rng.next() % UInt64(f.count + 1))])
                case 1:
                    for _ in 0..<(1 + rng.next() % 4) { let k = Int(rng.next() % UInt64(f.count)); f[k] = UInt8(truncatingIfNeeded: rng.next()) }
                case 2:
                    // Random length fields with a valid IP checksum, so deeper layers see them.
                    if f.count > 40 { f[16] = UInt8(truncatingIfNeeded: rng.next()); f[17] = UInt8(truncatingIfNeeded: rng.next())
                        f[38] = UInt8(truncatingIfNeeded: rng.next() % 2); f[39] = UInt8(truncatingIfNeeded: rng.next()) }
                    F.fixIPChecksum(&f)
                case 3:
                    // Random fragment fields: floods of overlapping and partial fragments.
                    if f.count > 34 { f[18] = UInt8(truncatingIfNeeded: rng.next() % 64); f[19] = UInt8(truncatingIfNeeded: rng.next())
                        f[20] = UInt8(truncatingIfNeeded: rng.next() % 0x40); f[21] = UInt8(truncatingIfNeeded: rng.next()) }
                    F.fixIPChecksum(&f)
                case 4: f = (0..<Int(rng.next() % 200)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                default: break
                }
                l.feed(f)
                #expect(l.stack.reassemblyCount(cpu: 0) <= 8)
                if i % 64 == 0 {
                    maxOutstanding = max(maxOutstanding, l.stack.pool.outstanding)
                    l.drainWire()
                    while let m = try await sock.receivePacket(timeout: .zero) { m.packet.free() }
                }
            }
            l.drainWire()
            while let m = try await sock.receivePacket(timeout: .zero) { m.packet.free() }
            // Bounded: reassembly clusters plus at most a drain interval's worth of replies.
            #expect(maxOutstanding <= 8 + 64 * 2 + 16)
            #expect(l.stack.counters.total(.processed) == rounds)
            #expect(l.stack.counters.totalDrops > rounds / 3)
            try await sock.close()
        }
    }
}
