import Testing
import LWKT
import Slab
@testable import NetStack

/// A hand-driven TCP peer on the far end of a `SimulatedLink`: it writes raw segments to
/// one Libellula stack and reads what the stack sends back (answering ARP), so tests can
/// craft any segment — forged, out of window, mutated — and check the RFC's answer.
final class RawPeer: @unchecked Sendable {
    let stack: NetStack
    let link: SimulatedLink
    static let address = IPv4Address(10, 0, 0, 2)
    var inbox: [(TCPHeader, [UInt8])] = []

    init(stack: NetStack, link: SimulatedLink) { self.stack = stack; self.link = link }

    var mac: MACAddress { link.b.macAddress }

    /// Sends raw IPv4 payload bytes (`proto`) to the stack.
    func sendIP(_ body: [UInt8], proto: UInt8 = 6) {
        let f = FrameBuilder.ethernet(to: link.a.macAddress, type: EthernetHeader.typeIPv4,
                                      FrameBuilder.ipv4(proto: proto, to: SimPair.addressA, from: Self.address, body))
        var frame = f
        frame.withUnsafeMutableBytes { b in MACAddress(mac.value).store(b.baseAddress!, 6) }
        guard let m = stack.pool.allocate() else { Issue.record("no mbuf"); return }
        frame.withUnsafeBytes { _ = m.append(bytes: $0) }
        link.b.inject(m)
    }

    /// A TCP segment's bytes with a right (or deliberately wrong) checksum.
    static func segment(sport: UInt16, dport: UInt16, seq: UInt32, ack: UInt32, flags: TCPFlags, window: UInt16 = 65535,
                        options: TCPOptions = TCPOptions(), payload: [UInt8] = [], badChecksum: Bool = false) -> [UInt8] {
        let h = TCPHeader(sourcePort: sport, destinationPort: dport, sequence: seq, acknowledgment: ack, flags: flags,
                          window: window, options: options)
        var b = [UInt8](repeating: 0, count: h.headerLength) + payload
        b.withUnsafeMutableBytes { p in
            _ = h.write(to: p.baseAddress!, capacity: h.headerLength)
            var c = InternetChecksum()
            c.addPseudoHeader(source: address, destination: SimPair.addressA, protocol: 6, length: p.count)
            c.add(p.baseAddress!, count: p.count)
            NetworkBytes.put16(p.baseAddress!, 16, c.value ^ (badChecksum ? 0x0101 : 0))
        }
        return b
    }

    func send(sport: UInt16, dport: UInt16, seq: UInt32, ack: UInt32, flags: TCPFlags, window: UInt16 = 65535,
              options: TCPOptions = TCPOptions(), payload: [UInt8] = []) {
        sendIP(Self.segment(sport: sport, dport: dport, seq: seq, ack: ack, flags: flags, window: window, options: options, payload: payload))
    }

    /// Takes what the stack sent: answers ARP requests, queues TCP segments in `inbox`.
    func pump() {
        _ = link.b.drain { m in
            defer { m.free() }
            let a = m.array
            guard a.count >= 14 else { return }
            let type = UInt16(a[12]) << 8 | UInt16(a[13])
            if type == EthernetHeader.typeARP {
                guard let arp = a.withUnsafeBytes({ ARPPacket.parse($0.baseAddress! + 14, count: a.count - 14) }),
                      arp.operation == ARPPacket.request, arp.targetIP == Self.address else { return }
                var body = [UInt8](repeating: 0, count: 28)
                body.withUnsafeMutableBytes {
                    ARPPacket(operation: ARPPacket.reply, senderMAC: mac, senderIP: Self.address,
                              targetMAC: arp.senderMAC, targetIP: arp.senderIP).write(to: $0.baseAddress!)
                }
                var f = FrameBuilder.ethernet(to: arp.senderMAC, type: EthernetHeader.typeARP, body)
                f.withUnsafeMutableBytes { b in MACAddress(mac.value).store(b.baseAddress!, 6) }
                if let r = stack.pool.allocate() { f.withUnsafeBytes { _ = r.append(bytes: $0) }; link.b.inject(r) }
                return
            }
            guard type == EthernetHeader.typeIPv4, a.count >= 34, a[23] == 6 else { return }
            let hl = Int(a[14] & 0xf) * 4
            let total = Int(a[16]) << 8 | Int(a[17])
            let seg = Array(a[(14 + hl)..<(14 + total)])
            if case .success(let h) = seg.withUnsafeBytes({ TCPHeader.parse($0.baseAddress!, count: seg.count) }) {
                inbox.append((h, Array(seg[h.headerLength...])))
            }
        }
    }

    /// Waits (up to `timeout`) for a segment matching `where` and returns it, dropping what
    /// came before it.
    func expect(timeout: Duration = .seconds(2), _ match: (TCPHeader, [UInt8]) -> Bool = { _, _ in true }) async throws -> (TCPHeader, [UInt8])? {
        let deadline = ContinuousClock.now + timeout
        while true {
            pump()
            if let i = inbox.firstIndex(where: match) {
                let s = inbox[i]
                inbox.removeFirst(i + 1)
                return s
            }
            if ContinuousClock.now >= deadline { return nil }
            try await LWKT.sleep(for: .milliseconds(1))
        }
    }

    /// Drains and forgets everything received so far (after a short settle).
    func flush() async throws {
        try await LWKT.sleep(for: .milliseconds(5))
        pump()
        inbox.removeAll()
    }
}

/// One stack on CPU set `cpus` with a raw peer on the other end of the wire.
func withRawPeer(cpus: Int = 1, configure: (inout NetStackConfiguration) -> Void = { _ in },
                 _ body: @escaping @Sendable (NetStack, RawPeer) async throws -> Void) async throws {
    let system = try LWKT.boot(cpus: cpus, configuration: .init(idleSpin: .microseconds(20), pin: false, warnings: false))
    let slab = SlabAllocator(system: system, configuration: .init(debug: false))
    let link = SimulatedLink(queues: cpus, steering: .flowHash)
    var c = NetStackConfiguration(address: SimPair.addressA)
    tcpTestConfiguration(&c)
    configure(&c)
    let a = try NetStack(system: system, allocator: slab, interface: link.a, configuration: c)
    try a.start()
    let peer = RawPeer(stack: a, link: link)
    let result: Result<Void, any Error>
    do { result = .success(try await system.run(on: 0) { try await body(a, peer) }) } catch { result = .failure(error) }
    try await a.stop()
    _ = link.b.drain { $0.free() }
    _ = try await system.shutdown(timeout: .seconds(20))
    return try result.get()
}
