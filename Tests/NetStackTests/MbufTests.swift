import Testing
import LWKT
import Slab
@testable import NetStack

@Suite struct MbufTests {
    @Test func editingAndChains() throws {
        let slab = SlabAllocator(cpuCount: 1, configuration: .init(debug: false))
        let pool = MbufPool(allocator: slab)
        let m = try #require(pool.allocate(headroom: 64))
        #expect(m.headroom == 64 && m.length == 0 && m.capacity == MbufPool.standardCapacity)
        let body: [UInt8] = Array(1...10)
        body.withUnsafeBytes { #expect(m.append(bytes: $0)) }
        let h = try #require(m.prepend(4))
        h.storeBytes(of: 0xdeadbeef as UInt32, as: UInt32.self)
        #expect(m.length == 14 && m.headroom == 60)
        #expect(m.prepend(61) == nil)
        #expect(m.trimFront(4))
        #expect(m.array == body)
        let c = try #require(pool.allocateCluster())
        #expect(c.capacity == MbufPool.clusterCapacity && c.flags.contains(.cluster))
        let tail: [UInt8] = Array(repeating: 7, count: 3000)
        tail.withUnsafeBytes { #expect(c.append(bytes: $0)) }
        m.appendChain(c)
        #expect(m.packetLength == 3010)
        var out = [UInt8](repeating: 0, count: 6)
        #expect(out.withUnsafeMutableBytes { m.copy(from: 8, count: 6, into: $0.baseAddress!) })
        #expect(out == [9, 10, 7, 7, 7, 7])
        #expect(!out.withUnsafeMutableBytes { m.copy(from: 3008, count: 6, into: $0.baseAddress!) })
        var sum = InternetChecksum()
        sum.add(packet: m, from: 1, count: 3009)
        let flat = Array(m.array[1...])
        #expect(sum.folded == flat.withUnsafeBytes { p -> UInt16 in var s = InternetChecksum(); s.add(p.baseAddress!, count: p.count); return s.folded })
        m.truncate(to: 5)
        #expect(m.packetLength == 5 && m.next == nil)
        #expect(pool.outstanding == 1)
        let d = try #require(m.duplicate())
        #expect(d.array == m.array)
        d.free()
        m.free()
        #expect(pool.outstanding == 0)
    }

    @Test func poolLimitFailsInsteadOfGrowing() {
        let slab = SlabAllocator(cpuCount: 1, configuration: .init(debug: false))
        let pool = MbufPool(allocator: slab, limitBytes: 64 * 1024)
        var held: [Mbuf] = []
        while let m = pool.allocate(), held.count < 1000 { held.append(m) }
        #expect(held.count < 1000)
        for m in held { m.free() }
        #expect(pool.outstanding == 0)
    }
}
