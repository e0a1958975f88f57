import Testing
@testable import NetStack
import LibellulaTestSupport

@Suite struct HeaderTests {
    @Test func ethernetRoundTrip() {
        var buf = [UInt8](repeating: 0, count: 14)
        let h = EthernetHeader(destination: MACAddress("01:02:03:04:05:06")!, source: .local(seed: 7), etherType: 0x0800)
        buf.withUnsafeMutableBytes { h.write(to: $0.baseAddress!) }
        #expect(buf[0...5] == [1, 2, 3, 4, 5, 6])
        #expect(buf[12] == 8 && buf[13] == 0)
        let back = buf.withUnsafeBytes { EthernetHeader.parse($0.baseAddress!, count: 14) }
        #expect(back == h)
        #expect(buf.withUnsafeBytes { EthernetHeader.parse($0.baseAddress!, count: 13) } == nil)
        #expect(MACAddress("01:02:03:04:05:06")!.description == "01:02:03:04:05:06")
    }

    @Test func arpRoundTrip() {
        let a = ARPPacket(operation: ARPPacket.request, senderMAC: .local(seed: 1), senderIP: IPv4Address(10, 0, 0, 1),
                          targetMAC: .zero, targetIP: IPv4Address(10, 0, 0, 2))
        var buf = [UInt8](repeating: 0, count: 28)
        buf.withUnsafeMutableBytes { a.write(to: $0.baseAddress!) }
        #expect(buf[0...7] == [0, 1, 8, 0, 6, 4, 0, 1])
        #expect(buf.withUnsafeBytes { ARPPacket.parse($0.baseAddress!, count: 28) } == a)
        buf[7] = 9
        #expect(buf.withUnsafeBytes { ARPPacket.parse($0.baseAddress!, count: 28) } == nil)
    }

    @Test func ipv4RoundTripAndValidation() throws {
        var h = IPv4Header(totalLength: 40, proto: 17, source: IPv4Address("192.0.2.1")!, destination: IPv4Address("198.51.100.7")!,
                           identification: 0x1234, flagsAndOffset: IPv4Header.moreFragments | 3, ttl: 9, tos: 0x10)
        var buf = [UInt8](repeating: 0, count: 40)
        buf.withUnsafeMutableBytes { h.write(to: $0.baseAddress!) }
        #expect(buf.withUnsafeBytes { InternetChecksum.compute($0.baseAddress!, count: 20) } == 0)
        let back = buf.withUnsafeBytes { IPv4Header.parse($0.baseAddress!, count: 40) }
        h.checksum = (try? back.get())?.checksum ?? 0
        #expect(try back.get() == h)
        #expect(h.fragmentOffset == 24 && h.hasMoreFragments && h.isFragment)
        func parse(_ b: [UInt8], _ n: Int? = nil) -> IPv4Header.ParseError? {
            b.withUnsafeBytes { p in
                if case .failure(let e) = IPv4Header.parse(p.baseAddress!, count: n ?? b.count) { return e }
                return nil
            }
        }
        #expect(parse(buf, 19) == .truncated)
        var bad = buf; bad[0] = 0x65
        #expect(parse(bad) == .badVersion)
        bad = buf; bad[0] = 0x44
        #expect(parse(bad) == .badHeaderLength)
        bad = buf; bad[3] = 200
        #expect(parse(bad) == .badTotalLength)
        bad = buf; bad[8] ^= 1
        #expect(parse(bad) == .badChecksum)
        // Options are accepted and skipped: a 24-byte header.
        var opt = [UInt8](repeating: 0, count: 32)
        opt[0] = 0x46; opt[3] = 32; opt[8] = 64; opt[9] = 17; opt[20] = 1; opt[21] = 1; opt[22] = 1; opt[23] = 0
        let c = opt.withUnsafeBytes { InternetChecksum.compute($0.baseAddress!, count: 24) }
        opt[10] = UInt8(c >> 8); opt[11] = UInt8(c & 0xff)
        #expect(opt.withUnsafeBytes { (try? IPv4Header.parse($0.baseAddress!, count: 32).get())?.headerLength } == 24)
    }

    @Test func icmpAndUDPRoundTrip() {
        var buf = [UInt8](repeating: 0xab, count: 16)
        let i = ICMPHeader(type: ICMPHeader.echoRequest, code: 0, rest: 0x0001_0002)
        buf.withUnsafeMutableBytes { i.write(to: $0.baseAddress!, payloadCount: 8) }
        #expect(buf.withUnsafeBytes { InternetChecksum.compute($0.baseAddress!, count: 16) } == 0)
        let ib = buf.withUnsafeBytes { ICMPHeader.parse($0.baseAddress!, count: 16) }
        #expect(ib?.identifier == 1 && ib?.sequence == 2 && ib?.type == 8)
        let u = UDPHeader(sourcePort: 1234, destinationPort: 7, length: 12)
        var ub = [UInt8](repeating: 0, count: 12)
        ub.withUnsafeMutableBytes { u.write(to: $0.baseAddress!) }
        #expect(ub.withUnsafeBytes { UDPHeader.parse($0.baseAddress!, count: 12) } == u)
        #expect(ub.withUnsafeBytes { UDPHeader.parse($0.baseAddress!, count: 11) } == nil)
        ub[5] = 4
        #expect(ub.withUnsafeBytes { UDPHeader.parse($0.baseAddress!, count: 12) } == nil)
    }

    @Test func checksumKnownValue() {
        // RFC 1071's example words sum to 0xddf2.
        let b: [UInt8] = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]
        var c = InternetChecksum()
        b.withUnsafeBytes { c.add($0.baseAddress!, count: 8) }
        #expect(c.folded == 0xddf2)
        #expect(c.value == 0x220d)
    }

    @Test func toeplitzReferenceVectorAndSymmetry() {
        // The Microsoft RSS verification key and its first IPv4 vectors.
        let msKey: [UInt8] = [0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
                              0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
                              0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa]
        let t = ToeplitzHash(key: msKey)
        let src = IPv4Address("66.9.149.187")!, dst = IPv4Address("161.142.100.80")!
        #expect(t.hash(src, dst) == 0x323e_8fc2)
        #expect(t.hash(src, dst, 2794, 1766) == 0x51cc_c178)
        let s = ToeplitzHash.symmetric
        var rng = SeededRandom(seed: 5)
        for _ in 0..<2000 {
            let a = IPv4Address(UInt32(truncatingIfNeeded: rng.next())), b = IPv4Address(UInt32(truncatingIfNeeded: rng.next()))
            let p = UInt16(truncatingIfNeeded: rng.next()), q = UInt16(truncatingIfNeeded: rng.next())
            #expect(s.hash(a, b, p, q) == s.hash(b, a, q, p))
            #expect(s.hash(a, b) == s.hash(b, a))
        }
    }

    @Test func virtioNetHeaderRoundTrip() {
        let v = VirtioNetHeader(flags: VirtioNetHeader.needsChecksum, gsoType: VirtioNetHeader.gsoTCPv4,
                                headerLength: 66, segmentSize: 1448, checksumStart: 34, checksumOffset: 16)
        var b = [UInt8](repeating: 0, count: 10)
        b.withUnsafeMutableBytes { v.write(to: $0.baseAddress!) }
        #expect(b == [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0])
        #expect(b.withUnsafeBytes { VirtioNetHeader.parse($0.baseAddress!, count: 10) } == v)
        #expect(b.withUnsafeBytes { VirtioNetHeader.parse($0.baseAddress!, count: 9) } == nil)
    }

    @Test func addresses() {
        #expect(IPv4Address("10.1.2.3")?.description == "10.1.2.3")
        #expect(IPv4Address("10.1.2") == nil && IPv4Address("10.1.2.300") == nil)
        #expect(IPv4Address(10, 0, 0, 5).sameNetwork(as: IPv4Address(10, 0, 0, 200), prefix: 24))
        #expect(!IPv4Address(10, 0, 1, 5).sameNetwork(as: IPv4Address(10, 0, 0, 200), prefix: 24))
        #expect(NetStackConfiguration(address: IPv4Address(10, 0, 0, 5)).subnetBroadcast == IPv4Address(10, 0, 0, 255))
    }
}
