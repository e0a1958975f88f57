import Testing
import Synchronization
import CLibellula
@testable import LWKT

/// Context for ordering checks: only the receiving CPU writes `last`/`errors`.
final class OrderLog: @unchecked Sendable {
    var last: [Int]
    var errors = 0
    let received = Atomic<Int>(0)
    init(sources: Int) { last = Array(repeating: -1, count: sources) }
    var ctx: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }
}

let orderIPI: IPIFunction = { arg, arg2 in
    guard let arg else { return }
    let log = Unmanaged<OrderLog>.fromOpaque(arg).takeUnretainedValue()
    let src = arg2 >> 32, seq = arg2 & 0xFFFF_FFFF
    if seq != log.last[src] + 1 { log.errors += 1 }
    log.last[src] = seq
    log.received.add(1, ordering: .relaxed)
}

let countIPI: IPIFunction = { arg, _ in
    guard let arg else { return }
    Unmanaged<Counter>.fromOpaque(arg).takeUnretainedValue().value.add(1, ordering: .relaxed)
}

/// Records whether it ran inside a critical section and on which CPU.
let probeIPI: IPIFunction = { arg, _ in
    guard let arg else { return }
    let c = Unmanaged<Counter>.fromOpaque(arg).takeUnretainedValue()
    c.log.append(CPU.criticalDepth > 0 ? 1 : 0)
    c.log.append(CPU.current?.id ?? -1)
    c.value.add(1, ordering: .relaxed)
}

/// Sends one reply back to the CPU encoded in arg2: IPI functions that send IPIs.
let echoIPI: IPIFunction = { arg, arg2 in
    guard let arg, let me = CPU.current else { return }
    let c = Unmanaged<Counter>.fromOpaque(arg).takeUnretainedValue()
    c.value.add(1, ordering: .relaxed)
    if arg2 >= 0 { me.system.cpus[arg2].sendIPI(countIPI, arg, -1) }
}

func waitUntil(_ what: String, seconds: Double = 20, _ cond: () -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while !cond() {
        if ContinuousClock.now > deadline { throw WatchdogTimeout(what: what) }
        try await Task.sleep(for: .microseconds(200))
    }
}

@Suite("IPI crossbar")
struct IPITests {
    @Test(arguments: [2, 8])
    func fifoPerPairWithManyProducers(cpus: Int) async throws {
        try await withSystem(cpus: cpus) { system in
            let log = OrderLog(sources: cpus)
            let perSource = cpus == 2 ? 200_000 : 40_000
            var threads: [LWKTThread] = []
            for s in 1..<cpus {
                threads.append(LWKTThread.spawn(on: system.cpus[s], name: "producer\(s)") {
                    let target = system.cpus[0]
                    for i in 0..<perSource {
                        target.sendIPI(orderIPI, log.ctx, (s << 32) | i)
                        if i % 4096 == 0 { await LWKT.yield() }
                    }
                })
            }
            for t in threads { await t.join() }
            try await waitUntil("all messages") { log.received.load(ordering: .relaxed) == perSource * (cpus - 1) }
            #expect(log.errors == 0)
            #expect(log.received.load(ordering: .relaxed) == perSource * (cpus - 1))
            for s in 1..<cpus { #expect(system.crossbar.messages(from: s, to: 0) >= perSource) }
        }
    }

    @Test func ringCapacityAndBacklog() async throws {
        // A sender in a batch writes far more than a ring holds: it must stall, publish and
        // wait for the receiver rather than overwrite slots.
        try await withSystem(cpus: 2) { system in
            let counter = Counter()
                let n = IPICrossbar.ringCapacity * 10
            try await system.run(on: 0) {
                system.crossbar.batch {
                    for _ in 0..<n { system.cpus[1].sendIPI(countIPI, counter.ctx, 0) }
                }
            }
            try await waitUntil("delivery") { counter.value.load(ordering: .relaxed) == n }
            #expect(system.crossbar.messages(from: 0, to: 1) == n)
            #expect(system.crossbar.backlog(from: 0, to: 1) == 0)
            #expect(system.cpus[0].counter(.ipiSenderStalls) > 0)
        }
    }

    @Test func activeSendWakesASleepingCPU() async throws {
        // With a one-minute tick, only an explicit wake can deliver in time.
        let system = try LWKT.boot(cpus: 2, configuration: .init(idleSpin: .zero, tick: .seconds(60), warnings: false))
        defer { _ = try? system.shutdownBlocking() }
        let counter = Counter()
        try await waitUntil("cpu1 asleep") { system.cpus[1].signals.pointee.sleeping.load(ordering: .relaxed) == 1 }
        for i in 1...50 {
            system.cpus[1].sendIPI(countIPI, counter.ctx, 0)      // from a thread that is not a CPU
            try await waitUntil("foreign wake \(i)", seconds: 5) { counter.value.load(ordering: .relaxed) == i }
            try await waitUntil("asleep again") { system.cpus[1].signals.pointee.sleeping.load(ordering: .relaxed) == 1 }
        }
        // And from another CPU through the ring.
        let before = counter.value.load(ordering: .relaxed)
        try await system.run(on: 0) { system.cpus[1].sendIPI(countIPI, counter.ctx, 0) }
        try await waitUntil("cpu wake", seconds: 5) { counter.value.load(ordering: .relaxed) == before + 1 }
        #expect(system.cpus[1].counter(.sleeps) > 0)
    }

    @Test func passiveSendNeverWakesButArrivesByTheTick() async throws {
        let system = try LWKT.boot(cpus: 2, configuration: .init(idleSpin: .zero, tick: .milliseconds(20), warnings: false))
        defer { _ = try? system.shutdownBlocking() }
        let counter = Counter()
        try await waitUntil("cpu1 asleep") { system.cpus[1].signals.pointee.sleeping.load(ordering: .relaxed) == 1 }
        let wakesBefore = system.cpus[0].counter(.ipiWakeups)
        try await system.run(on: 0) {
            for _ in 0..<10 { system.cpus[1].sendPassiveIPI(countIPI, counter.ctx, 0) }
        }
        #expect(system.cpus[0].counter(.ipiWakeups) == wakesBefore)
        #expect(system.cpus[0].counter(.ipiSentPassive) == 10)
        try await waitUntil("passive delivery by tick", seconds: 5) { counter.value.load(ordering: .relaxed) == 10 }
    }

    @Test func passiveTurnsActivePastTheLimit() async throws {
        try await withSystem(cpus: 2) { system in
            let counter = Counter()
                try await system.run(on: 0) {
                system.crossbar.batch {
                    for _ in 0..<100 { system.cpus[1].sendPassiveIPI(countIPI, counter.ctx, 0) }
                }
            }
            try await waitUntil("delivery") { counter.value.load(ordering: .relaxed) == 100 }
            #expect(system.cpus[0].counter(.ipiPassivePromoted) > 0)
        }
    }

    @Test func batchedSendsPublishOnce() async throws {
        try await withSystem(cpus: 2) { system in
            let counter = Counter()
                let publishes = try await system.run(on: 0) { () -> Int64 in
                let before = system.cpus[0].counter(.ipiPublishes)
                system.crossbar.batch {
                    for _ in 0..<32 { system.cpus[1].sendIPI(countIPI, counter.ctx, 0) }
                }
                return system.cpus[0].counter(.ipiPublishes) - before
            }
            #expect(publishes == 1)
            try await waitUntil("delivery") { counter.value.load(ordering: .relaxed) == 32 }
        }
    }

    @Test func sendToSelfRunsAtOnceInACriticalSection() async throws {
        try await withSystem(cpus: 2) { system in
            let counter = Counter()
                let ranAtOnce = try await system.run(on: 1) { () -> Bool in
                system.cpus[1].sendIPI(probeIPI, counter.ctx, 0)
                return counter.value.load(ordering: .relaxed) == 1
            }
            #expect(ranAtOnce)
            #expect(counter.log == [1, 1])
        }
    }

    @Test func inboxFromForeignThreadsDeliversAll() async throws {
        try await withSystem(cpus: 2) { system in
            let counter = Counter()
                await withTaskGroup(of: Void.self) { g in
                for _ in 0..<4 {
                    g.addTask { for _ in 0..<5_000 { system.cpus[1].sendIPI(countIPI, counter.ctx, 0) } }
                }
            }
            try await waitUntil("delivery") { counter.value.load(ordering: .relaxed) == 20_000 }
            #expect(system.cpus[1].counter(.inboxReceived) == 20_000)
        }
    }

    @Test(arguments: [2, 8])
    func allToAllFloodOnFullRingsDoesNotDeadlock(cpus: Int) async throws {
        // The run's length depends on the machine's load (8 spinning CPU threads on 2 cores
        // under load 40 took over 60 s): the watchdog fails it when no IPI has been delivered
        // for 30 s (a deadlock), not after a fixed total. The counter outlives the system: if
        // the watchdog fires, IPIs still in the rings must not find it freed.
        let counter = Counter()
        defer { withExtendedLifetime(counter) {} }
        try await withProgressWatchdog(stallSeconds: 30, limitSeconds: 600, "all-to-all flood",
                                       progress: { counter.value.load(ordering: .relaxed) }) {
            try await withSystem(cpus: cpus) { system in
                let perPair = cpus == 2 ? 20_000 : 4_000
                var threads: [LWKTThread] = []
                for s in 0..<cpus {
                    threads.append(LWKTThread.spawn(on: system.cpus[s], name: "flood\(s)") {
                        // Never yields: only the stall path's nested draining can keep the
                        // peers going. Every message sends a reply back (IPIs that send IPIs).
                        for i in 0..<perPair {
                            for t in 0..<cpus where t != s {
                                system.cpus[t].sendIPI(echoIPI, counter.ctx, i & 1 == 0 ? s : -1)
                            }
                        }
                    })
                }
                for t in threads { await t.join() }
                let expected = cpus * (cpus - 1) * perPair + cpus * (cpus - 1) * ((perPair + 1) / 2)
                try await waitUntil("flood delivery", seconds: 600) { counter.value.load(ordering: .relaxed) == expected }
                #expect(counter.value.load(ordering: .relaxed) == expected)
            }
        }
    }

    @Test(arguments: [2, 8])
    func cpusyncRunsOnceOnEveryCPU(cpus: Int) async throws {
        try await withSystem(cpus: cpus) { system in
            let box = HitBox(cpus)
            // From a thread that is not a CPU.
            try system.crossbar.sync(cpus: Array(0..<cpus)) { id in
                box.hits[id].add(1, ordering: .relaxed)
                #expect(CPU.current?.id == id)
                #expect(CPU.criticalDepth > 0)
            }
            for i in 0..<cpus { #expect(box.hits[i].load(ordering: .relaxed) == 1) }
            // From a CPU that is in the set, and concurrently from every CPU at once.
            try await withThrowingTaskGroup(of: Void.self) { g in
                for c in 0..<cpus {
                    g.addTask {
                        try await system.run(on: c) {
                            for _ in 0..<20 {
                                try system.crossbar.sync(cpus: Array(0..<cpus)) { id in box.hits[id].add(1, ordering: .relaxed) }
                            }
                        }
                    }
                }
                try await g.waitForAll()
            }
            for i in 0..<cpus { #expect(box.hits[i].load(ordering: .relaxed) == 1 + 20 * cpus) }
        }
    }

    @Test func pairCountersAndSnapshot() async throws {
        try await withSystem(cpus: 2) { system in
            let counter = Counter()
                try await system.run(on: 0) { for _ in 0..<100 { system.cpus[1].sendIPI(countIPI, counter.ctx, 0) } }
            try await waitUntil("delivery") { counter.value.load(ordering: .relaxed) == 100 }
            let snap = system.snapshot()
            #expect(snap.ipiMatrix[0][1] >= 100)
            #expect(snap.cpus[1].counters["ipiReceived"] ?? 0 >= 100)
            let data = try JSONEncoder().encode(snap)
            let back = try JSONDecoder().decode(LWKTSnapshot.self, from: data)
            #expect(back.cpuCount == 2)
        }
    }
}

final class HitBox: @unchecked Sendable {
    let hits: UnsafeMutablePointer<Atomic<Int>>
    init(_ n: Int) {
        hits = .allocate(capacity: n)
        for i in 0..<n { (hits + i).initialize(to: Atomic<Int>(0)) }
    }
}

import Foundation
