import Testing
import Synchronization
import Foundation
@testable import LWKT

@Suite("Descriptor events")
struct EventTests {
    @Test func readinessWakesTheWaitingThreadOnItsCPU() async throws {
        try await withSystem(cpus: 2) { system in
            var fds: [Int32] = [0, 0]
            #expect(pipe(&fds) == 0)
            let (r, w) = (fds[0], fds[1])
            defer { close(r); close(w) }
            _ = fcntl(r, F_SETFL, O_NONBLOCK)
            let res = Results()
            let t = LWKTThread.spawn(on: system.cpus[1], name: "reader") {
                do {
                    let ev = try await LWKT.wait(for: .readable, on: r)
                    if ev.contains(.readable) && CPU.current?.id == 1 { res.ready.add(1, ordering: .relaxed) }
                    var buf = [UInt8](repeating: 0, count: 16)
                    let n = read(r, &buf, 16)
                    res.items.store(n, ordering: .relaxed)
                    try LWKT.unregister(fd: r)
                } catch {}
            }
            try await Task.sleep(for: .milliseconds(20))
            #expect(res.ready.load(ordering: .relaxed) == 0)
            let msg: [UInt8] = [1, 2, 3]
            #expect(write(w, msg, 3) == 3)
            await t.join()
            #expect(res.ready.load(ordering: .relaxed) == 1)
            #expect(res.items.load(ordering: .relaxed) == 3)
            #expect(system.cpus[1].counter(.ioEvents) >= 1)
        }
    }

    @Test func cancellingADescriptorWaitThrows() async throws {
        try await withSystem(cpus: 1) { system in
            var fds: [Int32] = [0, 0]
            #expect(pipe(&fds) == 0)
            let rfd = fds[0], wfd = fds[1]
            defer { close(rfd); close(wfd) }
            let res = Results()
            let t = LWKTThread.spawn(on: system.cpus[0], name: "reader") {
                do { _ = try await LWKT.wait(for: .readable, on: rfd) } catch is CancellationError {
                    res.cancelled.add(1, ordering: .relaxed)
                } catch {}
            }
            try await Task.sleep(for: .milliseconds(10))
            t.cancel()
            // Bounded (10 s); a lost cancellation is reported, then the reader woken by data.
            for _ in 0..<1_000 where !t.isFinished { try await Task.sleep(for: .milliseconds(10)) }
            #expect(t.isFinished, "the cancelled wait did not end")
            if !t.isFinished { _ = write(wfd, "x", 1) }
            await t.join()
            #expect(res.cancelled.load(ordering: .relaxed) == 1)
        }
    }

    /// A thread's descriptor wait carries no runtime cancellation handler; `cancel()` ends
    /// it by IPI. From a thread on the same CPU the IPI runs inside `cancel()`, while the
    /// waiter is suspended; from another CPU it travels there.
    @Test(arguments: [0, 1])
    func cancelReachesAWaitFromEitherCPU(cancellerCPU: Int) async throws {
        try await withSystem(cpus: 2) { system in
            var fds: [Int32] = [0, 0]
            #expect(pipe(&fds) == 0)
            let rfd = fds[0], wfd = fds[1]
            defer { close(rfd); close(wfd) }
            let res = Results()
            let t = LWKTThread.spawn(on: system.cpus[0], name: "reader") {
                res.ready.store(1, ordering: .releasing)
                do { _ = try await LWKT.wait(for: .readable, on: rfd) } catch is CancellationError {
                    res.cancelled.add(1, ordering: .relaxed)
                } catch {}
            }
            // Bounded: the reader announces itself within the first job.
            for _ in 0..<2_000 where res.ready.load(ordering: .acquiring) == 0 { try await Task.sleep(for: .milliseconds(1)) }
            try await Task.sleep(for: .milliseconds(5))
            let canceller = LWKTThread.spawn(on: system.cpus[cancellerCPU], name: "canceller") { t.cancel() }
            await canceller.join()
            // Bounded (10 s); a lost cancellation is reported, then the reader woken by data.
            for _ in 0..<1_000 where !t.isFinished { try await Task.sleep(for: .milliseconds(10)) }
            #expect(t.isFinished, "the cancelled wait did not end")
            if !t.isFinished { _ = write(wfd, "x", 1) }
            await t.join()
            #expect(res.cancelled.load(ordering: .relaxed) == 1)
        }
    }

    /// A task that is not an LWKT thread's own (here a child task inside a thread) keeps the
    /// runtime cancellation handler: cancelling its task ends its descriptor wait.
    @Test func cancellingAChildTaskEndsItsWait() async throws {
        try await withSystem(cpus: 1) { system in
            var fds: [Int32] = [0, 0]
            #expect(pipe(&fds) == 0)
            let rfd = fds[0], wfd = fds[1]
            defer { close(rfd); close(wfd) }
            let res = Results()
            let executor = system.cpus[0].taskExecutor
            let t = LWKTThread.spawn(on: system.cpus[0], name: "parent") {
                let child = Task(executorPreference: executor) { () -> Bool in
                    do { _ = try await LWKT.wait(for: .readable, on: rfd); return false } catch is CancellationError {
                        return true
                    } catch { return false }
                }
                try? await LWKT.sleep(for: .milliseconds(10))
                child.cancel()
                if await child.value { res.cancelled.add(1, ordering: .relaxed) }
            }
            await t.join()
            #expect(res.cancelled.load(ordering: .relaxed) == 1)
        }
    }

    /// Bounded stress: threads on two CPUs wait on descriptors, are woken by data or
    /// cancelled at random moments from both CPUs and from outside; every one ends, and
    /// each ends exactly one way.
    @Test func cancelAndReadinessRaceLosesNoWaiter() async throws {
        try await withSystem(cpus: 2) { system in
            var rng = SystemRandomNumberGenerator()
            let n = 40
            var pipes: [(Int32, Int32)] = []
            for _ in 0..<n {
                var fds: [Int32] = [0, 0]
                #expect(pipe(&fds) == 0)
                _ = fcntl(fds[0], F_SETFL, O_NONBLOCK)
                pipes.append((fds[0], fds[1]))
            }
            defer { for (r, w) in pipes { close(r); close(w) } }
            let res = Results()
            var threads: [LWKTThread] = []
            for i in 0..<n {
                let r = pipes[i].0
                threads.append(LWKTThread.spawn(on: system.cpus[i % 2], name: "waiter\(i)") {
                    do {
                        _ = try await LWKT.wait(for: .readable, on: r)
                        res.ready.add(1, ordering: .relaxed)
                    } catch is CancellationError {
                        res.cancelled.add(1, ordering: .relaxed)
                    } catch {}
                    try? LWKT.unregister(fd: r)
                })
            }
            try await Task.sleep(for: .milliseconds(2))
            var cancellers: [LWKTThread] = []
            for i in 0..<n {
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: _ = write(pipes[i].1, "x", 1)
                case 1: threads[i].cancel()
                default:
                    let t = threads[i]
                    cancellers.append(LWKTThread.spawn(on: system.cpus[Int.random(in: 0..<2, using: &rng)], name: "c") { t.cancel() })
                }
                if i % 8 == 0 { try await Task.sleep(for: .microseconds(200)) }
            }
            for c in cancellers { await c.join() }
            // Bounded (10 s): a lost cancellation would leave its waiter asleep; it is then
            // reported and woken with data so the test ends.
            for _ in 0..<1_000 where !threads.allSatisfy(\.isFinished) { try await Task.sleep(for: .milliseconds(10)) }
            let stuck = threads.indices.filter { !threads[$0].isFinished }
            #expect(stuck.isEmpty, "waiters never woken: \(stuck)")
            for i in stuck { _ = write(pipes[i].1, "x", 1) }
            for t in threads { await t.join() }
            #expect(res.ready.load(ordering: .relaxed) + res.cancelled.load(ordering: .relaxed) == n)
        }
    }

    /// A thread's descriptor waits are ended by `cancel()`'s IPI (no runtime handler per
    /// wait): threads on two CPUs wait back to back on their own pipes, woken by
    /// writes, and are cancelled at staggered points; every one ends, whether it was in a
    /// wait, between two, or about to start one.
    @Test func cancellingThreadsInBackToBackWaitsEndsEveryOne() async throws {
        try await withSystem(cpus: 2) { system in
            let n = 16
            var pipes: [(Int32, Int32)] = []
            for _ in 0..<n {
                var fds: [Int32] = [0, 0]
                #expect(pipe(&fds) == 0)
                _ = fcntl(fds[0], F_SETFL, O_NONBLOCK)
                _ = fcntl(fds[1], F_SETFL, O_NONBLOCK)
                pipes.append((fds[0], fds[1]))
            }
            defer { for (r, w) in pipes { close(r); close(w) } }
            let res = Results()
            var threads: [LWKTThread] = []
            for i in 0..<n {
                let r = pipes[i].0
                threads.append(LWKTThread.spawn(on: system.cpus[i % 2], name: "waiter\(i)") {
                    var buf = [UInt8](repeating: 0, count: 64)
                    for _ in 0..<100_000 {
                        do { _ = try await LWKT.wait(for: .readable, on: r) } catch is CancellationError {
                            res.cancelled.add(1, ordering: .relaxed)
                            break
                        } catch { break }
                        while read(r, &buf, 64) > 0 { res.items.add(1, ordering: .relaxed) }
                    }
                    try? LWKT.unregister(fd: r)
                })
            }
            // Writes keep the waits going; each thread is cancelled after a different number of them.
            for round in 0..<(2 * n) {
                for (i, p) in pipes.enumerated() where i >= round / 2 { _ = write(p.1, [UInt8(1)], 1) }
                if round % 2 == 1 { threads[round / 2].cancel() }
                try await Task.sleep(for: .microseconds(300))
            }
            let deadline = ContinuousClock.now + .seconds(10)
            while threads.contains(where: { !$0.isFinished }) && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            let stuck = threads.filter { !$0.isFinished }.count
            #expect(stuck == 0, "\(stuck) cancelled threads still wait")
            if stuck > 0 { for t in threads { t.cancel() }; for (_, w) in pipes { _ = write(w, [UInt8(1)], 1) } }
            for t in threads { await t.join() }
            #expect(res.cancelled.load(ordering: .relaxed) == n)
        }
    }

    /// A child task of an LWKT thread inherits the thread's task-local but not its task: its
    /// descriptor wait has a cancellation handler of its own. Cancelling the children alone
    /// ends their waits and leaves the thread's own wait in place; cancelling the thread then
    /// ends that one.
    @Test func childTaskWaitsAreCancelledApartFromTheThread() async throws {
        try await withSystem(cpus: 1) { system in
            var a: [Int32] = [0, 0], b: [Int32] = [0, 0]
            #expect(pipe(&a) == 0)
            #expect(pipe(&b) == 0)
            defer { close(a[0]); close(a[1]); close(b[0]); close(b[1]) }
            let outer = a[0], inner = b[0]
            let res = Results()
            let t = LWKTThread.spawn(on: system.cpus[0], name: "parent") {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask {
                        do { _ = try await LWKT.wait(for: .readable, on: inner) } catch is CancellationError {
                            res.items.add(1, ordering: .relaxed)  // the child's wait was cancelled
                        } catch {}
                    }
                    // Let the child start waiting, then cancel the children only.
                    for _ in 0..<20 { await LWKT.yield() }
                    group.cancelAll()
                    await group.waitForAll()
                }
                try? LWKT.unregister(fd: inner)
                do { _ = try await LWKT.wait(for: .readable, on: outer) } catch is CancellationError {
                    res.cancelled.add(1, ordering: .relaxed)
                } catch {}
                try? LWKT.unregister(fd: outer)
            }
            let deadline = ContinuousClock.now + .seconds(10)
            while res.items.load(ordering: .relaxed) == 0 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(res.items.load(ordering: .relaxed) == 1, "cancelling the child ended its wait")
            try await Task.sleep(for: .milliseconds(20))
            #expect(!t.isFinished, "the thread's own wait goes on")
            t.cancel()
            await t.join()
            #expect(res.cancelled.load(ordering: .relaxed) == 1)
        }
    }

    @Test func badDescriptorGivesAClearError() async throws {
        try await withSystem(cpus: 1) { system in
            let msg = try await system.run(on: 0) { () -> String in
                do { _ = try await LWKT.wait(for: .readable, on: 987_654); return "no error" } catch { return "\(error)" }
            }
            #expect(msg.contains("epoll_ctl"))
        }
    }

    @Test func callsThatNeedACPUThrowOffOne() async {
        await #expect(throws: LWKTError.self) { try await LWKT.sleep(for: .milliseconds(1)) }
        await #expect(throws: LWKTError.self) { _ = try await LWKT.tsleep(on: WaitChannel(Results())) }
    }
}
