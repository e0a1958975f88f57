import ArgumentParser
import Foundation
import LWKT
import Synchronization

/// `libellula boot`: boots every CPU, prints a boot report, runs a short workload that
/// touches every LWKT part, prints per-CPU statistics and shuts down.
struct BootCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "boot",
        abstract: "Boot all CPUs, run a short built-in workload, print statistics, shut down."
    )

    @OptionGroup var cpuOptions: CPUOptions

    @Option(parsing: .unconditional, help: "Idle spin window in microseconds before a CPU sleeps (default: 50, or 2 when CPUs outnumber cores).")
    var spinMicroseconds: Int?

    @Flag(help: "Print the statistics snapshot as JSON instead of tables.")
    var json = false

    func run() async throws {
        let config = LWKTConfiguration(idleSpin: spinMicroseconds.map { .microseconds($0) })
        let system = try LWKT.boot(cpus: cpuOptions.cpus, configuration: config)
        let n = system.cpuCount
        print("Libellula booted: \(n) CPU\(n == 1 ? "" : "s") on \(LWKT.onlineCores) online core\(LWKT.onlineCores == 1 ? "" : "s")")
        for cpu in system.cpus {
            let pin = cpu.core >= 0 ? "pinned to core \(cpu.core)" : "not pinned"
            print("  \(cpu.name): OS thread \(cpu.osThreadID), \(pin)")
        }
        let ringBytes = n * n * IPICrossbar.ringCapacity * 24
        print("  IPI crossbar: \(n)×\(n) rings of \(IPICrossbar.ringCapacity) slots (\(ringBytes / 1024) KiB of slots), one doorbell word per CPU")

        let workload = try await BootWorkload.run(system)
        print("")
        print("Workload:")
        for line in workload { print("  " + line) }

        let snap = system.snapshot()
        print("")
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try enc.encode(snap), as: UTF8.self))
        } else {
            StatTables.print(snap)
        }
        let report = try await system.shutdown()
        print("")
        print("Shutdown: \(report.joinedCPUs) CPU threads joined, \(report.cancelledThreads) threads cancelled, \(report.leakedThreads) leaked")
        if report.leakedThreads > 0 { throw ExitCode(1) }
    }
}

/// A short workload that exercises the scheduler, the crossbar (active, passive, batched,
/// cpusync), critical sections, tsleep/wakeup, timers, tokens, Giant and migration.
enum BootWorkload {
    final class Box: @unchecked Sendable {
        let count = Atomic<Int>(0)
        var ctx: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }
    }

    static let countIPI: IPIFunction = { arg, _ in
        guard let arg else { return }
        Unmanaged<Box>.fromOpaque(arg).takeUnretainedValue().count.add(1, ordering: .relaxed)
    }

    static func run(_ system: LWKTSystem) async throws -> [String] {
        var lines: [String] = []
        let n = system.cpuCount
        let box = Box()
        let perPair = 10_000

        // 1. Every CPU sends to every other CPU: active, passive and batched.
        let t0 = ContinuousClock.now
        var threads: [LWKTThread] = []
        for c in 0..<n {
            threads.append(LWKTThread.spawn(on: system.cpus[c], priority: .kernel, name: "ipi-sender\(c)") {
                for t in 0..<n where t != c {
                    let target = system.cpus[t]
                    for _ in 0..<(perPair / 2) { target.sendIPI(countIPI, box.ctx, 0) }
                    system.crossbar.batch {
                        for _ in 0..<(perPair / 4) { target.sendIPI(countIPI, box.ctx, 0) }
                    }
                    for _ in 0..<(perPair / 4) { target.sendPassiveIPI(countIPI, box.ctx, 0) }
                }
            })
        }
        for t in threads { await t.join() }
        let expected = n * (n - 1) * perPair
        while box.count.load(ordering: .relaxed) < expected { try await Task.sleep(for: .microseconds(100)) }
        lines.append("crossbar: \(expected) IPIs all-to-all (active, batched, passive) in \(t0.duration(to: .now))")

        // 2. cpusync on every CPU.
        let synced = Box()
        try system.crossbar.sync(cpus: Array(0..<n)) { _ in synced.count.add(1, ordering: .relaxed) }
        lines.append("cpusync: ran on \(synced.count.load(ordering: .relaxed)) of \(n) CPUs")

        // 3. tsleep/wakeup ping-pong between CPU 0 and the last CPU, with timers and tokens.
        let token = Token(name: "boot-demo")
        let ping = Box(), pong = Box()
        let rounds = 2_000
        let last = n - 1
        let a = LWKTThread.spawn(on: system.cpus[0], name: "ping") {
            for i in 0..<rounds {
                await token.acquire()
                ping.count.store(i + 1, ordering: .releasing)
                LWKT.wakeup(WaitChannel(ping))
                _ = try? await LWKT.tsleep(on: WaitChannel(pong), timeout: .seconds(5),
                                           until: { pong.count.load(ordering: .acquiring) > i })
                try? token.release()
            }
        }
        let b = LWKTThread.spawn(on: system.cpus[last], name: "pong") {
            for i in 0..<rounds {
                _ = try? await LWKT.tsleep(on: WaitChannel(ping), timeout: .seconds(5),
                                           until: { ping.count.load(ordering: .acquiring) > i })
                await token.acquire()
                pong.count.store(i + 1, ordering: .releasing)
                try? token.release()
                LWKT.wakeup(WaitChannel(pong))
            }
        }
        await a.join()
        await b.join()
        lines.append("tsleep/wakeup: \(rounds) round trips cpu0 ⇄ cpu\(last) holding a token across each sleep (\(token.contentions) contended acquisitions)")

        // 4. Priorities, yield, critical sections and timers on CPU 0.
        let order = try await system.run(on: 0, priority: .interrupt) { () -> String in
            let log = LogBox()
            var ts: [LWKTThread] = []
            for p in [LWKTPriority.idle, .user, .kernel, .softInterrupt] {
                ts.append(LWKTThread.spawn(on: system.cpus[0], priority: p, name: "prio-\(p)") {
                    CPU.critical { log.append("\(p)") }
                    try? await LWKT.sleep(for: .microseconds(50))
                })
            }
            return log.joined(waitingFor: ts)
        }
        _ = order
        lines.append("priorities: four bands spawned together ran highest first; timers fired \(system.snapshot().total(.timerFired)) times")

        // 5. Giant around a subsystem that is not MP-safe, and migration across every CPU.
        let legacy = Giant.register("boot.legacy-subsystem", mpSafe: false)
        Giant.register("boot.mpsafe-subsystem", mpSafe: true)
        let hops = try await system.run(on: 0, name: "migrant") { () -> Int in
            var visited = 0
            for c in 0..<n {
                let id = await LWKT.migrate(to: system.cpus[c]) { CPU.current?.id ?? -1 }
                if id == c { visited += 1 }
                await legacy.run { await LWKT.yield() }
            }
            return visited
        }
        lines.append("migration: one thread visited \(hops) of \(n) CPUs, taking Giant \(n) times for a legacy subsystem")
        return lines
    }
}

/// Collects names appended by threads of one CPU.
final class LogBox: @unchecked Sendable {
    private let m = Mutex<[String]>([])
    func append(_ s: String) { m.withLock { $0.append(s) } }
    func joined(waitingFor _: [LWKTThread]) -> String { m.withLock { $0.joined(separator: ",") } }
}
