import Testing
@testable import Slab

@Suite("Remote frees through zone lists and mailboxes (explicit arenas)")
struct RemoteFreeTests {
    @Test func fullZoneComesBackThroughTheMailboxOnce() throws {
        let slab = SlabAllocator(cpuCount: 2, configuration: .init(zoneRegionBytes: 64 << 20, debug: false))
        let owner = slab.arena(0), other = slab.arena(1)
        let size = 1024
        let capacity = (ZoneLayout.zoneSize - ZoneLayout.baseOffset(chunkSize: size, debug: false)) / size
        // Fill one zone exactly: it leaves the owner's list, armed.
        var chunks: [UnsafeMutableRawPointer] = []
        for _ in 0..<capacity { chunks.append(try #require(owner.allocate(size))) }
        let zone = ZoneLayout.header(of: chunks[0])
        #expect(chunks.allSatisfy { ZoneLayout.header(of: $0) == zone })
        #expect(!zone.pointee.listed)
        #expect(ZoneLayout.remoteHead(zone).pointee.load(ordering: .relaxed) == ZoneLayout.armed)

        // Remote frees: only the first finds it armed and posts it.
        for p in chunks.prefix(10) { other.free(p) }
        var s = slab.statistics()
        #expect(s.cpus[0].mailboxPosts == 1)
        #expect(s.cpus[1].remoteFreesSent == 10)
        #expect(s.sizeClasses[SizeClass.index(forSize: size).index].inUse == capacity - 10)

        // The owner drains its mailbox: the zone is listed again with the ten chunks.
        owner.poll()
        #expect(zone.pointee.listed)
        #expect(zone.pointee.freeCount == 10)
        s = slab.statistics()
        #expect(s.cpus[0].notificationsHandled == 1)
        #expect(s.sizeClasses[SizeClass.index(forSize: size).index].remoteFreesReceived == 10)

        // The owner reuses exactly those chunks before making a new zone.
        var again: Set<UInt> = []
        for _ in 0..<10 {
            let p = try #require(owner.allocate(size))
            again.insert(UInt(bitPattern: p))
        }
        #expect(again == Set(chunks.prefix(10).map { UInt(bitPattern: $0) }))
        #expect(slab.statistics().cpus[0].zonesFromRegion == 1)
        for p in again { other.free(UnsafeMutableRawPointer(bitPattern: p)!) }
        for p in chunks.dropFirst(10) { owner.free(p) }
        owner.poll()
        #expect(slab.statistics().chunksInUse == 0)
        #expect(zone.pointee.freeCount == capacity)
    }

    @Test func listedZoneAbsorbsRemoteFreesWhenItRunsDry() throws {
        let slab = SlabAllocator(cpuCount: 2, configuration: .init(zoneRegionBytes: 64 << 20, debug: true))
        let owner = slab.arena(0), other = slab.arena(1)
        let a = try #require(owner.allocate(64))
        let b = try #require(owner.allocate(64))
        other.free(a)   // zone still listed: no post, the chunk waits on the remote list
        #expect(slab.statistics().cpus[0].mailboxPosts == 0)
        // Exhaust the zone's local chunks: the remote chunk is pulled in, not a new zone.
        let capacity = (ZoneLayout.zoneSize - ZoneLayout.baseOffset(chunkSize: 64, debug: true)) / 64
        var held = [b]
        for _ in 0..<(capacity - 2) { held.append(try #require(owner.allocate(64))) }
        let reused = try #require(owner.allocate(64))
        #expect(reused == a)
        held.append(reused)
        #expect(slab.statistics().cpus[0].zonesFromRegion == 1)
        for p in held { owner.free(p) }
    }

    @Test func localFreeOfAnArmedZoneDisarmsIt() throws {
        let slab = SlabAllocator(cpuCount: 2, configuration: .init(zoneRegionBytes: 64 << 20, debug: false))
        let owner = slab.arena(0), other = slab.arena(1)
        let size = 8192
        let capacity = (ZoneLayout.zoneSize - ZoneLayout.baseOffset(chunkSize: size, debug: false)) / size
        var chunks: [UnsafeMutableRawPointer] = []
        for _ in 0..<capacity { chunks.append(try #require(owner.allocate(size))) }
        let zone = ZoneLayout.header(of: chunks[0])
        #expect(!zone.pointee.listed)
        owner.free(chunks[0])                       // relisted, disarmed
        #expect(zone.pointee.listed)
        #expect(ZoneLayout.remoteHead(zone).pointee.load(ordering: .relaxed) == 0)
        other.free(chunks[1])                       // no post: the zone is not armed
        #expect(slab.statistics().cpus[0].mailboxPosts == 0)
        for p in chunks.dropFirst(2) { other.free(p) }
        owner.poll()
        // Everything is back: one zone, all chunks free once the remote list is drained
        // at exhaustion.
        var again: [UnsafeMutableRawPointer] = []
        for _ in 0..<capacity { again.append(try #require(owner.allocate(size))) }
        #expect(Set(again.map { UInt(bitPattern: $0) }) == Set(chunks.map { UInt(bitPattern: $0) }))
        for p in again { owner.free(p) }
    }

    @Test func threadsThatAreNotCPUsUseTheSharedPool() throws {
        let slab = SlabAllocator(cpuCount: 1, configuration: .init(zoneRegionBytes: 64 << 20, debug: true))
        // This test thread is no CPU: allocate() goes to the shared pool.
        let p = try #require(slab.allocate(100))
        let q = try #require(slab.allocate(100))
        var s = slab.statistics()
        #expect(s.cpus.last?.zonesHeld == 1)
        #expect(s.cpus[0].zonesHeld == 0)
        slab.free(p)
        // A CPU frees a shared chunk: a remote free into the shared pool's zone.
        slab.arena(0).free(q)
        s = slab.statistics()
        #expect(s.cpus[0].remoteFreesSent == 1)
        #expect(s.chunksInUse == 0)
        // A non-CPU thread frees a CPU's chunk: a remote free too.
        let r = try #require(slab.arena(0).allocate(100))
        slab.free(r)
        slab.arena(0).poll()
        #expect(slab.statistics().chunksInUse == 0)
    }
}
