import Testing
@testable import NetStack
import LibellulaTestSupport

@Suite struct TCPHeaderTests {
    func bytes(_ h: TCPHeader) -> [UInt8] {
        var b = [UInt8](repeating: 0xee, count: 60)
        let n = b.withUnsafeMutableBytes { h.write(to: $0.baseAddress!, capacity: 60) }
        return Array(b[0..<(n ?? 0)])
    }

    func parse(_ b: [UInt8]) -> Result<TCPHeader, TCPHeader.ParseError> {
        b.withUnsafeBytes { TCPHeader.parse($0.baseAddress!, count: b.count) }
    }

    @Test func roundTripWithEveryOption() throws {
        var o = TCPOptions()
        o.mss = 1460
        o.windowScale = 7
        o.sackPermitted = true
        o.timestamp = (0x1122_3344, 0x5566_7788)
        var h = TCPHeader(sourcePort: 1234, destinationPort: 80, sequence: 0xdead_beef, acknowledgment: 0x0102_0304,
                          flags: [.syn, .ack], window: 29200, options: o)
        h.urgentPointer = 0
        let b = bytes(h)
        #expect(b.count == 20 + 4 + 4 + 12)
        #expect(b.count % 4 == 0)
        let p = try parse(b).get()
        #expect(p.sourcePort == 1234 && p.destinationPort == 80)
        #expect(p.sequence == 0xdead_beef && p.acknowledgment == 0x0102_0304)
        #expect(p.flags == [.syn, .ack] && p.window == 29200)
        #expect(p.options == o)
        #expect(p.headerLength == b.count)
    }

    @Test func sackBlocksRoundTripAndLimit() throws {
        var o = TCPOptions()
        o.timestamp = (1, 2)
        for i in 0..<3 { let ok = o.appendSACK(TCPSACKBlock(start: UInt32(i * 100), end: UInt32(i * 100 + 50))); #expect(ok) }
        let p = try parse(bytes(TCPHeader(sourcePort: 1, destinationPort: 2, sequence: 3, acknowledgment: 4, flags: .ack, window: 5, options: o))).get()
        #expect(p.options.sackBlocks == o.sackBlocks && p.options.sackCount == 3)
        let fourth = o.appendSACK(TCPSACKBlock(start: 1, end: 2))
        let fifth = o.appendSACK(TCPSACKBlock(start: 1, end: 2))
        #expect(fourth)
        #expect(!fifth, "five blocks never fit")
        // Timestamps plus four SACK blocks are 12 + 36 = 48 bytes: too many for a header.
        var b = [UInt8](repeating: 0, count: 60)
        let n = b.withUnsafeMutableBytes {
            TCPHeader(sourcePort: 1, destinationPort: 2, sequence: 3, acknowledgment: 4, flags: .ack, window: 5, options: o)
                .write(to: $0.baseAddress!, capacity: 60)
        }
        #expect(n == nil)
    }

    @Test func emitterRespectsCapacity() {
        var o = TCPOptions()
        o.mss = 1000
        let h = TCPHeader(sourcePort: 1, destinationPort: 2, sequence: 3, acknowledgment: 4, flags: .syn, window: 5, options: o)
        var b = [UInt8](repeating: 0, count: 23)
        #expect(b.withUnsafeMutableBytes { h.write(to: $0.baseAddress!, capacity: 23) } == nil)
        #expect(b.withUnsafeMutableBytes { h.write(to: $0.baseAddress!, capacity: 24) } == 24)
    }

    @Test func malformedHeadersAreRefused() {
        let good = bytes(TCPHeader(sourcePort: 1, destinationPort: 2, sequence: 3, acknowledgment: 4, flags: .ack, window: 5))
        #expect(parse(Array(good[0..<19])) == .failure(.truncated))
        var b = good; b[12] = 4 << 4
        #expect(parse(b) == .failure(.badDataOffset))
        b = good; b[12] = 6 << 4 // says 24 bytes, 20 there
        #expect(parse(b) == .failure(.truncated))
        // Option length running past the header.
        b = good + [2, 8, 0, 0]; b[12] = 6 << 4
        #expect(parse(b) == .failure(.badOptions(.badLength)))
        // Option length below 2.
        b = good + [8, 1, 0, 0]; b[12] = 6 << 4
        #expect(parse(b) == .failure(.badOptions(.badLength)))
        // MSS with the wrong length.
        b = good + [2, 3, 0, 1]; b[12] = 6 << 4
        #expect(parse(b) == .failure(.badOptions(.badOption(2))))
        // SACK with a length that is not 2 + 8n.
        b = good + [5, 6, 0, 0, 0, 0, 1, 1]; b[12] = 7 << 4
        #expect(parse(b) == .failure(.badOptions(.badOption(5))))
        // A lone kind byte at the end.
        b = good + [1, 1, 1, 8]; b[12] = 6 << 4
        #expect(parse(b) == .failure(.badOptions(.badLength)))
        // Unknown options are skipped; END stops parsing; window scale is capped at 14.
        b = good + [30, 4, 9, 9, 3, 3, 20, 0]; b[12] = 7 << 4
        let p = try? parse(b).get()
        #expect(p?.options.windowScale == 14)
        b = good + [0, 99, 99, 99]; b[12] = 6 << 4
        #expect((try? parse(b).get())?.options == TCPOptions())
    }

    @Test func randomBytesNeverCrashTheParser() {
        var r = SeededRandom(seed: 7)
        for _ in 0..<20000 {
            let n = Int(r.next() % 64)
            let b = (0..<n).map { _ in UInt8(truncatingIfNeeded: r.next()) }
            if case .success(let h) = b.withUnsafeBytes({ TCPHeader.parse($0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, count: n) }) {
                #expect(h.headerLength >= 20 && h.headerLength <= n)
                #expect(h.options.sackCount <= 4)
            }
        }
    }

    @Test func checksumMatchesPseudoHeaderDefinition() throws {
        // Compare the mbuf path with a direct computation over a flat buffer.
        let src = IPv4Address(10, 0, 0, 1), dst = IPv4Address(10, 0, 0, 2)
        var seg = bytes(TCPHeader(sourcePort: 5, destinationPort: 6, sequence: 7, acknowledgment: 8, flags: .ack, window: 9)) + [1, 2, 3]
        var c = InternetChecksum()
        c.addPseudoHeader(source: src, destination: dst, protocol: 6, length: seg.count)
        seg.withUnsafeBytes { c.add($0.baseAddress!, count: seg.count) }
        let v = c.value
        seg[16] = UInt8(v >> 8); seg[17] = UInt8(v & 0xff)
        var d = InternetChecksum()
        d.addPseudoHeader(source: src, destination: dst, protocol: 6, length: seg.count)
        seg.withUnsafeBytes { d.add($0.baseAddress!, count: seg.count) }
        #expect(d.folded == 0xffff)
    }

    @Test func sequenceArithmeticWraps() {
        #expect(TCPSequence.lt(0xffff_fff0, 0x10))
        #expect(TCPSequence.gt(0x10, 0xffff_fff0))
        #expect(TCPSequence.distance(0xffff_fff0, 0x10) == 0x20)
        #expect(TCPSequence.max(0xffff_fff0, 5) == 5)
    }

    @Test func sackScoreboardMergesAndFindsHoles() {
        var s = TCPSACKScoreboard()
        var r = s.add(TCPSACKBlock(start: 300, end: 400), una: 100, max: 1000); #expect(r)
        r = s.add(TCPSACKBlock(start: 500, end: 600), una: 100, max: 1000); #expect(r)
        r = s.add(TCPSACKBlock(start: 320, end: 380), una: 100, max: 1000); #expect(!r)
        r = s.add(TCPSACKBlock(start: 390, end: 510), una: 100, max: 1000); #expect(r)
        #expect(s.blocks == [TCPSACKBlock(start: 300, end: 600)])
        #expect(s.sackedBytes == 300)
        #expect(s.nextHole(from: 100)! == (100, 300))
        #expect(s.nextHole(from: 300) == nil)
        #expect(s.holeBytes(from: 100, upTo: 700) == 300)
        s.advance(to: 350)
        #expect(s.blocks == [TCPSACKBlock(start: 350, end: 600)] && s.sackedBytes == 250)
        // Blocks outside una..<max are clamped or ignored.
        r = s.add(TCPSACKBlock(start: 10, end: 50), una: 350, max: 1000); #expect(!r)
        r = s.add(TCPSACKBlock(start: 900, end: 2000), una: 350, max: 1000); #expect(r)
        #expect(s.highest == 1000)
    }

    @Test func rttEstimatorFollowsRFC6298() {
        var r = TCPRTTEstimator(initial: 1_000_000_000, minimum: 200_000_000, maximum: 60_000_000_000)
        #expect(r.rto == 1_000_000_000)
        r.sample(100_000_000)
        #expect(r.srtt == 100_000_000 && r.rttvar == 50_000_000)
        #expect(r.rto == 300_000_000)
        r.sample(100_000_000)
        #expect(r.rto == 200_000_000 + 0 || r.rto >= 200_000_000)
        #expect(r.timeout(backoff: 3) == r.rto * 8)
        #expect(r.timeout(backoff: 40) == 60_000_000_000)
    }

    @Test func cookiesValidateOnlyForTheirFlow() {
        let s = TCPSecrets((1, 2))
        let k = TCPFlowKey(local: IPv4Address(10, 0, 0, 1), localPort: 80, remote: IPv4Address(10, 0, 0, 2), remotePort: 5555)
        let other = TCPFlowKey(local: IPv4Address(10, 0, 0, 1), localPort: 80, remote: IPv4Address(10, 0, 0, 2), remotePort: 5556)
        let now: UInt64 = 1_000_000_000_000
        let c = s.cookie(k, peerISN: 42, mss: 1460, nowNs: now)
        #expect(s.validate(cookie: c, k, peerISN: 42, nowNs: now) == 1460)
        #expect(s.validate(cookie: c, k, peerISN: 42, nowNs: now + 64_000_000_000) == 1460)
        #expect(s.validate(cookie: c, k, peerISN: 42, nowNs: now + 200_000_000_000) == nil)
        #expect(s.validate(cookie: c, other, peerISN: 42, nowNs: now) == nil)
        #expect(s.validate(cookie: c, k, peerISN: 43, nowNs: now) == nil)
        #expect(s.validate(cookie: c ^ 1, k, peerISN: 42, nowNs: now) == nil)
        // ISNs differ per flow and advance with the clock.
        #expect(s.initialSequence(k, nowNs: now) != s.initialSequence(other, nowNs: now))
        #expect(s.initialSequence(k, nowNs: now + 4000) == s.initialSequence(k, nowNs: now) &+ 1)
    }
}
