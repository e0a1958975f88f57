import CLibellula
import Foundation
import LWKT
import Synchronization

/// An actor pinned to one CPU, the baseline for message round trips.
actor PinnedCounter {
    let cpu: CPU
    var total = 0
    init(cpu: CPU) { self.cpu = cpu }
    nonisolated var unownedExecutor: UnownedSerialExecutor { cpu.serialExecutor.asUnownedSerialExecutor() }
    func add(_ v: Int) -> Int {
        total &+= v
        return total
    }
}

/// A continuation parked for another CPU to resume.
final class ContinuationBox: @unchecked Sendable {
    var continuation: CheckedContinuation<Int, Never>?
}

/// `libellula bench ports`: LWKT messages and ports against direct calls, actor calls on
/// pinned executors and `CheckedContinuation` hand-offs.
enum PortsBench {
    typealias IntMessage = PayloadMessage<Int>

    /// The agent every benchmark port runs: a little arithmetic on the payload.
    static let agent: PortHandler = { m in
        Int32(truncatingIfNeeded: unsafeDowncast(m, to: IntMessage.self).payload & 0x3f)
    }

    @inline(never)
    static func direct(_ m: Message) -> Int32 { agent(m) }

    static let resumeIPI: IPIFunction = { arg, arg2 in
        guard let arg else { return }
        let box = Unmanaged<ContinuationBox>.fromOpaque(arg).takeRetainedValue()
        box.continuation?.resume(returning: arg2)
        box.continuation = nil
    }

    /// Keeps `window` messages in flight from the current CPU to `target`, each reply sent
    /// out again, until `total` replies have come back to `replies`.
    static func sendWindowed(to target: LWKTPort, replies: LWKTPort, window: Int, total: Int) async throws {
        let msgs = (0..<window).map { IntMessage($0, replyPort: replies) }
        for m in msgs { try LWKT.sendMsg(m, to: target) }
        var sent = window
        var got = 0
        while got < total {
            let r = try await LWKT.waitPort(replies)
            got += 1
            if sent < total {
                try LWKT.sendMsg(r, to: target)
                sent += 1
            }
        }
    }

    static func ports(reporter: BenchReporter, quick: Bool) async throws {
        let n = quick ? 200_000 : 2_000_000
        let rt = quick ? 20_000 : 200_000
        let system = try LWKT.boot(cpus: 2, configuration: .init(idleSpin: .milliseconds(5), warnings: false))

        // Same CPU: doMsg that the agent completes in the caller's context. Five
        // repetitions, each timing doMsg, beginDoMsg and the direct call back to back; the
        // goal is judged on the median of the five per-repetition ratios.
        let reps = try await system.run(on: 0) { () -> [(Double, Double, Double)] in
            let port = LWKTPort.function(name: "bench-fn", agent)
            let msg = IntMessage(1)
            var sink: Int32 = 0
            var out: [(Double, Double, Double)] = []
            out.reserveCapacity(5)
            for _ in 0..<5 {
                var t0 = lb_now_ns()
                for i in 0..<n {
                    msg.payload = i
                    sink &+= try await LWKT.doMsg(msg, to: port)
                }
                let a = Double(lb_now_ns() - t0) / Double(n)
                t0 = lb_now_ns()
                for i in 0..<n {
                    msg.payload = i
                    sink &+= try LWKT.beginDoMsg(msg, to: port) ?? 0
                }
                let b = Double(lb_now_ns() - t0) / Double(n)
                t0 = lb_now_ns()
                for i in 0..<n {
                    msg.payload = i
                    sink &+= direct(msg)
                }
                out.append((a, b, Double(lb_now_ns() - t0) / Double(n)))
            }
            if sink == 42 { print("") }
            return out
        }
        func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
        let viaPort = median(reps.map(\.0)), viaBegin = median(reps.map(\.1)), viaDirect = median(reps.map(\.2))
        let ratios = reps.map { $0.0 / $0.2 }
        print("doMsg/direct per repetition: " + ratios.map { String(format: "%.2f", $0) }.joined(separator: " ")
              + "  median \(String(format: "%.2f", median(ratios)))")
        reporter.report("doMsg same CPU, synchronous completion (median of 5)", unit: "ns", value: viaPort,
                        baseline: "direct function call (median of 5)", baselineValue: viaDirect)
        reporter.report("beginDoMsg same CPU, synchronous completion (median of 5)", unit: "ns", value: viaBegin,
                        baseline: "direct function call", baselineValue: viaDirect)

        // Same CPU: actor call on an actor pinned to the caller's CPU.
        let actor0 = PinnedCounter(cpu: system.cpus[0])
        let actorSame = try await system.run(on: 0) { () -> Double in
            let t0 = lb_now_ns()
            var s = 0
            for i in 0..<rt { s &+= await actor0.add(i) }
            if s == 42 { print("") }
            return Double(lb_now_ns() - t0) / Double(rt)
        }
        reporter.report("doMsg same CPU, synchronous completion", unit: "ns", value: viaPort,
                        baseline: "actor call, same CPU (pinned)", baselineValue: actorSame)

        // Cross-CPU round trips: a thread port served on cpu1, a function port pinned to cpu1.
        let served = LWKTPort.thread(on: system.cpus[1], name: "bench-served")
        let server = LWKTThread.spawn(on: system.cpus[1], name: "bench-server") {
            while let m = try? await LWKT.waitPort(served) {
                let p = unsafeDowncast(m, to: IntMessage.self).payload
                LWKT.replyMsg(m, error: p < 0 ? 0 : 1)
                if p < 0 { return }
            }
        }
        let pinned = LWKTPort.function(name: "bench-pinned", on: system.cpus[1], agent)
        let (threadRT, pinnedRT) = try await system.run(on: 0) { () -> (Double, Double) in
            let msg = IntMessage(1)
            var t0 = lb_now_ns()
            for i in 0..<rt {
                msg.payload = i
                _ = try await LWKT.doMsg(msg, to: served)
            }
            let a = Double(lb_now_ns() - t0) / Double(rt)
            t0 = lb_now_ns()
            for i in 0..<rt {
                msg.payload = i
                _ = try await LWKT.doMsg(msg, to: pinned)
            }
            return (a, Double(lb_now_ns() - t0) / Double(rt))
        }
        let actor1 = PinnedCounter(cpu: system.cpus[1])
        let cpu1 = system.cpus[1]
        let (actorOther, contRT) = try await system.run(on: 0) { () -> (Double, Double) in
            var s = 0
            var t0 = lb_now_ns()
            for i in 0..<rt { s &+= await actor1.add(i) }
            let a = Double(lb_now_ns() - t0) / Double(rt)
            t0 = lb_now_ns()
            for i in 0..<rt {
                s &+= await withCheckedContinuation { (c: CheckedContinuation<Int, Never>) in
                    let box = ContinuationBox()
                    box.continuation = c
                    cpu1.sendIPI(resumeIPI, Unmanaged.passRetained(box).toOpaque(), i)
                }
            }
            if s == 42 { print("") }
            return (a, Double(lb_now_ns() - t0) / Double(rt))
        }
        reporter.report("doMsg cpu0→cpu1 round trip (thread port)", unit: "ns", value: threadRT,
                        baseline: "actor call, other CPU (pinned)", baselineValue: actorOther)
        reporter.report("doMsg cpu0→cpu1 round trip (thread port)", unit: "ns", value: threadRT,
                        baseline: "CheckedContinuation hand-off", baselineValue: contRT)
        reporter.report("doMsg cpu0→cpu1 round trip (pinned fn port)", unit: "ns", value: pinnedRT,
                        baseline: "actor call, other CPU (pinned)", baselineValue: actorOther)

        // Throughput: a window of asynchronous sends, replies to the sender's own port.
        let window = 64
        let total = quick ? 200_000 : 2_000_000
        let sendRate = try await system.run(on: 0) { () -> Double in
            let mine = try LWKTPort.forCurrentCPU(name: "bench-replies")
            let t0 = lb_now_ns()
            try await sendWindowed(to: served, replies: mine, window: window, total: total)
            return Double(total) / (Double(lb_now_ns() - t0) / 1e9)
        }
        let actorRate = 1e9 / actorOther
        reporter.report("sendMsg cpu0→cpu1 with replies (window 64)", unit: "msg/s", value: sendRate,
                        baseline: "actor calls, other CPU (sequential)", baselineValue: actorRate)
        reporter.report("sendMsg cpu0→cpu1 with replies (window 64)", unit: "msg/s", value: sendRate,
                        baseline: "CheckedContinuation hand-offs", baselineValue: 1e9 / contRT)

        _ = try await LWKT.doMsg(IntMessage(-1), to: served)
        await server.join()
        _ = try await system.shutdown()
    }
}
