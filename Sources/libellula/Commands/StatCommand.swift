import ArgumentParser
import FUSE
import Foundation
import Services
import VFS

/// `libellula stat`: fetches a running server's `/_stats.json` and prints it as tables.
struct StatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stat",
        abstract: "Print a running `libellula serve`'s statistics as terminal tables."
    )

    @Option(help: "The server, http://ADDR:PORT.")
    var url = "http://127.0.0.1:8080"

    @Flag(help: "Print the raw JSON instead of tables.")
    var json = false

    @Flag(help: "Keep a top-like view on screen: rates since the last sample, per-CPU bars, latency, memcached.")
    var watch = false

    @Option(help: "Seconds between samples with --watch. (default: 2)")
    var interval: Double = 2

    @Option(help: "With --watch, stop after this many screens (default: until interrupted).")
    var iterations: Int?

    func validate() throws {
        if interval < 0.1 || interval > 3600 { throw ValidationError("--interval wants 0.1 to 3600 seconds, got \(interval)") }
        if let n = iterations, n < 1 { throw ValidationError("--iterations wants 1 or more, got \(n)") }
    }

    func run() async throws {
        if watch {
            try await StatWatch(url: url, interval: interval, iterations: iterations).run()
            return
        }
        let body: [UInt8]
        do { body = try HTTPFetch.get(url, path: "/_stats.json") } catch {
            if case .badURL = error { throw ValidationError("--url wants http://ADDR:PORT, got '\(url)'") }
            var status = ExitStatus.unavailable
            if case .connect(_, let e) = error { status = ExitStatus.forErrno(e) }
            throw runtimeFailure(status, "cannot read statistics from \(url): \(error)")
        }
        if json {
            print(String(decoding: body, as: UTF8.self))
            return
        }
        let stats = try ServerStatistics.decoder().decode(ServerStatistics.self, from: Data(body))
        print("libellula at \(stats.address): \(stats.lwkt.cpuCount) CPUs, up \(stats.lwkt.uptimeNanos / 1_000_000_000) s, \(stats.threadCount) LWKT threads")
        print("")
        StatTables.print(stats.lwkt)
        if let depth = stats.rates?.readyDepth {
            let largest = stats.rates?.readyDepthMax ?? []
            print("ready-queue depth     " + depth.map { String(format: "%.1f", $0).leftPad(12) }.joined() + "   (jobs waiting, mean over the last second)")
            print("ready-queue largest   " + largest.map { String(Int($0)).leftPad(12) }.joined())
        }
        print("")
        print("HTTP per CPU")
        let httpRows: [(String, (HTTPCPUStatistics) -> Int)] = [
            ("connections accepted", { $0.connectionsAccepted }), ("connections open", { $0.connectionsOpen }),
            ("rejected (503)", { $0.connectionsRejected }), ("timeouts", { $0.timeouts }),
            ("requests", { $0.requests }), ("2xx", { $0.responses2xx }), ("3xx", { $0.responses3xx }),
            ("4xx", { $0.responses4xx }), ("5xx", { $0.responses5xx }), ("bytes sent", { $0.bytesSent }),
        ]
        Self.table(columns: stats.http.map { "cpu\($0.cpu)" }, rows: httpRows.map { (l, f) in (l, stats.http.map(f)) })
        print("")
        print("Slab per CPU")
        Self.table(columns: stats.slab.cpus.map { "cpu\($0.cpu)" }, rows: [
            ("zones held", stats.slab.cpus.map { $0.zonesHeld }),
            ("free zones cached", stats.slab.cpus.map { $0.freeZonesCached }),
            ("zones from region", stats.slab.cpus.map { $0.zonesFromRegion }),
            ("remote frees sent", stats.slab.cpus.map { $0.remoteFreesSent }),
        ])
        for t in stats.slab.types where t.allocations > 0 {
            print("  type \(t.name.padding(toLength: 20, withPad: " ", startingAt: 0)) in use \(t.inUse) (\(t.bytesInUse) B), allocations \(t.allocations), frees \(t.frees)")
        }
        print("")
        let n = stats.namecache
        print("Namecache: hit rate \(String(format: "%.1f", n.hitRate * 100)) % (hits \(n.hits), negative hits \(n.negativeHits), misses \(n.misses)), \(n.records) records, lock-free lookups \(n.fastLookups), locked \(n.slowLookups)")
        for (name, perCPU) in (stats.lwkt.sections ?? [:]).sorted(by: { $0.key < $1.key }) {
            let rows = ModuleCounters.rows(perCPU)
            if rows.isEmpty { continue }
            print("")
            print("Counters: \(name)")
            Self.table(columns: perCPU.indices.map { "cpu\($0)" }, rows: rows.map { ($0.name, $0.values.map { Int($0) }) })
        }
        if let io = stats.hostIO {
            print("")
            print("Host I/O pool: \(io.threads) threads, \(io.submitted) calls sent, \(io.completed) answered, \(io.inline) inline, queue depth \(io.queueDepth) (largest \(io.maxQueueDepth)), latency p50 \(StatWatch.ms(Int64(io.p50LatencyNanos))) p99 \(StatWatch.ms(Int64(io.p99LatencyNanos)))")
        }
        if let f = stats.fuse {
            print("")
            Self.printFUSE(f)
        }
        if let mc = stats.memcached {
            print("")
            print("memcached per CPU (owner)")
            let keys = ["curr_items", "bytes", "curr_connections", "cmd_get", "get_hits", "get_misses", "cmd_set", "evictions"]
            Self.table(columns: mc.indices.map { "cpu\($0)" }, rows: keys.map { k in (k, mc.map { $0[k] ?? 0 }) })
        }
        print("")
        print("Latency (since start)        count        p50        p90        p99      p99.9        max")
        for (key, h) in stats.latency.sorted(by: { $0.key < $1.key }) {
            print(key.padding(toLength: 22, withPad: " ", startingAt: 0) + String(h.count).leftPad(12)
                  + StatWatch.ms(h.p50Nanos).leftPad(11) + StatWatch.ms(h.p90Nanos).leftPad(11) + StatWatch.ms(h.p99Nanos).leftPad(11)
                  + StatWatch.ms(h.p999Nanos).leftPad(11) + StatWatch.ms(h.maxNanos).leftPad(11))
        }
        print("Stalls: \(stats.stalls.detected) over \(stats.stalls.thresholdNanos / 1_000_000) ms (\(stats.stalls.reported) reported; watchdog \(String(format: "%.0f", stats.stalls.looksPerSecond)) looks/s, \(stats.stalls.parks) parks)")
    }

    private static func table(columns: [String], rows: [(String, [Int])]) {
        var header = "".padding(toLength: 22, withPad: " ", startingAt: 0)
        for c in columns { header += c.leftPad(12) }
        print(header)
        for (label, values) in rows {
            var line = label.padding(toLength: 22, withPad: " ", startingAt: 0)
            for v in values { line += String(v).leftPad(12) }
            print(line)
        }
    }

    /// A FUSE mount's channels as tables: totals per CPU channel, then requests and errors
    /// per operation and channel.
    static func printFUSE(_ f: FUSEStatistics) {
        print("FUSE mount \(f.mountPoint): \(f.knownNodes) node ids held by the kernel")
        let cols = f.channels.map { "cpu\($0.cpu)" }
        let rows: [(String, (FUSEChannelStatistics) -> UInt64)] = [
            ("requests", { $0.requests }), ("errors", { $0.errors }), ("bytes read", { $0.bytesRead }),
            ("bytes written", { $0.bytesWritten }), ("waits", { $0.waits }),
        ]
        table(columns: cols, rows: rows.map { (l, g) in (l, f.channels.map { Int(g($0)) }) })
        let ops = f.requestsByOpcode.keys.sorted()
        if !ops.isEmpty {
            print("FUSE requests by operation (errors in parentheses)")
            var header = "  " + "operation".padding(toLength: 16, withPad: " ", startingAt: 0)
            for c in cols { header += c.leftPad(16) }
            print(header)
            for op in ops {
                var line = "  " + op.padding(toLength: 16, withPad: " ", startingAt: 0)
                for c in f.channels {
                    let e = c.errorsByOpcode[op] ?? 0
                    line += ("\(c.requestsByOpcode[op] ?? 0)" + (e > 0 ? " (\(e))" : "")).leftPad(16)
                }
                print(line)
            }
        }
        for c in f.channels {
            guard let l = c.latency, l.count > 0 else { continue }
            print("  cpu\(c.cpu) service time: p50 \(Double(l.p50Nanos) / 1000) µs, p99 \(Double(l.p99Nanos) / 1000) µs, max \(Double(l.maxNanos) / 1000) µs over \(l.count)")
        }
    }
}
