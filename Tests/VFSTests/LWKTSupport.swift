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
/// records the longest time a CPU left a ping unanswered *while another CPU was answering*.
/// A CPU whose thread blocks in the kernel (a mutex, a slow system call) cannot answer, so
/// its stall shows here; a pause of the whole process (the host machine busy with other
/// work) delays every CPU alike and is not counted.
final class IPIWatchdog: @unchecked Sendable {
    final class Slot: @unchecked Sendable {
        let answered = Atomic<Int>(0)
    }
    let system: LWKTSystem
    let slots: [Slot]
    private let stop = Atomic<Bool>(false)
    private let worst = Atomic<Int>(0)
    private let finished = DispatchSemaphore(value: 0)

    init(system: LWKTSystem) {
        self.system = system
        slots = (0..<system.cpuCount).map { _ in Slot() }
        Thread.detachNewThread { self.loop() }
    }

    private func loop() {
        let n = slots.count
        var sent = [Int](repeating: 0, count: n)
        var sentAt = [UInt64](repeating: 0, count: n)
        var lastAnswer = [UInt64](repeating: 0, count: n)
        while !stop.load(ordering: .relaxed) {
            let now = HostIOPool.now()
            for c in 0..<n where slots[c].answered.load(ordering: .acquiring) == sent[c] {
                if sent[c] > 0 { lastAnswer[c] = now }
                sent[c] += 1
                sentAt[c] = now
                guard let cpu = try? system.cpu(c) else { continue }
                // The slot travels retained: a ping may still be in flight when the test ends.
                cpu.sendIPI(watchdogPing, Unmanaged.passRetained(slots[c]).toOpaque(), sent[c])
            }
            for c in 0..<n where slots[c].answered.load(ordering: .acquiring) != sent[c] {
                var othersAlive: UInt64 = 0
                for d in 0..<n where d != c { othersAlive = max(othersAlive, lastAnswer[d]) }
                if othersAlive > sentAt[c] {
                    let stall = Int(othersAlive - sentAt[c])
                    if stall > worst.load(ordering: .relaxed) { worst.store(stall, ordering: .relaxed) }
                }
            }
            usleep(5_000)
        }
        finished.signal()
    }

    /// Stops pinging; returns the longest unanswered time in milliseconds.
    func finish() -> Double {
        stop.store(true, ordering: .relaxed)
        finished.wait()
        return Double(worst.load(ordering: .relaxed)) / 1e6
    }
}

let watchdogPing: IPIFunction = { arg, seq in
    guard let arg else { return }
    Unmanaged<IPIWatchdog.Slot>.fromOpaque(arg).takeRetainedValue().answered.store(seq, ordering: .releasing)
}

/// The longest a CPU may leave an IPI unanswered in these tests (issue 15).
let ipiStallLimitMs = 100.0
