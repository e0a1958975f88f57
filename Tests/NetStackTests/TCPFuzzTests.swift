import Testing
import LWKT
@testable import NetStack
import LibellulaTestSupport

/// Random and mutated segments against connections in every state, checking the PCB
/// invariants and bounded memory as it goes, and that everything is released at the end.
@Suite(.serialized) struct TCPFuzzTests {
    static let ports: [UInt16] = [4001, 4002, 4003, 4004, 4005, 4006, 4008, 4007]

    /// Checks every PCB of CPU 0 (the test runs on CPU 0, like the protocol thread).
    static func checkInvariants(_ a: NetStack, limitMbufs: Int) {
        let t = a.cpus[0].tcp
        var bytes = 0
        for tp in t.connections.values {
            #expect(tp.inTable && tp.state != .closed)
            #expect(TCPSequence.le(tp.sndUna, tp.sndNxt) && TCPSequence.le(tp.sndNxt, tp.sndMax), "\(tp.state)")
            #expect(abs(TCPSequence.distance(tp.sndUna, tp.sndBase)) <= 1, "\(tp.state)")
            #expect(tp.sendBuffer.count <= tp.sendBuffer.capacity && tp.receiveBuffer.count <= tp.receiveBuffer.capacity)
            #expect(tp.reassembly.count <= a.configuration.tcp.outOfOrderLimit)
            #expect(tp.sack.blocks.count <= TCPSACKScoreboard.limit)
            if tp.sendBuffer.isAllocated { bytes += tp.bufferBytes }
        }
        #expect(t.bufferBytes >= bytes && t.bufferBytes <= a.configuration.tcp.memoryLimitPerCPU)
        #expect(a.pool.outstanding <= limitMbufs, "mbufs held: \(a.pool.outstanding)")
    }

    @Test(.timeLimit(.minutes(2)), arguments: [UInt64(0xF022), 7]) func randomSegmentsAgainstEveryState(_ seed: UInt64) async throws {
        try await withRawPeer(configure: { c in
            c.tcp.msl = .seconds(1)
            c.tcp.outOfOrderLimit = 32
            c.tcp.sendBufferSize = 32768
            c.tcp.receiveBufferSize = 32768
        }) { (a: NetStack, peer: RawPeer) async throws in
            let l = try a.listen(port: 80)[0]
            var conns: [UInt16: TCPConnection] = [:]
            var isn: [UInt16: UInt32] = [:]
            for p in Self.ports.dropLast() {
                let (i, c) = try await TCPConformanceTests.open(a, peer, l, sport: p, port: 80)
                conns[p] = c; isn[p] = i
            }
            let ts = TCPConformanceTests.tsOption(1000, 0)
            // CLOSE-WAIT: the peer closes.
            peer.send(sport: 4002, dport: 80, seq: 1001, ack: isn[4002]! &+ 1, flags: [.fin, .ack], options: ts)
            // FIN-WAIT-1 and FIN-WAIT-2: this side closes (and the peer acknowledges one).
            try conns[4003]!.shutdown()
            try conns[4008]!.shutdown()
            peer.send(sport: 4003, dport: 80, seq: 1001, ack: isn[4003]! &+ 2, flags: .ack, options: ts)
            // LAST-ACK: the peer closes, then this side.
            peer.send(sport: 4004, dport: 80, seq: 1001, ack: isn[4004]! &+ 1, flags: [.fin, .ack], options: ts)
            try await LWKT.sleep(for: .milliseconds(5))
            try conns[4004]!.shutdown()
            // CLOSING: both FINs cross.
            try conns[4005]!.shutdown()
            peer.send(sport: 4005, dport: 80, seq: 1001, ack: isn[4005]! &+ 1, flags: [.fin, .ack], options: ts)
            // TIME-WAIT: this side closes first, the peer acknowledges and closes.
            try conns[4006]!.shutdown()
            peer.send(sport: 4006, dport: 80, seq: 1001, ack: isn[4006]! &+ 2, flags: [.fin, .ack], options: ts)
            // SYN-RECEIVED.
            peer.send(sport: 4007, dport: 80, seq: 1000, ack: 0, flags: .syn, options: TCPConformanceTests.synOptions())
            // SYN-SENT: an active open the peer never answers.
            let connecting = LWKTThread.spawn(on: try a.system.cpu(0), name: "connect") {
                _ = try? await TCPConnection.connect(a, to: IPv4Endpoint(RawPeer.address, 6000), timeout: .seconds(3))
            }
            try await LWKT.sleep(for: .milliseconds(20))
            peer.pump(); peer.inbox.removeAll()
            let states = Set(a.cpus[0].tcp.connections.values.map(\.state))
            for s in [TCPState.established, .closeWait, .finWait1, .finWait2, .lastAck, .closing, .timeWait, .synReceived, .synSent] {
                #expect(states.contains(s), "state \(s) present before fuzzing")
            }

            var r = SeededRandom(seed: seed)
            let rounds = 4000
            for i in 0..<rounds {
                let port = Int(r.next() % 10) < 9 ? Self.ports[Int(r.next() % UInt64(Self.ports.count))] : UInt16(truncatingIfNeeded: r.next())
                let key = TCPFlowKey(local: SimPair.addressA, localPort: 80, remote: RawPeer.address, remotePort: port)
                let tp = a.cpus[0].tcp.connections[key]
                let rcv = tp?.rcvNxt ?? UInt32(truncatingIfNeeded: r.next())
                let snd = tp?.sndUna ?? UInt32(truncatingIfNeeded: r.next())
                let offsets: [Int64] = [0, 0, 0, 1, -1, 100, -100, 1 << 16, -(1 << 16), 1 << 30, Int64(r.next() % 4096)]
                let seq = UInt32(truncatingIfNeeded: Int64(rcv) + offsets[Int(r.next() % UInt64(offsets.count))])
                let ack = UInt32(truncatingIfNeeded: Int64(snd) + offsets[Int(r.next() % UInt64(offsets.count))])
                var flags = TCPFlags(rawValue: UInt8(truncatingIfNeeded: r.next()))
                if r.next() % 2 == 0 { flags = [.ack] }
                var o = TCPOptions()
                if r.next() % 2 == 0 { o.timestamp = (UInt32(1000 + i), UInt32(truncatingIfNeeded: r.next())) }
                if r.next() % 8 == 0 { o.mss = UInt16(truncatingIfNeeded: r.next()) }
                if r.next() % 8 == 0 { o.windowScale = UInt8(truncatingIfNeeded: r.next() % 20) }
                if r.next() % 4 == 0 {
                    let n = Int(r.next() % 3) + 1
                    for _ in 0..<n {
                        let s = UInt32(truncatingIfNeeded: Int64(snd) + Int64(r.next() % 70000) - 1000)
                        o.appendSACK(TCPSACKBlock(start: s, end: s &+ UInt32(r.next() % 5000)))
                    }
                }
                let len = r.next() % 3 == 0 ? Int(r.next() % 1400) : 0
                let payload = (0..<len).map { _ in UInt8(truncatingIfNeeded: r.next()) }
                var seg = RawPeer.segment(sport: port, dport: 80, seq: seq, ack: ack, flags: flags,
                                          window: UInt16(truncatingIfNeeded: r.next()), options: o, payload: payload,
                                          badChecksum: r.next() % 20 == 0)
                switch r.next() % 25 {
                case 0: seg = Array(seg.prefix(Int(r.next() % UInt64(seg.count))))      // truncated
                case 1: seg[12] = UInt8(truncatingIfNeeded: r.next())                    // data offset garbage
                case 2 where seg.count > 20:                                            // random option bytes
                    for k in 20..<min(seg.count, 40) { seg[k] = UInt8(truncatingIfNeeded: r.next()) }
                default: break
                }
                peer.sendIP(seg)
                if i % 50 == 49 {
                    try await LWKT.sleep(for: .milliseconds(1))
                    peer.pump(); peer.inbox.removeAll()
                    Self.checkInvariants(a, limitMbufs: 4096)
                }
            }
            try await LWKT.sleep(for: .milliseconds(20))
            peer.pump(); peer.inbox.removeAll()
            Self.checkInvariants(a, limitMbufs: 4096)
            #expect(a.counters.total(.tcpSegmentsReceived) > rounds / 2)
            // Tear down: abort every socket, close the listener; TIME-WAIT runs out.
            for c in conns.values { c.abort() }
            l.close()
            await connecting.join()
            let deadline = ContinuousClock.now + .seconds(10)
            while a.tcpConnectionCount(cpu: 0) > 0, ContinuousClock.now < deadline {
                try await LWKT.sleep(for: .milliseconds(20))
                peer.pump(); peer.inbox.removeAll()
            }
            #expect(a.tcpConnectionCount(cpu: 0) == 0)
            #expect(a.tcpBufferBytes(cpu: 0) == 0)
            try await LWKT.sleep(for: .milliseconds(20))
            peer.pump(); peer.inbox.removeAll()
            #expect(a.pool.outstanding == 0, "no mbuf leaked")
        }
    }
}
