import Testing
import Synchronization
import LWKT
@testable import Slab

/// Counts the chunks on a zone's remote-free list (the owner has not taken them yet).
func remoteListLength(_ zone: UnsafeMutablePointer<ZoneHeader>) -> Int {
    var n = 0
    var next = ZoneLayout.remoteHead(zone).pointee.load(ordering: .acquiring) & ~ZoneLayout.armed
    while let c = UnsafeMutableRawPointer(bitPattern: next) {
        n += 1
        next = c.load(as: UInt.self)
    }
    return n
}

@Suite("Remote frees batched per zone on the system slab's CPUs")
struct RemoteBatchTests {
    @Test func aJobsRemoteFreesReachTheZoneWhenTheJobEndsInBatchesOfAtMost64() async throws {
        try await withSlabSystem(cpus: 2) { system in
            let slab = SlabAllocator(system: system, configuration: .init(zoneRegionBytes: 64 << 20, debug: false))
            #expect(slab.isSystemSlab)
            // CPU 0 allocates 200 chunks of one zone (the zone stays listed: it is far from full).
            let held = try await system.run(on: 0) { () -> PointerBatch in
                PointerBatch(pointers: (0..<200).compactMap { _ in slab.allocate(64) })
            }
            #expect(held.pointers.count == 200)
            let zone = ZoneLayout.header(of: held.pointers[0])
            #expect(held.pointers.allSatisfy { ZoneLayout.header(of: $0) == zone })

            // CPU 1 frees them in one job; while the job runs, at most 63 wait in its batch.
            let seenInJob = try await system.run(on: 1) { () -> Int in
                for p in held.pointers { slab.free(p) }
                return remoteListLength(ZoneLayout.header(of: held.pointers[0]))
            }
            #expect(seenInJob == 192, "three full batches of 64 handed over during the job")
            // The job's end handed over the last 8.
            #expect(remoteListLength(zone) == 200)
            let s = slab.statistics()
            #expect(s.cpus[1].remoteFreesSent == 200)
            #expect(s.cpus[1].remoteBatchesSent == 4)
            #expect(s.chunksInUse == 0)

            // The owner gets every chunk back without a new zone.
            let reused = try await system.run(on: 0) { () -> Int in
                let zone = ZoneLayout.header(of: held.pointers[0])
                let capacity = zone.pointee.capacity
                var again: [UnsafeMutableRawPointer] = []
                for _ in 0..<capacity { if let p = slab.allocate(64) { again.append(p) } }
                let sameZone = again.filter { ZoneLayout.header(of: $0) == zone }.count
                for p in again { slab.free(p) }
                return sameZone
            }
            #expect(reused == zone.pointee.capacity)
            #expect(slab.statistics().cpus[0].zonesFromRegion == 1)
        }
    }

    @Test func aChunkOfAnotherZoneHandsTheBatchOverAndAnArmedZoneIsPostedOnce() async throws {
        try await withSlabSystem(cpus: 2) { system in
            let slab = SlabAllocator(system: system, configuration: .init(zoneRegionBytes: 64 << 20, debug: true))
            let size = 1024
            // CPU 0 fills one zone of 1 KiB chunks exactly (it leaves the list, armed) and
            // takes one chunk of another class.
            let (full, other) = try await system.run(on: 0) { () -> (PointerBatch, PointerBatch) in
                let capacity = (ZoneLayout.zoneSize - ZoneLayout.baseOffset(chunkSize: size, debug: true)) / size
                let ps = (0..<capacity).compactMap { _ in slab.allocate(size) }
                return (PointerBatch(pointers: ps), PointerBatch(pointers: [slab.allocate(64)].compactMap { $0 }))
            }
            let zone = ZoneLayout.header(of: full.pointers[0])
            #expect(!zone.pointee.listed)
            #expect(ZoneLayout.remoteHead(zone).pointee.load(ordering: .relaxed) == ZoneLayout.armed)

            let (afterTen, afterSwitch) = try await system.run(on: 1) { () -> (Int, Int) in
                let zone = ZoneLayout.header(of: full.pointers[0])
                for p in full.pointers.prefix(10) { slab.free(p) }
                let a = remoteListLength(zone)
                slab.free(other.pointers[0])        // another zone: the ten go out now
                return (a, remoteListLength(zone))
            }
            #expect(afterTen == 0)
            #expect(afterSwitch == 10)
            // Let CPU 0 run its passive IPI, then look: the armed zone was posted once.
            try await system.run(on: 0) { slab.poll() }
            let s = slab.statistics()
            #expect(s.cpus[0].mailboxPosts == 1)
            #expect(s.cpus[0].notificationsHandled == 1)
            #expect(zone.pointee.listed)
            #expect(zone.pointee.freeCount == 10)
            try await system.run(on: 1) { for p in full.pointers.dropFirst(10) { slab.free(p) } }
            try await system.run(on: 0) { slab.poll() }
            #expect(slab.statistics().chunksInUse == 0)
        }
    }

    @Test func debugModeMarksARemoteFreeWhenItJoinsTheBatch() async throws {
        // Debug mode marks the chunk free when it joins the batch, not when the batch is
        // handed over, so a second free of it fails on the freeing CPU at once (the abort
        // itself is checked in a child process by DebugModeTests).
        try await withSlabSystem(cpus: 2) { system in
            let slab = SlabAllocator(system: system, configuration: .init(zoneRegionBytes: 64 << 20, debug: true))
            let p = try await system.run(on: 0) { PointerBatch(pointers: [slab.allocate(64)].compactMap { $0 }) }
            let allocated = try await system.run(on: 1) { () -> Bool in
                let c = p.pointers[0]
                let z = ZoneLayout.header(of: c)
                let i = (UInt(bitPattern: c) - UInt(bitPattern: z.pointee.base)) / UInt(z.pointee.chunkSize)
                let word = ZoneLayout.bitmap(z).advanced(by: Int(i / 64))
                slab.free(c)
                // Still in this CPU's batch, yet already marked free.
                return word.pointee.load(ordering: .relaxed) & (1 << (i % 64)) != 0
            }
            #expect(!allocated)
        }
    }
}
