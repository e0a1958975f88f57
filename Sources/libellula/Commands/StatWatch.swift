import ArgumentParser
import FUSE
import Foundation
import LWKT
import Services

/// `libellula stat --watch`: a top-like terminal view of a running server, redrawn every
/// interval from `/_stats.json`. Rates are computed between the last two documents.
struct StatWatch {
    let url: String
    let interval: Double
    let iterations: Int?

    func fetch() throws -> ServerStatistics {
        let body: [UInt8]
        do { body = try HTTPFetch.get(url, path: "/_stats.json") } catch {
            throw runtimeFailure(ExitStatus.unavailable, "cannot read statistics from \(url): \(error)")
        }
        return try ServerStatistics.decoder().decode(ServerStatistics.self, from: Data(body))
    }

    func run() async throws {
        var previous = try fetch()
        var shown = 0
        while iterations.map({ shown < $0 }) ?? true {
            try await Task.sleep(for: .milliseconds(Int(interval * 1000)))
            let now = try fetch()
            // The server reuses a rendered document for its statistics interval: wait for
            // a newer one rather than divide by zero (a screen counts only when drawn, so
            // --iterations N always shows N screens).
            if now.timestamp <= previous.timestamp { continue }
            let screen = Self.render(previous: previous, now: now, width: Self.terminalWidth())
            print("\u{1B}[H\u{1B}[2J" + screen, terminator: "")
            fflush(nil)
            shown += 1
            previous = now
        }
    }

    static func terminalWidth() -> Int {
        var ws = winsize()
        if ioctl(1, UInt(TIOCGWINSZ), &ws) == 0, ws.ws_col >= 40 { return Int(ws.ws_col) }
        return 100
    }

    static func rate(_ v: Double) -> String {
        v >= 1e6 ? String(format: "%.1fM", v / 1e6) : v >= 1e4 ? String(format: "%.0fk", v / 1e3) : String(format: "%.0f", v)
    }

    static func ms(_ nanos: Int64) -> String {
        nanos >= 1_000_000 ? String(format: "%.1f ms", Double(nanos) / 1e6) : String(format: "%.0f µs", Double(nanos) / 1e3)
    }

    /// " (cpu1, cpu3 stalled now)" while the watchdog sees stalls in progress, else "".
    static func stalledNow(_ s: StallStatistics) -> String {
        let cpus = Set(s.recent.filter(\.ongoing).map(\.cpu)).sorted()
        return cpus.isEmpty ? "" : " (" + cpus.map { "cpu\($0)" }.joined(separator: ", ") + " stalled now)"
    }

    /// One screen.
    static func render(previous a: ServerStatistics, now b: ServerStatistics, width: Int) -> String {
        let r = RateSample.between(a, b)
        var o = ""
        func line(_ s: String) { o += s + "\n" }
        let up = b.lwkt.uptimeNanos / 1_000_000_000
        line("libellula \(b.address) — \(b.lwkt.cpuCount) CPUs, up \(up / 3600)h\(up / 60 % 60)m\(up % 60)s, rates over \(String(format: "%.1f", r.seconds)) s, \(Date())")
        line("")
        line("HTTP  \(rate(r.requests.reduce(0, +))) req/s   \(rate(r.bytes.reduce(0, +) / 1_048_576)) MiB/s   \(rate(r.errors.reduce(0, +))) errors/s   \(r.openConnections) open   RSS \(b.process.residentBytes / 1_048_576) MiB   stalls \(b.stalls.detected)\(stalledNow(b.stalls))")
        line("")
        let barWidth = max(10, min(40, width - 60))
        line("CPU    busy" + String(repeating: " ", count: barWidth - 1) + "     req/s    IPIs/s  threads  ready")
        for i in 0..<b.lwkt.cpuCount {
            let busy = i < r.busyPercent.count ? r.busyPercent[i] : 0
            let fill = Int((busy / 100 * Double(barWidth)).rounded())
            let bar = "[" + String(repeating: "#", count: min(barWidth, fill)) + String(repeating: " ", count: max(0, barWidth - fill)) + "]"
            let req = i < r.requests.count ? r.requests[i] : 0
            let ipi = i < r.ipis.count ? r.ipis[i] : 0
            let threads = i < b.threadsPerCPU.count ? b.threadsPerCPU[i] : 0
            let ready = b.rates?.readyDepth.flatMap { i < $0.count ? String(format: "%.1f", $0[i]) : nil } ?? "-"
            line("cpu\(i)".padding(toLength: 6, withPad: " ", startingAt: 0) + bar + String(format: " %3.0f%%", busy)
                 + rate(req).leftPad(10) + rate(ipi).leftPad(10) + String(threads).leftPad(9) + ready.leftPad(7))
        }
        line("")
        line("latency        count        p50        p90        p99      p99.9        max")
        for (key, label) in [("http_service", "http"), ("memcached_command", "memcached"), ("domsg_round_trip", "doMsg"), ("ipi_delivery", "IPI"), ("fuse_request", "FUSE")] {
            guard let l = b.latency[key] else { continue }
            line(label.padding(toLength: 10, withPad: " ", startingAt: 0) + String(l.count).leftPad(10)
                 + ms(l.p50Nanos).leftPad(11) + ms(l.p90Nanos).leftPad(11) + ms(l.p99Nanos).leftPad(11) + ms(l.p999Nanos).leftPad(11) + ms(l.maxNanos).leftPad(11))
        }
        line("")
        if let mc = b.memcached {
            let hits = r.cacheHits.reduce(0, +)
            let ratio = r.hitRatio.map { String(format: "%.1f %%", $0 * 100) } ?? "–"
            let items = mc.reduce(0) { $0 + ($1["curr_items"] ?? 0) }
            let bytes = mc.reduce(0) { $0 + ($1["bytes"] ?? 0) }
            let limit = b.process.memcachedLimitBytes
            line("memcached  \(rate(hits)) hits/s   hit ratio \(ratio)   \(items) items   \(bytes / 1_048_576) of \(limit / 1_048_576) MiB")
            line("CPU        items   connections   get_hits   get_misses   evictions")
            for (i, d) in mc.enumerated() {
                line("cpu\(i)".padding(toLength: 6, withPad: " ", startingAt: 0) + String(d["curr_items"] ?? 0).leftPad(10)
                     + String(d["curr_connections"] ?? 0).leftPad(14) + String(d["get_hits"] ?? 0).leftPad(11)
                     + String(d["get_misses"] ?? 0).leftPad(13) + String(d["evictions"] ?? 0).leftPad(12))
            }
        } else {
            line("memcached  not running")
        }
        if let f = b.fuse {
            // FUSE: request and error rates over the interval, per CPU channel.
            let before = a.fuse?.channels ?? []
            func delta(_ c: FUSEChannelStatistics, _ g: (FUSEChannelStatistics) -> UInt64) -> Double {
                let old = before.first { $0.cpu == c.cpu }.map(g) ?? 0
                return Double(g(c) >= old ? g(c) - old : 0) / max(0.001, r.seconds)
            }
            line("")
            line("FUSE \(f.mountPoint)  \(rate(f.channels.reduce(0) { $0 + delta($1, \.requests) })) req/s   \(rate(f.channels.reduce(0) { $0 + delta($1, \.errors) })) errors/s   \(f.knownNodes) node ids")
            for c in f.channels {
                let ops = c.requestsByOpcode.sorted { $0.value > $1.value }.prefix(4).map { "\($0.key) \($0.value)" }.joined(separator: ", ")
                line("cpu\(c.cpu)".padding(toLength: 6, withPad: " ", startingAt: 0) + rate(delta(c, \.requests)).leftPad(10) + " req/s" + rate(delta(c, \.errors)).leftPad(8) + " err/s   " + ops)
            }
        }
        if let last = b.stalls.recent.last {
            line("")
            line("last stall: cpu\(last.cpu) \(last.thread) \(ms(last.durationNanos)) in \(last.backtrace.first(where: { !$0.hasPrefix("clock_gettime") }) ?? "?")")
        }
        return o
    }
}
