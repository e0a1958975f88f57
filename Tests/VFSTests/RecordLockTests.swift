import Foundation
import Glibc
import LWKT
import Synchronization
import Testing
@testable import VFS

/// Namecache record locks are LWKT sleep locks (issue 15, namecache rule 4): a thread that
/// waits for a record parks and its CPU runs its other threads; shared holders coexist; an
/// exclusive waiter is woken when the last shared holder leaves. Every wait in these tests
/// is bounded by a deadline, so a lock that spins or loses a wakeup fails instead of hanging.
@Suite(.serialized) struct RecordLockTests {
    /// Flags and counters the test threads share.
    final class Board: @unchecked Sendable {
        let aHolds = Atomic<Bool>(false)
        let aReleased = Atomic<Bool>(false)
        let bWaiting = Atomic<Bool>(false)
        let bGot = Atomic<Bool>(false)
        let bGotAfterRelease = Atomic<Bool>(false)
        let cSteps = Atomic<Int>(0)
        let cStepsAtBWait = Atomic<Int>(-1)
        let cStepsWhileBWaited = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let failures = Mutex<[String]>([])
        func fail(_ s: String) { failures.withLock { $0.append(s) } }
    }

    /// One shared flag or counter (a class, so closures can share it).
    final class Cell: Sendable {
        let flag = Atomic<Bool>(false)
        let count = Atomic<Int>(0)
        var isSet: Bool { flag.load(ordering: .acquiring) }
        func set() { flag.store(true, ordering: .releasing) }
    }

    static func now() -> UInt64 { HostIOPool.now() }
    static let seconds: UInt64 = 1_000_000_000

    /// Waits (polling from the test's own task) until every thread has finished or the
    /// deadline passes; cancels the stragglers then (a cancelled `tsleep` ends).
    static func join(_ threads: [LWKTThread], within limit: UInt64) async -> Bool {
        final class Joined: Sendable { let count = Atomic<Int>(0) }
        let joined = Joined()
        for t in threads { Task { await t.join(); joined.count.wrappingAdd(1, ordering: .releasing) } }
        let deadline = now() + limit
        while now() < deadline {
            if joined.count.load(ordering: .acquiring) == threads.count { return true }
            try? await Task.sleep(for: .milliseconds(2))
        }
        // Cancelled threads leave their `tsleep`; a thread spinning in a wait cannot, so
        // this waits a bounded time only.
        for t in threads { t.cancel() }
        let after = now() + 5 * seconds
        while now() < after, joined.count.load(ordering: .acquiring) < threads.count {
            try? await Task.sleep(for: .milliseconds(2))
        }
        return false
    }

    @Test(arguments: [1, 2])
    func waiterParksAndItsCPURunsOtherThreads(cpus: Int) async throws {
        let lock = RecordLock()
        let board = Board()
        let finished = try await withLWKT(cpus: cpus) { system -> Bool in
            let cpu0 = try system.cpu(0)
            let deadline = Self.now() + 10 * Self.seconds
            // A: holds the record exclusively across parks until B sleeps on it and C has
            // run many steps since.
            let a = LWKTThread.spawn(on: cpu0, name: "A") {
                do {
                    try await lock.lock(.exclusive)
                    board.aHolds.store(true, ordering: .releasing)
                    while Self.now() < deadline {
                        let atWait = board.cStepsAtBWait.load(ordering: .acquiring)
                        if lock.hasSleepers, atWait >= 0, board.cSteps.load(ordering: .relaxed) - atWait >= 200 { break }
                        try await LWKT.sleep(for: .milliseconds(1))
                    }
                    if !lock.hasSleepers { board.fail("B never slept on the lock") }
                    board.cStepsWhileBWaited.store(board.cSteps.load(ordering: .relaxed) - max(0, board.cStepsAtBWait.load(ordering: .relaxed)), ordering: .relaxed)
                    board.aReleased.store(true, ordering: .releasing)
                    lock.unlock(.exclusive)
                } catch { board.fail("A: \(error)") }
            }
            // B: the same CPU; contends and must park.
            let b = LWKTThread.spawn(on: cpu0, name: "B") {
                do {
                    while !board.aHolds.load(ordering: .acquiring) {
                        guard Self.now() < deadline else { board.fail("A never took the lock"); return }
                        await LWKT.yield()
                        try await LWKT.sleep(for: .microseconds(100))
                    }
                    board.cStepsAtBWait.store(board.cSteps.load(ordering: .relaxed), ordering: .releasing)
                    board.bWaiting.store(true, ordering: .releasing)
                    try await lock.lock(.exclusive)
                    board.bGotAfterRelease.store(board.aReleased.load(ordering: .acquiring), ordering: .relaxed)
                    board.bGot.store(true, ordering: .releasing)
                    lock.unlock(.exclusive)
                } catch { board.fail("B: \(error)") }
            }
            // C: the same CPU; counts its steps until told to stop.
            let c = LWKTThread.spawn(on: cpu0, name: "C") {
                while !board.stop.load(ordering: .relaxed), Self.now() < deadline {
                    board.cSteps.wrappingAdd(1, ordering: .relaxed)
                    await LWKT.yield()
                    if board.cSteps.load(ordering: .relaxed) & 63 == 0 { try? await LWKT.sleep(for: .microseconds(50)) }
                }
            }
            // Generous: a full parallel test run starves these threads for many seconds (seen: B got
            // the lock after a 15 s limit). A lost wakeup still fails it.
            let ok = await Self.join([a, b], within: 90 * Self.seconds)
            board.stop.store(true, ordering: .relaxed)
            _ = await Self.join([c], within: 5 * Self.seconds)
            return ok
        }
        #expect(finished, "threads A and B did not finish: the waiter did not park or was not woken")
        #expect(board.failures.withLock { $0 } == [])
        #expect(Bool(board.bGot.load(ordering: .acquiring)))
        #expect(Bool(board.bGotAfterRelease.load(ordering: .relaxed)), "B got the lock while A held it")
        #expect(Int(board.cStepsWhileBWaited.load(ordering: .relaxed)) >= 200,
                "C ran \(board.cStepsWhileBWaited.load(ordering: .relaxed)) steps while B waited on its CPU")
        #expect(!lock.isLocked && !lock.hasSleepers)
        #expect(lock.parks.load(ordering: .relaxed) >= 1, "B never parked")
    }

    @Test(arguments: [1, 2])
    func sharedHoldersCoexistAndTheLastWakesTheExclusiveWaiter(cpus: Int) async throws {
        let lock = RecordLock()
        let board = Board()
        let bothShared = Cell(), release1 = Cell(), released1 = Cell(), release2 = Cell(), released2 = Cell()
        let eWaiting = Cell(), sharedRefused = Cell()
        let finished = try await withLWKT(cpus: cpus) { system -> Bool in
            let deadline = Self.now() + 10 * Self.seconds
            @Sendable func park() async throws {
                guard Self.now() < deadline else { throw CancellationError() }
                try await LWKT.sleep(for: .microseconds(200))
            }
            @Sendable func holder(_ go: Cell, _ done: Cell) async {
                do {
                    try await lock.lock(.shared)
                    while lock.sharedHolders < 2 && !bothShared.isSet { try await park() }
                    bothShared.set()
                    while !go.isSet { try await park() }
                    done.set()
                    lock.unlock(.shared)
                } catch { board.fail("shared holder: \(error)") }
            }
            let s1 = LWKTThread.spawn(on: try system.cpu(0), name: "S1") { await holder(release1, released1) }
            let s2 = LWKTThread.spawn(on: try system.cpu(cpus - 1), name: "S2") { await holder(release2, released2) }
            let e = LWKTThread.spawn(on: try system.cpu(0), name: "E") {
                do {
                    while !bothShared.isSet { try await park() }
                    eWaiting.set()
                    try await lock.lock(.exclusive)
                    if !(released1.isSet && released2.isSet) {
                        board.fail("the exclusive waiter got the lock while a shared holder held it")
                    }
                    if lock.sharedHolders != 0 { board.fail("shared holders inside an exclusive hold") }
                    board.bGot.store(true, ordering: .releasing)
                    lock.unlock(.exclusive)
                } catch { board.fail("E: \(error)") }
            }
            // The conductor (another thread of CPU 0): once E sleeps, new shared lockers are
            // held off; then the holders leave one by one.
            let conductor = LWKTThread.spawn(on: try system.cpu(0), name: "conductor") {
                do {
                    while !(eWaiting.isSet && lock.hasSleepers) { try await park() }
                    if lock.tryLock(.shared) { lock.unlock(.shared) } else { sharedRefused.set() }
                    release1.set()
                    while !released1.isSet { try await park() }
                    for _ in 0..<5 { try await park() }
                    if board.bGot.load(ordering: .acquiring) { board.fail("E woke before the last shared holder left") }
                    if !lock.hasSleepers { board.fail("E stopped sleeping while a shared holder remained") }
                    release2.set()
                } catch { board.fail("conductor: \(error)") }
            }
            return await Self.join([s1, s2, e, conductor], within: 15 * Self.seconds)
        }
        #expect(finished, "threads did not finish: a wakeup was lost or a holder never left")
        #expect(board.failures.withLock { $0 } == [])
        #expect(bothShared.isSet, "two shared holders never held the lock together")
        #expect(sharedRefused.isSet, "a new shared locker got in ahead of a sleeping exclusive waiter")
        #expect(Bool(board.bGot.load(ordering: .acquiring)))
        #expect(!lock.isLocked && !lock.hasSleepers)
    }

    /// Many LWKT threads on 2 CPUs lock real namecache records (one, or several through the
    /// async `lockAll` in rule 4's order) shared or exclusive, hold them across yields and
    /// parks, and check mutual exclusion inside; an IPI watchdog checks that no CPU stops
    /// answering while threads wait.
    @Test func stressOnTwoCPUs() async throws {
        let (vfs, p) = makeMemVFS()
        for i in 0..<4 { try p.mkdir("/d\(i)") }
        let root = vfs.rootRecord
        var found: [NCRecord] = []
        for i in 0..<4 {
            guard let r = try p.lookup(Array("d\(i)".utf8), in: root) else { Issue.record("no record for d\(i)"); return }
            found.append(r)
        }
        let records = found
        let shared = records.map { _ in Cell() }
        let exclusive = records.map { _ in Cell() }
        let board = Board()
        let done = Cell()
        let threadsPerCPU = 8
        let rounds = 150
        let result = try await withLWKT(cpus: 2) { system -> (Bool, Double) in
            let dog = IPIWatchdog(system: system)
            let deadline = Self.now() + 30 * Self.seconds
            var threads: [LWKTThread] = []
            for cpu in 0..<2 {
                for t in 0..<threadsPerCPU {
                    threads.append(LWKTThread.spawn(on: try system.cpu(cpu), name: "stress\(cpu).\(t)") {
                        var rng = SystemRandomNumberGenerator()
                        do {
                            for _ in 0..<rounds where Self.now() < deadline {
                                let mode: RecordLock.Mode = Int.random(in: 0..<3, using: &rng) == 0 ? .exclusive : .shared
                                var picked: [Int] = [Int.random(in: 0..<records.count, using: &rng)]
                                if Int.random(in: 0..<4, using: &rng) == 0 { picked.append(Int.random(in: 0..<records.count, using: &rng)) }
                                picked = Array(Set(picked))
                                try await vfs.namecache.lockAll(picked.map { records[$0] }, mode)
                                for i in picked {
                                    if mode == .exclusive {
                                        if exclusive[i].count.wrappingAdd(1, ordering: .relaxed).newValue != 1 || shared[i].count.load(ordering: .relaxed) != 0 {
                                            board.fail("exclusive hold of d\(i) was not alone")
                                        }
                                    } else {
                                        shared[i].count.wrappingAdd(1, ordering: .relaxed)
                                        if exclusive[i].count.load(ordering: .relaxed) != 0 { board.fail("shared hold of d\(i) beside an exclusive one") }
                                    }
                                }
                                if Int.random(in: 0..<2, using: &rng) == 0 { await LWKT.yield() } else { try await LWKT.sleep(for: .microseconds(50)) }
                                for i in picked {
                                    if mode == .exclusive { exclusive[i].count.wrappingSubtract(1, ordering: .relaxed) } else { shared[i].count.wrappingSubtract(1, ordering: .relaxed) }
                                }
                                vfs.namecache.unlockAll(picked.map { records[$0] }, mode)
                                await LWKT.yield()
                            }
                            done.count.wrappingAdd(1, ordering: .relaxed)
                        } catch { board.fail("stress thread: \(error)") }
                    })
                }
            }
            let ok = await Self.join(threads, within: 40 * Self.seconds)
            return (ok, dog.finishBlocked())
        }
        #expect(result.0, "stress threads did not finish in time: a lost wakeup or a deadlock")
        #expect(board.failures.withLock { Array($0.prefix(5)) } == [])
        #expect(done.count.load(ordering: .relaxed) == 2 * threadsPerCPU)
        #expect(result.1 < ipiStallLimitMs, "a CPU left an IPI unanswered for \(result.1) ms")
        for r in records { #expect(!r.recordLock.isLocked && !r.recordLock.hasSleepers) }
        #expect(records.map { $0.recordLock.parks.load(ordering: .relaxed) }.reduce(0, +) > 0, "no thread ever parked: the stress did not contend")
    }

    /// The VFS entry point for LWKT threads: `lookupParking` waits for a record that another
    /// thread of its CPU holds across a park, and the CPU's third thread keeps running.
    @Test(arguments: [1, 2])
    func lookupParkingWaitsForAHeldRecordWithoutStoppingItsCPU(cpus: Int) async throws {
        let fs = MemFS(rootMode: 0o755)
        let vfs = VirtualFileSystem(rootFileSystem: fs)
        let p = vfs.makeProcess()
        let root = vfs.rootRecord
        // A name the file system has and the namecache has not resolved: a lookup must lock
        // its record to resolve it.
        _ = try fs.create(Array("g".utf8), in: fs.rootNode, mode: 0o644, credentials: .root)
        let record = vfs.namecache.lookupOrCreate(root, Array("g".utf8))
        let board = Board()
        let found = Cell()
        let finished = try await withLWKT(cpus: cpus) { system -> Bool in
            let cpu0 = try system.cpu(0)
            let deadline = Self.now() + 10 * Self.seconds
            let a = LWKTThread.spawn(on: cpu0, name: "A") {
                do {
                    try await record.lock(.exclusive)
                    board.aHolds.store(true, ordering: .releasing)
                    while Self.now() < deadline {
                        let atWait = board.cStepsAtBWait.load(ordering: .acquiring)
                        if record.recordLock.hasSleepers, atWait >= 0, board.cSteps.load(ordering: .relaxed) - atWait >= 200 { break }
                        try await LWKT.sleep(for: .milliseconds(1))
                    }
                    board.cStepsWhileBWaited.store(board.cSteps.load(ordering: .relaxed) - max(0, board.cStepsAtBWait.load(ordering: .relaxed)), ordering: .relaxed)
                    board.aReleased.store(true, ordering: .releasing)
                    record.unlock(.exclusive)
                } catch { board.fail("A: \(error)") }
            }
            let b = LWKTThread.spawn(on: cpu0, name: "B") {
                do {
                    while !board.aHolds.load(ordering: .acquiring) {
                        guard Self.now() < deadline else { board.fail("A never took the lock"); return }
                        try await LWKT.sleep(for: .microseconds(100))
                    }
                    board.cStepsAtBWait.store(board.cSteps.load(ordering: .relaxed), ordering: .releasing)
                    let r = try await p.lookupParking(Array("g".utf8), in: root)
                    board.bGotAfterRelease.store(board.aReleased.load(ordering: .acquiring), ordering: .relaxed)
                    if r != nil { found.set() }
                } catch { board.fail("B: \(error)") }
            }
            let c = LWKTThread.spawn(on: cpu0, name: "C") {
                while !board.stop.load(ordering: .relaxed), Self.now() < deadline {
                    board.cSteps.wrappingAdd(1, ordering: .relaxed)
                    await LWKT.yield()
                    if board.cSteps.load(ordering: .relaxed) & 63 == 0 { try? await LWKT.sleep(for: .microseconds(50)) }
                }
            }
            // Generous: a full parallel test run starves these threads for many seconds (seen: B got
            // the lock after a 15 s limit). A lost wakeup still fails it.
            let ok = await Self.join([a, b], within: 90 * Self.seconds)
            board.stop.store(true, ordering: .relaxed)
            _ = await Self.join([c], within: 5 * Self.seconds)
            return ok
        }
        #expect(finished)
        #expect(board.failures.withLock { $0 } == [])
        #expect(found.isSet, "lookupParking did not find /g")
        #expect(Bool(board.bGotAfterRelease.load(ordering: .relaxed)), "the lookup resolved the record while A held it")
        #expect(Int(board.cStepsWhileBWaited.load(ordering: .relaxed)) >= 200)
        #expect(record.recordLock.parks.load(ordering: .relaxed) >= 1, "the lookup never parked")
    }

    /// On HostFS the parking lookup asks the host on the host-I/O pool while its thread holds
    /// the record lock, parked; the pool works under that hold (rule 4's assertions allow it).
    @Test func lookupParkingOnHostFSAsksThePool() async throws {
        let dir = makeTempDir("recordlock-hostfs")
        defer { removeTree(dir) }
        #expect(Glibc.close(Glibc.open(dir + "/h", O_CREAT | O_WRONLY, 0o644)) == 0)
        let vfs = VirtualFileSystem(rootFileSystem: MemFS(), hostIO: HostIOPool(threads: 1))
        defer { vfs.hostIO.shutdown() }
        let p = vfs.makeProcess()
        try p.mkdir("/host")
        try vfs.mount(try HostFS(hostPath: dir), at: "/host", by: p)
        guard let hostDir = try p.lookup(Array("host".utf8), in: vfs.rootRecord) else { Issue.record("no /host"); return }
        let found = Cell(), missing = Cell()
        let board = Board()
        try await withLWKT(cpus: 1) { system in
            let t = LWKTThread.spawn(on: try system.cpu(0), name: "lookup") {
                do {
                    if try await p.lookupParking(Array("h".utf8), in: hostDir) != nil { found.set() }
                    if try await p.lookupParking(Array("nope".utf8), in: hostDir) == nil { missing.set() }
                } catch { board.fail("lookup: \(error)") }
            }
            #expect(await Self.join([t], within: 15 * Self.seconds))
        }
        #expect(board.failures.withLock { $0 } == [])
        #expect(found.isSet && missing.isSet)
    }
}
