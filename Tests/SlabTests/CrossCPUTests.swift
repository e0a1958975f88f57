import Testing
import Synchronization
import LWKT
@testable import Slab
import LibellulaTestSupport

@Suite("Cross-CPU frees on a running LWKT system")
struct CrossCPUTests {
    /// One CPU allocates, another frees, for every ordered pair of CPUs at once (and one
    /// consumer that is not a CPU); then every chunk must be reusable by its owner without
    /// new zones.
    @Test(arguments: [false, true])
    func freeStormOnEveryCPUPair(debug: Bool) async throws {
        let cpus = 3
        let perPair = 20_000
        try await withSlabSystem(cpus: cpus) { system in
            let slab = SlabAllocator(system: system, configuration: .init(zoneRegionBytes: 1 << 30, debug: debug))
            let pairs: [(Int, Int?)] = {
                var list: [(Int, Int?)] = []
                for a in 0..<cpus { for b in 0..<cpus where a != b { list.append((a, b)) } }
                list.append((0, nil))   // a consumer thread that is not a CPU
                return list
            }()
            let queues = pairs.map { _ in BatchQueue() }
            let badTags = SharedCounter()
            try await withWatchdog(seconds: 60, "free storm") {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (k, (a, b)) in pairs.enumerated() {
                        let q = queues[k]
                        group.addTask {
                            try await system.run(on: a, name: "producer\(k)") {
                                var rng = SeededRandom(seed: UInt64(k + 1))
                                var batch: [UnsafeMutableRawPointer] = []
                                for i in 0..<perPair {
                                    let size = Int(rng.next() % 2048) + 1
                                    guard let p = slab.allocate(size) else { continue }
                                    p.storeBytes(of: UInt8(truncatingIfNeeded: i), as: UInt8.self)
                                    batch.append(p)
                                    // Some local churn on the same CPU meanwhile.
                                    if let tmp = slab.allocate(size) { slab.free(tmp) }
                                    if batch.count == 64 {
                                        q.push(PointerBatch(pointers: batch))
                                        batch.removeAll(keepingCapacity: true)
                                        await LWKT.yield()
                                    }
                                }
                                q.push(PointerBatch(pointers: batch))
                                q.produced.store(1, ordering: .releasing)
                            }
                        }
                        let consume: @Sendable () async -> Void = {
                            var seen = 0
                            while true {
                                let finished = q.produced.load(ordering: .acquiring) == 1
                                if let batch = q.pop() {
                                    for p in batch.pointers {
                                        if p.load(as: UInt8.self) != UInt8(truncatingIfNeeded: seen) {
                                            badTags.value.add(1, ordering: .relaxed)
                                        }
                                        seen += 1
                                        slab.free(p)
                                    }
                                } else if finished {
                                    break
                                } else if b != nil {
                                    await LWKT.yield()
                                } else {
                                    await Task.yield()
                                }
                            }
                        }
                        if let b {
                            group.addTask { try await system.run(on: b, name: "consumer\(k)") { await consume() } }
                        } else {
                            group.addTask { await consume() }
                        }
                    }
                    try await group.waitForAll()
                }
            }
            #expect(badTags.value.load(ordering: .relaxed) == 0)
            // Let every owner take its posted zones back (the passive IPIs may still be
            // queued), then check the books.
            for c in 0..<cpus { try await system.run(on: c) { slab.poll() } }
            let s = slab.statistics()
            #expect(s.chunksInUse == 0)
            let sent = s.cpus.reduce(0) { $0 + $1.remoteFreesSent }
            let foreign = s.sizeClasses.reduce(0) { $0 + $1.frees } - s.cpus.reduce(0) { _, _ in 0 }
            #expect(sent == perPair * (pairs.count - 1))
            #expect(foreign >= perPair * pairs.count)
            let posts = s.cpus.reduce(0) { $0 + $1.mailboxPosts }
            let handled = s.cpus.reduce(0) { $0 + $1.notificationsHandled }
            // Whether any zone is armed when a remote batch reaches it depends on the
            // interleaving (a batch that lands before the owner runs dry is spliced
            // without a post), so only the books are checked here; the mailbox path
            // itself is exercised deterministically by RemoteFreeTests and
            // RemoteBatchTests.
            #expect(handled == posts, "every zone posted to a mailbox was taken back")
            // Every zone a CPU holds can hand out all of its chunks again without a new
            // zone: every remotely freed chunk is back in its owner's hands.
            for a in 0..<cpus {
                let extra = try await system.run(on: a) { () -> Int in
                    let arena = slab.arena(at: a)
                    let fresh = arena.counter(.zonesFromRegion).pointee.load(ordering: .relaxed)
                        + arena.counter(.zonesReused).pointee.load(ordering: .relaxed)
                    var held: [UnsafeMutableRawPointer] = []
                    for ci in 0..<SizeClass.count {
                        let zones = arena.counter(ci, .zonesHeld).pointee.load(ordering: .relaxed)
                        let size = SizeClass.chunkSize(ofClass: ci)
                        let capacity = (ZoneLayout.zoneSize - ZoneLayout.baseOffset(chunkSize: size, debug: debug)) / size
                        for _ in 0..<(zones * capacity) {
                            if let p = slab.allocate(size) { held.append(p) }
                        }
                    }
                    let after = arena.counter(.zonesFromRegion).pointee.load(ordering: .relaxed)
                        + arena.counter(.zonesReused).pointee.load(ordering: .relaxed)
                    for p in held { slab.free(p) }
                    return after - fresh
                }
                #expect(extra == 0, "cpu \(a) needed \(extra) more zones")
            }

        }
    }

    @Test func waitingAllocationSleepsUntilAFreeBringsTheTypeUnderItsLimit() async throws {
        try await withSlabSystem(cpus: 2) { system in
            let slab = SlabAllocator(system: system, configuration: .init(zoneRegionBytes: 256 << 20, debug: false))
            let limit = 64 * 1024
            let t = slab.makeType(name: "limited", limit: limit)
            let held = try await system.run(on: 0) { () -> PointerBatch in
                var ps: [UnsafeMutableRawPointer] = []
                while let p = slab.allocate(1024, type: t, flags: .mayReturnNil) { ps.append(p) }
                return PointerBatch(pointers: ps)
            }
            let bytes = held.pointers.count * 1024
            let slack = (slab.cpuCount + 2) * t.foldBytes + 1024
            #expect(bytes >= limit && bytes <= limit + slack, "stopped at \(bytes) bytes for a \(limit)-byte limit")
            #expect(slab.statistics().types.first { $0.name == "limited" }?.bytesInUse == bytes)

            let got = SharedCounter()
            let waiter = LWKTThread.spawn(on: system.cpus[0], name: "waiter") {
                if let p = try? await slab.allocateWaiting(1024, type: t, flags: .waitUntilFreed) {
                    got.value.store(1, ordering: .releasing)
                    slab.free(p, type: t)
                }
            }
            // Still at the limit: the waiter cannot have been served.
            try await Task.sleep(for: .milliseconds(100))
            #expect(got.value.load(ordering: .acquiring) == 0)
            #expect(t.waiters.hint == 1)
            // Free a quarter from the other CPU (remote frees) and the waiter gets its chunk.
            let quarter = PointerBatch(pointers: Array(held.pointers.prefix(held.pointers.count / 4)))
            try await system.run(on: 1) { for p in quarter.pointers { slab.free(p, type: t) } }
            try await withWatchdog(seconds: 20, "waiter") { await waiter.join() }
            #expect(got.value.load(ordering: .acquiring) == 1)
            let rest = PointerBatch(pointers: Array(held.pointers.dropFirst(held.pointers.count / 4)))
            try await system.run(on: 0) { for p in rest.pointers { slab.free(p, type: t) } }
            #expect(slab.statistics().types.first { $0.name == "limited" }?.bytesInUse == 0)
        }
    }

    @Test func ownCPUAllocationsUseTheCPUsArena() async throws {
        try await withSlabSystem(cpus: 2) { system in
            let slab = SlabAllocator(system: system, configuration: .init(zoneRegionBytes: 256 << 20, debug: false))
            for c in 0..<2 {
                try await system.run(on: c) {
                    let p = slab.allocate(64)
                    if let p { slab.free(p) }
                }
            }
            let s = slab.statistics()
            #expect(s.cpus[0].zonesHeld == 1 && s.cpus[1].zonesHeld == 1)
            #expect(s.cpus[2].zonesHeld == 0)   // the shared pool was not used
            #expect(s.cpus.allSatisfy { $0.remoteFreesSent == 0 })
        }
    }
}

/// Fails the test (instead of hanging) if `body` does not finish within `seconds`.
func withWatchdog<R: Sendable>(seconds: Double, _ what: String,
                               _ body: @escaping @Sendable () async throws -> R) async throws -> R {
    try await withThrowingTaskGroup(of: R?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        guard let first = try await group.next(), let value = first else {
            group.cancelAll()
            throw SlabTestTimeout(what: what)
        }
        group.cancelAll()
        return value
    }
}

struct SlabTestTimeout: Error, CustomStringConvertible {
    let what: String
    var description: String { "watchdog: \(what) did not finish in time" }
}
