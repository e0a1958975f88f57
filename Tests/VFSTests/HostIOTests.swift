import Foundation
import Glibc
import LWKT
import Synchronization
import Testing
@testable import VFS

/// Host I/O off the CPUs (issue 15): a slow host call or a blocked read made through
/// `VFSProcess.offCPU` parks only the calling LWKT thread; its CPU keeps running its other
/// threads and answering IPIs. The watchdog also shows that the same call made directly on
/// the CPU does stall it, so the test can tell the two apart.
@Suite(.serialized) struct HostIOTests {
    final class Progress: @unchecked Sendable {
        let ticks = Atomic<Int>(0)
        let done = Atomic<Bool>(false)
    }

    /// Namespace with a HostFS mount (so calls may block) and its own pool.
    func makeHostVFS(threads: Int = 2) throws -> (String, VirtualFileSystem, VFSProcess) {
        let dir = makeTempDir("hostio")
        let vfs = VirtualFileSystem(rootFileSystem: MemFS(), hostIO: HostIOPool(threads: threads))
        let p = vfs.makeProcess()
        try p.mkdir("/host")
        try vfs.mount(try HostFS(hostPath: dir), at: "/host", by: p)
        return (dir, vfs, p)
    }

    /// Runs `call` on CPU 0 while a second LWKT thread on CPU 0 counts; returns the count
    /// reached while `call` was in progress and the watchdog's worst stall.
    func measure(_ system: LWKTSystem, _ call: @escaping @Sendable () async throws -> Void) async throws -> (Int, Double) {
        let progress = Progress()
        let dog = IPIWatchdog(system: system)
        let cpu0 = try system.cpu(0)
        let counter = LWKTThread.spawn(on: cpu0, name: "counter") {
            for _ in 0..<2_000_000 where !progress.done.load(ordering: .relaxed) {
                progress.ticks.wrappingAdd(1, ordering: .relaxed)
                await LWKT.yield()
            }
        }
        let seen: Int = try await system.run(on: 0, name: "caller") {
            let before = progress.ticks.load(ordering: .relaxed)
            try await call()
            return progress.ticks.load(ordering: .relaxed) - before
        }
        progress.done.store(true, ordering: .relaxed)
        await counter.join()
        return (seen, dog.finish())
    }

    @Test func slowHostCallDoesNotStopTheCPU() async throws {
        let (dir, vfs, p) = try makeHostVFS()
        defer { removeTree(dir); vfs.hostIO.shutdown() }
        try await withLWKT(cpus: 2) { system in
            let (ticks, stall) = try await measure(system) {
                let r = try await p.offCPU { () -> Int in
                    usleep(1_000_000)   // a slow disk or network file system
                    return 7
                }
                #expect(r == 7)
            }
            #expect(ticks > 10, "the other thread on the CPU must run while the host call is in progress")
            #expect(stall < ipiStallLimitMs, "a CPU left an IPI unanswered for \(stall) ms")
        }
        let s = vfs.hostIO.statistics
        #expect(s.submitted == 1 && s.completed == 1 && s.queueDepth == 0)
        #expect(s.maxLatencyNanos > 0 && s.totalLatencyNanos >= s.maxLatencyNanos)
    }

    @Test func blockedReadDoesNotStopTheCPU() async throws {
        let (dir, vfs, p) = try makeHostVFS()
        defer { removeTree(dir); vfs.hostIO.shutdown() }
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let (r, w) = (fds[0], fds[1])
        defer { Glibc.close(r); Glibc.close(w) }
        // The writer answers only after a while; until then the read waits in the kernel.
        Thread.detachNewThread {
            usleep(1_000_000)
            var b: UInt8 = 42
            _ = Glibc.write(w, &b, 1)
        }
        try await withLWKT(cpus: 2) { system in
            let (ticks, stall) = try await measure(system) {
                let byte = try await p.offCPU { () -> UInt8 in
                    var b: UInt8 = 0
                    guard Glibc.read(r, &b, 1) == 1 else { throw VFSError.current }
                    return b
                }
                #expect(byte == 42)
            }
            #expect(ticks > 10)
            #expect(stall < ipiStallLimitMs, "a CPU left an IPI unanswered for \(stall) ms")
        }
        #expect(vfs.hostIO.statistics.completed == 1)
    }

    @Test func manyConcurrentCallsFromSeveralCPUsAllComplete() async throws {
        let (dir, vfs, p) = try makeHostVFS(threads: 3)
        defer { removeTree(dir); vfs.hostIO.shutdown() }
        for i in 0..<8 { try writeFile(p, "/host/f\(i)", "file \(i)") }
        let total = try await withLWKT(cpus: 4) { system -> Int in
            try await withThrowingTaskGroup(of: Int.self) { group in
                for c in 0..<4 {
                    group.addTask {
                        try await system.run(on: c, name: "reader\(c)") { () -> Int in
                            var ok = 0
                            for k in 0..<50 {
                                let text = try await p.offCPU { () -> String in
                                    let fd = try p.open("/host/f\((c + k) % 8)")
                                    defer { try? p.close(fd) }
                                    return String(decoding: try p.read(fd, count: 64), as: UTF8.self)
                                }
                                if text == "file \((c + k) % 8)" { ok += 1 }
                            }
                            return ok
                        }
                    }
                }
                var sum = 0
                for try await n in group { sum += n }
                return sum
            }
        }
        #expect(total == 200)
        let s = vfs.hostIO.statistics
        #expect(s.submitted == 200 && s.completed == 200 && s.queueDepth == 0)
        #expect(s.maxQueueDepth >= 1)
    }

    @Test func watchdogSeesACallMadeOnTheCPU() async throws {
        // The control: the same slow call made directly on the CPU thread stalls it.
        try await withLWKT(cpus: 2) { system in
            let (_, stall) = try await measure(system) { usleep(300_000) }
            #expect(stall >= ipiStallLimitMs, "the watchdog must notice a CPU blocked for 300 ms (saw \(stall) ms)")
        }
    }

    /// The watchdog's last ping, answered just before `finish`, still counts: the CPU is
    /// blocked, answers when it is free, and the test stops the watchdog at once, before
    /// its next 5 ms round would have looked at the answer.
    @Test func watchdogCountsAPingAnsweredJustBeforeFinish() async throws {
        try await withLWKT(cpus: 1) { system in
            for round in 0..<3 {
                let dog = IPIWatchdog(system: system)
                _ = try await system.run(on: 0) { usleep(150_000) }
                let stall = dog.finish()
                #expect(stall >= ipiStallLimitMs, "round \(round): a CPU blocked for 150 ms (saw \(stall) ms)")
            }
        }
    }

    @Test func poolRestartsAfterShutdown() async throws {
        let (dir, vfs, p) = try makeHostVFS(threads: 2)
        defer { removeTree(dir); vfs.hostIO.shutdown() }
        try await withLWKT(cpus: 1) { system in
            for round in 0..<3 {
                let n = try await system.run(on: 0) { try await p.offCPU { round + 1 } }
                #expect(n == round + 1)
                vfs.hostIO.shutdown()
            }
        }
        #expect(vfs.hostIO.statistics.completed == 3)
    }

    @Test func offCPUIsInlineWithoutBlockingFileSystems() async throws {
        let pool = HostIOPool(threads: 1)
        let vfs = VirtualFileSystem(rootFileSystem: MemFS(), hostIO: pool)
        let p = vfs.makeProcess()
        try await withLWKT(cpus: 1) { system in
            let ok = try await system.run(on: 0) { try await p.offCPU { try p.stat("/").type == .directory } }
            #expect(ok)
        }
        #expect(pool.statistics.submitted == 0)
    }

    /// The pool's latency histogram and quantiles: every answered call is in one bucket, the
    /// quantiles are ordered and inside the observed range, and the phase sums add up to no
    /// more than the total latency.
    @Test func latencyHistogramAndQuantiles() async throws {
        #expect(HostIOPool.quantile([], 0.5) == 0)
        // 90 calls in [1024, 2048) ns and 10 in [1 Mi, 2 Mi) ns.
        var buckets = [Int](repeating: 0, count: 22)
        buckets[10] = 90
        buckets[20] = 10
        let p50 = HostIOPool.quantile(buckets, 0.5), p99 = HostIOPool.quantile(buckets, 0.99)
        #expect(p50 >= 1024 && p50 < 2048)
        #expect(p99 >= 1 << 20 && p99 <= 1 << 21)
        let (dir, vfs, p) = try makeHostVFS()
        defer { removeTree(dir); vfs.hostIO.shutdown() }
        try writeFile(p, "/host/f", "x")
        try await withLWKT(cpus: 1) { system in
            try await system.run(on: 0) {
                for _ in 0..<20 {
                    _ = try await p.offCPU { () throws -> FileAttributes in
                        let fd = try p.open("/host/f")
                        defer { try? p.close(fd) }
                        return try p.fstat(fd)
                    }
                }
            }
        }
        let s = vfs.hostIO.statistics
        #expect(s.completed == 20)
        #expect(s.latencyHistogram.reduce(0, +) == 20)
        #expect(s.p50LatencyNanos > 0 && s.p50LatencyNanos <= s.p99LatencyNanos)
        #expect(s.p99LatencyNanos <= 2 * s.maxLatencyNanos)
        #expect(s.totalQueueWaitNanos + s.totalRunNanos + s.totalAnswerNanos <= s.totalLatencyNanos)
        #expect(s.wakeups <= s.submitted)
    }
}
