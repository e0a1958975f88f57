import Benchmark
import LWKT
import Slab
import NIOCore
import NIOPosix
import Synchronization

/// Counts messages on the receiving CPU; only that CPU writes `count`.
final class Sink: @unchecked Sendable {
    var count = 0
    let seen = Atomic<Int>(0)
    var ctx: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }
}

let sinkIPI: IPIFunction = { arg, n in
    guard let arg else { return }
    Unmanaged<Sink>.fromOpaque(arg)._withUnsafeGuaranteedRef { s in
        s.count &+= 1
        if n != 0 { s.seen.store(s.count, ordering: .releasing) }
    }
}

struct Arg: @unchecked Sendable { let p: UnsafeMutableRawPointer }

nonisolated(unsafe) var sharedSystem: LWKTSystem?

func system() throws -> LWKTSystem {
    if let s = sharedSystem { return s }
    let s = try LWKT.boot(cpus: 2, configuration: .init(idleSpin: .milliseconds(100), warnings: false))
    sharedSystem = s
    return s
}

nonisolated(unsafe) var sharedSlab: SlabAllocator?

/// The benchmark system's slab, kept alive for the whole run (a system holds it weakly).
func benchSlab() throws -> SlabAllocator {
    if let s = sharedSlab { return s }
    let s = SlabAllocator.shared(for: try system())
    sharedSlab = s
    return s
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal, .throughput],
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 200
    )

    // N IPIs from CPU 0 to CPU 1, batched by 64, until all have run. The per-iteration
    // overhead (one LWKT thread to send from) is the same for every N, so equal malloc
    // counts at N = 1,000 and N = 10,000 show that a message allocates nothing.
    for n in [1_000, 10_000] {
        Benchmark("IPI crossbar: \(n) messages cpu0→cpu1 (batched)") { benchmark in
            let sys = try system()
            let sink = Sink()
            let arg = Arg(p: sink.ctx)
            for _ in benchmark.scaledIterations {
                let target = sink.count + n
                try await sys.run(on: 0) {
                    let cpu1 = sys.cpus[1]
                    var sent = 0
                    while sent < n {
                        sys.crossbar.batch {
                            for i in 0..<64 where sent + i < n {
                                cpu1.sendIPI(sinkIPI, arg.p, sent + i == n - 1 ? 1 : 0)
                            }
                        }
                        sent += 64
                    }
                }
                while sink.seen.load(ordering: .acquiring) < target { }
            }
        }
    }

    // The same count of hops with SwiftNIO: EventLoop.execute from another event loop.
    Benchmark("SwiftNIO: 1000 EventLoop.execute loop0→loop1") { benchmark in
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let loops = Array(group.makeIterator())
        let sink = Sink()
        for _ in benchmark.scaledIterations {
            let target = sink.count + 1000
            try await loops[0].submit {
                for i in 0..<1000 {
                    loops[1].execute {
                        sink.count &+= 1
                        if i == 999 { sink.seen.store(sink.count, ordering: .releasing) }
                    }
                }
            }.get()
            while sink.seen.load(ordering: .acquiring) < target { }
        }
        try await group.shutdownGracefully()
    }

    // Same-CPU switches between two LWKT threads (LWKT.yield); N = 1,000 and 10,000 again.
    for n in [1_000, 10_000] {
        Benchmark("LWKT.yield: \(n) same-CPU switches") { benchmark in
            let sys = try system()
            for _ in benchmark.scaledIterations {
                let a = LWKTThread.spawn(on: sys.cpus[0], priority: .user, name: "a") { for _ in 0..<(n / 2) { await LWKT.yield() } }
                let b = LWKTThread.spawn(on: sys.cpus[0], priority: .user, name: "b") { for _ in 0..<(n / 2) { await LWKT.yield() } }
                await a.join()
                await b.join()
            }
        }
    }

    // 1,000 cross-CPU tsleep/wakeup round trips.
    Benchmark("tsleep/wakeup: 1000 cross-CPU round trips") { benchmark in
        let sys = try system()
        final class Flags: @unchecked Sendable { let ping = Atomic<Int>(0); let pong = Atomic<Int>(0) }
        for _ in benchmark.scaledIterations {
            let f = Flags()
            let a = LWKTThread.spawn(on: sys.cpus[0], name: "ping") {
                for i in 0..<1000 {
                    f.ping.store(i + 1, ordering: .releasing)
                    LWKT.wakeup(WaitChannel(f))
                    _ = try? await LWKT.tsleep(on: WaitChannel(sys), until: { f.pong.load(ordering: .acquiring) > i })
                }
            }
            let b = LWKTThread.spawn(on: sys.cpus[1], name: "pong") {
                for i in 0..<1000 {
                    _ = try? await LWKT.tsleep(on: WaitChannel(f), until: { f.ping.load(ordering: .acquiring) > i })
                    f.pong.store(i + 1, ordering: .releasing)
                    LWKT.wakeup(WaitChannel(sys))
                }
            }
            await a.join()
            await b.join()
        }
    }

    // Same-CPU synchronous doMsg to a function port: N = 1,000 and 10,000 requests on one
    // reused message, so equal counts show that a doMsg allocates nothing.
    for n in [1_000, 10_000] {
        Benchmark("doMsg: \(n) same-CPU synchronous requests") { benchmark in
            let sys = try system()
            for _ in benchmark.scaledIterations {
                try await sys.run(on: 0) {
                    let port = LWKTPort.function(name: "bench") { m in
                        Int32(truncatingIfNeeded: unsafeDowncast(m, to: PayloadMessage<Int>.self).payload & 1)
                    }
                    let msg = PayloadMessage<Int>(0)
                    var sum: Int32 = 0
                    for i in 0..<n {
                        msg.payload = i
                        sum &+= (try? await LWKT.doMsg(msg, to: port)) ?? 0
                    }
                    blackHole(sum)
                }
            }
        }
    }

    // The system slab: N = 1,000 and 10,000 allocate+free pairs of 64 B on CPU 0, and N
    // chunks allocated on CPU 0 and freed on CPU 1 (remote frees, batched per zone). The
    // per-iteration overhead (the LWKT threads, the array of pointers) is the same for
    // every N.
    for n in [1_000, 10_000] {
        Benchmark("slab: \(n) alloc+free 64 B on one CPU") { benchmark in
            let sys = try system()
            let slab = try benchSlab()
            for _ in benchmark.scaledIterations {
                try await sys.run(on: 0) {
                    for i in 0..<n {
                        guard let p = slab.allocate(64) else { continue }
                        p.storeBytes(of: UInt8(truncatingIfNeeded: i), as: UInt8.self)
                        slab.free(p)
                    }
                }
            }
        }
        Benchmark("slab: \(n) chunks allocated on cpu0, freed on cpu1") { benchmark in
            let sys = try system()
            let slab = try benchSlab()
            let held = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 10_000)
            defer { held.deallocate() }
            let arg = Arg(p: UnsafeMutableRawPointer(held))
            for _ in benchmark.scaledIterations {
                try await sys.run(on: 0) {
                    let h = arg.p.assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
                    for i in 0..<n { h[i] = slab.allocate(64) }
                }
                try await sys.run(on: 1) {
                    let h = arg.p.assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
                    for i in 0..<n { if let p = h[i] { slab.free(p) } }
                }
            }
        }
    }
}
