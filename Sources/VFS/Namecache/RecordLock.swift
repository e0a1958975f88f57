import Glibc
import LWKT
import Synchronization

/// A namecache record's lock: a shared/exclusive LWKT sleep lock (DragonFly's `nc_lock`
/// done with `tsleep`/`wakeup`), see namecache rule 4.
///
/// - The lock word holds an exclusive bit, a waiters bit and the count of shared holders.
///   The exclusive holder's identity is recorded (`owner`): the LWKT thread when the caller
///   runs in one, else the OS thread.
/// - `lock(_:) async` is the path of LWKT threads: on contention the caller sets the waiters
///   bit and parks with `LWKT.tsleep(on:until:)` on the lock's channel, so its CPU goes on
///   running its other threads and answering IPIs; the release that leaves the lock free
///   clears the bit and wakes every sleeper (`LWKT.wakeup`), which then compete again.
///   An LWKT thread may hold the lock across a park (an `await`).
/// - `lockWithoutParking(_:)` (synchronous) is for threads that are not LWKT CPUs (the
///   host-I/O pool, plain threads) and the synchronous VFS API: it spins, yields, then naps (`VFSWait`). On a CPU it keeps answering
///   IPIs while it waits but cannot let other threads of that CPU run, so a synchronous
///   caller on a CPU must never wait for a lock that a thread of its own CPU holds across a
///   park (checked in debug builds through the exclusive holder's recorded CPU).
/// - A waiter for the exclusive mode blocks new shared holders (the waiters bit), so a stream
///   of readers cannot starve a writer.
final class RecordLock: @unchecked Sendable {
    /// How a record is held.
    enum Mode: Sendable { case shared, exclusive }

    private static let exclusiveBit: UInt64 = 1 << 63
    private static let waitersBit: UInt64 = 1 << 62
    private static let countMask: UInt64 = waitersBit - 1

    private let word = Atomic<UInt64>(0)
    /// The exclusive holder's identity (0 when not held exclusively).
    private let owner = Atomic<UInt>(0)
    /// The exclusive holder's CPU (-1: not on a CPU, or not held exclusively); debug checks.
    private let ownerCPU = Atomic<Int>(-1)
    /// The LWKT system whose threads sleep here (retained until the record is freed; set by
    /// the first sleeper of a system), so that a release from a thread that is not a CPU can
    /// wake them.
    private let sleeperSystem = Atomic<UInt>(0)
    /// How many times a thread parked waiting for this lock (statistics and tests).
    let parks = Atomic<Int>(0)

    init() {}

    deinit {
        let s = sleeperSystem.load(ordering: .relaxed)
        if s != 0, let p = UnsafeRawPointer(bitPattern: s) {
            Unmanaged<LWKTSystem>.fromOpaque(p).release()
        }
    }

    /// The caller's identity as a holder: its LWKT thread, else its OS thread (low bit set).
    @inline(__always)
    static var callerIdentity: UInt {
        if let t = LWKTThread.current { return UInt(bitPattern: ObjectIdentifier(t)) }
        return VFSWait.owner
    }

    // MARK: state

    /// Whether anybody holds the lock.
    var isLocked: Bool { word.load(ordering: .acquiring) & ~Self.waitersBit != 0 }
    /// Whether the lock is held exclusively by the caller.
    var isOwnedByCaller: Bool {
        word.load(ordering: .relaxed) & Self.exclusiveBit != 0 && owner.load(ordering: .relaxed) == Self.callerIdentity
    }
    /// Whether the caller may work under the exclusive hold: it holds it, or it is a thread
    /// that is not an LWKT thread (the host-I/O pool) working for an LWKT thread that holds
    /// it and waits, parked, for the answer (`VFSProcess.offCPU`).
    var isHeldForCaller: Bool {
        guard word.load(ordering: .relaxed) & Self.exclusiveBit != 0 else { return false }
        let holder = owner.load(ordering: .relaxed)
        return holder == Self.callerIdentity || (LWKTThread.current == nil && CPU.current == nil && holder & 1 == 0)
    }
    /// How many hold it shared now.
    var sharedHolders: Int { Int(word.load(ordering: .relaxed) & Self.countMask) }
    /// Whether some LWKT thread sleeps waiting for it.
    var hasSleepers: Bool { word.load(ordering: .relaxed) & Self.waitersBit != 0 }

    // MARK: acquiring

    /// Takes the lock in `mode` if that is possible now.
    @inline(__always)
    func tryLock(_ mode: Mode) -> Bool {
        switch mode {
        case .exclusive:
            guard word.compareExchange(expected: 0, desired: Self.exclusiveBit, ordering: .acquiring).exchanged else { return false }
            owner.store(Self.callerIdentity, ordering: .relaxed)
            ownerCPU.store(CPU.current?.id ?? -1, ordering: .relaxed)
            return true
        case .shared:
            var s = word.load(ordering: .relaxed)
            while s & (Self.exclusiveBit | Self.waitersBit) == 0 {
                let (done, now) = word.compareExchange(expected: s, desired: s &+ 1, ordering: .acquiring)
                if done { return true }
                s = now
            }
            return false
        }
    }

    /// Takes the lock in `mode`, parking the calling LWKT thread with `tsleep` while it is
    /// taken (the CPU runs its other threads meanwhile). Off an LWKT CPU it waits as the
    /// synchronous `lockWithoutParking(_:)` does. Throws `CancellationError` when the waiting
    /// thread is cancelled; the lock is then not held.
    func lock(_ mode: Mode) async throws {
        if tryLock(mode) { return }
        guard let cpu = CPU.current else {
            lockWithoutParking(mode)
            return
        }
        publishSleeperSystem(cpu.system)
        let channel = WaitChannel(self)
        while true {
            if tryLock(mode) { return }
            // Announce a sleeper, but only while the lock is held: whoever releases it last
            // then sees the bit and wakes us.
            let s = word.load(ordering: .relaxed)
            if s & ~Self.waitersBit == 0 { continue }
            if s & Self.waitersBit == 0,
               !word.compareExchange(expected: s, desired: s | Self.waitersBit, ordering: .relaxed).exchanged { continue }
            parks.wrappingAdd(1, ordering: .relaxed)
            // The interlock: a release that cleared the bit before we were queued is seen here.
            _ = try await LWKT.tsleep(on: channel, until: {
                self.word.load(ordering: .acquiring) & Self.waitersBit == 0
            })
        }
    }

    /// Takes the lock exclusively for a synchronous caller: at once if it is free; else, in a
    /// non-blocking attempt (`VFSAttempt`), gives up by throwing so that the parking API can
    /// park the LWKT thread on this lock and run the operation again; else waits as
    /// `lockWithoutParking(_:)` does.
    @inline(__always)
    func lockExclusive() throws(VFSError) {
        if tryLock(.exclusive) { return }
        try VFSAttempt.giveUp(contending: self)
        lockWithoutParking(.exclusive)
    }

    /// Waits, parking the calling LWKT thread, until the lock has been free for a moment
    /// (taken and released again): what the parking API does after an attempt gave up on it.
    func awaitRelease() async throws(VFSError) {
        do { try await lock(.exclusive) } catch { throw .again }
        unlock(.exclusive)
    }

    /// Takes the lock in `mode` without suspending (threads that are not LWKT CPUs; see the
    /// type's notes for the rule on CPUs).
    func lockWithoutParking(_ mode: Mode) {
        if tryLock(mode) { return }
        var spins = 0
        while true {
            VFSWait.relax(&spins)
            if tryLock(mode) { return }
            assert(!heldAcrossParkOnCallersCPU,
                   "namecache rule 4: a synchronous waiter on a CPU waits for a record lock held by a thread of its own CPU")
        }
    }

    private var heldAcrossParkOnCallersCPU: Bool {
        guard let cpu = CPU.current, word.load(ordering: .relaxed) & Self.exclusiveBit != 0 else { return false }
        return ownerCPU.load(ordering: .relaxed) == cpu.id && owner.load(ordering: .relaxed) & 1 == 0
            && owner.load(ordering: .relaxed) != Self.callerIdentity
    }

    private func publishSleeperSystem(_ system: LWKTSystem) {
        let mine = UInt(bitPattern: Unmanaged.passUnretained(system).toOpaque())
        guard sleeperSystem.load(ordering: .acquiring) != mine else { return }
        let retained = UInt(bitPattern: Unmanaged.passRetained(system).toOpaque())
        let old = sleeperSystem.exchange(retained, ordering: .acquiringAndReleasing)
        if old != 0, let p = UnsafeRawPointer(bitPattern: old) { Unmanaged<LWKTSystem>.fromOpaque(p).release() }
    }

    // MARK: releasing

    /// Releases a hold taken in `mode`. The exclusive holder must be the caller (debug check).
    func unlock(_ mode: Mode) {
        let old: UInt64
        switch mode {
        case .exclusive:
            assert(isOwnedByCaller, "namecache rule 4: a record lock released by a thread that does not hold it")
            owner.store(0, ordering: .relaxed)
            ownerCPU.store(-1, ordering: .relaxed)
            old = word.exchange(0, ordering: .releasing)
        case .shared:
            var s = word.load(ordering: .relaxed)
            while true {
                assert(s & Self.exclusiveBit == 0 && s & Self.countMask > 0, "namecache rule 4: a shared release without a shared hold")
                let count = (s & Self.countMask) &- 1
                let next = count == 0 ? 0 : (s & Self.waitersBit) | count
                let (done, now) = word.compareExchange(expected: s, desired: next, ordering: .releasing)
                if done { break }
                s = now
            }
            old = s
            if old & Self.countMask > 1 { return }
        }
        if old & Self.waitersBit != 0 { wakeSleepers() }
    }

    private func wakeSleepers() {
        let channel = WaitChannel(self)
        if let cpu = CPU.current {
            LWKT.wakeup(channel, in: cpu.system)
            // Sleepers of another system (a namecache shared by two) are woken too.
            let s = sleeperSystem.load(ordering: .acquiring)
            if s != 0, s != UInt(bitPattern: Unmanaged.passUnretained(cpu.system).toOpaque()),
               let p = UnsafeRawPointer(bitPattern: s) {
                LWKT.wakeup(channel, in: Unmanaged<LWKTSystem>.fromOpaque(p).takeUnretainedValue())
            }
            return
        }
        let s = sleeperSystem.load(ordering: .acquiring)
        if s != 0, let p = UnsafeRawPointer(bitPattern: s) {
            LWKT.wakeup(channel, in: Unmanaged<LWKTSystem>.fromOpaque(p).takeUnretainedValue())
        }
    }
}
