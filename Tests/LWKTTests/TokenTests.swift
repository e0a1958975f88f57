import Testing
import Synchronization
import Foundation
@testable import LWKT

final class Shared: @unchecked Sendable {
    var plain = 0
    let inside = Atomic<Int>(0)
    let maxInside = Atomic<Int>(0)
    let step = Atomic<Int>(0)
    var trace: [String] = []
    let traceLock = Mutex<[String]>([])
}

@Suite("Tokens and Giant")
struct TokenTests {
    @Test func tokensAreReleasedWhileTheHolderSleepsAndRetakenAfter() async throws {
        try await withSystem(cpus: 2) { system in
            let token = Token(name: "t")
            let s = Shared()
            let ch = WaitChannel(s)
            let a = LWKTThread.spawn(on: system.cpus[0], name: "holder") {
                await token.acquire()
                s.step.store(1, ordering: .releasing)
                // Blocks in an LWKT primitive: the token must be released meanwhile.
                _ = try? await LWKT.tsleep(on: ch, timeout: .seconds(30), until: { s.step.load(ordering: .acquiring) == 2 })
                // Back: the token is ours again, exclusively.
                s.traceLock.withLock { $0.append("holder back held=\(token.isHeld) tokens=\(Token.heldByCurrentThread.count)") }
                try? token.release()
            }
            let b = LWKTThread.spawn(on: system.cpus[1], name: "other") {
                while s.step.load(ordering: .acquiring) != 1 { await LWKT.yield() }
                try? await Task.sleep(for: .milliseconds(5))
                await token.acquire()      // succeeds only because the sleeper released it
                s.traceLock.withLock { $0.append("other got token") }
                s.step.store(2, ordering: .releasing)
                try? token.release()
                LWKT.wakeup(ch)
            }
            await a.join()
            await b.join()
            #expect(s.traceLock.withLock { $0 } == ["other got token", "holder back held=true tokens=1"])
            #expect(!token.isHeld)
        }
    }

    @Test func exclusiveNestsAndReleaseOrderIsChecked() async throws {
        try await withSystem(cpus: 1) { system in
            let (ok, misuse) = try await system.run(on: 0) { () -> (Bool, Bool) in
                let a = Token(name: "a"), b = Token(name: "b")
                await a.acquire()
                await a.acquire()      // nested
                await b.acquire(.shared)
                var misuse = false
                do { try a.release() } catch { misuse = true }   // b is innermost
                try b.release()
                try a.release()
                let stillHeld = a.isHeld
                try a.release()
                return (stillHeld && !a.isHeld, misuse)
            }
            #expect(ok)
            #expect(misuse)
        }
    }

    @Test func sharedHoldersRunTogetherExclusiveWaits() async throws {
        try await withSystem(cpus: 2) { system in
            let token = Token(name: "rw")
            let s = Shared()
            // The holder keeps running (no suspension, so the token stays held) while the
            // other CPU tries: a shared hold succeeds there, an exclusive one does not.
            let holder = LWKTThread.spawn(on: system.cpus[0], name: "shared-holder") {
                await token.acquire(.shared)
                s.step.store(1, ordering: .releasing)
                let t0 = ContinuousClock.now
                while s.step.load(ordering: .acquiring) != 2 && ContinuousClock.now - t0 < .seconds(20) { lb_spin_hint() }
                try? token.release()
            }
            let got = try await system.run(on: 1) { () -> Bool in
                while s.step.load(ordering: .acquiring) != 1 { await LWKT.yield() }
                let shared = token.tryAcquire(.shared)
                if shared { try token.release() }
                let excl = token.tryAcquire(.exclusive)
                if excl { try token.release() }
                s.step.store(2, ordering: .releasing)
                return shared && !excl
            }
            await holder.join()
            #expect(got)
            #expect(!token.isHeld)
        }
    }

    @Test(arguments: [2, 8])
    func oppositeOrderAcquisitionNeverDeadlocks(cpus: Int) async throws {
        try await withWatchdog(seconds: 60, "A→B / B→A") {
            try await withSystem(cpus: cpus) { system in
                let a = Token(name: "A"), b = Token(name: "B")
                let s = Shared()
                var threads: [LWKTThread] = []
                for c in 0..<cpus {
                    threads.append(LWKTThread.spawn(on: system.cpus[c], name: "t\(c)") {
                        let (first, second) = c % 2 == 0 ? (a, b) : (b, a)
                        for _ in 0..<300 {
                            await first.acquire()
                            await LWKT.yield()
                            await second.acquire()
                            s.inside.add(1, ordering: .relaxed)
                            try? second.release()
                            try? first.release()
                        }
                    })
                }
                for t in threads { await t.join() }
                #expect(s.inside.load(ordering: .relaxed) == 300 * cpus)
            }
        }
    }

    @Test(arguments: [2, 8])
    func giantCoverageCountsOnlySubsystemsThatAreNotMPSafe(cpus: Int) async throws {
        try await withSystem(cpus: cpus) { system in
            let legacy = Giant.register("test.legacy.\(cpus)", mpSafe: false)
            let modern = Giant.register("test.modern.\(cpus)", mpSafe: true)
            let s = Shared()
            var threads: [LWKTThread] = []
            for c in 0..<cpus {
                threads.append(LWKTThread.spawn(on: system.cpus[c], name: "g\(c)") {
                    for _ in 0..<200 {
                        await legacy.run {
                            let n = s.inside.add(1, ordering: .acquiringAndReleasing).newValue
                            var m = s.maxInside.load(ordering: .relaxed)
                            while n > m {
                                let r = s.maxInside.compareExchange(expected: m, desired: n, ordering: .relaxed)
                                if r.exchanged { break }
                                m = r.original
                            }
                            let v = s.plain
                            await LWKT.yield()    // Giant is released across the yield and retaken
                            s.plain = v + 1
                            s.inside.subtract(1, ordering: .acquiringAndReleasing)
                        }
                        await modern.run { }
                    }
                })
            }
            for t in threads { await t.join() }
            let cov = Giant.coverage().filter { $0.name.hasSuffix(".\(cpus)") }
            let l = cov.first { $0.name.hasPrefix("test.legacy") }
            let m = cov.first { $0.name.hasPrefix("test.modern") }
            #expect(l?.giantAcquisitions == 200 * cpus)
            #expect(l?.mpSafe == false)
            #expect(m?.giantAcquisitions == 0)
            #expect(m?.calls == 200 * cpus)
        }
    }

    @Test(arguments: [2, 8])
    func giantSerialisesCriticalWork(cpus: Int) async throws {
        try await withSystem(cpus: cpus) { system in
            let legacy = Giant.register("test.serial.\(cpus)", mpSafe: false)
            let s = Shared()
            var threads: [LWKTThread] = []
            for c in 0..<cpus {
                threads.append(LWKTThread.spawn(on: system.cpus[c], name: "g\(c)") {
                    for _ in 0..<2_000 {
                        await legacy.run {
                            let n = s.inside.add(1, ordering: .acquiringAndReleasing).newValue
                            if n > 1 { s.maxInside.store(n, ordering: .relaxed) }
                            let v = s.plain
                            for _ in 0..<50 { lb_spin_hint() }
                            s.plain = v + 1
                            s.inside.subtract(1, ordering: .acquiringAndReleasing)
                        }
                    }
                })
            }
            for t in threads { await t.join() }
            #expect(s.maxInside.load(ordering: .relaxed) == 0)
            #expect(s.plain == 2_000 * cpus)
        }
    }
}

@inline(never) func lb_spin_hint() { _ = Int.random(in: 0..<2) }
