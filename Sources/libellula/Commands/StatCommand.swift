import ArgumentParser
import Foundation
import Services

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

    func run() async throws {
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
        let stats = try JSONDecoder().decode(ServerStatistics.self, from: Data(body))
        print("libellula at \(stats.address): \(stats.lwkt.cpuCount) CPUs, up \(stats.lwkt.uptimeNanos / 1_000_000_000) s, \(stats.threadCount) LWKT threads")
        print("")
        StatTables.print(stats.lwkt)
        print("")
        print("HTTP per CPU")
        let httpRows: [(String, (HTTPCPUStatistics) -> Int)] = [
            ("connections accepted", { $0.connectionsAccepted }), ("connections open", { $0.connectionsOpen }),
            ("rejected (503)", { $0.connectionsRejected }), ("timeouts", { $0.timeouts }),
            ("requests", { $0.requests }), ("2xx", { $0.responses2xx }), ("3xx", { $0.responses3xx }),
            ("4xx", { $0.responses4xx }), ("5xx", { $0.responses5xx }), ("bytes sent", { $0.bytesSent }),
        ]
        table(columns: stats.http.map { "cpu\($0.cpu)" }, rows: httpRows.map { (l, f) in (l, stats.http.map(f)) })
        print("")
        print("Slab per CPU")
        table(columns: stats.slab.cpus.map { "cpu\($0.cpu)" }, rows: [
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
    }

    private func table(columns: [String], rows: [(String, [Int])]) {
        var header = "".padding(toLength: 22, withPad: " ", startingAt: 0)
        for c in columns { header += c.leftPad(12) }
        print(header)
        for (label, values) in rows {
            var line = label.padding(toLength: 22, withPad: " ", startingAt: 0)
            for v in values { line += String(v).leftPad(12) }
            print(line)
        }
    }
}
