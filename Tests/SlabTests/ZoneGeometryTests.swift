import Testing
@testable import Slab

@Suite("Zone geometry and size classes")
struct ZoneGeometryTests {
    @Test func everyClassIsAlignedAndInsideItsZone() throws {
        for debug in [false, true] {
            let slab = SlabAllocator(cpuCount: 1, configuration: .init(zoneRegionBytes: 64 << 20, debug: debug))
            let cpu = slab.arena(0)
            for ci in 0..<SizeClass.count {
                let size = SizeClass.chunkSize(ofClass: ci)
                let align = SizeClass.alignment(ofClass: ci)
                // Enough chunks to fill a zone and spill into a second one.
                let capacity = (ZoneLayout.zoneSize - ZoneLayout.baseOffset(chunkSize: size, debug: debug)) / size
                var chunks: [UnsafeMutableRawPointer] = []
                for k in 0...capacity {
                    let request = SizeClass.mapsDirectly(size) ? size - 1 : size
                    let p = try #require(cpu.allocate(request))
                    #expect(UInt(bitPattern: p) % UInt(align) == 0, "class \(ci) chunk \(k) misaligned")
                    if size & (size - 1) == 0 { #expect(UInt(bitPattern: p) % UInt(size) == 0) }
                    let zone = UInt(bitPattern: p) & ZoneLayout.zoneMask
                    #expect(UInt(bitPattern: p) + UInt(size) <= zone + UInt(ZoneLayout.zoneSize), "class \(ci) overruns zone")
                    #expect(UInt(bitPattern: p) >= UInt(bitPattern: ZoneLayout.header(of: p)) + 192, "class \(ci) overlaps the header")
                    #expect(UInt(bitPattern: ZoneLayout.header(of: p)) & ZoneLayout.zoneMask == zone)
                    #expect(slab.usableSize(p) == size)
                    fill(p, bytes: size, tag: UInt8(truncatingIfNeeded: k))
                    chunks.append(p)
                }
                // Writing every byte of every chunk disturbed no neighbour.
                for (k, p) in chunks.enumerated() {
                    #expect(holds(p, bytes: size, tag: UInt8(truncatingIfNeeded: k)), "class \(ci) chunk \(k) overwritten")
                }
                #expect(Set(chunks.map { UInt(bitPattern: $0) }).count == chunks.count)
                for p in chunks { cpu.free(p) }
            }
            let stats = slab.statistics()
            #expect(stats.chunksInUse == 0)
            for c in stats.sizeClasses { #expect(c.zonesHeld == 1, "class \(c.index) keeps exactly one zone") }
        }
    }

    /// Consecutive zones put their headers at 16 different offsets (colours), so the
    /// headers of many zones do not all fall into one cache set; every chunk of a zone
    /// finds the same header, and the header lies before the first chunk.
    @Test func zoneHeadersAreColouredAcrossSixteenOffsets() throws {
        let zone = UInt(ZoneLayout.zoneSize)
        let first = UInt(1) << 40
        var offsets: Set<UInt> = []
        for k in 0..<UInt(32) {
            let base = first + k * zone
            let h = UInt(bitPattern: ZoneLayout.header(of: UnsafeRawPointer(bitPattern: base)!))
            offsets.insert(h - base)
            #expect(h - base == (k % 16) * 256)
            for debug in [false, true] {
                let end = h - base + UInt(MemoryLayout<ZoneHeader>.size)
                #expect(end <= UInt(ZoneLayout.baseOffset(chunkSize: 8, debug: debug)))
                if debug { #expect(h - base + UInt(ZoneLayout.bitmapOffset + ZoneLayout.bitmapBytes) <= UInt(ZoneLayout.debugHeaderArea)) }
            }
            let last = UnsafeRawPointer(bitPattern: base + zone - 1)!
            #expect(UInt(bitPattern: ZoneLayout.header(of: last)) == h)
        }
        #expect(offsets.count == 16)
        #expect(MemoryLayout<ZoneHeader>.offset(of: \ZoneHeader.localFree) == ZoneLayout.ownerLineOffset)
        #expect(MemoryLayout<ZoneHeader>.size <= ZoneLayout.remoteOffset)
    }

    @Test func requestSizesRoundToTheirClass() throws {
        let slab = SlabAllocator(cpuCount: 1, configuration: .init(zoneRegionBytes: 64 << 20, debug: false))
        let cpu = slab.arena(0)
        #expect(!SizeClass.mapsDirectly(16383) && !SizeClass.mapsDirectly(8192) && !SizeClass.mapsDirectly(12287))
        #expect(SizeClass.mapsDirectly(16384) && SizeClass.mapsDirectly(12288))
        for size in [1, 7, 8, 9, 127, 128, 129, 255, 256, 1000, 1024, 1025, 4095, 8193, 16383] {
            let p = try #require(cpu.allocate(size))
            #expect(slab.usableSize(p) == SizeClass.index(forSize: size).chunkSize)
            cpu.free(p)
        }
        #expect(cpu.allocate(0) == SlabAllocator.zeroLengthPointer)
        cpu.free(SlabAllocator.zeroLengthPointer)   // a no-op
        #expect(cpu.allocate(-1, flags: .mayReturnNil) == nil)
    }
}
