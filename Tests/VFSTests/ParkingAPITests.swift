import Foundation
import Glibc
import LWKT
import Synchronization
import Testing
@testable import VFS

/// The VFS API for LWKT threads (`VFSProcess.parking`): a held record parks the caller while
/// its CPU runs on; host calls go to the pool; cached answers never leave the CPU.
@Suite(.serialized) struct ParkingAPITests {
    typealias Board = RecordLockTests.Board
    typealias Cell = RecordLockTests.Cell
    static func now() -> UInt64 { HostIOPool.now() }
    static let seconds: UInt64 = 1_000_000_000

    /// A `mkdir` through the parking API waits for the directory's record, which another
    /// thread of the same CPU holds across a park: the caller parks (no spinning, which on one
    /// CPU would never end) and the CPU's third thread keeps running; the mkdir happens after
    /// the release.
    @Test(arguments: [1, 2])
    func mkdirParksOnAHeldDirectoryAndItsCPURunsOn(cpus: Int) async throws {
        let vfs = VirtualFileSystem(rootFileSystem: MemFS(rootMode: 0o755), hostIO: HostIOPool(threads: 1))
        defer { vfs.hostIO.shutdown() }
        let p = vfs.makeProcess()
        let root = vfs.rootRecord
        let board = Board()
        let made = Cell()
        let finished = try await withLWKT(cpus: cpus) { system -> Bool in
            let cpu0 = try system.cpu(0)
            let deadline = Self.now() + 60 * Self.seconds
            let a = LWKTThread.spawn(on: cpu0, name: "A") {
                do {
                    try await root.lock(.exclusive)
                    board.aHolds.store(true, ordering: .releasing)
                    while Self.now() < deadline {
                        let atWait = board.cStepsAtBWait.load(ordering: .acquiring)
                        if root.recordLock.hasSleepers, atWait >= 0, board.cSteps.load(ordering: .relaxed) - atWait >= 200 { break }
                        try await LWKT.sleep(for: .milliseconds(1))
                    }
                    board.cStepsWhileBWaited.store(board.cSteps.load(ordering: .relaxed) - max(0, board.cStepsAtBWait.load(ordering: .relaxed)), ordering: .relaxed)
                    board.aReleased.store(true, ordering: .releasing)
                    root.unlock(.exclusive)
                } catch { board.fail("A: \(error)") }
            }
            let b = LWKTThread.spawn(on: cpu0, name: "B") {
                do {
                    while !board.aHolds.load(ordering: .acquiring) {
                        guard Self.now() < deadline else { board.fail("A never took the lock"); return }
                        try await LWKT.sleep(for: .microseconds(100))
                    }
                    board.cStepsAtBWait.store(board.cSteps.load(ordering: .relaxed), ordering: .releasing)
                    try await p.parking.mkdir("/d")
                    board.bGotAfterRelease.store(board.aReleased.load(ordering: .acquiring), ordering: .relaxed)
                    if try await p.parking.stat("/d").type == .directory { made.set() }
                } catch { board.fail("B: \(error)") }
            }
            let c = LWKTThread.spawn(on: cpu0, name: "C") {
                while !board.stop.load(ordering: .relaxed), Self.now() < deadline {
                    board.cSteps.wrappingAdd(1, ordering: .relaxed)
                    await LWKT.yield()
                    if board.cSteps.load(ordering: .relaxed) & 63 == 0 { try? await LWKT.sleep(for: .microseconds(50)) }
                }
            }
            let ok = await RecordLockTests.join([a, b], within: 90 * Self.seconds)
            board.stop.store(true, ordering: .relaxed)
            _ = await RecordLockTests.join([c], within: 5 * Self.seconds)
            return ok
        }
        #expect(finished)
        #expect(board.failures.withLock { $0 } == [])
        #expect(made.isSet, "/d was not made")
        #expect(Bool(board.bGotAfterRelease.load(ordering: .relaxed)), "mkdir changed the directory while A held its record")
        #expect(Int(board.cStepsWhileBWaited.load(ordering: .relaxed)) >= 200)
        let s = vfs.hostIO.statistics
        #expect(s.lockParks >= 1, "the mkdir never parked")
        #expect(s.submitted == 0, "MemFS work went to the pool")
        #expect(vfs.namecache.checkTopology().isEmpty)
    }

    /// Where each call runs: MemFS work and cached HostFS answers finish on the CPU; host
    /// calls (an uncached HostFS name, opening and reading a host file) take one trip to the
    /// pool per operation; results match the synchronous API's.
    @Test func cachedAnswersStayOnTheCPUAndHostCallsGoToThePool() async throws {
        let dir = makeTempDir("parking-hostfs")
        defer { removeTree(dir) }
        let fd = Glibc.open(dir + "/h", O_CREAT | O_WRONLY, 0o644)
        #expect(Glibc.write(fd, "hello", 5) == 5)
        Glibc.close(fd)
        let vfs = VirtualFileSystem(rootFileSystem: MemFS(), hostIO: HostIOPool(threads: 1))
        defer { vfs.hostIO.shutdown() }
        let p = vfs.makeProcess()
        try p.mkdir("/host")
        try vfs.mount(try HostFS(hostPath: dir), at: "/host", by: p)
        let board = Board()
        let trips = Mutex<[String: Int]>([:])
        try await withLWKT(cpus: 1) { system in
            let t = LWKTThread.spawn(on: try system.cpu(0), name: "calls") {
                func trip(_ name: String, _ body: () async throws -> Void) async throws {
                    let before = vfs.hostIO.statistics.submitted
                    try await body()
                    let n = vfs.hostIO.statistics.submitted - before
                    trips.withLock { $0[name] = n }
                }
                do {
                    try await trip("memfs") {
                        let m = try await p.parking.open("/m", [.create, .readWrite])
                        try await p.parking.write(m, Array("abc".utf8))
                        if try await p.parking.pread(m, count: 3, at: 0) != Array("abc".utf8) { board.fail("memfs read") }
                        try p.parking.close(m)
                        try await p.parking.rename("/m", "/n")
                        if try await p.parking.stat("/n").size != 3 { board.fail("memfs stat") }
                    }
                    try await trip("host first stat") { if try await p.parking.stat("/host/h").size != 5 { board.fail("host stat") } }
                    try await trip("host cached stat") { if try await p.parking.stat("/host/h").size != 5 { board.fail("cached stat") } }
                    try await trip("host missing") {
                        do { _ = try await p.parking.stat("/host/nope"); board.fail("nope exists") } catch { if (error as? VFSError) != .noent { board.fail("nope: \(error)") } }
                    }
                    try await trip("host cached missing") { _ = try? await p.parking.stat("/host/nope") }
                    try await trip("host open+read") {
                        let h = try await p.parking.open("/host/h")
                        if try await p.parking.read(h, count: 16) != Array("hello".utf8) { board.fail("host read") }
                        try p.parking.close(h)
                    }
                } catch { board.fail("calls: \(error)") }
            }
            #expect(await RecordLockTests.join([t], within: 30 * Self.seconds))
        }
        #expect(board.failures.withLock { $0 } == [])
        let t = trips.withLock { $0 }
        #expect(t["memfs"] == 0, "MemFS work went to the pool: \(t)")
        #expect(t["host first stat"] == 1, "\(t)")
        #expect(t["host cached stat"] == 0, "\(t)")
        #expect(t["host missing"] == 1, "\(t)")
        #expect(t["host cached missing"] == 0, "\(t)")
        #expect(t["host open+read"] == 2, "\(t)")
        #expect(vfs.hostIO.statistics.finishedOnCPU >= 4)
    }
}
