import Foundation
import Glibc
import LWKT
import Synchronization
import Testing
@testable import VFS

/// The mount's requests use the VFS's parking API (issue 15/16): a record lock held by
/// another thread of the serving CPU parks the channel's thread instead of stopping the CPU,
/// and HostFS host calls go to the host-I/O pool while cached answers stay on the CPU.
@Suite(.serialized) struct MountParkingTests {
    final class Flags: Sendable {
        let holding = Atomic<Bool>(false)
        let released = Atomic<Bool>(false)
        let steps = Atomic<Int>(0)
        let stepsWhileHeld = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let mkdirDone = Atomic<Bool>(false)
        let doneBeforeRelease = Atomic<Bool>(false)
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// One CPU serves the mount. Thread A of that CPU holds the root directory's record
    /// (parked, across sleeps) while a process makes a directory through the mount: the
    /// MKDIR request must wait for the record, and the CPU's thread C must keep running
    /// meanwhile. A synchronous wait on the CPU could never end (A cannot run while the
    /// CPU spins for it).
    @Test func heldRecordParksTheChannelAndTheCPURunsOn() throws {
        guard let rig = try MountRig.make(cpus: 1) else { return }
        defer { rig.close() }
        let root = rig.vfs.rootRecord
        let flags = Flags()
        let parksBefore = rig.vfs.hostIO.statistics.lockParks
        let cpu0 = try rig.system.cpu(0)
        let deadline = Self.now() + 60_000_000_000
        _ = LWKTThread.spawn(on: cpu0, name: "holder") {
            do {
                try await root.lock(.exclusive)
                flags.holding.store(true, ordering: .releasing)
                let start = flags.steps.load(ordering: .relaxed)
                // Hold until the mkdir waits on the record and C has run a while since.
                while Self.now() < deadline, !(root.recordLock.hasSleepers && flags.steps.load(ordering: .relaxed) - start >= 200) {
                    try await LWKT.sleep(for: .milliseconds(1))
                }
                flags.stepsWhileHeld.store(flags.steps.load(ordering: .relaxed) - start, ordering: .relaxed)
                flags.doneBeforeRelease.store(flags.mkdirDone.load(ordering: .acquiring), ordering: .relaxed)
                flags.released.store(true, ordering: .releasing)
                root.unlock(.exclusive)
            } catch {}
        }
        _ = LWKTThread.spawn(on: cpu0, name: "C") {
            while !flags.stop.load(ordering: .relaxed), Self.now() < deadline {
                flags.steps.wrappingAdd(1, ordering: .relaxed)
                await LWKT.yield()
                if flags.steps.load(ordering: .relaxed) & 63 == 0 { try? await LWKT.sleep(for: .microseconds(50)) }
            }
        }
        while !flags.holding.load(ordering: .acquiring), Self.now() < deadline { usleep(1_000) }
        let rc = mkdir(rig.path + "/d", 0o755)
        flags.mkdirDone.store(true, ordering: .releasing)
        flags.stop.store(true, ordering: .relaxed)
        #expect(rc == 0, "mkdir through the mount: errno \(errno)")
        let released = flags.released.load(ordering: .acquiring)
        let doneBeforeRelease = flags.doneBeforeRelease.load(ordering: .relaxed)
        let stepsWhileHeld = flags.stepsWhileHeld.load(ordering: .relaxed)
        #expect(released, "the mkdir finished while the record was held")
        #expect(!doneBeforeRelease)
        #expect(stepsWhileHeld >= 200, "the CPU's other thread stalled")
        #expect(rig.vfs.hostIO.statistics.lockParks > parksBefore, "the channel thread never parked")
        var st = stat()
        #expect(lstat(rig.path + "/d", &st) == 0 && st.st_mode & S_IFMT == S_IFDIR)
    }

    /// On a HostFS mount, creating and reading files makes trips to the host-I/O pool, and
    /// repeated lookups of the same cached names are answered on the CPU.
    @Test func hostCallsGoToThePoolAndCachedAnswersStayOnTheCPU() throws {
        guard let rig = try MountRig.make(hostBacked: true, cpus: 2, options: .init(entryTimeout: 0, attributeTimeout: 0)) else { return }
        defer { rig.close() }
        let before = rig.vfs.hostIO.statistics
        let fd = open(rig.path + "/f", O_CREAT | O_RDWR, 0o644)
        #expect(fd >= 0)
        #expect(write(fd, "hello", 5) == 5)
        close(fd)
        let afterCreate = rig.vfs.hostIO.statistics
        #expect(afterCreate.submitted > before.submitted, "no host call went to the pool")
        var st = stat()
        // Timeouts 0: the kernel asks the mount on every stat; the namecache answers.
        for _ in 0..<50 { #expect(lstat(rig.path + "/f", &st) == 0 && st.st_size == 5) }
        let afterStats = rig.vfs.hostIO.statistics
        #expect(afterStats.finishedOnCPU - afterCreate.finishedOnCPU >= 50, "cached lookups left the CPU: \(afterStats)")
        #expect(afterStats.submitted - afterCreate.submitted < 25, "cached lookups went to the pool: \(afterStats)")
    }
}
