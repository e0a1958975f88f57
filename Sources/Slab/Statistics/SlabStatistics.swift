/// A point-in-time view of a ``SlabAllocator``, for `libellula stat`, `/_stats` and tests.
///
/// Counters are read with relaxed loads while the CPUs keep running, so totals taken
/// during activity can be off by the operations in flight; at rest they are exact.
public struct SlabStatistics: Codable, Sendable, Equatable {
    /// Number of CPU arenas (the shared pool is reported after them).
    public var cpuCount: Int
    /// Bytes per zone.
    public var zoneSize: Int
    /// Whether debug checks are on.
    public var debug: Bool
    /// One entry per size class, summed over CPUs.
    public var sizeClasses: [SizeClassStatistics]
    /// One entry per malloc type, summed over CPUs.
    public var types: [MallocTypeStatistics]
    /// One entry per CPU arena, then one for the shared pool (`cpu == -1`).
    public var cpus: [SlabCPUStatistics]
    /// Zones handed out from the reserved range (first use or reuse after release).
    public var zonesFromRegion: Int
    /// Zones given back to the OS.
    public var zonesReturnedToOS: Int
    /// Zones currently parked on free-zone lists.
    public var freeZonesCached: Int
    /// `mmap`, `munmap` and `madvise` calls made so far (zones and big blocks).
    public var mmapCalls: Int
    public var munmapCalls: Int
    public var madviseCalls: Int
    /// Live directly mapped allocations and their bytes.
    public var bigAllocations: Int
    public var bigBytes: Int

    /// All calls into the OS's memory map so far.
    public var osMemoryCalls: Int { mmapCalls + munmapCalls + madviseCalls }
    /// Zones holding chunks of some class, over all CPUs.
    public var zonesHeld: Int { sizeClasses.reduce(0) { $0 + $1.zonesHeld } }
    /// Chunks in use, over all classes.
    public var chunksInUse: Int { sizeClasses.reduce(0) { $0 + $1.inUse } }
}

/// Counters of one size class, summed over CPUs.
public struct SizeClassStatistics: Codable, Sendable, Equatable {
    public var index: Int
    public var chunkSize: Int
    /// Chunks handed out and not yet freed.
    public var inUse: Int
    /// Free chunks in the zones held (including remote frees not yet taken back).
    public var free: Int
    /// Zones currently holding chunks of this class.
    public var zonesHeld: Int
    /// Chunks the owners took back from remote-free lists.
    public var remoteFreesReceived: Int
    public var allocations: Int
    public var frees: Int
}

/// Counters of one malloc type, summed over CPUs.
public struct MallocTypeStatistics: Codable, Sendable, Equatable {
    public var name: String
    /// The byte limit, or nil for none.
    public var limit: Int?
    public var bytesInUse: Int
    public var inUse: Int
    public var allocations: Int
    public var frees: Int
    /// Frees done on a CPU (or thread) other than the owner of the chunk.
    public var remoteFrees: Int
}

/// Counters of one CPU's arena.
public struct SlabCPUStatistics: Codable, Sendable, Equatable {
    /// CPU id, or -1 for the shared pool of threads that are not CPUs.
    public var cpu: Int
    public var zonesHeld: Int
    public var freeZonesCached: Int
    public var zonesFromRegion: Int
    public var zonesReused: Int
    public var zonesReturnedToOS: Int
    /// Zones taken back from the mailbox (one per remote-free notification).
    public var notificationsHandled: Int
    /// Chunks this CPU freed into other CPUs' zones.
    public var remoteFreesSent: Int
    /// Times a zone of this CPU's was posted to its mailbox.
    public var mailboxPosts: Int
    /// Remote-free batches this CPU handed to other CPUs' zones (one compare-and-swap
    /// each, for up to 64 chunks of one zone).
    public var remoteBatchesSent: Int
}

extension SlabAllocator {
    /// A snapshot of every counter.
    public func statistics() -> SlabStatistics {
        let arenaCount = cpuCount + 1
        var classes: [SizeClassStatistics] = []
        classes.reserveCapacity(SizeClass.count)
        for ci in 0..<SizeClass.count {
            var allocs = 0, frees = 0, held = 0, reclaimed = 0
            for a in 0..<arenaCount {
                let ar = arena(at: a)
                allocs += ar.counter(ci, .allocations).pointee.load(ordering: .relaxed)
                frees += ar.counter(ci, .frees).pointee.load(ordering: .relaxed)
                held += ar.counter(ci, .zonesHeld).pointee.load(ordering: .relaxed)
                reclaimed += ar.counter(ci, .remoteChunksReclaimed).pointee.load(ordering: .relaxed)
            }
            frees += foreignFrees[ci].load(ordering: .relaxed)
            let size = SizeClass.chunkSize(ofClass: ci)
            let capacity = (ZoneLayout.zoneSize - ZoneLayout.baseOffset(chunkSize: size, debug: debug)) / size
            let inUse = allocs - frees
            classes.append(SizeClassStatistics(
                index: ci, chunkSize: size, inUse: inUse, free: max(0, held * capacity - inUse),
                zonesHeld: held, remoteFreesReceived: reclaimed, allocations: allocs, frees: frees))
        }
        var cpus: [SlabCPUStatistics] = []
        var parked = 0, fromRegion = 0, released = 0
        for a in 0..<arenaCount {
            let ar = arena(at: a)
            func c(_ k: Arena.ArenaCounter) -> Int { ar.counter(k).pointee.load(ordering: .relaxed) }
            var held = 0
            for ci in 0..<SizeClass.count { held += ar.counter(ci, .zonesHeld).pointee.load(ordering: .relaxed) }
            let s = SlabCPUStatistics(
                cpu: a == cpuCount ? -1 : a, zonesHeld: held, freeZonesCached: c(.freeZonesParked),
                zonesFromRegion: c(.zonesFromRegion), zonesReused: c(.zonesReused),
                zonesReturnedToOS: c(.zonesReleased), notificationsHandled: c(.notificationsHandled),
                remoteFreesSent: c(.remoteFreesSent), mailboxPosts: c(.mailboxPosts),
                remoteBatchesSent: c(.remoteBatches))
            parked += s.freeZonesCached
            fromRegion += s.zonesFromRegion
            released += s.zonesReturnedToOS
            cpus.append(s)
        }
        var types = typeList.withLock { $0 }.map { t in
            MallocTypeStatistics(
                name: t.name, limit: t.limit == .max ? nil : t.limit, bytesInUse: t.sum(.bytes),
                inUse: t.sum(.inUse), allocations: t.sum(.calls), frees: t.sum(.frees),
                remoteFrees: t.sum(.remoteFrees))
        }
        // The default type keeps no counters: it holds whatever the others do not.
        if let i = types.firstIndex(where: { $0.name == defaultType.name && $0.limit == nil }) {
            let others = types.indices.filter { $0 != i }.map { types[$0] }
            func sumOthers(_ k: KeyPath<MallocTypeStatistics, Int>) -> Int { others.reduce(0) { $0 + $1[keyPath: k] } }
            let bytes = classes.reduce(0) { $0 + $1.inUse * $1.chunkSize } + big.liveBytes.load(ordering: .relaxed)
            let inUse = classes.reduce(0) { $0 + $1.inUse } + big.liveBlocks.load(ordering: .relaxed)
            let allocs = classes.reduce(0) { $0 + $1.allocations } + big.mmapCalls.load(ordering: .relaxed)
            let frees = classes.reduce(0) { $0 + $1.frees } + big.munmapCalls.load(ordering: .relaxed)
            let remote = cpus.reduce(0) { $0 + $1.remoteFreesSent }
                + (0..<SizeClass.count).reduce(0) { $0 + foreignFrees[$1].load(ordering: .relaxed) }
            types[i].bytesInUse = bytes - sumOthers(\.bytesInUse)
            types[i].inUse = inUse - sumOthers(\.inUse)
            types[i].allocations = allocs - sumOthers(\.allocations)
            types[i].frees = frees - sumOthers(\.frees)
            types[i].remoteFrees = max(0, remote - sumOthers(\.remoteFrees))
        }
        return SlabStatistics(
            cpuCount: cpuCount, zoneSize: ZoneLayout.zoneSize, debug: debug, sizeClasses: classes,
            types: types, cpus: cpus, zonesFromRegion: fromRegion, zonesReturnedToOS: released,
            freeZonesCached: parked,
            mmapCalls: region.mmapCalls.load(ordering: .relaxed) + big.mmapCalls.load(ordering: .relaxed),
            munmapCalls: region.munmapCalls.load(ordering: .relaxed) + big.munmapCalls.load(ordering: .relaxed),
            madviseCalls: region.madviseCalls.load(ordering: .relaxed),
            bigAllocations: big.liveBlocks.load(ordering: .relaxed),
            bigBytes: big.liveBytes.load(ordering: .relaxed))
    }
}
