import CLibellula
import Dispatch
import Foundation
import LWKT
import Synchronization

/// Shared state of one measurement. Fields without atomics are touched by one CPU only.
final class BenchBox: @unchecked Sendable {
    var plain = 0
    var target = 0
    let done = Atomic<UInt64>(0)
    let flag = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
    var pingTarget: CPU?
    var pongTarget: CPU?
    var ctx: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }
}

/// A raw argument carried into a `@Sendable` closure.
struct RawArg: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    init(_ p: UnsafeMutableRawPointer) { pointer = p }
}

/// Percentiles of a sample set in nanoseconds.
struct Percentiles {
    let sorted: [Double]
    init(_ samples: [Double]) { sorted = samples.sorted() }
    func p(_ q: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        return sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]
    }
}

/// A mutex + condition-variable queue between two OS threads: the textbook baseline.
final class CondvarQueue: @unchecked Sendable {
    let cond = NSCondition()
    var items: [Int] = []
    func push(_ v: Int) {
        cond.lock()
        items.append(v)
        cond.signal()
        cond.unlock()
    }
    func popAll(into out: inout [Int]) {
        cond.lock()
        while items.isEmpty { cond.wait() }
        swap(&items, &out)
        cond.unlock()
    }
}

/// Starts an OS thread running `body`; returns a function that joins it.
func startThread(_ body: @escaping @Sendable () -> Void) -> () -> Void {
    let done = DispatchSemaphore(value: 0)
    let t = Thread {
        body()
        done.signal()
    }
    t.stackSize = 1 << 20
    t.start()
    return { done.wait() }
}

enum LWKTBench {
    // MARK: IPI functions used by the benchmarks

    static let countIPI: IPIFunction = { arg, _ in
        guard let arg else { return }
        // No retain: the sender keeps the box alive, and a reference-count update here
        // would bounce the box's header line between the two CPUs.
        Unmanaged<BenchBox>.fromOpaque(arg)._withUnsafeGuaranteedRef { b in
            b.plain &+= 1
            if b.plain == b.target { b.done.store(lb_now_ns(), ordering: .releasing) }
        }
    }

    /// Runs on the receiver: answers the sender with `pongIPI`.
    static let pingIPI: IPIFunction = { arg, _ in
        guard let arg else { return }
        Unmanaged<BenchBox>.fromOpaque(arg)._withUnsafeGuaranteedRef { b in
            b.pongTarget?.sendIPI(pongIPI, arg, 0)
        }
    }

    static let pongIPI: IPIFunction = { arg, _ in
        guard let arg else { return }
        Unmanaged<BenchBox>.fromOpaque(arg)._withUnsafeGuaranteedRef { b in
            _ = b.flag.add(1, ordering: .releasing)
        }
    }

    static func boot(_ cpus: Int, spin: Duration? = nil) throws -> LWKTSystem {
        try LWKT.boot(cpus: cpus, configuration: .init(idleSpin: spin, warnings: false))
    }

    // MARK: ipi

    static func ipi(reporter: BenchReporter, quick: Bool) async throws {
        let n = quick ? 2_000_000 : 20_000_000
        let system = try boot(2, spin: .seconds(1))

        // One-way throughput, batched and unbatched.
        for batched in [true, false] {
            var best = 0.0
            for _ in 0..<3 {
                let box = BenchBox()
                box.target = n
                let t0 = lb_now_ns()
                let ctx = RawArg(box.ctx)
                try await system.run(on: 0) {
                    let target = system.cpus[1]
                    let arg = ctx.pointer
                    if batched {
                        var i = 0
                        while i < n {
                            system.crossbar.batch {
                                for _ in 0..<64 { target.sendIPI(countIPI, arg, 0) }
                            }
                            i += 64
                        }
                    } else {
                        for _ in 0..<n { target.sendIPI(countIPI, arg, 0) }
                    }
                }
                while box.done.load(ordering: .acquiring) == 0 { usleep(100) }
                let rate = Double(n) / (Double(box.done.load(ordering: .acquiring) &- t0) / 1e9)
                best = max(best, rate)
            }
            let floor = rawRingOneWay(n: n, publishEvery: batched ? 64 : 1)
            reporter.report("ipi one-way \(batched ? "batched(64)" : "unbatched") cpu0→cpu1", unit: "msg/s", value: best,
                            baseline: "raw SPSC ring floor (pinned threads, no dispatch)", baselineValue: floor)
            let dq = dispatchOneWay(quick ? 200_000 : 2_000_000)
            reporter.report("ipi one-way \(batched ? "batched(64)" : "unbatched") cpu0→cpu1", unit: "msg/s",
                            value: best, baseline: "DispatchQueue.async", baselineValue: dq)
            if !batched {
                let cv = condvarOneWay(quick ? 200_000 : 2_000_000)
                reporter.report("ipi one-way unbatched cpu0→cpu1", unit: "msg/s", value: best,
                                baseline: "mutex+condvar queue", baselineValue: cv)
            }
        }

        // Round trip, receiver polling (spinning idle).
        let samples = quick ? 20_000 : 200_000
        let polled = try await roundTrips(system, samples: samples, gapNanos: 0)
        let dqPolled = dispatchRoundTrip(samples: quick ? 5_000 : 50_000)
        let cvRT = condvarRoundTrip(samples: quick ? 2_000 : 20_000)
        reporter.report("ipi round trip p50, receiver polling", unit: "ns", value: polled.p(0.5),
                        baseline: "DispatchQueue.async (sender spinning) p50", baselineValue: dqPolled.p(0.5))
        reporter.report("ipi round trip p99, receiver polling", unit: "ns", value: polled.p(0.99),
                        baseline: "DispatchQueue.async (sender spinning) p99", baselineValue: dqPolled.p(0.99))
        reporter.report("ipi round trip p50, receiver polling", unit: "ns", value: polled.p(0.5),
                        baseline: "mutex+condvar ping-pong p50", baselineValue: cvRT.p(0.5))

        // Round trip while the receiver runs a CPU-bound job loop (5 µs jobs).
        let busyBox = BenchBox()
        var busy: [LWKTThread] = []
        for k in 0..<2 {
            busy.append(LWKTThread.spawn(on: system.cpus[1], priority: .user, name: "busy\(k)") {
                while !busyBox.stop.load(ordering: .relaxed) {
                    let t0 = lb_now_ns()
                    while lb_now_ns() &- t0 < 5_000 { lb_cpu_relax() }
                    await LWKT.yield()
                }
            })
        }
        let busyRT = try await roundTrips(system, samples: quick ? 5_000 : 50_000, gapNanos: 1_000)
        busyBox.stop.store(true, ordering: .relaxed)
        for t in busy { await t.join() }
        let dqBusy = dispatchBusyRoundTrip(samples: quick ? 2_000 : 20_000)
        reporter.report("ipi round trip p50, receiver busy (5µs jobs)", unit: "ns", value: busyRT.p(0.5),
                        baseline: "DispatchQueue busy serial queue p50", baselineValue: dqBusy.p(0.5))
        reporter.report("ipi round trip p99, receiver busy (5µs jobs)", unit: "ns", value: busyRT.p(0.99),
                        baseline: "DispatchQueue busy serial queue p99", baselineValue: dqBusy.p(0.99))

        // Empty-poll cost at 2 CPUs (this system) and at 8 CPUs.
        let poll2 = try await emptyPoll(system, iterations: quick ? 1_000_000 : 10_000_000)
        try await system.shutdown()

        // Round trip with the receiver asleep (no spinning: every message wakes it).
        // A one-minute tick: only the wake protocol can deliver in time.
        let sleepy = try LWKT.boot(cpus: 2, configuration: .init(idleSpin: .zero, tick: .seconds(60), warnings: false))
        let asleep = try await roundTrips(sleepy, samples: quick ? 500 : 5_000, gapNanos: 300_000)
        try await sleepy.shutdown()
        reporter.report("ipi round trip p50, receiver asleep", unit: "ns", value: asleep.p(0.5),
                        baseline: "mutex+condvar ping-pong p50", baselineValue: cvRT.p(0.5))
        reporter.report("ipi round trip p99, receiver asleep", unit: "ns", value: asleep.p(0.99),
                        baseline: "mutex+condvar ping-pong p99", baselineValue: cvRT.p(0.99))

        let eight = try LWKT.boot(cpus: 8, configuration: .init(idleSpin: .microseconds(5), warnings: false))
        let poll8 = try await emptyPoll(eight, iterations: quick ? 1_000_000 : 10_000_000)
        try await eight.shutdown()
        reporter.report("empty poll (doorbell) at 2 CPUs", unit: "ns", value: poll2)
        reporter.report("empty poll (doorbell) at 8 CPUs", unit: "ns", value: poll8,
                        baseline: "empty poll at 2 CPUs", baselineValue: poll2)

        // CPU use of an idle runtime after the spin window.
        let idle = try boot(2)
        try await Task.sleep(for: .milliseconds(300))
        let r0 = cpuSeconds()
        let w0 = lb_now_ns()
        try await Task.sleep(for: .seconds(quick ? 1 : 3))
        let used = cpuSeconds() - r0
        let wall = Double(lb_now_ns() - w0) / 1e9
        try await idle.shutdown()
        reporter.report("idle runtime CPU use per CPU (after spin window)", unit: "%",
                        value: 100 * used / wall / 2)
    }

    /// Round trips from CPU 0 to CPU 1 and back through the crossbar; CPU 0 waits by
    /// polling its own rings (a preemption point).
    static func roundTrips(_ system: LWKTSystem, samples: Int, gapNanos: UInt64) async throws -> Percentiles {
        let box = BenchBox()
        box.pongTarget = system.cpus[0]
        let ctx = RawArg(box.ctx)
        let result = try await system.run(on: 0) { () -> [Double] in
            let arg = ctx.pointer
            var out = [Double]()
            out.reserveCapacity(samples)
            let target = system.cpus[1]
            for i in 0..<samples {
                if gapNanos > 0 {
                    let g = lb_now_ns()
                    while lb_now_ns() &- g < gapNanos { CPU.processPending() }
                }
                let t0 = lb_now_ns()
                target.sendIPI(pingIPI, arg, 0)
                while box.flag.load(ordering: .acquiring) == i { CPU.processPending() }
                out.append(Double(lb_now_ns() &- t0))
            }
            return out
        }
        return Percentiles(result)
    }

    /// The hardware floor of this machine: a bare single-producer single-consumer ring of
    /// 24-byte slots between two pinned OS threads, publishing every `publishEvery` items,
    /// with no function call, doorbell or wakeup.
    static func rawRingOneWay(n: Int, publishEvery: Int) -> Double {
        final class Ring: @unchecked Sendable {
            let slots = UnsafeMutablePointer<(Int, Int, Int)>.allocate(capacity: 256)
            let head = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 32)
            let tail = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 32)
            let done = Atomic<UInt64>(0)
            init() {
                (head + 0).initialize(to: Atomic(0))
                (tail + 0).initialize(to: Atomic(0))
            }
        }
        let ring = Ring()
        let join = startThread {
            _ = lb_pin_self(1)
            var r = 0
            var sum = 0
            while r < n {
                let w = ring.head[0].load(ordering: .acquiring)
                while r < w {
                    sum &+= ring.slots[r & 255].0
                    r += 1
                }
                ring.tail[0].store(r, ordering: .releasing)
            }
            ring.done.store(lb_now_ns() &+ UInt64(sum & 1) &* 0, ordering: .releasing)
        }
        let producer = startThread {
            _ = lb_pin_self(0)
            var w = 0
            var cachedR = 0
            while w < n {
                while w - cachedR >= 192 { cachedR = ring.tail[0].load(ordering: .acquiring) }
                ring.slots[w & 255] = (w, w, w)
                w += 1
                if w % publishEvery == 0 || w == n { ring.head[0].store(w, ordering: .releasing) }
            }
        }
        let t0 = lb_now_ns()
        producer()
        join()
        return Double(n) / (Double(ring.done.load(ordering: .acquiring) &- t0) / 1e9)
    }

    static func emptyPoll(_ system: LWKTSystem, iterations: Int) async throws -> Double {
        try await system.run(on: 0) { () -> Double in
            let t0 = lb_now_ns()
            for _ in 0..<iterations { CPU.processPending() }
            return Double(lb_now_ns() &- t0) / Double(iterations)
        }
    }

    static func dispatchOneWay(_ n: Int) -> Double {
        let q = DispatchQueue(label: "bench.oneway")
        let box = BenchBox()
        box.target = n
        let t0 = lb_now_ns()
        for _ in 0..<n {
            q.async {
                box.plain &+= 1
                if box.plain == box.target { box.done.store(lb_now_ns(), ordering: .releasing) }
            }
        }
        while box.done.load(ordering: .acquiring) == 0 { usleep(100) }
        return Double(n) / (Double(box.done.load(ordering: .acquiring) &- t0) / 1e9)
    }

    static func condvarOneWay(_ n: Int) -> Double {
        let q = CondvarQueue()
        let box = BenchBox()
        let join = startThread {
            var batch: [Int] = []
            var got = 0
            while got < n {
                q.popAll(into: &batch)
                got += batch.count
                batch.removeAll(keepingCapacity: true)
            }
            box.done.store(lb_now_ns(), ordering: .releasing)
        }
        let t0 = lb_now_ns()
        for i in 0..<n { q.push(i) }
        join()
        return Double(n) / (Double(box.done.load(ordering: .acquiring) &- t0) / 1e9)
    }

    static func dispatchRoundTrip(samples: Int) -> Percentiles {
        let q = DispatchQueue(label: "bench.rt")
        let box = BenchBox()
        var out = [Double]()
        out.reserveCapacity(samples)
        for i in 0..<samples {
            let t0 = lb_now_ns()
            q.async { box.flag.store(i + 1, ordering: .releasing) }
            while box.flag.load(ordering: .acquiring) != i + 1 { lb_cpu_relax() }
            out.append(Double(lb_now_ns() &- t0))
        }
        return Percentiles(out)
    }

    static func dispatchBusyRoundTrip(samples: Int) -> Percentiles {
        let q = DispatchQueue(label: "bench.busy")
        let box = BenchBox()
        @Sendable func work() {
            if box.stop.load(ordering: .relaxed) { return }
            let t0 = lb_now_ns()
            while lb_now_ns() &- t0 < 5_000 { lb_cpu_relax() }
            q.async(execute: work)
        }
        q.async(execute: work)
        q.async(execute: work)
        var out = [Double]()
        for i in 0..<samples {
            let g = lb_now_ns()
            while lb_now_ns() &- g < 1_000 { lb_cpu_relax() }
            let t0 = lb_now_ns()
            q.async { box.flag.store(i + 1, ordering: .releasing) }
            while box.flag.load(ordering: .acquiring) != i + 1 { lb_cpu_relax() }
            out.append(Double(lb_now_ns() &- t0))
        }
        box.stop.store(true, ordering: .relaxed)
        q.sync {}
        return Percentiles(out)
    }

    static func condvarRoundTrip(samples: Int) -> Percentiles {
        let ping = CondvarQueue(), pong = CondvarQueue()
        let join = startThread {
            var batch: [Int] = []
            var got = 0
            while got < samples {
                ping.popAll(into: &batch)
                for v in batch { pong.push(v) }
                got += batch.count
                batch.removeAll(keepingCapacity: true)
            }
        }
        var out = [Double]()
        var batch: [Int] = []
        for i in 0..<samples {
            let t0 = lb_now_ns()
            ping.push(i)
            pong.popAll(into: &batch)
            batch.removeAll(keepingCapacity: true)
            out.append(Double(lb_now_ns() &- t0))
        }
        join()
        return Percentiles(out)
    }

    static func cpuSeconds() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6
            + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
    }

    // MARK: wake

    /// Cross-CPU task wake: two LWKT threads on different CPUs ping-pong with
    /// tsleep/wakeup; each hop is one wake of a thread on the other CPU.
    static func wake(reporter: BenchReporter, quick: Bool) async throws {
        let rounds = quick ? 20_000 : 200_000
        for (label, spin) in [("spinning", Duration?.none), ("asleep", Duration?.some(.zero))] {
            let r = label == "asleep" ? rounds / 20 : rounds
            let system = try boot(2, spin: spin)
            let ping = BenchBox(), pong = BenchBox()
            let t0 = lb_now_ns()
            let a = LWKTThread.spawn(on: system.cpus[0], name: "ping") {
                for i in 0..<r {
                    ping.flag.store(i + 1, ordering: .releasing)
                    LWKT.wakeup(WaitChannel(ping))
                    _ = try? await LWKT.tsleep(on: WaitChannel(pong), until: { pong.flag.load(ordering: .acquiring) > i })
                }
            }
            let b = LWKTThread.spawn(on: system.cpus[1], name: "pong") {
                for i in 0..<r {
                    _ = try? await LWKT.tsleep(on: WaitChannel(ping), until: { ping.flag.load(ordering: .acquiring) > i })
                    pong.flag.store(i + 1, ordering: .releasing)
                    LWKT.wakeup(WaitChannel(pong))
                }
            }
            await a.join()
            await b.join()
            let perHop = Double(lb_now_ns() &- t0) / Double(2 * r)
            try await system.shutdown()
            let base = label == "asleep" ? semaphorePingPong(r) : continuationPingPong(quick ? 20_000 : 100_000)
            reporter.report("cross-CPU wake (tsleep/wakeup), CPUs \(label)", unit: "ns/wake", value: perHop,
                            baseline: label == "asleep" ? "DispatchSemaphore threads" : "CheckedContinuation tasks (global executor)",
                            baselineValue: base)
        }
    }

    static func semaphorePingPong(_ rounds: Int) -> Double {
        let a = DispatchSemaphore(value: 0), b = DispatchSemaphore(value: 0)
        let join = startThread {
            for _ in 0..<rounds {
                a.wait()
                b.signal()
            }
        }
        let t0 = lb_now_ns()
        for _ in 0..<rounds {
            a.signal()
            b.wait()
        }
        join()
        return Double(lb_now_ns() &- t0) / Double(2 * rounds)
    }

    /// Two tasks on the default executor hand a continuation back and forth.
    static func continuationPingPong(_ rounds: Int) -> Double {
        final class Slot: @unchecked Sendable {
            let m = Mutex<(CheckedContinuation<Void, Never>?, Int)>((nil, 0))
            func wait() async {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let ready: Bool = m.withLock { s in
                        if s.1 > 0 { s.1 -= 1; return true }
                        s.0 = c
                        return false
                    }
                    if ready { c.resume() }
                }
            }
            func signal() {
                let c: CheckedContinuation<Void, Never>? = m.withLock { s in
                    if let c = s.0 { s.0 = nil; return c }
                    s.1 += 1
                    return nil
                }
                c?.resume()
            }
        }
        let a = Slot(), b = Slot()
        let done = DispatchSemaphore(value: 0)
        let t0 = lb_now_ns()
        Task.detached {
            for _ in 0..<rounds {
                await a.wait()
                b.signal()
            }
        }
        Task.detached {
            for _ in 0..<rounds {
                a.signal()
                await b.wait()
            }
            done.signal()
        }
        done.wait()
        return Double(lb_now_ns() &- t0) / Double(2 * rounds)
    }

    // MARK: spawn

    static func spawn(reporter: BenchReporter, quick: Bool) async throws {
        let n = quick ? 20_000 : 200_000
        let system = try boot(2)
        let perSpawn = try await system.run(on: 0) { () -> Double in
            let cpu = system.cpus[0]
            let t0 = lb_now_ns()
            for _ in 0..<n {
                let t = LWKTThread.spawn(on: cpu, priority: .kernel, name: "child") {}
                await t.join()
            }
            return Double(lb_now_ns() &- t0) / Double(n)
        }
        let rawTask = try await system.run(on: 0) { () -> Double in
            let ex = system.cpus[0].taskExecutor
            let t0 = lb_now_ns()
            for _ in 0..<n { _ = await Task(executorPreference: ex) { 1 }.value }
            return Double(lb_now_ns() &- t0) / Double(n)
        }
        try await system.shutdown()
        let global = await Task.detached { () -> Double in
            let t0 = lb_now_ns()
            for _ in 0..<n { _ = await Task { 1 }.value }
            return Double(lb_now_ns() &- t0) / Double(n)
        }.value
        let dq = DispatchQueue(label: "bench.spawn")
        let sem = DispatchSemaphore(value: 0)
        let t0 = lb_now_ns()
        for _ in 0..<n {
            dq.async { sem.signal() }
            sem.wait()
        }
        let dispatch = Double(lb_now_ns() &- t0) / Double(n)
        reporter.report("LWKT thread spawn+join on its CPU", unit: "ns", value: perSpawn,
                        baseline: "Task{}.value (global executor)", baselineValue: global)
        reporter.report("LWKT thread spawn+join on its CPU", unit: "ns", value: perSpawn,
                        baseline: "DispatchQueue.async + semaphore", baselineValue: dispatch)
        reporter.report("Task(executorPreference: cpu) spawn+value", unit: "ns", value: rawTask,
                        baseline: "Task{}.value (global executor)", baselineValue: global)
    }

    // MARK: switch

    static func switchSuite(reporter: BenchReporter, quick: Bool) async throws {
        let n = quick ? 200_000 : 2_000_000
        let system = try boot(2)
        let cpu = system.cpus[0]
        let t0 = lb_now_ns()
        let threads = (0..<2).map { k in
            LWKTThread.spawn(on: cpu, priority: .user, name: "switch\(k)") {
                for _ in 0..<n { await LWKT.yield() }
            }
        }
        for t in threads { await t.join() }
        let perSwitch = Double(lb_now_ns() &- t0) / Double(2 * n)
        try await system.shutdown()

        let tasks = await Task.detached { () -> Double in
            let s0 = lb_now_ns()
            await withTaskGroup(of: Void.self) { g in
                for _ in 0..<2 { g.addTask { for _ in 0..<n { await Task.yield() } } }
            }
            return Double(lb_now_ns() &- s0) / Double(2 * n)
        }.value
        let q = DispatchQueue(label: "bench.switch")
        let box = BenchBox()
        box.target = 2 * n
        @Sendable func hop() {
            box.plain &+= 1
            if box.plain == box.target { box.done.store(lb_now_ns(), ordering: .releasing); return }
            q.async(execute: hop)
        }
        let d0 = lb_now_ns()
        q.async(execute: hop)
        while box.done.load(ordering: .acquiring) == 0 { usleep(100) }
        let dispatch = Double(box.done.load(ordering: .acquiring) &- d0) / Double(2 * n)
        reporter.report("same-CPU switch (LWKT.yield, 2 threads)", unit: "ns", value: perSwitch,
                        baseline: "Task.yield (global executor)", baselineValue: tasks)
        reporter.report("same-CPU switch (LWKT.yield, 2 threads)", unit: "ns", value: perSwitch,
                        baseline: "DispatchQueue.async self-hop", baselineValue: dispatch)
    }
}
