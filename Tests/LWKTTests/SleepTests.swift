import Testing
import Synchronization
import Foundation
@testable import LWKT

/// Whether CPU `cpu` has a sleeper queued on `channel`'s slot where wakers on other CPUs
/// see it: its bit in the slot's sleep mask (set when the sleeper is queued).
func visibleSleeper(_ system: LWKTSystem, _ channel: WaitChannel, cpu: Int) -> Bool {
    let word = system.sleepMaskWord(slot: channel.slot(SleepQueues.slots), cpu: cpu)
    return word.pointee.load(ordering: .sequentiallyConsistent) & (UInt64(1) << UInt64(cpu & 63)) != 0
}

final class Results: @unchecked Sendable {
    let woken = Atomic<Int>(0)
    let timedOut = Atomic<Int>(0)
    let cancelled = Atomic<Int>(0)
    let ready = Atomic<Int>(0)
    let items = Atomic<Int>(0)
}

@Suite("tsleep and wakeup")
struct SleepTests {
    @Test func timeoutReturnsTimedOut() async throws {
        try await withSystem(cpus: 1) { system in
            let ch = Results()
            let r = try await system.run(on: 0) {
                try await LWKT.tsleep(on: WaitChannel(ch), timeout: .milliseconds(10))
            }
            #expect(r == .timedOut)
            #expect(system.cpus[0].counter(.tsleepTimeouts) == 1)
        }
    }

    @Test func interlockConditionReturnsAtOnce() async throws {
        try await withSystem(cpus: 1) { system in
            let ch = Results()
            let r = try await system.run(on: 0) {
                try await LWKT.tsleep(on: WaitChannel(ch), timeout: .seconds(30), until: { true })
            }
            #expect(r == .woken)
        }
    }

    @Test func wakeupOneWakesExactlyOneAcrossCPUs() async throws {
        try await withSystem(cpus: 4) { system in
            let res = Results()
            let ch = WaitChannel(res)
            var threads: [LWKTThread] = []
            for c in 1..<4 {
                threads.append(LWKTThread.spawn(on: system.cpus[c], name: "sleeper\(c)") {
                    res.ready.add(1, ordering: .relaxed)
                    if (try? await LWKT.tsleep(on: ch, timeout: .seconds(30))) == .woken {
                        res.woken.add(1, ordering: .relaxed)
                    }
                })
            }
            // Queued and visible to wakers on all three CPUs (the tsleeps counter alone moves
            // before the sleeper is queued: a CPU thread preempted in between, as on a loaded
            // machine, would miss the wakeup).
            try await waitUntil("sleepers queued") {
                system.snapshot().total(.tsleeps) == 3 && res.ready.load(ordering: .relaxed) == 3
                    && (1..<4).allSatisfy { visibleSleeper(system, ch, cpu: $0) }
            }
            // From CPU 0, which has no sleeper: the chain must find exactly one.
            try await system.run(on: 0) { LWKT.wakeupOne(ch) }
            try await waitUntil("one woken", seconds: 60) { res.woken.load(ordering: .relaxed) == 1 }
            try await Task.sleep(for: .milliseconds(100))
            #expect(res.woken.load(ordering: .relaxed) == 1)
            // From a thread that is not a CPU.
            LWKT.wakeupOne(ch, in: system)
            try await waitUntil("two woken", seconds: 60) { res.woken.load(ordering: .relaxed) == 2 }
            try await Task.sleep(for: .milliseconds(50))
            #expect(res.woken.load(ordering: .relaxed) == 2)
            LWKT.wakeup(ch, in: system)
            for t in threads { await t.join() }
            #expect(res.woken.load(ordering: .relaxed) == 3)
        }
    }

    @Test func wakeupSendsNoIPIToCPUsWithoutSleepers() async throws {
        try await withSystem(cpus: 4) { system in
            let res = Results()
            let ch = WaitChannel(res)
            let t = LWKTThread.spawn(on: system.cpus[2], name: "sleeper") {
                _ = try? await LWKT.tsleep(on: ch, timeout: .seconds(30))
                res.woken.add(1, ordering: .relaxed)
            }
            // Queued and visible to wakers (not just counted, which happens first).
            try await waitUntil("queued") { system.cpus[2].counter(.tsleeps) == 1 && visibleSleeper(system, ch, cpu: 2) }
            let sent = try await system.run(on: 0) { () -> Int64 in
                let before = system.cpus[0].counter(.wakeupIPIs)
                LWKT.wakeup(ch)
                return system.cpus[0].counter(.wakeupIPIs) - before
            }
            await t.join()
            #expect(sent == 1)   // only CPU 2 had a sleeper
            // Nobody sleeps now: a wakeup sends nothing.
            let none = try await system.run(on: 0) { () -> Int64 in
                let before = system.cpus[0].counter(.wakeupIPIs)
                LWKT.wakeup(ch)
                return system.cpus[0].counter(.wakeupIPIs) - before
            }
            #expect(none == 0)
        }
    }

    @Test func cancellingASleeperThrows() async throws {
        try await withSystem(cpus: 2) { system in
            let res = Results()
            let t = LWKTThread.spawn(on: system.cpus[1], name: "sleeper") {
                do { _ = try await LWKT.tsleep(on: WaitChannel(res)) } catch is CancellationError {
                    res.cancelled.add(1, ordering: .relaxed)
                } catch {}
            }
            try await waitUntil("queued") { system.cpus[1].counter(.tsleeps) == 1 }
            t.cancel()
            await t.join()
            #expect(res.cancelled.load(ordering: .relaxed) == 1)
        }
    }

    @Test(arguments: [2, 8])
    func noLostWakeupsUnderProducerConsumerRaces(cpus: Int) async throws {
        // Consumers sleep (with no timeout) whenever the queue looks empty; producers on
        // other CPUs add an item and wake. A lost wakeup would hang a consumer and trip
        // the watchdog. CPUs do not spin, so every wake crosses the sleep protocol.
        try await withWatchdog(seconds: 90, "producer/consumer") {
            try await withSystem(cpus: cpus, spin: .zero) { system in
                let res = Results()
                let ch = WaitChannel(res)
                let perProducer = cpus == 2 ? 20_000 : 3_000
                let producers = max(1, cpus / 2)
                let total = perProducer * producers
                var threads: [LWKTThread] = []
                for c in 0..<(cpus - producers) {
                    threads.append(LWKTThread.spawn(on: system.cpus[c], name: "consumer\(c)") {
                        while true {
                            var cur = res.items.load(ordering: .acquiring)
                            while cur > 0 {
                                let (ok, seen) = res.items.compareExchange(expected: cur, desired: cur - 1, ordering: .acquiringAndReleasing)
                                if ok {
                                    res.woken.add(1, ordering: .relaxed)
                                    break
                                }
                                cur = seen
                            }
                            if res.woken.load(ordering: .relaxed) >= total { return }
                            do {
                                _ = try await LWKT.tsleep(on: ch, until: {
                                    res.items.load(ordering: .acquiring) > 0 || res.woken.load(ordering: .relaxed) >= total
                                })
                            } catch { return }
                        }
                    })
                }
                for p in 0..<producers {
                    let c = cpus - producers + p
                    threads.append(LWKTThread.spawn(on: system.cpus[c], name: "producer\(p)") {
                        for i in 0..<perProducer {
                            res.items.add(1, ordering: .acquiringAndReleasing)
                            LWKT.wakeupOne(ch)
                            if i % 64 == 0 { await LWKT.yield() }
                        }
                    })
                }
                while res.woken.load(ordering: .relaxed) < total {
                    try await Task.sleep(for: .milliseconds(1))
                }
                LWKT.wakeup(ch, in: system)
                for t in threads { await t.join() }
                #expect(res.woken.load(ordering: .relaxed) == total)
            }
        }
    }
}
