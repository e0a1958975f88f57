import Testing
import LWKT
@testable import NetStack

/// Crafted segments from a raw peer, and the answers RFC 9293, RFC 5961 and RFC 7323 ask for.
@Suite(.serialized) struct TCPConformanceTests {
    static func synOptions(ts: UInt32 = 100) -> TCPOptions {
        var o = TCPOptions()
        o.mss = 1460; o.windowScale = 2; o.sackPermitted = true; o.timestamp = (ts, 0)
        return o
    }

    static func tsOption(_ v: UInt32, _ e: UInt32) -> TCPOptions {
        var o = TCPOptions(); o.timestamp = (v, e); return o
    }

    /// Handshake from the raw peer to `port`; returns the stack's ISN and the accepted connection.
    static func open(_ a: NetStack, _ peer: RawPeer, _ l: TCPListener, sport: UInt16, port: UInt16) async throws -> (UInt32, TCPConnection) {
        peer.send(sport: sport, dport: port, seq: 1000, ack: 0, flags: .syn, options: synOptions())
        let synack = try #require(try await peer.expect { h, _ in h.flags == [.syn, .ack] && h.destinationPort == sport })
        #expect(synack.0.acknowledgment == 1001)
        #expect(synack.0.options.mss == 1460 && synack.0.options.sackPermitted && synack.0.options.windowScale != nil)
        #expect(synack.0.options.timestamp?.echo == 100)
        let iss = synack.0.sequence
        peer.send(sport: sport, dport: port, seq: 1001, ack: iss &+ 1, flags: .ack,
                  options: tsOption(101, synack.0.options.timestamp?.value ?? 0))
        let c = try #require(try await l.accept(timeout: .seconds(2)))
        #expect(c.state == .established)
        return (iss, c)
    }

    @Test(.timeLimit(.minutes(1))) func rfc5961AndOutOfWindowAnswers() async throws {
        try await withRawPeer { (a: NetStack, peer: RawPeer) async throws in
            let l = try a.listen(port: 80)[0]
            let (iss, c) = try await Self.open(a, peer, l, sport: 4000, port: 80)
            let una = iss &+ 1
            var ts: UInt32 = 200
            func opt() -> TCPOptions { ts += 1; return Self.tsOption(ts, 0) }
            // In-order data is delivered and acknowledged (delayed ACK or at once).
            peer.send(sport: 4000, dport: 80, seq: 1001, ack: una, flags: [.ack, .psh], options: opt(), payload: Array("hello".utf8))
            #expect(try await c.read(max: 100, timeout: .seconds(2)) == Array("hello".utf8))
            #expect(try await peer.expect { h, _ in h.acknowledgment == 1006 } != nil)
            let rcvNxt: UInt32 = 1006
            // In-window RST that is not exact: challenge ACK, the connection lives.
            try await peer.flush()
            let challenges = a.counters.total(.tcpChallengeACKs)
            peer.send(sport: 4000, dport: 80, seq: rcvNxt &+ 100, ack: 0, flags: .rst)
            let ch = try #require(try await peer.expect { h, _ in h.flags == .ack })
            #expect(ch.0.acknowledgment == rcvNxt)
            #expect(a.counters.total(.tcpChallengeACKs) == challenges + 1)
            #expect(c.state == .established)
            // SYN on an established connection: challenge ACK.
            peer.send(sport: 4000, dport: 80, seq: rcvNxt &+ 5, ack: 0, flags: .syn, options: Self.synOptions())
            #expect(try await peer.expect { h, _ in h.flags == .ack && h.acknowledgment == rcvNxt } != nil)
            #expect(a.counters.total(.tcpChallengeACKs) == challenges + 2)
            #expect(c.state == .established)
            // Data far outside the window: an ACK, and the data is dropped.
            let oow = a.counters.total(.dropTCPOutOfWindow)
            peer.send(sport: 4000, dport: 80, seq: rcvNxt &+ 10_000_000, ack: una, flags: .ack, options: opt(), payload: [1, 2, 3])
            #expect(try await peer.expect { h, _ in h.flags == .ack && h.acknowledgment == rcvNxt } != nil)
            #expect(a.counters.total(.dropTCPOutOfWindow) == oow + 1)
            #expect(c.readable == 0)
            // An ACK of data never sent: answered with an ACK, dropped.
            let badAck = a.counters.total(.dropTCPBadACK)
            peer.send(sport: 4000, dport: 80, seq: rcvNxt, ack: una &+ 5000, flags: .ack, options: opt(), payload: [9])
            #expect(try await peer.expect { h, _ in h.flags == .ack } != nil)
            #expect(a.counters.total(.dropTCPBadACK) == badAck + 1)
            #expect(c.readable == 0)
            // PAWS: an old timestamp is refused.
            let paws = a.counters.total(.dropTCPPAWS)
            peer.send(sport: 4000, dport: 80, seq: rcvNxt, ack: una, flags: .ack, options: Self.tsOption(50, 0), payload: [7])
            #expect(try await peer.expect { h, _ in h.flags == .ack } != nil)
            #expect(a.counters.total(.dropTCPPAWS) == paws + 1)
            #expect(c.readable == 0)
            // Out-of-order data is held and SACKed; the hole's arrival delivers both.
            peer.send(sport: 4000, dport: 80, seq: rcvNxt &+ 3, ack: una, flags: .ack, options: opt(), payload: [4, 5, 6])
            let sack = try #require(try await peer.expect { h, _ in h.options.sackCount > 0 })
            #expect(sack.0.acknowledgment == rcvNxt)
            #expect(sack.0.options.sackBlock(0) == TCPSACKBlock(start: rcvNxt &+ 3, end: rcvNxt &+ 6))
            peer.send(sport: 4000, dport: 80, seq: rcvNxt, ack: una, flags: .ack, options: opt(), payload: [1, 2, 3])
            #expect(try await peer.expect { h, _ in h.acknowledgment == rcvNxt &+ 6 } != nil)
            #expect(try await c.read(max: 100, timeout: .seconds(2)) == [1, 2, 3, 4, 5, 6])
            // The exact RST resets.
            peer.send(sport: 4000, dport: 80, seq: rcvNxt &+ 6, ack: 0, flags: .rst)
            await #expect(throws: TCPError.connectionReset) { _ = try await c.read(max: 10, timeout: .seconds(2)) }
            #expect(c.state == .closed)
            c.abort()
            l.close()
            #expect(a.tcpConnectionCount(cpu: 0) == 0)
        }
    }

    @Test(.timeLimit(.minutes(1))) func segmentsWithoutAConnectionGetResets() async throws {
        try await withRawPeer { (a: NetStack, peer: RawPeer) async throws in
            // A SYN to a closed port: RST|ACK acknowledging it.
            peer.send(sport: 4100, dport: 9, seq: 5000, ack: 0, flags: .syn)
            let r = try #require(try await peer.expect { h, _ in h.flags.contains(.rst) })
            #expect(r.0.flags == [.rst, .ack] && r.0.acknowledgment == 5001 && r.0.sequence == 0)
            // An ACK: RST with its sequence number taken from the ACK.
            peer.send(sport: 4100, dport: 9, seq: 5000, ack: 777, flags: .ack)
            let r2 = try #require(try await peer.expect { h, _ in h.flags.contains(.rst) })
            #expect(r2.0.flags == .rst && r2.0.sequence == 777)
            // A RST: nothing.
            peer.send(sport: 4100, dport: 9, seq: 5000, ack: 0, flags: .rst)
            try await LWKT.sleep(for: .milliseconds(20))
            peer.pump()
            #expect(peer.inbox.isEmpty)
            #expect(a.counters.total(.dropNoSocket) == 3)
            // A bad checksum is dropped silently, counted once.
            peer.sendIP(RawPeer.segment(sport: 4100, dport: 9, seq: 1, ack: 0, flags: .syn, badChecksum: true))
            try await LWKT.sleep(for: .milliseconds(20))
            peer.pump()
            #expect(peer.inbox.isEmpty)
            #expect(a.counters.total(.dropBadTransportChecksum) == 1)
        }
    }

    @Test(.timeLimit(.minutes(1))) func simultaneousOpen() async throws {
        try await withRawPeer { (a: NetStack, peer: RawPeer) async throws in
            let connecting = LWKTThread.spawn(on: try a.system.cpu(0), name: "connect") {
                do {
                    let c = try await TCPConnection.connect(a, to: IPv4Endpoint(RawPeer.address, 5000), timeout: .seconds(5))
                    #expect(c.state == .established)
                    c.abort()
                } catch { Issue.record("connect: \(error)") }
            }
            let syn = try #require(try await peer.expect { h, _ in h.flags == .syn })
            let sport = syn.0.sourcePort
            // Our own SYN crosses theirs.
            peer.send(sport: 5000, dport: sport, seq: 9000, ack: 0, flags: .syn, options: Self.synOptions())
            let synack = try #require(try await peer.expect { h, _ in h.flags == [.syn, .ack] })
            #expect(synack.0.sequence == syn.0.sequence && synack.0.acknowledgment == 9001)
            #expect(a.counters.total(.tcpSynReceived) == 1)
            // And our SYN-ACK crosses theirs.
            peer.send(sport: 5000, dport: sport, seq: 9000, ack: syn.0.sequence &+ 1, flags: [.syn, .ack],
                      options: Self.tsOption(300, synack.0.options.timestamp?.value ?? 0))
            await connecting.join()
            #expect(a.counters.total(.tcpEstablished) == 0)
        }
    }

    @Test(.timeLimit(.minutes(1))) func synFloodIsAnsweredWithCookiesAndBounded() async throws {
        try await withRawPeer(configure: { $0.tcp.synQueueLimit = 8; $0.tcp.synRetries = 2 }) { (a: NetStack, peer: RawPeer) async throws in
            let l = try a.listen(port: 80)[0]
            for i in 0..<300 {
                peer.send(sport: UInt16(20000 + i), dport: 80, seq: UInt32(i * 1000), ack: 0, flags: .syn, options: Self.synOptions())
                if i % 50 == 49 { try await LWKT.sleep(for: .milliseconds(2)); peer.pump() }
            }
            try await LWKT.sleep(for: .milliseconds(50))
            peer.pump()
            let synacks = peer.inbox.filter { $0.0.flags == [.syn, .ack] }
            #expect(a.tcpConnectionCount(cpu: 0) == 8, "the SYN queue is bounded")
            #expect(a.tcpBufferBytes(cpu: 0) == 0, "half-open connections hold no buffers")
            #expect(a.counters.total(.tcpCookiesSent) == 292)
            // A legitimate client completes its handshake with the cookie.
            let mine = try #require(synacks.first { $0.0.destinationPort == 20299 })
            peer.send(sport: 20299, dport: 80, seq: 299 * 1000 + 1, ack: mine.0.sequence &+ 1, flags: .ack,
                      options: Self.tsOption(500, mine.0.options.timestamp?.value ?? 0), payload: Array("GET".utf8))
            let c = try #require(try await l.accept(timeout: .seconds(2)))
            #expect(a.counters.total(.tcpCookiesAccepted) == 1)
            #expect(c.pcb.sackEnabled && c.pcb.tsEnabled && c.pcb.sndScale == 2)
            #expect(try await c.read(max: 10, timeout: .seconds(2)) == Array("GET".utf8))
            // A forged cookie is refused with a reset.
            peer.send(sport: 20298, dport: 80, seq: 298 * 1000 + 1, ack: 12345, flags: .ack)
            #expect(try await peer.expect { h, _ in h.flags.contains(.rst) && h.destinationPort == 20298 } != nil)
            #expect(a.counters.total(.dropTCPBadCookie) == 1)
            // The half-open connections give up after their SYN-ACK retries.
            let limit = ContinuousClock.now + .seconds(10)
            while a.tcpConnectionCount(cpu: 0) > 1, ContinuousClock.now < limit {
                try await LWKT.sleep(for: .milliseconds(50)); peer.pump(); peer.inbox.removeAll()
            }
            #expect(a.tcpConnectionCount(cpu: 0) == 1)
            #expect(a.counters.total(.tcpTimeouts) == 8)
            c.abort()
            // Closing the listener also ends half-open connections it made.
            peer.send(sport: 30000, dport: 80, seq: 1, ack: 0, flags: .syn, options: Self.synOptions())
            #expect(try await peer.expect { h, _ in h.flags == [.syn, .ack] } != nil)
            #expect(a.tcpConnectionCount(cpu: 0) == 1)
            l.close()
            #expect(a.tcpConnectionCount(cpu: 0) == 0)
            #expect(a.tcpBufferBytes(cpu: 0) == 0)
        }
    }

    /// Regression: data in flight, the window closes, the retransmission timer goes back to
    /// SND.UNA and finds no window. The connection must keep probing (it used to arm no
    /// timer at all and stall for good).
    @Test(.timeLimit(.minutes(1))) func windowClosedAfterTimeoutIsProbed() async throws {
        try await withRawPeer { (a: NetStack, peer: RawPeer) async throws in
            let l = try a.listen(port: 80)[0]
            let (iss, c) = try await Self.open(a, peer, l, sport: 4200, port: 80)
            let una = iss &+ 1
            try await c.write(pattern(3000, tag: 1))
            let first = try #require(try await peer.expect { h, p in !p.isEmpty })
            #expect(first.0.sequence == una)
            // The peer closes its window without acknowledging anything.
            peer.send(sport: 4200, dport: 80, seq: 1001, ack: una, flags: .ack, window: 0, options: Self.tsOption(400, 0))
            try await peer.flush()
            // The timer fires, finds the window shut, and probes it with one byte at SND.UNA.
            let probe = try #require(try await peer.expect(timeout: .seconds(3)) { h, p in p.count == 1 })
            #expect(probe.0.sequence == una)
            #expect(a.counters.total(.tcpWindowProbes) >= 1)
            // The window opens: everything arrives.
            peer.send(sport: 4200, dport: 80, seq: 1001, ack: una, flags: .ack, window: 65535, options: Self.tsOption(401, 0))
            var got = 0
            let deadline = ContinuousClock.now + .seconds(3)
            var next = una
            while ContinuousClock.now < deadline, got < 3000 {
                guard let seg = try await peer.expect(timeout: .milliseconds(200), { h, p in !p.isEmpty && h.sequence == next }) else { continue }
                got += seg.1.count
                next = next &+ UInt32(seg.1.count)
                peer.send(sport: 4200, dport: 80, seq: 1001, ack: next, flags: .ack, window: 65535, options: Self.tsOption(402, 0))
            }
            #expect(got == 3000)
            c.abort()
            l.close()
        }
    }

    /// Segments that arrive together are answered together: eight in-order segments taken
    /// in one receive batch get one ACK (not one per two segments), a lone segment still
    /// waits for the delayed-ACK timer, and an out-of-order segment is answered at once,
    /// batch or not (fast retransmit needs its duplicate ACK). The raw peer runs on the
    /// stack's only CPU, so the receive thread cannot poll until it has put all eight on
    /// the wire.
    /// A receive batch of more than 64 KB of in-order data is not acknowledged by one
    /// stretch ACK at its end: an ACK goes out once 64 KB wait, like GRO's aggregate limit.
    @Test(.timeLimit(.minutes(1))) func batchACKsCoverAtMost64KB() async throws {
        try await withRawPeer(configure: { $0.tcp.initialReceiveBufferSize = 256 << 10 }) { (a: NetStack, peer: RawPeer) async throws in
            let l = try a.listen(port: 83)[0]
            let (iss, c) = try await Self.open(a, peer, l, sport: 4310, port: 83)
            let una = iss &+ 1
            try await peer.flush()
            let size = 1_400, count = 60
            let payload = [UInt8](repeating: 9, count: size)
            for k in 0..<count {
                peer.send(sport: 4310, dport: 83, seq: 1001 &+ UInt32(k * size), ack: una, flags: .ack,
                          options: Self.tsOption(600 &+ UInt32(k), 0), payload: payload)
            }
            let end = 1001 &+ UInt32(count * size)
            var seen: [UInt32] = []
            let deadline = ContinuousClock.now + .seconds(2)
            while seen.last != end, ContinuousClock.now < deadline {
                peer.pump()
                seen += peer.inbox.filter { $0.0.flags == .ack && $0.1.isEmpty }.map { $0.0.acknowledgment }
                peer.inbox.removeAll()
                try await LWKT.sleep(for: .milliseconds(1))
            }
            #expect(seen.last == end, "all \(count * size) bytes acknowledged")
            #expect(seen.count >= 2, "an ACK before 64 KB of the batch had gone unacknowledged: \(seen)")
            var previous: UInt32 = 1001
            for ack in seen {
                #expect(TCPSequence.distance(previous, ack) <= 65_535 + size, "one ACK covered \(TCPSequence.distance(previous, ack)) bytes")
                previous = ack
            }
            var total = 0
            while total < count * size {
                let got = try await c.read(max: 1 << 20, timeout: .seconds(2))
                if got.isEmpty { break }
                total += got.count
            }
            #expect(total == count * size)
            c.abort()
            l.close()
        }
    }

    @Test(.timeLimit(.minutes(1))) func oneACKPerReceiveBatch() async throws {
        try await withRawPeer { (a: NetStack, peer: RawPeer) async throws in
            let l = try a.listen(port: 82)[0]
            let (iss, c) = try await Self.open(a, peer, l, sport: 4300, port: 82)
            let una = iss &+ 1
            try await peer.flush()
            var ts: UInt32 = 500
            func opt() -> TCPOptions { ts += 1; return Self.tsOption(ts, 0) }
            /// The pure ACKs the stack sends until one acknowledges `upTo` (or 2 s pass).
            func acks(upTo: UInt32) async throws -> [UInt32] {
                var seen: [UInt32] = []
                let deadline = ContinuousClock.now + .seconds(2)
                while seen.last != upTo, ContinuousClock.now < deadline {
                    peer.pump()
                    seen += peer.inbox.filter { $0.0.flags == .ack && $0.1.isEmpty }.map { $0.0.acknowledgment }
                    peer.inbox.removeAll()
                    try await LWKT.sleep(for: .milliseconds(1))
                }
                return seen
            }
            let payload = [UInt8](repeating: 7, count: 100)
            for k in 0..<8 {
                peer.send(sport: 4300, dport: 82, seq: 1001 &+ UInt32(k * 100), ack: una, flags: .ack, options: opt(), payload: payload)
            }
            #expect(try await acks(upTo: 1801) == [1801], "one ACK for the batch")
            // A lone segment: no immediate ACK; the delayed-ACK timer sends it.
            let delayed = a.counters.total(.tcpDelayedACKs)
            peer.send(sport: 4300, dport: 82, seq: 1801, ack: una, flags: .ack, options: opt(), payload: payload)
            #expect(try await acks(upTo: 1901) == [1901])
            #expect(a.counters.total(.tcpDelayedACKs) == delayed + 1)
            // Out of order (a hole at 1901): a duplicate ACK at once, for each such segment.
            peer.send(sport: 4300, dport: 82, seq: 2001, ack: una, flags: .ack, options: opt(), payload: payload)
            peer.send(sport: 4300, dport: 82, seq: 2101, ack: una, flags: .ack, options: opt(), payload: payload)
            try await LWKT.sleep(for: .milliseconds(20))
            #expect(try await acks(upTo: 1901) == [1901, 1901], "a duplicate ACK per out-of-order segment")
            let got = try await c.read(max: 2000, timeout: .seconds(2))
            #expect(got.count == 900 && got.allSatisfy { $0 == 7 })
            #expect(c.pcb.waiters == 0, "no sleeper left counted")
            c.abort()
            l.close()
        }
    }
    /// A small reply written and closed at once leaves as one segment, data and FIN: the
    /// client reads the reply and the end together, so the server is the side that closes
    /// first and keeps the TIME-WAIT. (Sent apart, the client often read the reply and
    /// closed before the FIN came: its TIME-WAITs then filled its ephemeral ports and a
    /// connections-per-second run collapsed after about 28,000 connections.)
    @Test(.timeLimit(.minutes(1))) func replyAndFINLeaveTogether() async throws {
        try await withRawPeer { (a: NetStack, peer: RawPeer) async throws in
            let l = try a.listen(port: 83)[0]
            let (iss, c) = try await Self.open(a, peer, l, sport: 4310, port: 83)
            try await peer.flush()
            try await c.write([UInt8](repeating: 9, count: 32), timeout: .seconds(1))
            await c.close(linger: .zero)
            // The peer acknowledges nothing: both the reply and the FIN must arrive anyway.
            let fin = try await peer.expect(timeout: .seconds(2)) { h, _ in h.flags.contains(.fin) }
            #expect(fin != nil, "FIN sent without waiting for the reply's ACK")
            #expect(fin?.0.sequence == iss &+ 1 && fin?.1.count == 32, "the reply and its FIN in one segment")
            // Two small writes and a close before the thread parks: one segment too.
            let (iss2, c2) = try await Self.open(a, peer, l, sport: 4311, port: 83)
            try await peer.flush()
            try await c2.write([UInt8](repeating: 8, count: 10), timeout: .seconds(1))
            try await c2.write([UInt8](repeating: 7, count: 20), timeout: .seconds(1))
            await c2.close(linger: .zero)
            let fin2 = try await peer.expect(timeout: .seconds(2)) { h, _ in h.destinationPort == 4311 && h.flags.contains(.fin) }
            #expect(fin2?.0.sequence == iss2 &+ 1 && fin2?.1 == [UInt8](repeating: 8, count: 10) + [UInt8](repeating: 7, count: 20))
            l.close()
        }
    }

    /// A small write held for coalescing leaves as soon as the writing thread parks, with
    /// no close behind it: by the time any other thread of the CPU runs, it is on the
    /// wire (it waits for no timer and no protocol-thread pass).
    @Test(.timeLimit(.minutes(1))) func heldWriteLeavesWhenTheWriterParks() async throws {
        try await withRawPeer { (a: NetStack, peer: RawPeer) async throws in
            let l = try a.listen(port: 84)[0]
            let (iss, c) = try await Self.open(a, peer, l, sport: 4320, port: 84)
            try await peer.flush()
            let seen = SeenSegments()
            try await c.write([UInt8](repeating: 6, count: 10), timeout: .seconds(1))
            // Still this thread's job: the write is held, nothing left yet.
            peer.pump()
            let early = peer.inbox.contains { h, p in h.destinationPort == 4320 && !p.isEmpty }
            #expect(!early, "a small write waits for the writer to give up the CPU")
            // Park (join a thread of the same CPU); that thread looks at the wire first thing.
            let looker = LWKTThread.spawn(on: try a.system.cpu(c.cpuID), priority: .interrupt, name: "looker") {
                peer.pump()
                seen.segments = peer.inbox.filter { h, p in h.destinationPort == 4320 && !p.isEmpty }.map { ($0.0.sequence, $0.1) }
            }
            await looker.join()
            #expect(seen.segments.count == 1)
            #expect(seen.segments.first?.0 == iss &+ 1 && seen.segments.first?.1 == [UInt8](repeating: 6, count: 10))
            // A write of a full segment or more is not held.
            let big = [UInt8](repeating: 5, count: 3000)
            try await c.write(big, timeout: .seconds(1))
            peer.pump()
            #expect(peer.inbox.contains { h, p in h.destinationPort == 4320 && p.first == 5 }, "a large write leaves at once")
            c.abort()
            l.close()
        }
    }

    /// With ``TCPConfiguration/holdSmallWrites`` off, a small write transmits at once.
    @Test(.timeLimit(.minutes(1))) func smallWritesLeaveAtOnceWhenHoldingIsOff() async throws {
        try await withRawPeer(configure: { $0.tcp.holdSmallWrites = false }) { (a: NetStack, peer: RawPeer) async throws in
            let l = try a.listen(port: 85)[0]
            let (iss, c) = try await Self.open(a, peer, l, sport: 4330, port: 85)
            try await peer.flush()
            try await c.write([UInt8](repeating: 4, count: 10), timeout: .seconds(1))
            peer.pump()
            let sent = peer.inbox.first { h, p in h.destinationPort == 4330 && !p.isEmpty }
            #expect(sent?.0.sequence == iss &+ 1 && sent?.1.count == 10)
            c.abort()
            l.close()
        }
    }

    /// RFC 6191: in TIME-WAIT, a SYN with a newer timestamp opens a new connection even
    /// when its sequence number lies below the old connection's; one with an older
    /// timestamp does not.
    @Test(.timeLimit(.minutes(1))) func timeWaitAcceptsSYNWithNewerTimestamp() async throws {
        try await withRawPeer(configure: { $0.tcp.msl = .seconds(5) }) { (a: NetStack, peer: RawPeer) async throws in
            let l = try a.listen(port: 84)[0]
            let (iss, c) = try await Self.open(a, peer, l, sport: 4320, port: 84)
            try await peer.flush()
            // The stack closes first; the peer acknowledges its FIN with its own (TS 102).
            await c.close(linger: .zero)
            let fin = try #require(try await peer.expect { h, _ in h.flags.contains(.fin) })
            #expect(fin.0.sequence == iss &+ 1)
            peer.send(sport: 4320, dport: 84, seq: 1001, ack: iss &+ 2, flags: [.fin, .ack],
                      options: Self.tsOption(102, fin.0.options.timestamp?.value ?? 0))
            #expect(try await peer.expect { h, _ in h.flags == .ack && h.acknowledgment == 1002 } != nil)
            #expect(c.state == .timeWait)
            // Below the old sequence space (500 < 1002), older timestamp: no new connection.
            peer.send(sport: 4320, dport: 84, seq: 500, ack: 0, flags: .syn, options: Self.synOptions(ts: 90))
            #expect(try await peer.expect(timeout: .milliseconds(200)) { h, _ in h.flags == [.syn, .ack] } == nil,
                    "an old-timestamp SYN does not reopen a TIME-WAIT connection")
            // Same sequence number, newer timestamp: a new incarnation (RFC 6191).
            peer.send(sport: 4320, dport: 84, seq: 500, ack: 0, flags: .syn, options: Self.synOptions(ts: 200))
            let synack = try await peer.expect { h, _ in h.flags == [.syn, .ack] }
            #expect(synack?.0.acknowledgment == 501, "a newer-timestamp SYN opens a new connection")
            if let synack {
                // Its ISN lies above the old connection's sequence space.
                #expect(TCPSequence.gt(synack.0.sequence, iss &+ 2))
                peer.send(sport: 4320, dport: 84, seq: 501, ack: synack.0.sequence &+ 1, flags: .ack,
                          options: Self.tsOption(201, synack.0.options.timestamp?.value ?? 0))
                let c2 = try #require(try await l.accept(timeout: .seconds(2)))
                #expect(c2.state == .established)
                c2.abort()
            }
            l.close()
        }
    }
}

/// Segments a helper thread saw (written on the stack's CPU, read after joining it).
final class SeenSegments: @unchecked Sendable {
    var segments: [(UInt32, [UInt8])] = []
}
