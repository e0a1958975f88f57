import Testing
import Synchronization
@testable import LWKT

typealias IntMsg = PayloadMessage<Int>

/// The status every test agent returns for a payload; never ``MessageStatus/async``, which
/// would tell the caller that the agent kept the message.
func statusFor(_ payload: Int) -> Int32 {
    let s = Int32(truncatingIfNeeded: payload % 10_000) + 1
    return s >= MessageStatus.async ? s + 1 : s
}

/// A message whose abort hook counts its calls.
final class AbortableMsg: Message, @unchecked Sendable {
    let aborts = Atomic<Int>(0)
    init(replyPort: Port?) { super.init(replyPort: replyPort, options: [.abortable]) }
    override func abortRequested() { aborts.add(1, ordering: .relaxed) }
}

/// Serves a thread port on `cpu`: replies to each request with `statusFor(payload)` until a
/// request with payload -1 arrives (replied with 0).
func startServer(_ system: LWKTSystem, cpu: Int, port: Port) -> LWKTThread {
    LWKTThread.spawn(on: system.cpus[cpu], name: "server\(cpu)") {
        while true {
            guard let m = try? await LWKT.waitPort(port) else { return }
            let p = (m as? IntMsg)?.payload ?? 0
            if p == -1 {
                LWKT.replyMsg(m, error: 0)
                return
            }
            LWKT.replyMsg(m, error: statusFor(p))
        }
    }
}

/// Stops a server started by `startServer`.
func stopServer(_ port: Port, _ thread: LWKTThread) async throws {
    let stop = IntMsg(-1)
    _ = try await LWKT.doMsg(stop, to: port)
    await thread.join()
}

/// Holds a message an asynchronous agent kept.
final class Kept: @unchecked Sendable {
    let list = Mutex<[Message]>([])
    func push(_ m: Message) { list.withLock { $0.append(m) } }
    func pop() -> Message? { list.withLock { $0.isEmpty ? nil : $0.removeFirst() } }
}

/// All the kinds of request port one test can target, with servers where they need them.
struct PortSet {
    var ports: [Port] = []
    var servers: [(Port, LWKTThread)] = []

    init(_ system: LWKTSystem) {
        let n = system.cpuCount
        for c in 0..<n {
            let tp = Port.thread(on: system.cpus[c], name: "thread\(c)")
            servers.append((tp, startServer(system, cpu: c, port: tp)))
            ports.append(tp)
        }
        let spin = Port.spin(name: "spin")
        servers.append((spin, startServer(system, cpu: n - 1, port: spin)))
        ports.append(spin)
        let handler: PortHandler = { m in statusFor((m as? IntMsg)?.payload ?? 0) }
        ports.append(Port.function(name: "function", handler))
        ports.append(Port.serializer(name: "serializer", handler))
        for c in 0..<n {
            ports.append(Port.function(name: "function@\(c)", on: system.cpus[c], handler))
            ports.append(Port.serializer(name: "serializer@\(c)", on: system.cpus[c], handler))
        }
    }

    func stop() async throws {
        for (p, t) in servers { try await stopServer(p, t) }
    }
}

@Suite("Messages and ports", .timeLimit(.minutes(2)))
struct PortTests {
    // MARK: - State transitions and preconditions

    @Test func freshMessageIsDoneAndMisuseIsReported() async throws {
        let m = IntMsg(1)
        #expect(m.flags == [.done])
        #expect(m.isDone)
        let fp = Port.function { _ in 0 }
        #expect(throws: PortError.noReplyPort) { try LWKT.sendMsg(m, to: fp) }
        #expect(throws: PortError.messageNotInFlight) { try LWKT.forwardMsg(m, to: fp) }
        let d = IntMsg(1, options: [.dropable])
        #expect(d.flags == [.done, .dropable])
        await #expect(throws: PortError.dropable) { _ = try await LWKT.waitMsg(d) }
        #expect(throws: PortError.dropable) { _ = try LWKT.dropMsg(m) }
        let reply = Port.replyOnly()
        #expect(throws: PortError.unsupported) { _ = try LWKT.getPort(reply) }
        // A request to a reply-only port fails synchronously.
        #expect(try await LWKT.doMsg(m, to: reply) == MessageStatus.invalid)
        // A message in flight cannot be sent again.
        let kept = Kept()
        let asyncPort = Port.function { m in kept.push(m); return MessageStatus.async }
        #expect(try LWKT.beginDoMsg(m, to: asyncPort) == nil)
        #expect(m.flags == [.sync])
        #expect(throws: PortError.messageInUse) { try LWKT.sendMsg(m, to: fp) }
        await #expect(throws: PortError.messageInUse) { _ = try await LWKT.doMsg(m, to: fp) }
        let k = try #require(kept.pop())
        LWKT.replyMsg(k, error: 5)
        #expect(m.flags == [.done, .reply, .sync])
        #expect(try await LWKT.waitMsg(m) == 5)
    }

    @Test func doMsgCompletesSynchronouslyWithoutQueueing() async throws {
        try await withSystem(cpus: 2) { system in
            let port = Port.function(name: "sync") { m in statusFor((m as? IntMsg)?.payload ?? 0) }
            let reply = Port.spin()
            let m = IntMsg(41, replyPort: reply)
            // Off any CPU and on a CPU.
            #expect(try await LWKT.doMsg(m, to: port) == 42)
            let r = try await system.run(on: 1) { () -> Int32 in
                m.payload = 9
                return try await LWKT.doMsg(m, to: port)
            }
            #expect(r == 10)
            #expect(m.flags == [.done, .reply, .sync])
            #expect(m.error == 10)
            #expect(m.targetPort === port)
            #expect(reply.queuedCount == 0)
            let st = port.statistics
            #expect(st.puts == 2 && st.synchronousCompletions == 2 && st.queued == 0)
            #expect(reply.statistics.replies == 0)
        }
    }

    @Test func sendMsgToSynchronousAgentRepliesOnReplyPort() async throws {
        let port = Port.function { m in statusFor((m as? IntMsg)?.payload ?? 0) }
        let reply = Port.spin(name: "replies")
        let m = IntMsg(6, replyPort: reply)
        try LWKT.sendMsg(m, to: port)
        #expect(m.flags == [.done, .reply, .queued])
        #expect(reply.queuedCount == 1)
        let got = try #require(try LWKT.getPort(reply))
        #expect(got === m)
        #expect(m.flags == [.done, .reply])
        #expect(m.error == 7)
        #expect(try LWKT.getPort(reply) == nil)
        let st = reply.statistics
        #expect(st.replies == 1 && st.queued == 1)
        // A reply that is still queued is pulled off the reply port by waitMsg.
        try LWKT.sendMsg(m, to: port)
        #expect(try await LWKT.waitMsg(m) == 7)
        #expect(reply.queuedCount == 0)
        #expect(m.flags == [.done, .reply])
        let stats: any Codable = reply.statistics
        #expect(stats is PortStatistics)
        #expect(reply.statistics.puts == 0 && reply.statistics.replies == 2)
    }

    @Test func doMsgCompletesAsynchronously() async throws {
        try await withSystem(cpus: 2) { system in
            let kept = Kept()
            let port = Port.function(name: "async") { m in kept.push(m); return MessageStatus.async }
            let reply = Port.spin()
            let m = IntMsg(3, replyPort: reply)
            let replier = LWKTThread.spawn(on: system.cpus[1], name: "replier") {
                while true {
                    if let k = kept.pop() {
                        LWKT.replyMsg(k, error: 77)
                        return
                    }
                    await LWKT.yield()
                    try? await LWKT.sleep(for: .microseconds(100))
                }
            }
            let r = try await system.run(on: 0) { try await LWKT.doMsg(m, to: port) }
            await replier.join()
            #expect(r == 77)
            #expect(m.flags == [.done, .reply, .sync])
            // Synchronous replies are never queued.
            #expect(reply.queuedCount == 0)
            #expect(reply.statistics.replies == 1)
            #expect(port.statistics.synchronousCompletions == 0)
        }
    }

    @Test func threadPortQueuesAndWakesItsOwner() async throws {
        try await withSystem(cpus: 2) { system in
            let port = Port.thread(on: system.cpus[0], name: "owner")
            // Not the owner: no get, no wait.
            #expect(throws: PortError.notOwner) { _ = try LWKT.getPort(port) }
            let got = try await system.run(on: 0) { () -> [Int] in
                var seen: [Int] = []
                let replies = Port.spin()
                let msgs = (0..<3).map { IntMsg($0, replyPort: replies) }
                let sender = LWKTThread.spawn(on: system.cpus[1], name: "sender") {
                    for m in msgs { try? LWKT.sendMsg(m, to: port) }
                }
                for _ in 0..<3 {
                    let m = try await LWKT.waitPort(port)
                    #expect(m.flags.isEmpty)
                    seen.append((m as? IntMsg)?.payload ?? -1)
                    LWKT.replyMsg(m, error: 1)
                }
                await sender.join()
                for m in msgs { #expect(try await LWKT.waitMsg(m) == 1) }
                return seen
            }
            #expect(got == [0, 1, 2])
            #expect(port.statistics.puts == 3 && port.statistics.queued == 3)
            // A second waiter on the same thread port is refused instead of stranded.
            let refused = try await system.run(on: 0) { () -> Bool in
                let first = LWKTThread.spawn(on: system.cpus[0], name: "first-waiter") {
                    _ = try? await LWKT.waitPort(port)
                }
                await LWKT.yield()
                try await waitUntil("first waiter parked", seconds: 10) { port.local.pointee.waiter != nil }
                var refused = false
                do { _ = try await LWKT.waitPort(port) } catch { refused = (error as? PortError) == .notOwner }
                let wake = IntMsg(9)
                _ = try LWKT.beginDoMsg(wake, to: port)
                await first.join()
                return refused
            }
            #expect(refused)
        }
    }

    // MARK: - Cross-CPU, every kind

    @Test(arguments: [2, 4])
    func crossCPUDoMsgAndSendMsgToEveryKind(cpus: Int) async throws {
        try await withWatchdog(seconds: 60, "cross-CPU to every kind") {
            try await withSystem(cpus: cpus) { system in
                let set = PortSet(system)
                let ports = set.ports
                for c in 0..<cpus {
                    let bad = try await system.run(on: c) { () -> Int in
                        var failures = 0
                        // The sender's own thread port receives its asynchronous replies.
                        let mine = try Port.forCurrentCPU(name: "mine")
                        for (i, p) in ports.enumerated() {
                            let m = IntMsg(i * 10 + c, replyPort: mine)
                            if try await LWKT.doMsg(m, to: p) != statusFor(i * 10 + c) { failures += 1 }
                            if !m.flags.isSuperset(of: [.done, .reply]) { failures += 1 }
                            m.payload += 1
                            try LWKT.sendMsg(m, to: p)
                            let r = try await LWKT.waitPort(mine)
                            if r !== m || r.error != statusFor(i * 10 + c + 1) { failures += 1 }
                            if !r.flags.contains(.reply) { failures += 1 }
                        }
                        return failures
                    }
                    #expect(bad == 0, "from cpu\(c)")
                }
                try await set.stop()
            }
        }
    }

    // MARK: - Forwarding, aborts, drops

    @Test func forwardChainEndsAtTheLastPort() async throws {
        try await withWatchdog(seconds: 30, "forward chain") {
            try await withSystem(cpus: 2) { system in
                let last = Port.thread(on: system.cpus[1], name: "last")
                let server = startServer(system, cpu: 1, port: last)
                let middle = Port.function(name: "middle", on: system.cpus[0]) { m in
                    (m as? IntMsg)?.payload += 100
                    do { try LWKT.forwardMsg(m, to: last) } catch { return MessageStatus.invalid }
                    return MessageStatus.async
                }
                let first = Port.serializer(name: "first") { m in
                    (m as? IntMsg)?.payload += 1000
                    do { try LWKT.forwardMsg(m, to: middle) } catch { return MessageStatus.invalid }
                    return MessageStatus.async
                }
                let reply = Port.spin()
                let m = IntMsg(1, replyPort: reply)
                let r = try await system.run(on: 1) { try await LWKT.doMsg(m, to: first) }
                #expect(r == statusFor(1101))
                #expect(m.targetPort === last)
                // sendMsg through the same chain lands on the reply port.
                try LWKT.sendMsg(m, to: first)
                let back = try await LWKT.waitPort(reply)
                #expect(back === m && m.error == statusFor(2201))
                try await stopServer(last, server)
            }
        }
    }

    @Test func abortIsCalledAtMostOnceAndTheMessageIsStillReplied() async throws {
        // Deterministic transitions first.
        let kept = Kept()
        let port = Port.function { m in kept.push(m); return MessageStatus.async }
        let reply = Port.spin()
        let m = AbortableMsg(replyPort: reply)
        #expect(!LWKT.abortMsg(m))           // done: nothing to abort
        try LWKT.sendMsg(m, to: port)
        #expect(LWKT.abortMsg(m))
        #expect(!LWKT.abortMsg(m))           // at most once
        #expect(m.flags.contains(.abortCalled))
        #expect(port.statistics.aborts == 1)
        LWKT.replyMsg(try #require(kept.pop()), error: 4)
        #expect(!LWKT.abortMsg(m))           // replied
        #expect(try await LWKT.waitMsg(m) == 4)
        #expect(m.aborts.load(ordering: .relaxed) == 1)
        // Resending clears the abort state.
        try LWKT.sendMsg(m, to: port)
        #expect(!m.flags.contains(.abortCalled))
        LWKT.replyMsg(try #require(kept.pop()), error: 0)
        _ = try await LWKT.waitMsg(m)

        // Then the race: a server on another CPU replies while the sender aborts.
        try await withWatchdog(seconds: 60, "abort race") {
            try await withSystem(cpus: 2) { system in
                let target = Port.thread(on: system.cpus[1], name: "target")
                let server = startServer(system, cpu: 1, port: target)
                let rounds = 2000
                let (replied, hooks) = try await system.run(on: 0) { () -> (Int, Int) in
                    let mine = try Port.forCurrentCPU()
                    let msg = AbortableMsg(replyPort: mine)
                    var replied = 0
                    var total = 0
                    for i in 0..<rounds {
                        let before = msg.aborts.load(ordering: .relaxed)
                        try LWKT.sendMsg(msg, to: target)
                        if i & 1 == 0 { LWKT.abortMsg(msg) }
                        LWKT.abortMsg(msg)
                        let r = try await LWKT.waitPort(mine)
                        if r === msg && r.flags.contains([.done, .reply]) { replied += 1 }
                        let calls = msg.aborts.load(ordering: .relaxed) - before
                        if calls > 1 { return (-1, calls) }
                        total += calls
                        _ = LWKT.abortMsg(msg)    // after the reply: never runs
                        if msg.aborts.load(ordering: .relaxed) - before != calls { return (-2, 0) }
                    }
                    return (replied, total)
                }
                #expect(replied == rounds)
                #expect(hooks >= 0 && hooks <= rounds)
                try await stopServer(target, server)
            }
        }
    }

    @Test func dropMsgPullsQueuedRequestsOnly() async throws {
        try await withSystem(cpus: 2) { system in
            let spin = Port.spin()
            let reply = Port.spin()
            let d = IntMsg(1, replyPort: reply, options: [.dropable])
            try LWKT.sendMsg(d, to: spin)
            #expect(d.flags == [.queued, .dropable])
            #expect(try LWKT.dropMsg(d) == MessageStatus.ok)
            #expect(d.flags == [.done, .dropable])
            #expect(spin.queuedCount == 0)
            #expect(try LWKT.dropMsg(d) == MessageStatus.noEntry)
            // Once dequeued by the target, and once replied, it cannot be dropped.
            try LWKT.sendMsg(d, to: spin)
            let got = try #require(try LWKT.getPort(spin))
            #expect(try LWKT.dropMsg(got) == MessageStatus.noEntry)
            LWKT.replyMsg(got, error: 3)
            #expect(d.flags == [.done, .reply, .queued, .dropable])
            #expect(try LWKT.dropMsg(d) == MessageStatus.noEntry)
            _ = try LWKT.getPort(reply)
            // Thread ports: only the owner drops.
            let tp = Port.thread(on: system.cpus[1])
            try LWKT.sendMsg(d, to: tp)
            try await waitUntil("queued", seconds: 10) { d.flags.contains(.queued) }
            #expect(throws: PortError.notOwner) { _ = try LWKT.dropMsg(d) }
            let r = try await system.run(on: 1) { try LWKT.dropMsg(d) }
            #expect(r == MessageStatus.ok)
            #expect(d.flags.contains(.done) && tp.queuedCount == 0)
            // Ports without a queue cannot drop.
            let fp = Port.function { _ in MessageStatus.async }
            try LWKT.sendMsg(d, to: fp)
            #expect(throws: PortError.unsupported) { _ = try LWKT.dropMsg(d) }
        }
    }

    // MARK: - Serializer

    @Test(arguments: [2, 8])
    func serializerRunsOneAtATimeInOrder(cpus: Int) async throws {
        try await withWatchdog(seconds: 60, "serializer order") {
            try await withSystem(cpus: cpus) { system in
                let inside = Atomic<Int>(0)
                let overlaps = Atomic<Int>(0)
                let outOfOrder = Atomic<Int>(0)
                let last = Mutex<[Int]>(Array(repeating: -1, count: cpus))
                let ser = Port.serializer(name: "ser") { m in
                    if inside.add(1, ordering: .acquiringAndReleasing).newValue != 1 { overlaps.add(1, ordering: .relaxed) }
                    let p = (m as? IntMsg)?.payload ?? 0
                    let src = p >> 32, seq = p & 0xffff_ffff
                    last.withLock { l in
                        if seq <= l[src] { outOfOrder.add(1, ordering: .relaxed) }
                        l[src] = seq
                    }
                    inside.subtract(1, ordering: .acquiringAndReleasing)
                    return 0
                }
                let per = cpus == 2 ? 20_000 : 5_000
                var threads: [LWKTThread] = []
                for c in 0..<cpus {
                    threads.append(LWKTThread.spawn(on: system.cpus[c], name: "p\(c)") {
                        guard let mine = try? Port.forCurrentCPU() else { return }
                        let a = IntMsg(0, replyPort: mine)
                        let b = IntMsg(0, replyPort: mine)
                        for s in 0..<per {
                            // Alternate synchronous and asynchronous requests, keeping order:
                            // the asynchronous one is waited for before the next request.
                            if s & 1 == 0 {
                                a.payload = c << 32 | s
                                _ = try? await LWKT.doMsg(a, to: ser)
                            } else {
                                b.payload = c << 32 | s
                                try? LWKT.sendMsg(b, to: ser)
                                _ = try? await LWKT.waitMsg(b)
                            }
                            if s % 64 == 0 { await LWKT.yield() }
                        }
                    })
                }
                for t in threads { await t.join() }
                #expect(overlaps.load(ordering: .relaxed) == 0)
                #expect(outOfOrder.load(ordering: .relaxed) == 0)
                #expect(last.withLock { $0 } == Array(repeating: per - 1, count: cpus))
                #expect(ser.statistics.puts == Int64(per * cpus))
            }
        }
    }

    // MARK: - Tokens

    @Test func waitingReleasesTokensAndReacquiresThem() async throws {
        try await withWatchdog(seconds: 30, "tokens across waits") {
            try await withSystem(cpus: 2) { system in
                let token = Token(name: "port-test")
                let target = Port.thread(on: system.cpus[1], name: "needs-token")
                // The server takes the caller's token before replying: without the release,
                // this would never finish.
                let server = LWKTThread.spawn(on: system.cpus[1], name: "token-server") {
                    while let m = try? await LWKT.waitPort(target) {
                        let p = (m as? IntMsg)?.payload ?? 0
                        await token.acquire(.exclusive)
                        try? token.release()
                        LWKT.replyMsg(m, error: p == -1 ? 0 : 5)
                        if p == -1 { return }
                    }
                }
                let ok = try await system.run(on: 0) { () -> Bool in
                    await token.acquire(.exclusive)
                    let m = IntMsg(1)
                    let r = try await LWKT.doMsg(m, to: target)
                    let held = Token.heldByCurrentThread.contains { $0 === token } && token.isHeld
                    // waitPort releases too: the other CPU needs the token to send to us.
                    let mine = try Port.forCurrentCPU()
                    let helper = LWKTThread.spawn(on: system.cpus[1], name: "token-sender") {
                        await token.acquire(.exclusive)
                        let n = IntMsg(2, replyPort: mine)
                        try? LWKT.sendMsg(n, to: Port.function { _ in 0 })
                        try? token.release()
                    }
                    let got = try await LWKT.waitPort(mine)
                    let held2 = Token.heldByCurrentThread.contains { $0 === token } && token.isHeld
                    await helper.join()
                    try token.release()
                    return r == 5 && held && held2 && (got as? IntMsg)?.payload == 2
                }
                #expect(ok)
                try await stopServer(target, server)
            }
        }
    }

    // MARK: - Stress

    @Test(arguments: [2, 8])
    func stressEveryKindFromEveryCPU(cpus: Int) async throws {
        try await withWatchdog(seconds: 90, "ports stress") {
            try await withSystem(cpus: cpus) { system in
                let set = PortSet(system)
                let ports = set.ports
                let rounds = cpus == 2 ? 4000 : 800
                let bad = Atomic<Int>(0)
                let done = Atomic<Int>(0)
                var threads: [LWKTThread] = []
                for c in 0..<cpus {
                    threads.append(LWKTThread.spawn(on: system.cpus[c], name: "client\(c)") {
                        guard let mine = try? Port.forCurrentCPU() else { return }
                        let msgs = (0..<4).map { IntMsg($0, replyPort: mine) }
                        var rng = UInt64(c + 1) &* 0x9E37_79B9_7F4A_7C15
                        for i in 0..<rounds {
                            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17
                            let p = ports[Int(rng % UInt64(ports.count))]
                            // Several asynchronous requests in flight, then a synchronous one.
                            for (k, m) in msgs.enumerated() {
                                m.payload = i * 4 + k
                                do { try LWKT.sendMsg(m, to: p) } catch { bad.add(1, ordering: .relaxed) }
                            }
                            let sync = IntMsg(i)
                            if (try? await LWKT.doMsg(sync, to: p)) != statusFor(i) { bad.add(1, ordering: .relaxed) }
                            var seen = 0
                            while seen < msgs.count {
                                guard let r = try? await LWKT.waitPort(mine) else { bad.add(1, ordering: .relaxed); break }
                                if r.error != statusFor((r as? IntMsg)?.payload ?? -1) { bad.add(1, ordering: .relaxed) }
                                seen += 1
                            }
                        }
                        done.add(1, ordering: .relaxed)
                    })
                }
                for t in threads { await t.join() }
                #expect(done.load(ordering: .relaxed) == cpus)
                #expect(bad.load(ordering: .relaxed) == 0)
                try await set.stop()
                let puts = ports.reduce(Int64(0)) { $0 + $1.statistics.puts }
                #expect(puts >= Int64(rounds * cpus * 5))
            }
        }
    }
}
