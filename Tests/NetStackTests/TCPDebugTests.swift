import Testing
import LWKT
import Slab
@testable import NetStack

@Suite(.serialized) struct TCPDebugTests {
    @Test func debugConnect() async throws {
        try await withSimPair(configure: { a, b in tcpTestConfiguration(&a); tcpTestConfiguration(&b) }) { (p: SimPair) async throws in
            let server = try EchoServer(p.b, port: 80)
            do {
                try await echoRoundTrip(p.a, to: IPv4Endpoint(SimPair.addressB, 80), payload: pattern(100_000, tag: 1))
            } catch { print("ERR", error) }
            print("A\n" + p.a.counters.table())
            print("B\n" + p.b.counters.table())
            try await server.stop()
        }
    }
}

@Suite struct TCPChecksumDebug {
    @Test func emitVerifies() throws {
        let system = try LWKT.boot(cpus: 1, configuration: .init(idleSpin: .microseconds(20), pin: false, warnings: false))
        defer { _ = system }
        let slab = SlabAllocator(system: system, configuration: .init(debug: false))
        let pool = MbufPool(allocator: slab)
        let m = pool.allocate(forBytes: 60, headroom: 128)!
        var o = TCPOptions(); o.mss = 1460; o.windowScale = 3; o.sackPermitted = true; o.timestamp = (5, 0)
        let h = TCPHeader(sourcePort: 1, destinationPort: 80, sequence: 99, acknowledgment: 0, flags: .syn, window: 65535, options: o)
        let p = m.prepend(h.headerLength)!
        _ = h.write(to: p, capacity: h.headerLength)
        let src = IPv4Address(10, 0, 0, 1), dst = IPv4Address(10, 0, 0, 2)
        let v = TCPHeader.checksum(of: m, from: 0, length: h.headerLength, source: src, destination: dst)
        NetworkBytes.put16(p, 16, v)
        print("len", m.length, "v", v, m.array)
        #expect(TCPHeader.verify(m, from: 0, length: h.headerLength, source: src, destination: dst))
        m.free()
    }
}
