import Testing
import Synchronization
import Foundation
@testable import LWKT

/// Descriptors registered once, edge-triggered (`LWKT.registerEdgeTriggered(fd:)`): waits
/// arm nothing, readiness that comes while nobody waits is kept, readers and writers of
/// one descriptor are woken by their own events only.
@Suite("Edge-triggered descriptor events")
struct EdgeTriggeredEventTests {
    /// A nonblocking Unix stream socket pair.
    private func socketPair() -> (Int32, Int32) {
        var fds: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        return (fds[0], fds[1])
    }

    /// Polls `condition` every millisecond for up to `seconds` (a bound, not a timing).
    private func eventually(seconds: Double = 10, _ condition: () -> Bool) async throws -> Bool {
        let end = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < end {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(1))
        }
        return condition()
    }

    /// The poller's per-descriptor table: reads past the end see the empty value, writes
    /// grow it, `take` empties a slot, negative descriptors are never stored.
    @Test func descriptorTableGrowsAndTakes() {
        var t = DescriptorTable<UInt64>(empty: 0)
        #expect(t[5] == 0 && t[-1] == 0)
        t[3] = 7
        t[900] = 9
        t[-4] = 1
        #expect(t[3] == 7 && t[900] == 9 && t[899] == 0 && t[-4] == 0)
        #expect(t.indices(where: { $0 != 0 }) == [3, 900])
        #expect(t.take(900) == 9 && t[900] == 0 && t.take(5000) == 0)
    }

    /// A descriptor numbered far above the others (the table grows to reach it) is waited
    /// on, woken and unregistered like any other.
    @Test func highNumberedDescriptorWaitsAndWakes() async throws {
        try await withSystem(cpus: 1) { system in
            let (a0, b) = socketPair()
            let a = dup2(a0, 3000)
            close(a0)
            #expect(a == 3000)
            defer { close(a); close(b) }
            let res = Results()
            let t = LWKTThread.spawn(on: system.cpus[0], name: "edge-high") {
                do {
                    try LWKT.registerEdgeTriggered(fd: a)
                    res.items.store(1, ordering: .releasing)
                    let ev = try await LWKT.wait(for: .readable, on: a)
                    if ev.contains(.readable) { res.ready.add(1, ordering: .relaxed) }
                    try LWKT.unregister(fd: a)
                } catch is CancellationError {
                    res.cancelled.add(1, ordering: .relaxed)
                } catch {}
            }
            #expect(try await eventually { res.items.load(ordering: .acquiring) == 1 })
            let msg: [UInt8] = [7]
            #expect(write(b, msg, 1) == 1)
            let woke = try await eventually { res.ready.load(ordering: .relaxed) == 1 }
            if !woke { t.cancel() }
            await t.join()
            #expect(woke)
            #expect(res.cancelled.load(ordering: .relaxed) == 0)
        }
    }

    @Test func readinessThatCameWhileNobodyWaitedIsKeptForTheNextWait() async throws {
        try await withSystem(cpus: 1) { system in
            let (a, b) = socketPair()
            defer { close(a); close(b) }
            let res = Results()
            let t = LWKTThread.spawn(on: system.cpus[0], name: "edge-reader") {
                do {
                    try LWKT.registerEdgeTriggered(fd: a)
                    res.items.store(1, ordering: .releasing)
                    // The edge arrives during this sleep, while nobody waits on `a`; the
                    // CPU's poller sees it (and must keep it).
                    while res.items.load(ordering: .acquiring) != 2 { try await LWKT.sleep(for: .milliseconds(1)) }
                    try await LWKT.sleep(for: .milliseconds(30))
                    let ev = try await LWKT.wait(for: .readable, on: a)
                    if ev.contains(.readable) { res.ready.add(1, ordering: .relaxed) }
                    try LWKT.unregister(fd: a)
                } catch is CancellationError {
                    res.cancelled.add(1, ordering: .relaxed)
                } catch {}
            }
            #expect(try await eventually { res.items.load(ordering: .acquiring) == 1 })
            let msg: [UInt8] = [7]
            #expect(write(b, msg, 1) == 1)
            res.items.store(2, ordering: .releasing)
            // Without the kept edge the wait would sleep for good: cancel it after the bound.
            let woke = try await eventually { res.ready.load(ordering: .relaxed) == 1 }
            if !woke { t.cancel() }
            await t.join()
            #expect(woke)
            #expect(res.cancelled.load(ordering: .relaxed) == 0)
            #expect(system.cpus[0].counter(.ioEvents) >= 1)
        }
    }

    /// Two threads on two CPUs bounce a byte 300 times over a socket pair, each reading
    /// until its socket is drained before waiting (the edge-triggered contract).
    @Test func pingPongAcrossCPUsWithoutReArming() async throws {
        try await withSystem(cpus: 2) { system in
            let (a, b) = socketPair()
            defer { close(a); close(b) }
            let rounds = 300
            let progress = Atomic<Int>(0)
            func player(_ fd: Int32, serves: Bool) -> @Sendable () async -> Void {
                return {
                    do {
                        try LWKT.registerEdgeTriggered(fd: fd)
                        var byte: UInt8 = 1
                        if serves { _ = write(fd, &byte, 1) }
                        var got = 0
                        while got < rounds {
                            let n = read(fd, &byte, 1)
                            if n == 1 {
                                got += 1
                                progress.add(1, ordering: .relaxed)
                                if serves && got == rounds { break }
                                _ = write(fd, &byte, 1)
                                continue
                            }
                            if n == 0 { break }
                            _ = try await LWKT.wait(for: .readable, on: fd)
                        }
                        try LWKT.unregister(fd: fd)
                    } catch {}
                }
            }
            let t1 = LWKTThread.spawn(on: system.cpus[0], name: "ping", player(a, serves: true))
            let t2 = LWKTThread.spawn(on: system.cpus[1], name: "pong", player(b, serves: false))
            var last = -1
            var stalled = false
            while progress.load(ordering: .relaxed) < 2 * rounds {
                let p = progress.load(ordering: .relaxed)
                if p == last { stalled = true; break }
                last = p
                _ = try await eventually(seconds: 5) { progress.load(ordering: .relaxed) != p }
            }
            if stalled { t1.cancel(); t2.cancel() }
            await t1.join()
            await t2.join()
            #expect(!stalled)
            #expect(progress.load(ordering: .relaxed) == 2 * rounds)
        }
    }

    /// A writer waiting for room and a reader waiting for data on the same descriptor:
    /// each wakes on its own event; the peer's close wakes the reader with end of stream.
    @Test func readerAndWriterOfOneDescriptorWakeOnTheirOwnEvents() async throws {
        try await withSystem(cpus: 1) { system in
            let (a, b) = socketPair()
            defer { close(a) }
            let writerWoke = Atomic<Int>(0), readerWoke = Atomic<Int>(0), sawEnd = Atomic<Int>(0)
            let filled = Atomic<Int>(0)
            let reg = LWKTThread.spawn(on: system.cpus[0], name: "register") {
                _ = try? LWKT.registerEdgeTriggered(fd: a)
            }
            await reg.join()
            let writer = LWKTThread.spawn(on: system.cpus[0], name: "edge-writer") {
                let chunk = [UInt8](repeating: 0x55, count: 4096)
                var total = 0
                while write(a, chunk, chunk.count) > 0 { total += chunk.count }
                filled.store(total, ordering: .releasing)
                do {
                    // A kept edge may be stale (the registration itself reported the empty
                    // socket writable): only a write that then succeeds counts.
                    while true {
                        _ = try await LWKT.wait(for: .writable, on: a)
                        if write(a, chunk, 1) == 1 { writerWoke.store(1, ordering: .relaxed); break }
                    }
                } catch {}
            }
            let reader = LWKTThread.spawn(on: system.cpus[0], name: "edge-reader") {
                do {
                    var buf = [UInt8](repeating: 0, count: 64)
                    while true {
                        let n = read(a, &buf, buf.count)
                        if n == 0 { sawEnd.store(1, ordering: .relaxed); break }
                        if n > 0 { continue }
                        _ = try await LWKT.wait(for: .readable, on: a)
                        readerWoke.add(1, ordering: .relaxed)
                    }
                } catch {}
            }
            #expect(try await eventually { filled.load(ordering: .acquiring) > 0 })
            // Drain the peer: room frees up, which wakes the writer and not the reader.
            var buf = [UInt8](repeating: 0, count: 65536)
            var drained = 0
            let drainEnd = ContinuousClock.now + .seconds(10)
            while drained < filled.load(ordering: .acquiring) && ContinuousClock.now < drainEnd {
                let n = read(b, &buf, buf.count)
                if n > 0 { drained += n } else { try await Task.sleep(for: .milliseconds(1)) }
            }
            let writerOK = try await eventually { writerWoke.load(ordering: .relaxed) == 1 }
            #expect(writerOK)
            #expect(readerWoke.load(ordering: .relaxed) == 0)
            // Now the peer closes: the reader wakes and reads end of stream.
            close(b)
            let readerOK = try await eventually { sawEnd.load(ordering: .relaxed) == 1 }
            if !writerOK { writer.cancel() }
            if !readerOK { reader.cancel() }
            await writer.join()
            await reader.join()
            #expect(readerOK)
            #expect(readerWoke.load(ordering: .relaxed) >= 1)
            let unreg = LWKTThread.spawn(on: system.cpus[0], name: "unregister") { try? LWKT.unregister(fd: a) }
            await unreg.join()
        }
    }
}
