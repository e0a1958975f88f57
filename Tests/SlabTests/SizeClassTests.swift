import CLibellula
import Testing
@testable import Slab

@Suite struct SizeClassTests {
    @Test func everySizeMapsToDragonFlysClass() {
        for size in 1..<SizeClass.zoneLimit {
            let (index, chunk) = SizeClass.index(forSize: size)
            // Reference table from the design notes.
            let expected: (Int, Int)
            func r(_ n: Int, _ step: Int) -> Int { (n + step - 1) / step * step }
            switch size {
            case ..<128: expected = (r(size, 8) / 8 - 1, r(size, 8))
            case ..<256: expected = (r(size, 16) / 16 + 7, r(size, 16))
            case ..<512: expected = (r(size, 32) / 32 + 15, r(size, 32))
            case ..<1024: expected = (r(size, 64) / 64 + 23, r(size, 64))
            case ..<2048: expected = (r(size, 128) / 128 + 31, r(size, 128))
            case ..<4096: expected = (r(size, 256) / 256 + 39, r(size, 256))
            case ..<8192: expected = (r(size, 512) / 512 + 47, r(size, 512))
            default: expected = (r(size, 1024) / 1024 + 55, r(size, 1024))
            }
            #expect(index == expected.0 && chunk == expected.1, "size \(size)")
            #expect(SizeClass.chunkSize(ofClass: index) == chunk, "size \(size)")
            #expect(chunk >= size)
        }
        #expect(SizeClass.index(forSize: SizeClass.zoneLimit - 1).index == SizeClass.count - 1)
    }

    /// The fast path's table lookup agrees with the computed class for every size it takes.
    @Test func smallClassTableMatchesTheFormula() {
        for size in 1...1024 {
            #expect(lb_slab_small_class(UInt(size)) == SizeClass.index(forSize: size).index, "size \(size)")
        }
    }
}
