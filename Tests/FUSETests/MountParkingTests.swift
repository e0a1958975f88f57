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

    /// On a HostFS mount a waiting request does not hold up the channel: while a MKDIR waits
    /// for a directory record that an LWKT thread holds, reads of an open file through the
    /// same single CPU are answered (they go to another worker thread of the channel).
    @Test func aWaitingRequestDoesNotHoldUpTheChannel() throws {
        guard let rig = try MountRig.make(hostBacked: true, cpus: 1) else { return }
        defer { rig.close() }
        #expect(mkdir(rig.path + "/sub", 0o755) == 0)
        let data = [UInt8](repeating: 0x5a, count: 1 << 20)
        let w = open(rig.backing! + "/g", O_CREAT | O_WRONLY, 0o644)
        #expect(data.withUnsafeBytes { write(w, $0.baseAddress, $0.count) } == data.count)
        close(w)
        let g = open(rig.path + "/g", O_RDONLY)
        #expect(g >= 0)
        defer { close(g) }
        let p = rig.vfs.makeProcess()
        let sub = try p.nlookup(Array("/sub".utf8), follow: true).record
        let flags = Flags()
        let deadline = Self.now() + 20_000_000_000
        _ = LWKTThread.spawn(on: try rig.system.cpu(0), name: "holder") {
            do {
                try await sub.lock(.exclusive)
                flags.holding.store(true, ordering: .releasing)
                while Self.now() < deadline, !flags.stop.load(ordering: .acquiring) { try await LWKT.sleep(for: .milliseconds(1)) }
                flags.doneBeforeRelease.store(flags.stop.load(ordering: .acquiring), ordering: .relaxed)
                flags.released.store(true, ordering: .releasing)
                sub.unlock(.exclusive)
            } catch {}
        }
        while !flags.holding.load(ordering: .acquiring), Self.now() < deadline { usleep(1_000) }
        let maker = Thread { if mkdir(rig.path + "/sub/d", 0o755) == 0 { flags.mkdirDone.store(true, ordering: .releasing) } }
        maker.start()
        // Wait until the MKDIR waits for /sub's record (a worker thread parked on it).
        while !sub.recordLock.hasSleepers, Self.now() < deadline { usleep(1_000) }
        var buf = [UInt8](repeating: 0, count: 4096)
        var readsOK = 0
        for i in 0..<16 {
            let n = buf.withUnsafeMutableBytes { pread(g, $0.baseAddress, 4096, off_t(i * 65536)) }
            if n == 4096 && buf[0] == 0x5a { readsOK += 1 }
        }
        let mkdirStillWaiting = !flags.mkdirDone.load(ordering: .acquiring)
        flags.stop.store(true, ordering: .releasing)
        while !flags.mkdirDone.load(ordering: .acquiring), Self.now() < deadline { usleep(1_000) }
        let answeredWhileHeld = flags.doneBeforeRelease.load(ordering: .relaxed)
        let mkdirDone = flags.mkdirDone.load(ordering: .acquiring)
        #expect(readsOK == 16)
        #expect(mkdirStillWaiting, "the MKDIR did not wait for the held record")
        #expect(answeredWhileHeld, "the reads were answered only after the record was released")
        #expect(mkdirDone)
        var st = stat()
        #expect(lstat(rig.path + "/sub/d", &st) == 0 && st.st_mode & S_IFMT == S_IFDIR)
    }
}
