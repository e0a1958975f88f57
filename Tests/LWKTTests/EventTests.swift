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
            await t.join()
            #expect(res.cancelled.load(ordering: .relaxed) == 1)
        }
    }

    /// A thread's descriptor waits are ended by its thread-wide cancellation handler (no
    /// handler per wait): threads on two CPUs wait back to back on their own pipes, woken by
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
