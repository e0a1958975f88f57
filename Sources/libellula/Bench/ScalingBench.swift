import CLibellula
import Foundation
import LWKT
import Slab
import Synchronization

/// `libellula bench SUITE --cpus N`: the scaling variants of the ipi, ports and slab suites.
/// Every one of the N CPUs runs the same work at once, and the rows report the aggregate
/// rate and the rate per CPU, so that runs at 1, 2, 4, 8 and 16 CPUs show how the design
/// scales (ideal: the per-CPU rate stays flat). Each CPU is pinned to its own core, so N
/// should not exceed the cores of the machine for the numbers to mean anything.
///
/// Rules: every workload touches only its own CPU's state, plus the one neighbour it
/// talks to (CPU `(i + 1) % N`); the measured interval runs from one start stamp taken
/// before any CPU starts to the last CPU's finish.
enum ScalingBench {
    /// Runs `body(i)` on every CPU `i` at once and returns the wall time in ns from the
    /// common start to the last CPU's finish.
    static func onEveryCPU(_ system: LWKTSystem, _ body: @escaping @Sendable (Int) async throws -> Void) async throws -> Double {
        let gate = BenchBox()   // its flag counts the CPUs that arrived
        let n = system.cpus.count
        let t0 = lb_now_ns()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<n {
                group.addTask {
                    try await system.run(on: i, name: "scale\(i)") {
                        // Start together: the last CPU to arrive opens the gate.
                        _ = gate.flag.add(1, ordering: .acquiringAndReleasing)
                        while gate.flag.load(ordering: .acquiring) < n { CPU.processPending() }
                        try await body(i)
                    }
                }
            }
            try await group.waitForAll()
        }
        return Double(lb_now_ns() &- t0)
    }

    // MARK: ipi

    /// IPI ring: CPU i sends `n` counting IPIs (batched by 64) to CPU (i+1) % N while it
    /// receives as many from CPU (i-1) % N. Needs N >= 2.
    static func ipi(cpus: Int, reporter: BenchReporter, quick: Bool) async throws {
        guard cpus >= 2 else {
            print("ipi --cpus 1: the IPI ring needs at least 2 CPUs; nothing to measure")
            return
        }
        let n = quick ? 2_000_000 : 10_000_000
        let system = try LWKTBench.boot(cpus, spin: .seconds(1))
        var best = 0.0
        for _ in 0..<3 {
            let boxes = (0..<cpus).map { _ in BenchBox() }
            for b in boxes { b.target = n }
            let args = boxes.map { RawArg($0.ctx) }
            let t0 = lb_now_ns()
            _ = try await onEveryCPU(system) { i in
                let next = (i + 1) % cpus
                let target = system.cpus[next]
                let arg = args[next].pointer
                var k = 0
                while k < n {
                    system.crossbar.batch {
                        for _ in 0..<64 { target.sendIPI(LWKTBench.countIPI, arg, 0) }
                    }
                    k += 64
                }
            }
            // The job ends when its sends are queued; wait for every receiver's last one.
            let deadline = lb_now_ns() &+ 30_000_000_000
            while boxes.contains(where: { $0.done.load(ordering: .acquiring) == 0 }), lb_now_ns() < deadline { usleep(100) }
            guard let last = boxes.map({ $0.done.load(ordering: .acquiring) }).max(),
                  !boxes.contains(where: { $0.done.load(ordering: .acquiring) == 0 }) else {
                try await system.shutdown()
                throw BenchError("ipi --cpus \(cpus): not every IPI arrived within 30 s")
            }
            best = max(best, Double(cpus * n) / (Double(last &- t0) / 1e9))
        }
        try await system.shutdown()
        reporter.report("ipi ring batched(64), \(cpus) CPUs, aggregate", unit: "msg/s", value: best)
        reporter.report("ipi ring batched(64), \(cpus) CPUs, per CPU", unit: "msg/s", value: best / Double(cpus))
    }

    // MARK: ports

    /// Every CPU i runs a client that keeps a window of 64 messages in flight to a thread
    /// port served on CPU (i+1) % N (replies come back to the client's own port), and
    /// then does synchronous doMsg round trips to the same server. At N = 1 client and
    /// server share the CPU.
    static func ports(cpus: Int, reporter: BenchReporter, quick: Bool) async throws {
        typealias IntMessage = PayloadMessage<Int>
        let total = quick ? 200_000 : 2_000_000
        let rt = quick ? 20_000 : 200_000
        let window = 64
        let system = try LWKT.boot(cpus: cpus, configuration: .init(idleSpin: .milliseconds(5), warnings: false))
        var served: [LWKTPort] = []
        var servers: [LWKTThread] = []
        for i in 0..<cpus {
            let port = LWKTPort.thread(on: system.cpus[i], name: "scale-served\(i)")
            served.append(port)
            servers.append(LWKTThread.spawn(on: system.cpus[i], name: "scale-server\(i)") {
                while let m = try? await LWKT.waitPort(port) {
                    let p = unsafeDowncast(m, to: IntMessage.self).payload
                    LWKT.replyMsg(m, error: p < 0 ? 0 : 1)
                    if p < 0 { return }
                }
            })
        }
        let targets = served
        let windowNanos = try await onEveryCPU(system) { i in
            let to = targets[(i + 1) % cpus]
            let mine = try LWKTPort.forCurrentCPU(name: "scale-replies\(i)")
            try await PortsBench.sendWindowed(to: to, replies: mine, window: window, total: total)
        }
        let rtNanos = try await onEveryCPU(system) { i in
            let to = targets[(i + 1) % cpus]
            let msg = IntMessage(1)
            for k in 0..<rt {
                msg.payload = k
                _ = try await LWKT.doMsg(msg, to: to)
            }
        }
        for port in served { _ = try await LWKT.doMsg(IntMessage(-1), to: port) }
        for s in servers { await s.join() }
        try await system.shutdown()
        let windowRate = Double(cpus * total) / (windowNanos / 1e9)
        let rtRate = Double(cpus * rt) / (rtNanos / 1e9)
        reporter.report("ports sendMsg window 64 to next CPU, \(cpus) CPUs, aggregate", unit: "msg/s", value: windowRate)
        reporter.report("ports sendMsg window 64 to next CPU, \(cpus) CPUs, per CPU", unit: "msg/s", value: windowRate / Double(cpus))
        reporter.report("ports doMsg round trips to next CPU, \(cpus) CPUs, aggregate", unit: "msg/s", value: rtRate)
        reporter.report("ports doMsg round trips to next CPU, \(cpus) CPUs, per CPU", unit: "msg/s", value: rtRate / Double(cpus))
    }

    // MARK: slab

    /// 64-byte allocate+free pairs on every CPU at once, and producer/consumer pairs of
    /// CPUs (2k allocates, 2k+1 frees: the remote-free path), for the slab and for each C
    /// allocator that loads; interleaved, three repetitions, median reported.
    static func slab(cpus: Int, reporter: BenchReporter, quick: Bool) async throws {
        let system = try LWKT.boot(cpus: cpus, configuration: .init(warnings: false))
        defer { _ = try? system.shutdownBlocking() }
        let slab = SlabAllocator.shared(for: system, configuration: .init(debug: false))
        let bases = SlabBench.baselines()
        func median(_ v: [Double]) -> Double { v.isEmpty ? 0 : v.sorted()[v.count / 2] }

        let pairs = quick ? 2_000_000 : 10_000_000
        var slabPairs: [Double] = []
        var basePairs = [[Double]](repeating: [], count: bases.count)
        for _ in 0..<3 {
            let ns = try await onEveryCPU(system) { _ in _ = SlabBench.pairLoop(slab, count: pairs) }
            slabPairs.append(Double(cpus * pairs) / ns * 1000)
            for (k, b) in bases.enumerated() {
                let ns = try await onEveryCPU(system) { _ in _ = SlabBench.pairLoop(b, count: pairs) }
                basePairs[k].append(Double(cpus * pairs) / ns * 1000)
            }
        }
        for (k, b) in bases.enumerated() {
            reporter.report("slab alloc+free 64 B on each of \(cpus) CPUs, aggregate (median of 3)", unit: "M pairs/s",
                            value: median(slabPairs), baseline: b.name, baselineValue: median(basePairs[k]))
        }
        reporter.report("slab alloc+free 64 B on each of \(cpus) CPUs, per CPU", unit: "M pairs/s",
                        value: median(slabPairs) / Double(cpus))

        let pairCount = cpus / 2
        guard pairCount >= 1 else {
            print("slab --cpus 1: producer/consumer needs 2 CPUs; skipped")
            return
        }
        let objects = quick ? 2_000_000 : 10_000_000
        func producerConsumerPairs(alloc: @escaping @Sendable () -> UnsafeMutableRawPointer?,
                                   free: @escaping @Sendable (UnsafeMutableRawPointer) -> Void) async throws -> Double {
            let t0 = lb_now_ns()
            try await withThrowingTaskGroup(of: Double.self) { group in
                for k in 0..<pairCount {
                    group.addTask {
                        try await SlabBench.producerConsumer(system: system, objects: objects, alloc: alloc, free: free,
                                                             producerCPU: 2 * k, consumerCPU: 2 * k + 1)
                    }
                }
                try await group.waitForAll()
            }
            return Double(pairCount * objects) / Double(lb_now_ns() &- t0) * 1000
        }
        var slabPC: [Double] = []
        var basePC = [[Double]](repeating: [], count: bases.count)
        for _ in 0..<3 {
            slabPC.append(try await producerConsumerPairs(alloc: { slab.allocate(64) }, free: { slab.free($0) }))
            for (k, b) in bases.enumerated() {
                basePC[k].append(try await producerConsumerPairs(alloc: { b.malloc(64) }, free: { b.free($0) }))
            }
        }
        for (k, b) in bases.enumerated() {
            reporter.report("slab producer/consumer 64 B, \(pairCount) CPU pairs, aggregate (median of 3)", unit: "M objects/s",
                            value: median(slabPC), baseline: b.name, baselineValue: median(basePC[k]))
        }
    }
}
