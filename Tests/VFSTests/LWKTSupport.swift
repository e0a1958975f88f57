import Foundation
import Glibc
import LWKT
import Synchronization
import Testing
@testable import VFS

/// Boots `cpus` LWKT CPUs (not pinned, so 8 fit on a small machine), runs `body` and shuts
/// the system down.
func withLWKT<R>(cpus: Int, _ body: (LWKTSystem) async throws -> R) async throws -> R {
    let system = try LWKT.boot(cpus: cpus, configuration: .init(idleSpin: .microseconds(20), pin: false, warnings: false))
    do {
        let r = try await body(system)
        _ = try await system.shutdown(timeout: .seconds(20))
        return r
    } catch {
        _ = try? await system.shutdown(timeout: .seconds(20))
        throw error
    }
}

/// Pings every CPU of a system with an IPI from an OS thread of its own, every 5 ms, and
/// records the longest time a CPU took to answer, less the time its OS thread spent runnable
/// but waiting for a core (the kernel's `schedstat` run-queue wait). A CPU whose thread
/// blocks in the kernel (a mutex, a slow system call), spins, or runs one job for too long
/// cannot answer, so its stall shows here; a host machine too busy to run the thread (other
/// work, more CPUs than cores) is not counted against it.
final class IPIWatchdog: @unchecked Sendable {
    final class Slot: @unchecked Sendable {
        let answered = Atomic<Int>(0)
        let answeredAt = Atomic<UInt64>(0)
    }
    let system: LWKTSystem
    let slots: [Slot]
    private let stop = Atomic<Bool>(false)
    private let worst = Atomic<Int>(0)
    private let worstBlocked = Atomic<Int>(0)
    private let finished = DispatchSemaphore(value: 0)
    private let started = DispatchSemaphore(value: 0)

    /// Starts the watchdog thread and returns once it has sent its first ping to every
    /// CPU, so that a CPU blocked right after this returns is already being watched.
    init(system: LWKTSystem) {
        self.system = system
        slots = (0..<system.cpuCount).map { _ in Slot() }
        Thread.detachNewThread { self.loop() }
        started.wait()
    }

    private func record(_ stall: Int, ran: Int) {
        if stall > worst.load(ordering: .relaxed) { worst.store(stall, ordering: .relaxed) }
        let blocked = stall - ran
        if blocked > worstBlocked.load(ordering: .relaxed) { worstBlocked.store(blocked, ordering: .relaxed) }
    }

    private func loop() {
        let n = slots.count
        var sent = [Int](repeating: 0, count: n)
        var sentAt = [UInt64](repeating: 0, count: n)
        let tids = system.snapshot().cpus.map(\.osThreadID)
        var waitedAtSend = [UInt64](repeating: 0, count: n)
        var ranAtSend = [UInt64](repeating: 0, count: n)
        func times(_ c: Int) -> (ran: UInt64, waited: UInt64) { c < tids.count ? Self.schedstat(tids[c]) : (0, 0) }
        func waited(_ c: Int) -> Int { Int(truncatingIfNeeded: times(c).waited &- waitedAtSend[c]) }
        func ran(_ c: Int) -> Int { Int(truncatingIfNeeded: times(c).ran &- ranAtSend[c]) }
        func recordAnswer(_ c: Int) {
            let took = Int(truncatingIfNeeded: slots[c].answeredAt.load(ordering: .relaxed) &- sentAt[c])
            record(took - waited(c), ran: ran(c))
        }
        var firstRound = true
        while !stop.load(ordering: .relaxed) {
            for c in 0..<n where slots[c].answered.load(ordering: .acquiring) == sent[c] {
                if sent[c] > 0 { recordAnswer(c) }
                sent[c] += 1
                (ranAtSend[c], waitedAtSend[c]) = times(c)
                sentAt[c] = HostIOPool.now()
                guard let cpu = try? system.cpu(c) else { continue }
                // The slot travels retained: a ping may still be in flight when the test ends.
                cpu.sendIPI(watchdogPing, Unmanaged.passRetained(slots[c]).toOpaque(), sent[c])
            }
            if firstRound {
                firstRound = false
                started.signal()
            }
            usleep(5_000)
        }
        if firstRound { started.signal() }
        // The last ping of each CPU: one answered since the last round (a CPU that was
        // blocked until just before `finish`) counts its answer time, one still unanswered
        // counts until now.
        let now = HostIOPool.now()
        for c in 0..<n where sent[c] > 0 {
            if slots[c].answered.load(ordering: .acquiring) == sent[c] {
                recordAnswer(c)
            } else {
                record(Int(truncatingIfNeeded: now &- sentAt[c]) - waited(c), ran: ran(c))
            }
        }
        finished.signal()
    }

    /// Nanoseconds thread `tid` of this process has spent running, and runnable but waiting
    /// for a core (`/proc/self/task/TID/schedstat`).
    static func schedstat(_ tid: Int32) -> (ran: UInt64, waited: UInt64) {
        let fd = Glibc.open("/proc/self/task/\(tid)/schedstat", O_RDONLY)
        guard fd >= 0 else { return (0, 0) }
        defer { Glibc.close(fd) }
        var buf = [UInt8](repeating: 0, count: 128)
        let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return (0, 0) }
        let fields = String(decoding: buf[0..<n], as: UTF8.self).split(separator: " ")
        guard fields.count > 1 else { return (0, 0) }
        return (UInt64(fields[0]) ?? 0, UInt64(fields[1]) ?? 0)
    }

    /// Stops pinging; returns the longest unanswered time in milliseconds.
    func finish() -> Double {
        stop.store(true, ordering: .relaxed)
        finished.wait()
        return Double(worst.load(ordering: .relaxed)) / 1e6
    }

    /// Stops pinging; returns the longest time in milliseconds a CPU left a ping unanswered
    /// while its thread was neither running nor waiting for a core: blocked in the kernel
    /// (a long job that runs is not counted here, a wait in a mutex or a slow system call is).
    func finishBlocked() -> Double {
        _ = finish()
        return Double(worstBlocked.load(ordering: .relaxed)) / 1e6
    }
}

let watchdogPing: IPIFunction = { arg, seq in
    guard let arg else { return }
    let slot = Unmanaged<IPIWatchdog.Slot>.fromOpaque(arg).takeRetainedValue()
    slot.answeredAt.store(HostIOPool.now(), ordering: .relaxed)
    slot.answered.store(seq, ordering: .releasing)
}

/// The longest a CPU may leave an IPI unanswered in these tests (issue 15).
let ipiStallLimitMs = 100.0
