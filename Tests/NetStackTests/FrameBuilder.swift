@testable import NetStack

/// Builds raw frames for the malformed-input tests.
enum FrameBuilder {
    static let peerMAC = MACAddress.local(seed: 0xfe_0001)
    static let peerIP = IPv4Address(10, 0, 0, 9)

    static func ethernet(to dst: MACAddress, type: UInt16, _ body: [UInt8]) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: 14)
        f.withUnsafeMutableBytes { EthernetHeader(destination: dst, source: peerMAC, etherType: type).write(to: $0.baseAddress!) }
        return f + body
    }

    static func ipv4(proto: UInt8, to dst: IPv4Address, from src: IPv4Address = peerIP, id: UInt16 = 1,
                     flagsAndOffset: UInt16 = 0, _ payload: [UInt8]) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 20)
        h.withUnsafeMutableBytes {
            IPv4Header(totalLength: 20 + payload.count, proto: proto, source: src, destination: dst,
                       identification: id, flagsAndOffset: flagsAndOffset).write(to: $0.baseAddress!)
        }
        return h + payload
    }

    static func udp(to dst: IPv4Address, from src: IPv4Address = peerIP, sport: UInt16, dport: UInt16, _ payload: [UInt8]) -> [UInt8] {
        var u = [UInt8](repeating: 0, count: 8) + payload
        u.withUnsafeMutableBytes { p in
            UDPHeader(sourcePort: sport, destinationPort: dport, length: p.count).write(to: p.baseAddress!)
            var c = InternetChecksum()
            c.addPseudoHeader(source: src, destination: dst, protocol: 17, length: p.count)
            c.add(p.baseAddress!, count: p.count)
            NetworkBytes.put16(p.baseAddress!, 6, c.value == 0 ? 0xffff : c.value)
        }
        return u
    }

    static func icmpEcho(id: UInt16 = 1, seq: UInt16 = 1, _ payload: [UInt8] = Array(0..<32)) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 8) + payload
        b.withUnsafeMutableBytes { ICMPHeader(type: ICMPHeader.echoRequest, code: 0, rest: UInt32(id) << 16 | UInt32(seq)).write(to: $0.baseAddress!, payloadCount: payload.count) }
        return b
    }

    static func arp(op: UInt16 = ARPPacket.request, target: IPv4Address) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 28)
        b.withUnsafeMutableBytes {
            ARPPacket(operation: op, senderMAC: peerMAC, senderIP: peerIP, targetMAC: .zero, targetIP: target).write(to: $0.baseAddress!)
        }
        return b
    }

    /// Recomputes the IPv4 header checksum of a frame (header at offset 14).
    static func fixIPChecksum(_ f: inout [UInt8]) {
        guard f.count >= 34 else { return }
        let hl = Int(f[14] & 0xf) * 4
        guard hl >= 20, f.count >= 14 + hl else { return }
        f[24] = 0; f[25] = 0
        let c = f.withUnsafeBytes { InternetChecksum.compute($0.baseAddress! + 14, count: hl) }
        f[24] = UInt8(c >> 8); f[25] = UInt8(c & 0xff)
    }
}
