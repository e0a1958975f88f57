import LWKT
import Slab
import Testing
@testable import Services

@Suite struct IOBufferTests {
    /// Writes grow the buffer and never cut: every byte written is there, in order.
    @Test func writesGrowAndNeverTruncate() {
        let b = IOBuffer(capacity: 16)
        var expected: [UInt8] = []
        for i in 0..<1000 {
            let s = "line \(i)\r\n"
            b.append(string: s)
            expected += Array(s.utf8)
            b.append(decimal: UInt64(i))
            expected += Array(String(i).utf8)
        }
        #expect(!b.failed)
        #expect(Array(b.readable) == expected)
    }

    /// Past its maximum a write is refused whole and the failure is visible.
    @Test func refusedWritesFailLoudly() {
        let b = IOBuffer(capacity: 16, maxCapacity: 64)
        b.append(string: String(repeating: "a", count: 60))
        #expect(!b.failed && b.readableBytes == 60)
        b.append(string: "bcdefgh")
        #expect(b.failed)
        #expect(b.readableBytes == 60, "a refused write adds nothing")
        b.clear()
        #expect(!b.failed && b.readableBytes == 0)
    }

    /// Consumed bytes make room at the front before the buffer grows.
    @Test func readIndexCompactsBeforeGrowing() {
        let b = IOBuffer(capacity: 32, maxCapacity: 32)
        b.append(string: String(repeating: "x", count: 30))
        b.consume(25)
        b.append(string: "0123456789")
        #expect(!b.failed && b.capacity == 32)
        #expect(String(decoding: b.readable, as: UTF8.self) == "xxxxx0123456789")
    }

    /// Slab-backed buffers take their chunks from the slab and give them back.
    @Test func slabBacked() async throws {
        let system = try LWKT.boot(cpus: 1, configuration: LWKTConfiguration(pin: false, warnings: false))

        let slab = SlabAllocator.shared(for: system)
        let type = slab.makeType(name: "iobuffer-test")
        do {
            let b = IOBuffer(capacity: 100, allocator: slab, type: type)
            #expect(slab.usableSize(b.baseAddress) != nil)
            b.append(string: String(repeating: "z", count: 100_000))
            #expect(slab.usableSize(b.baseAddress) != nil && b.readableBytes == 100_000)
        }
        _ = try await system.shutdown()
    }
}
