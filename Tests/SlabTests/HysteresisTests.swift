import Testing
@testable import Slab

@Suite("Zone reuse, hysteresis and release to the OS")
struct HysteresisTests {
    @Test func oscillatingAroundAZoneBoundaryMapsNothing() throws {
        let slab = SlabAllocator(cpuCount: 1, configuration: .init(zoneRegionBytes: 64 << 20, debug: false))
        let cpu = slab.arena(0)
        let size = 256
        let capacity = (ZoneLayout.zoneSize - ZoneLayout.baseOffset(chunkSize: size, debug: false)) / size
        var chunks: [UnsafeMutableRawPointer] = []
        func cycle() throws {
            for _ in 0...capacity { chunks.append(try #require(cpu.allocate(size))) }   // one more than a zone
            for p in chunks { cpu.free(p) }
            chunks.removeAll(keepingCapacity: true)
        }
        try cycle()
        let first = slab.statistics()
        #expect(first.zonesFromRegion == 2)
        #expect(first.freeZonesCached == 1)     // the second zone emptied and was parked
        for _ in 0..<50 { try cycle() }
        let after = slab.statistics()
        #expect(after.osMemoryCalls == first.osMemoryCalls, "no mmap/munmap/madvise per cycle")
        #expect(after.zonesFromRegion == 2)
        #expect(after.zonesReturnedToOS == 0)
        #expect(after.cpus[0].zonesReused == 50)
    }

    @Test func zonesAboveTheThresholdGoBackOnlyWhenAllocating() throws {
        let slab = SlabAllocator(cpuCount: 1, configuration: .init(freeZoneThreshold: 3, zoneRegionBytes: 64 << 20, debug: false))
        let cpu = slab.arena(0)
        let size = 4096
        let capacity = (ZoneLayout.zoneSize - ZoneLayout.baseOffset(chunkSize: size, debug: false)) / size
        var chunks: [UnsafeMutableRawPointer] = []
        for _ in 0..<(10 * capacity) { chunks.append(try #require(cpu.allocate(size))) }
        #expect(slab.statistics().zonesHeld == 10)
        for p in chunks { cpu.free(p) }
        var s = slab.statistics()
        #expect(s.freeZonesCached == 9)          // one zone stays on the class list
        #expect(s.zonesReturnedToOS == 0)        // frees never give memory back
        #expect(s.madviseCalls == 0)
        let p = try #require(cpu.allocate(64))   // the allocation path trims to the threshold
        s = slab.statistics()
        #expect(s.freeZonesCached == 2)          // three kept, then one reused for the 64-byte class
        #expect(s.zonesReturnedToOS == 6)
        #expect(s.madviseCalls == 6)
        cpu.free(p)
        cpu.trim()
        #expect(slab.statistics().freeZonesCached == 0)
        // Released slots are reused (zero-filled) before new address space.
        let q = try #require(cpu.allocate(2048, flags: .zero))
        #expect(holds(q, bytes: 2048, tag: 0))
        cpu.free(q)
    }

    @Test func zeroFlagClearsRecycledChunks() throws {
        let slab = SlabAllocator(cpuCount: 1, configuration: .init(zoneRegionBytes: 64 << 20, debug: false))
        let cpu = slab.arena(0)
        let p = try #require(cpu.allocate(500))
        fill(p, bytes: 500, tag: 0xAB)
        cpu.free(p)
        let q = try #require(cpu.allocate(500, flags: .zero))
        #expect(q == p)
        #expect(holds(q, bytes: 512, tag: 0))
        cpu.free(q)
    }

    @Test func bigAllocationsAreMappedAndFoundAgain() throws {
        let slab = SlabAllocator(cpuCount: 1, configuration: .init(zoneRegionBytes: 64 << 20, debug: false))
        let cpu = slab.arena(0)
        let t = slab.makeType(name: "big")
        var blocks: [(UnsafeMutableRawPointer, Int)] = []
        for size in [12288, 16384, 16385, 100_000, 1 << 20, 5 << 20] {
            let p = try #require(cpu.allocate(size, type: t, flags: .zero))
            #expect(UInt(bitPattern: p) % 4096 == 0)
            #expect(holds(p, bytes: size, tag: 0))
            fill(p, bytes: size, tag: 7)
            #expect(slab.usableSize(p) == (size + 4095) / 4096 * 4096)
            blocks.append((p, size))
        }
        var s = slab.statistics()
        #expect(s.bigAllocations == 6)
        #expect(s.types.first { $0.name == "big" }?.bytesInUse == blocks.reduce(0) { $0 + ($1.1 + 4095) / 4096 * 4096 })
        let mapsBefore = s.munmapCalls
        // Same page count: reallocate keeps the pointer; a different size moves and copies.
        let same = slab.reallocate(blocks[2].0, to: 16390, type: t)
        #expect(same == blocks[2].0)
        let moved = try #require(slab.reallocate(blocks[3].0, to: 300_000, type: t))
        #expect(holds(moved, bytes: 100_000, tag: 7))
        blocks[3].0 = moved
        for (p, _) in blocks { cpu.free(p, type: t) }
        s = slab.statistics()
        #expect(s.bigAllocations == 0 && s.bigBytes == 0)
        #expect(s.munmapCalls == mapsBefore + 7)
        #expect(s.types.first { $0.name == "big" }?.bytesInUse == 0)
    }

    @Test func reallocateKeepsThePointerWithinAClass() throws {
        let slab = SlabAllocator(cpuCount: 1, configuration: .init(zoneRegionBytes: 64 << 20, debug: false))
        let p = try #require(slab.allocate(100))
        fill(p, bytes: 100, tag: 3)
        #expect(slab.reallocate(p, to: 103) == p)    // both round to 104
        let q = try #require(slab.reallocate(p, to: 1000))
        #expect(q != p)
        #expect(holds(q, bytes: 100, tag: 3))
        #expect(slab.reallocate(q, to: 0) == nil)
        #expect(slab.statistics().chunksInUse == 0)
    }

    @Test func statisticsSnapshotIsCodable() throws {
        let slab = SlabAllocator(cpuCount: 2, configuration: .init(zoneRegionBytes: 64 << 20, debug: false))
        let t = slab.makeType(name: "things", limit: 1 << 20)
        let p = try #require(slab.arena(1).allocate(40, type: t))
        let s = slab.statistics()
        let data = try JSONEncoderShim.encode(s)
        let back = try JSONEncoderShim.decode(SlabStatistics.self, data)
        #expect(back == s)
        #expect(s.types.first { $0.name == "things" }?.limit == 1 << 20)
        #expect(s.sizeClasses[SizeClass.index(forSize: 40).index].inUse == 1)
        slab.arena(1).free(p, type: t)
    }
}
