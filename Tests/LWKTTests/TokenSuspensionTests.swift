import Testing
import Synchronization
import CLibellula
@testable import LWKT
import LibellulaTestSupport

/// An actor pinned to a CPU that waits (suspending, bounded) until `flag` is set.
actor TokenProbe {
    let cpu: CPU
    init(cpu: CPU) { self.cpu = cpu }
    nonisolated var unownedExecutor: UnownedSerialExecutor { cpu.serialExecutor.asUnownedSerialExecutor() }
    /// Polls `flag` with short task sleeps for up to `seconds`; returns whether it was set.
    func waitFor(_ flag: Shared, seconds: Double = 10) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while flag.step.load(ordering: .acquiring) != 2 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(1))
        }
        return flag.step.load(ordering: .acquiring) == 2
    }
}

/// An actor pinned to a CPU that takes and releases a token inside its method, on behalf
/// of whichever LWKT thread calls it.
actor TokenTaker {
    let cpu: CPU
    init(cpu: CPU) { self.cpu = cpu }
    nonisolated var unownedExecutor: UnownedSerialExecutor { cpu.serialExecutor.asUnownedSerialExecutor() }
    func take(_ token: Token) async -> Bool {
        await token.acquire()
        let ok = token.isHeld
        try? token.release()
        return ok
    }
}

/// Holds a continuation for another thread to resume.
final class ContinuationBox: @unchecked Sendable {
    let lock = Mutex<CheckedContinuation<Void, Never>?>(nil)
    func park(_ c: CheckedContinuation<Void, Never>) { lock.withLock { $0 = c } }
    func resume() -> Bool {
        guard let c = lock.withLock({ v -> CheckedContinuation<Void, Never>? in defer { v = nil }; return v }) else { return false }
        c.resume()
        return true
    }
}

/// How the holder suspends while it holds the token.
enum Suspension: String, CaseIterable, Sendable { case actorCall, taskSleep, continuation }

@Suite("Tokens are released whenever the holder suspends")
struct TokenSuspensionTests {
    /// The holder takes the token and then suspends by something that is not an LWKT
    /// primitive; a second thread (on the same CPU or the other one) must get the token
    /// meanwhile, and the holder has it back, exclusively, once it runs again.
    @Test(arguments: Suspension.allCases, [0, 1])
    func anySuspensionReleasesTheToken(how: Suspension, otherCPU: Int) async throws {
        try await withWatchdog(seconds: 60, "token across \(how)") {
            try await withSystem(cpus: 2) { system in
                let token = Token(name: "held-across-\(how)")
                let s = Shared()
                let box = ContinuationBox()
                let probe = TokenProbe(cpu: system.cpus[1])
                let holder = LWKTThread.spawn(on: system.cpus[0], name: "holder") {
                    await token.acquire()
                    s.step.store(1, ordering: .releasing)
                    var sawOther = false
                    switch how {
                    case .actorCall:
                        sawOther = await probe.waitFor(s)
                    case .taskSleep:
                        let deadline = ContinuousClock.now + .seconds(10)
                        while s.step.load(ordering: .acquiring) != 2 && ContinuousClock.now < deadline {
                            try? await Task.sleep(for: .milliseconds(1))
                        }
                        sawOther = s.step.load(ordering: .acquiring) == 2
                    case .continuation:
                        await withCheckedContinuation { c in box.park(c) }
                        sawOther = s.step.load(ordering: .acquiring) == 2
                    }
                    // Running again: the token is ours and nobody else's.
                    let mine = token.isHeld && Token.heldByCurrentThread.count == 1 && token.isHeldExclusively
                    s.traceLock.withLock { $0.append("holder sawOther=\(sawOther) mine=\(mine)") }
                    try? token.release()
                }
                let other = LWKTThread.spawn(on: system.cpus[otherCPU], name: "other") {
                    while s.step.load(ordering: .acquiring) != 1 { await LWKT.yield() }
                    await token.acquire()
                    s.traceLock.withLock { $0.append("other took it") }
                    s.step.store(2, ordering: .releasing)
                    try? token.release()
                    if how == .continuation {
                        // Resume the holder (its continuation may not be parked yet).
                        while !box.resume() { await LWKT.yield() }
                    }
                }
                await other.join()
                await holder.join()
                #expect(s.traceLock.withLock { $0 } == ["other took it", "holder sawOther=true mine=true"])
                #expect(!token.isHeld)
            }
        }
    }

    /// A thread holding a token calls an actor on another CPU, which takes a second token
    /// on the thread's behalf. Each hop is a suspension, so the thread's tokens are
    /// released before it can run on the other CPU (never released there by the wrong CPU
    /// while it runs); nothing livelocks, the outer token is the thread's again when it is
    /// back, and both are free at the end.
    @Test func takingATokenInsideAnActorOnAnotherCPU() async throws {
        try await withWatchdog(seconds: 60, "token inside a foreign actor") {
            try await withSystem(cpus: 2) { system in
                let a = Token(name: "outer"), b = Token(name: "inner")
                let taker = TokenTaker(cpu: system.cpus[1])
                let results = try await system.run(on: 0) { () -> [Bool] in
                    var out: [Bool] = []
                    for _ in 0..<50 {
                        await a.acquire()
                        _ = await taker.take(b)
                        out.append(a.isHeldExclusively && Token.heldByCurrentThread.count == 1)
                        try a.release()
                    }
                    return out
                }
                #expect(results.count == 50 && results.allSatisfy { $0 })
                #expect(!a.isHeld && !b.isHeld)
            }
        }
    }

    /// A contended token parks the thread, not the CPU: while thread A waits for a token
    /// that a thread on another CPU holds (spinning, so it stays held), another thread on
    /// A's CPU keeps running.
    @Test func contentionParksTheThreadNotTheCPU() async throws {
        try await withWatchdog(seconds: 60, "contention parks the thread") {
            try await withSystem(cpus: 2) { system in
                let token = Token(name: "contended")
                let s = Shared()
                let holder = LWKTThread.spawn(on: system.cpus[1], name: "holder") {
                    await token.acquire()
                    s.step.store(1, ordering: .releasing)
                    let t0 = ContinuousClock.now
                    while s.inside.load(ordering: .acquiring) < 100 && ContinuousClock.now - t0 < .seconds(20) { lb_cpu_relax() }
                    try? token.release()
                }
                while s.step.load(ordering: .acquiring) != 1 { try await Task.sleep(for: .milliseconds(1)) }
                let waiter = LWKTThread.spawn(on: system.cpus[0], name: "waiter") {
                    await token.acquire()
                    s.maxInside.store(s.inside.load(ordering: .acquiring), ordering: .releasing)
                    try? token.release()
                }
                let runner = LWKTThread.spawn(on: system.cpus[0], name: "runner") {
                    for _ in 0..<100 {
                        s.inside.add(1, ordering: .releasing)
                        await LWKT.yield()
                    }
                }
                await runner.join()
                await waiter.join()
                await holder.join()
                // The runner made all its progress on cpu0 while the waiter waited there.
                #expect(s.maxInside.load(ordering: .acquiring) == 100)
            }
        }
    }

    /// Every CPU runs threads that take 1-3 of 4 tokens in random order and suspend in
    /// every way while holding them; exclusive sections never overlap, and nothing
    /// deadlocks (the watchdog fails the test instead of hanging).
    @Test(arguments: [2, 8])
    func stressWithEverySuspension(cpus: Int) async throws {
        try await withWatchdog(seconds: 120, "token stress at \(cpus) CPUs") {
            try await withSystem(cpus: cpus) { system in
                let tokens = (0..<4).map { Token(name: "s\($0)") }
                let guards = (0..<4).map { _ in Shared() }
                let overlaps = Atomic<Int>(0)
                let done = Atomic<Int>(0)
                let probe = TokenProbe(cpu: system.cpus[cpus - 1])
                let rounds = cpus == 2 ? 300 : 80
                var threads: [LWKTThread] = []
                for c in 0..<cpus {
                    for k in 0..<2 {
                        threads.append(LWKTThread.spawn(on: system.cpus[c], name: "stress\(c).\(k)") {
                            var rng = UInt64(c * 31 + k * 7 + 1)
                            func next(_ n: Int) -> Int {
                                rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17
                                return Int(rng % UInt64(n))
                            }
                            for _ in 0..<rounds {
                                var gen = SeededRandom(seed: rng)
                                var order = Array(0..<4).shuffled(using: &gen)
                                order = Array(order.prefix(1 + next(3)))
                                for i in order { await tokens[i].acquire() }
                                // A critical stretch without suspension: must be exclusive.
                                for i in order {
                                    if guards[i].inside.add(1, ordering: .acquiringAndReleasing).newValue != 1 {
                                        overlaps.add(1, ordering: .relaxed)
                                    }
                                }
                                for i in order { guards[i].plain += 1 }
                                for i in order { guards[i].inside.subtract(1, ordering: .acquiringAndReleasing) }
                                // Suspend while holding them, in one of several ways.
                                switch next(4) {
                                case 0: await LWKT.yield()
                                case 1: try? await Task.sleep(for: .microseconds(50))
                                case 2: _ = await probe.waitFor(guards[0], seconds: 0)
                                default: break
                                }
                                for i in order.reversed() { try? tokens[i].release() }
                            }
                            done.add(1, ordering: .relaxed)
                        })
                    }
                }
                for t in threads { await t.join() }
                #expect(done.load(ordering: .relaxed) == cpus * 2)
                #expect(overlaps.load(ordering: .relaxed) == 0)
                #expect(tokens.allSatisfy { !$0.isHeld })
            }
        }
    }

    /// A plain task (not an LWKT thread) has no token stack: taking a token stops the
    /// process with a clear message rather than risking a deadlock.
    @Test func aPlainTaskCannotTakeAToken() async {
        await #expect(processExitsWith: .failure) {
            let token = Token(name: "plain")
            await token.acquire()
        }
    }
}


extension Token {
    /// Whether the token is held exclusively by someone (read from its word).
    var isHeldExclusively: Bool { word.load(ordering: .acquiring) & Token.exclusiveBit != 0 }
}
