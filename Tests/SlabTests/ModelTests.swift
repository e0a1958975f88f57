import Testing
@testable import Slab
import LibellulaTestSupport

@Suite("Random allocate/free sequences against a model")
struct ModelTests {
    struct Live { var size: Int; var tag: UInt8; var typed: Bool }

    @Test(arguments: [1 as UInt64, 2, 3, 4])
    func randomSequenceMatchesModel(seed: UInt64) throws {
        var rng = SeededRandom(seed: seed)
        let debug = seed % 2 == 0
        let slab = SlabAllocator(cpuCount: 2, configuration: .init(freeZoneThreshold: 2, zoneRegionBytes: 256 << 20, debug: debug))
        let packets = slab.makeType(name: "packets")
        let cpus = [slab.arena(0), slab.arena(1)]
        var live: [UInt: Live] = [:]
        var modelBytes = 0
        for step in 0..<30_000 {
            let allocating = live.isEmpty || (live.count < 3000 && rng.next() % 100 < 55)
            let who = cpus[Int(rng.next() % 2)]
            if allocating {
                let r = rng.next() % 1000
                let size = r < 900 ? Int(rng.next() % 1024) + 1 : (r < 995 ? Int(rng.next() % 16383) + 1 : Int(rng.next() % 200_000) + 16384)
                let typed = rng.next() % 2 == 0
                let zero = rng.next() % 4 == 0
                let p = try #require(who.allocate(size, type: typed ? packets : nil, flags: zero ? .zero : []))
                if zero { #expect(holds(p, bytes: size, tag: 0), "step \(step): .zero chunk not zeroed") }
                let key = UInt(bitPattern: p)
                #expect(live[key] == nil, "step \(step): pointer handed out twice")
                let tag = UInt8(truncatingIfNeeded: rng.next() | 1)
                fill(p, bytes: size, tag: tag)
                live[key] = Live(size: size, tag: tag, typed: typed)
                if typed { modelBytes += slab.usableSize(p) ?? 0 }
            } else {
                let key = live.keys.randomElement(using: &rng)!
                let item = live.removeValue(forKey: key)!
                let p = UnsafeMutableRawPointer(bitPattern: key)!
                #expect(holds(p, bytes: item.size, tag: item.tag), "step \(step): contents changed while live")
                if item.typed { modelBytes -= slab.usableSize(p) ?? 0 }
                who.free(p, type: item.typed ? packets : nil)
            }
            if step % 5000 == 0 { cpus.forEach { $0.poll() } }
        }
        for (key, item) in live {
            let p = UnsafeMutableRawPointer(bitPattern: key)!
            #expect(holds(p, bytes: item.size, tag: item.tag))
        }
        let stats = slab.statistics()
        let small = live.values.filter { !SizeClass.mapsDirectly($0.size) }
        #expect(stats.chunksInUse == small.count)
        #expect(stats.bigAllocations == live.count - small.count)
        let typeStats = try #require(stats.types.first { $0.name == "packets" })
        #expect(typeStats.bytesInUse == modelBytes)
        #expect(typeStats.inUse == live.values.filter(\.typed).count)
        for (key, item) in live { cpus[0].free(UnsafeMutableRawPointer(bitPattern: key)!, type: item.typed ? packets : nil) }
        cpus.forEach { $0.poll() }
        let end = slab.statistics()
        #expect(end.chunksInUse == 0)
        #expect(end.bigAllocations == 0 && end.bigBytes == 0)
        #expect(end.types.allSatisfy { $0.bytesInUse == 0 && $0.inUse == 0 })
        // Every chunk is free again, so each zone held has all of its chunks free.
        for c in end.sizeClasses where c.zonesHeld > 0 {
            #expect(c.free == c.zonesHeld * ((ZoneLayout.zoneSize - ZoneLayout.baseOffset(chunkSize: c.chunkSize, debug: debug)) / c.chunkSize))
        }
    }
}
