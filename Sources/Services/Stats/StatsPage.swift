import FUSE
import Foundation
import LWKT
import VFS

/// The `/_stats` page: inline SVG charts of every subsystem per CPU, refreshed every two
/// seconds, with no script and nothing loaded from elsewhere.
enum StatsPage {
    static let palette = ["#2b6cb0", "#d69e2e", "#38a169", "#e53e3e", "#805ad5", "#dd6b20"]

    static func render(_ s: ServerStatistics, series: [RateSample] = []) -> String {
        let cpus = s.lwkt.cpus.map { $0.name }
        func counter(_ c: CPUCounter) -> [Double] { s.lwkt.cpus.map { Double($0.counters[c.name] ?? 0) } }
        var h = """
        <!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
        <title>libellula statistics</title><style>
        body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}h2{margin-top:1.6em;font-size:1.1em}
        .grid{display:flex;flex-wrap:wrap;gap:1.5em}figure{margin:0}figcaption{font-size:.85em;color:#555}
        figure h3{font-size:.95em;margin:0 0 .2em 0}.legend{font-size:.8em;margin-bottom:.2em}
        .legend span{display:inline-block;margin-right:.8em}.legend i{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:-.1em}
        .tiles{display:flex;flex-wrap:wrap;gap:.8em}.tile{border:1px solid #ddd;border-radius:6px;padding:.4em .8em;min-width:8em}
        .tile b{display:block;font-size:1.4em}.tile small{color:#555}.bad{color:#c53030}
        table{border-collapse:collapse;font-size:.85em}td,th{padding:.15em .6em;text-align:right}th{text-align:left}
        details pre{font-size:.75em;background:#f7f7f7;padding:.5em;overflow-x:auto}
        </style></head><body>
        <h1>libellula statistics</h1>
        <p>\(esc(s.address)) · \(s.lwkt.cpuCount) CPUs · up \(s.lwkt.uptimeNanos / 1_000_000_000) s · \(s.threadCount) LWKT threads ·
        <a href="/_stats.json">JSON</a> · <a href="/metrics">Prometheus</a> · <a href="/_health">health</a> · refreshes every 2 s</p>
        """
        h += tiles(s)
        let span = Int(((series.last?.timestamp ?? 0) - (series.first?.timestamp ?? 0)).rounded())
        h += "<h2>Traffic (last \(span) s, \(series.count) samples)</h2><div class=grid>"
        let t = series.map { $0.timestamp }
        func total(_ f: (RateSample) -> [Double]) -> [Double] { series.map { f($0).reduce(0, +) } }
        func perCPU(_ f: (RateSample) -> [Double]) -> [(String, [Double])] {
            (0..<s.lwkt.cpuCount).map { c in ("cpu\(c)", series.map { c < f($0).count ? f($0)[c] : 0 }) }
        }
        h += lineChart("Request rate", unit: "req/s", t, [("all CPUs", total { $0.requests })] + perCPU { $0.requests })
        h += lineChart("Error rate (4xx + 5xx)", unit: "errors/s", t, [("all CPUs", total { $0.errors })])
        h += lineChart("HTTP service time p99", unit: "ms", t, [("p99", series.map { Double($0.httpP99Nanos) / 1e6 })])
        h += lineChart("Open connections", unit: "connections", t, [("open", series.map { Double($0.openConnections) })])
        var memory: [(String, [Double])] = [("resident", series.map { Double($0.residentBytes) / 1_048_576 })]
        if s.process.memcachedLimitBytes > 0 {
            memory.append(("cache items", series.map { Double($0.memcachedBytes) / 1_048_576 }))
            memory.append(("cache limit", series.map { Double($0.memcachedLimitBytes) / 1_048_576 }))
        }
        h += lineChart("Memory against the limit", unit: "MiB", t, memory)
        if s.memcached != nil {
            h += lineChart("memcached hit ratio", unit: "%", t, [("hits / gets", series.map { ($0.hitRatio ?? 0) * 100 })], fixedMax: 100)
        }
        h += lineChart("CPU busy", unit: "%", t, perCPU { $0.busyPercent }, fixedMax: 100)
        h += lineChart("IPIs received", unit: "IPIs/s", t, perCPU { $0.ipis })
        h += lineChart("Ready-queue depth (mean over each second)", unit: "jobs", t, perCPU { $0.readyDepth ?? [] })
        h += "</div><h2>Latency</h2>" + latencyTable(s.latency)
        h += stallSection(s.stalls)
        h += "<h2>HTTP per CPU (since start)</h2><div class=grid>"
        h += bars("Requests per CPU", cpus, [("requests", s.http.map { Double($0.requests) })])
        h += bars("Connections per CPU", cpus, [("accepted", s.http.map { Double($0.connectionsAccepted) }),
                                                ("open", s.http.map { Double($0.connectionsOpen) }),
                                                ("rejected", s.http.map { Double($0.connectionsRejected) }),
                                                ("timed out", s.http.map { Double($0.timeouts) })])
        h += bars("Responses per CPU", cpus, [("2xx", s.http.map { Double($0.responses2xx) }),
                                              ("3xx", s.http.map { Double($0.responses3xx) }),
                                              ("4xx", s.http.map { Double($0.responses4xx) }),
                                              ("5xx", s.http.map { Double($0.responses5xx) })])
        h += "</div><h2>Scheduler (LWKT)</h2><div class=grid>"
        h += bars("Jobs run per CPU", cpus, [("kernel", counter(.jobsKernel)), ("user", counter(.jobsUser)),
                                             ("interrupt", counter(.jobsInterrupt)), ("soft int", counter(.jobsSoftInterrupt))])
        h += bars("Threads per CPU (run queue population)", cpus, [("threads", s.threadsPerCPU.map(Double.init))])
        if let depth = s.rates?.readyDepth {
            h += bars("Ready-queue depth per CPU (jobs waiting, last second)", cpus,
                      [("mean", depth), ("largest", s.rates?.readyDepthMax ?? [])])
        }
        h += bars("I/O and sleeping per CPU", cpus, [("I/O events", counter(.ioEvents)), ("sleeps", counter(.sleeps)),
                                                     ("timers", counter(.timerFired)), ("yields", counter(.yields))])
        h += heatmap("IPI matrix (row sends to column)", s.lwkt.ipiMatrix, labels: cpus)
        h += bars("IPIs per CPU", cpus, [("received", counter(.ipiReceived)), ("sent active", counter(.ipiSentActive)),
                                         ("sent passive", counter(.ipiSentPassive)), ("wakeups", counter(.ipiWakeups))])
        h += "</div><h2>Slab allocator</h2><div class=grid>"
        let slabCPUs = s.slab.cpus.map { $0.cpu < 0 || $0.cpu >= s.lwkt.cpuCount ? "shared" : "cpu\($0.cpu)" }
        h += bars("Zones per CPU", slabCPUs, [("held", s.slab.cpus.map { Double($0.zonesHeld) }),
                                              ("free cached", s.slab.cpus.map { Double($0.freeZonesCached) }),
                                              ("remote frees sent", s.slab.cpus.map { Double($0.remoteFreesSent) })])
        let types = s.slab.types.filter { $0.allocations > 0 }.prefix(12)
        h += bars("Bytes in use by malloc type", types.map { $0.name }, [("bytes", types.map { Double($0.bytesInUse) })])
        h += "</div><h2>Namecache</h2><div class=grid>"
        let n = s.namecache
        h += bars("Component lookups (hit rate \(String(Int((n.hitRate * 1000).rounded()) / 10)).\(Int((n.hitRate * 1000).rounded()) % 10) %)",
                  ["lookups"], [("hits", [Double(n.hits)]), ("negative hits", [Double(n.negativeHits)]),
                                ("misses", [Double(n.misses)]), ("resolves", [Double(n.resolves)])])
        h += bars("Lookup paths", ["lookups"], [("lock-free", [Double(n.fastLookups)]), ("locked", [Double(n.slowLookups)])])
        if let mc = s.memcached, !mc.isEmpty {
            let mcCPUs = mc.indices.map { "cpu\($0)" }
            func col(_ k: String) -> [Double] { mc.map { Double($0[k] ?? 0) } }
            h += "</div><h2>memcached</h2><div class=grid>"
            h += bars("Lookups per CPU (owner)", mcCPUs, [("get hits", col("get_hits")), ("get misses", col("get_misses")),
                                                          ("sets", col("cmd_set"))])
            h += bars("Requests per CPU", mcCPUs, [("local", col("local_requests")), ("sent to owner", col("remote_requests_sent")),
                                                   ("served for others", col("remote_requests_served"))])
            h += bars("Items and memory per CPU", mcCPUs, [("items", col("curr_items")), ("evictions", col("evictions")),
                                                           ("connections", col("curr_connections"))])
        }
        if let net = s.network, !net.cpus.isEmpty {
            let netCPUs = net.cpus.indices.map { "cpu\($0)" }
            h += "</div><h2>Network: \(esc(net.backend))</h2>\(net.flowSteering.map { "<p>Flow steering: \(esc($0))</p>" } ?? "")<div class=grid>"
            h += bars("Listeners and accepts per CPU", netCPUs, [("listen replicas", net.cpus.map { Double($0.listeners) }),
                                                                  ("accepted", net.cpus.map { Double($0.accepted) }),
                                                                  ("established now", net.cpus.map { Double($0.established) })])
            h += bars("Packets forwarded between CPUs (≈0 with flow steering)", netCPUs,
                      [("forwarded to owner", net.cpus.map { Double($0.forwarded) }), ("received from others", net.cpus.map { Double($0.forwardedIn) })])
        }
        if let io = s.hostIO { h += hostIOSection(io) }
        if let f = s.fuse { h += fuseSection(f) }
        h += ModuleCounters.html(s.lwkt.sections)
        h += "</div><h2>Giant coverage</h2><p>Subsystems registered with the Giant token; red ones still take it (DragonFly's BGL chart). Token: \(s.lwkt.giantToken.acquisitions) acquisitions, \(s.lwkt.giantToken.contentions) contended.</p>"
        h += giant(s.lwkt.giant)
        h += "</body></html>\n"
        return h
    }

    static func esc(_ s: String) -> String {
        // Most strings need nothing: scan the bytes once and copy only when needed.
        guard s.utf8.contains(where: { $0 == 0x26 || $0 == 0x3C || $0 == 0x3E || $0 == 0x22 }) else { return s }
        var o = ""
        o.reserveCapacity(s.utf8.count + 16)
        for ch in s.unicodeScalars {
            switch ch {
            case "&": o += "&amp;"
            case "<": o += "&lt;"
            case ">": o += "&gt;"
            case "\"": o += "&quot;"
            default: o.unicodeScalars.append(ch)
            }
        }
        return o
    }

    static func num(_ v: Double) -> String {
        if v >= 1e9 { return "\(Int(v / 1e8) / 10)G" }
        if v >= 1e6 { return "\(Int(v / 1e5) / 10)M" }
        if v >= 1e4 { return "\(Int(v / 1e3))k" }
        if v >= 10 || v == v.rounded() { return "\(Int(v))" }
        let tenths = Int((v * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }

    /// A grouped bar chart: one group per label, one bar per series.
    static func bars(_ title: String, _ labels: [String], _ series: [(String, [Double])]) -> String {
        let width = 420.0, height = 190.0, left = 10.0, bottom = 40.0, top = 16.0
        let maxV = max(1, series.flatMap { $0.1 }.max() ?? 1)
        let groups = Double(max(1, labels.count))
        let gw = (width - left * 2) / groups
        let bw = min(56, max(2, (gw - 12) / Double(max(1, series.count))))
        var svg = "<figure><svg width=\"\(Int(width))\" height=\"\(Int(height))\" role=\"img\" aria-label=\"\(esc(title))\">"
        svg += "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - left)\" y2=\"\(height - bottom)\" stroke=\"#999\"/>"
        for (g, label) in labels.enumerated() {
            let gx = left + Double(g) * gw + 6
            for (k, (name, values)) in series.enumerated() {
                let v = g < values.count ? values[g] : 0
                let bh = (height - bottom - top) * v / maxV
                let x = gx + Double(k) * bw
                let y = height - bottom - bh
                svg += "<rect x=\"\(Int(x))\" y=\"\(Int(y))\" width=\"\(Int(bw - 1))\" height=\"\(Int(bh))\" fill=\"\(palette[k % palette.count])\"><title>\(esc(label)) \(esc(name)): \(Int(v))</title></rect>"
                svg += "<text x=\"\(Int(x + bw / 2))\" y=\"\(Int(y - 2))\" font-size=\"9\" text-anchor=\"middle\">\(num(v))</text>"
            }
            svg += "<text x=\"\(Int(gx + bw * Double(series.count) / 2))\" y=\"\(Int(height - bottom + 12))\" font-size=\"10\" text-anchor=\"middle\">\(esc(label))</text>"
        }
        var lx = left
        for (k, (name, _)) in series.enumerated() {
            svg += "<rect x=\"\(Int(lx))\" y=\"\(Int(height - 14))\" width=\"9\" height=\"9\" fill=\"\(palette[k % palette.count])\"/>"
            svg += "<text x=\"\(Int(lx + 12))\" y=\"\(Int(height - 6))\" font-size=\"10\">\(esc(name))</text>"
            lx += 16 + Double(name.count) * 6
        }
        svg += "</svg><figcaption>\(esc(title))</figcaption></figure>"
        return svg
    }

    /// The IPI matrix as a heat map.
    static func heatmap(_ title: String, _ m: [[Int]], labels: [String]) -> String {
        let n = max(1, m.count)
        let cell = max(14.0, min(48.0, 300.0 / Double(n)))
        let off = 40.0
        let size = off + cell * Double(n) + 4
        let maxV = max(1, m.flatMap { $0 }.max() ?? 1)
        var svg = "<figure><svg width=\"\(Int(size))\" height=\"\(Int(size))\" role=\"img\" aria-label=\"\(esc(title))\">"
        for (i, row) in m.enumerated() {
            let label = i < labels.count ? labels[i] : "cpu\(i)"
            svg += "<text x=\"2\" y=\"\(Int(off + cell * Double(i) + cell / 2 + 4))\" font-size=\"10\">\(esc(label))</text>"
            svg += "<text x=\"\(Int(off + cell * Double(i) + 2))\" y=\"\(Int(off - 6))\" font-size=\"10\">\(i)</text>"
            for (j, v) in row.enumerated() {
                let a = v == 0 ? 0.04 : 0.15 + 0.85 * Double(v) / Double(maxV)
                svg += "<rect x=\"\(Int(off + cell * Double(j)))\" y=\"\(Int(off + cell * Double(i)))\" width=\"\(Int(cell - 1))\" height=\"\(Int(cell - 1))\" fill=\"#2b6cb0\" fill-opacity=\"\(opacity(a))\"><title>cpu\(i) → cpu\(j): \(v)</title></rect>"
            }
        }
        svg += "</svg><figcaption>\(esc(title)); max \(maxV)</figcaption></figure>"
        return svg
    }

    static func opacity(_ a: Double) -> String {
        let pct = max(0, min(100, Int(a * 100)))
        return pct == 100 ? "1" : "0.\(pct < 10 ? "0" : "")\(pct)"
    }

    /// Giant coverage: one bar per registered subsystem.
    static func giant(_ g: [Giant.Coverage]) -> String {
        if g.isEmpty { return "<p>No subsystem is registered with Giant: everything runs MP-safe.</p>" }
        let maxV = max(1, g.map { $0.calls }.max() ?? 1)
        let rowH = 20.0, width = 640.0
        var svg = "<svg width=\"\(Int(width))\" height=\"\(Int(rowH * Double(g.count) + 8))\" role=\"img\" aria-label=\"Giant coverage\">"
        for (i, c) in g.enumerated() {
            let y = Double(i) * rowH + 4
            let w = (width - 260) * Double(c.calls) / Double(maxV)
            let wg = (width - 260) * Double(c.giantAcquisitions) / Double(maxV)
            svg += "<text x=\"0\" y=\"\(Int(y + 13))\" font-size=\"11\">\(esc(c.name)) \(c.mpSafe ? "(MP-safe)" : "(Giant)")</text>"
            svg += "<rect x=\"220\" y=\"\(Int(y))\" width=\"\(Int(w))\" height=\"14\" fill=\"#38a169\"><title>\(c.calls) calls</title></rect>"
            svg += "<rect x=\"220\" y=\"\(Int(y))\" width=\"\(Int(wg))\" height=\"14\" fill=\"#e53e3e\"><title>\(c.giantAcquisitions) under Giant, \(c.contended) contended</title></rect>"
            svg += "<text x=\"\(Int(224 + w))\" y=\"\(Int(y + 12))\" font-size=\"10\">\(c.calls) calls, \(c.giantAcquisitions) under Giant</text>"
        }
        return svg + "</svg>"
    }
}

extension StatsPage {
    /// Renders one statistics document (nil if encoding failed).
    static func document(_ d: StatisticsDocument, _ s: @autoclosure () -> ServerStatistics,
                         latencies: SystemLatencies?, series: [RateSample] = []) -> [UInt8]? {
        switch d {
        case .html: return Array(render(s(), series: series).utf8)
        case .json: return (try? ServerStatistics.encoder().encode(s())).map { Array($0) }
        case .metrics: return Array(PrometheusExposition.render(s(), latencies: latencies).utf8)
        case .health: return nil
        }
    }
}

extension StatsPage {
    /// A FUSE mount's channels: requests and errors per CPU channel and by operation, bytes
    /// and the kernel's node ids.
    /// The VFS's host-I/O pool: the blocking host calls kept off the CPUs.
    static func hostIOSection(_ io: HostIOStatistics) -> String {
        var h = "</div><h2>Host I/O pool (\(io.threads) threads: blocking host calls kept off the CPUs)</h2>"
        h += "<p>queue depth now \(io.queueDepth), largest \(io.maxQueueDepth) · latency p50 \(ms(Int64(io.p50LatencyNanos))), "
        h += "p99 \(ms(Int64(io.p99LatencyNanos))), max \(ms(Int64(io.maxLatencyNanos)))</p><div class=grid>"
        h += bars("Calls", ["calls"], [("sent to the pool", [Double(io.submitted)]), ("answered", [Double(io.completed)]),
                                        ("made inline (no blocking file system)", [Double(io.inline)]),
                                        ("finished on the CPU (cached)", [Double(io.finishedOnCPU)]), ("parked on a lock", [Double(io.lockParks)])])
        let done = max(1, io.completed)
        h += bars("Where a trip's time goes (mean µs)", ["trip"], [("queued", [Double(io.totalQueueWaitNanos) / Double(done) / 1e3]),
                                                                  ("host call", [Double(io.totalRunNanos) / Double(done) / 1e3]),
                                                                  ("answer back", [Double(io.totalAnswerNanos) / Double(done) / 1e3])])
        return h
    }

    static func fuseSection(_ f: FUSEStatistics) -> String {
        let chans = f.channels.map { "cpu\($0.cpu)" }
        var h = "</div><h2>FUSE mount \(esc(f.mountPoint)) (\(f.knownNodes) node ids held by the kernel)</h2><div class=grid>"
        h += bars("Requests per CPU channel", chans, [("requests", f.channels.map { Double($0.requests) }),
                                                      ("errors", f.channels.map { Double($0.errors) })])
        let byOp = f.requestsByOpcode, errs = f.errorsByOpcode
        let ops = byOp.sorted { $0.value == $1.value ? $0.key < $1.key : $0.value > $1.value }.prefix(12).map(\.key)
        h += bars("Requests by operation (top \(ops.count))", ops, [("requests", ops.map { Double(byOp[$0] ?? 0) }),
                                                                   ("errors", ops.map { Double(errs[$0] ?? 0) })])
        h += bars("Payload bytes per CPU channel", chans, [("read", f.channels.map { Double($0.bytesRead) }),
                                                           ("written", f.channels.map { Double($0.bytesWritten) })])
        return h
    }
}

extension StatsPage {
    /// `/_health`: answered by the CPU that accepted the connection, so an answer means
    /// that CPU runs; reports the schema version, a timestamp, uptime, CPU count and the
    /// CPUs the stall watchdog sees stalled right now (status `stalled` while any is: the
    /// server answers, but requests steered to those CPUs wait).
    static func health(_ system: LWKTSystem) -> [UInt8] {
        health(cpus: system.cpuCount, uptimeNanos: system.snapshotUptimeNanos, stalls: system.stallStatistics,
               now: Date().timeIntervalSince1970)
    }

    static func health(cpus: Int, uptimeNanos: UInt64, stalls: StallStatistics, now: Double) -> [UInt8] {
        let stalled = Set(stalls.recent.filter(\.ongoing).map(\.cpu)).sorted()
        let status = stalled.isEmpty ? "ok" : "stalled"
        let list = stalled.map(String.init).joined(separator: ",")
        let up = Double(uptimeNanos) / 1e9
        return Array("{\"cpus\":\(cpus),\"schema_version\":\(ServerStatistics.currentSchemaVersion),\"stalled_cpus\":[\(list)],\"status\":\"\(status)\",\"timestamp\":\(now),\"uptime_seconds\":\(up)}\n".utf8)
    }
}

extension StatsPage {
    /// The numbers an operator looks at first, as tiles.
    static func tiles(_ s: ServerStatistics) -> String {
        let r = s.rates
        func tile(_ label: String, _ value: String, _ note: String = "", bad: Bool = false) -> String {
            "<div class=tile><small>\(esc(label))</small><b\(bad ? " class=bad" : "")>\(esc(value))</b><small>\(esc(note))</small></div>"
        }
        var h = "<div class=tiles>"
        h += tile("requests", r.map { num($0.requests.reduce(0, +)) } ?? "–", "per second")
        let errors = r.map { $0.errors.reduce(0, +) } ?? 0
        h += tile("errors", r == nil ? "–" : num(errors), "4xx+5xx per second", bad: errors > 0)
        let p99 = s.latency["http_service"]?.p99Nanos ?? 0
        h += tile("p99 service time", ms(p99), "since start")
        h += tile("open connections", "\(s.http.reduce(0) { $0 + $1.connectionsOpen })")
        let limit = s.process.memcachedLimitBytes
        h += tile("resident memory", "\(s.process.residentBytes / 1_048_576) MiB", limit > 0 ? "cache limit \(limit / 1_048_576) MiB" : "")
        if let mc = s.memcached {
            let hits = mc.reduce(0) { $0 + ($1["get_hits"] ?? 0) }, misses = mc.reduce(0) { $0 + ($1["get_misses"] ?? 0) }
            h += tile("memcached hit ratio", hits + misses == 0 ? "–" : "\(Int((Double(hits) / Double(hits + misses) * 100).rounded())) %", "since start")
        }
        h += tile("stalls", "\(s.stalls.detected)", s.stalls.thresholdNanos > 0 ? "over \(ms(s.stalls.thresholdNanos))" : "watchdog off", bad: s.stalls.detected > 0)
        return h + "</div>"
    }

    static func ms(_ nanos: Int64) -> String {
        if nanos >= 10_000_000 { return "\(nanos / 1_000_000) ms" }
        if nanos >= 1_000_000 { return "\(nanos / 1_000_000).\(nanos / 100_000 % 10) ms" }
        return "\(nanos / 1000) µs"
    }

    /// p50 … max of every histogram.
    static func latencyTable(_ l: [String: LatencySummary]) -> String {
        let rows = [("http_service", "HTTP request service"), ("memcached_command", "memcached command"),
                    ("domsg_round_trip", "cross-CPU doMsg round trip"), ("ipi_delivery", "IPI delivery (sampled)"),
                    ("fuse_request", "FUSE request")]
        var h = "<table><tr><th>operation</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>"
        for (key, label) in rows {
            guard let x = l[key] else { continue }
            h += "<tr><th>\(label)</th><td>\(x.count)</td><td>\(ms(x.p50Nanos))</td><td>\(ms(x.p90Nanos))</td><td>\(ms(x.p99Nanos))</td><td>\(ms(x.p999Nanos))</td><td>\(ms(x.maxNanos))</td></tr>"
        }
        return h + "</table>"
    }

    /// Stall counts and the last reports with their backtraces.
    static func stallSection(_ st: StallStatistics) -> String {
        var h = "<h2>Stalls</h2>"
        guard st.thresholdNanos > 0 else { return h + "<p>No stall watchdog runs (serve --stall-ms 0).</p>" }
        h += "<p>Threshold \(ms(st.thresholdNanos)): \(st.detected) detected, \(st.reported) reported, \(st.suppressed) rate-limited. The watchdog has looked \(st.polls) times (\(String(format: "%.0f", st.looksPerSecond))/s over its last second, \(st.lateLooks) late, parked \(st.parks) times while every CPU slept) using \(String(format: "%.3f", st.watchdogCPUSeconds)) s of CPU.</p>"
        for r in st.recent.reversed().prefix(5) {
            h += "<details><summary>cpu\(r.cpu) · \(esc(r.thread)) (\(esc(r.priority))) · \(ms(r.durationNanos))\(r.ongoing ? " and running" : "")</summary><pre>"
            h += r.backtrace.prefix(24).map(esc).joined(separator: "\n") + "</pre></details>"
        }
        return h
    }

    /// A line chart over time with a title, a legend, a y axis with its unit and an x axis
    /// in seconds before now.
    static func lineChart(_ title: String, unit: String, _ t: [Double], _ series: [(String, [Double])],
                          fixedMax: Double? = nil) -> String {
        let width = 440.0, height = 170.0, left = 46.0, right = 8.0, top = 8.0, bottom = 22.0
        let plotW = width - left - right, plotH = height - top - bottom
        let maxV = fixedMax ?? max(1, (series.flatMap { $0.1 }.max() ?? 1) * 1.1)
        let t0 = t.first ?? 0, t1 = max(t0 + 1, t.last ?? 1)
        var h = "<figure class=chart data-points=\"\(t.count)\"><h3>\(esc(title))</h3><div class=legend>"
        for (k, (name, _)) in series.enumerated() {
            h += "<span><i style=\"background:\(palette[k % palette.count])\"></i>\(esc(name))</span>"
        }
        h += "</div><svg width=\"\(Int(width))\" height=\"\(Int(height))\" role=\"img\" aria-label=\"\(esc(title)) in \(esc(unit))\">"
        // Axes, grid and ticks.
        h += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(top + plotH)\" stroke=\"#999\"/>"
        h += "<line x1=\"\(left)\" y1=\"\(top + plotH)\" x2=\"\(left + plotW)\" y2=\"\(top + plotH)\" stroke=\"#999\"/>"
        for f in [0.0, 0.5, 1.0] {
            let y = top + plotH * (1 - f)
            h += "<line x1=\"\(left)\" y1=\"\(Int(y))\" x2=\"\(left + plotW)\" y2=\"\(Int(y))\" stroke=\"#eee\"/>"
            h += "<text x=\"\(Int(left - 4))\" y=\"\(Int(y + 4))\" font-size=\"10\" text-anchor=\"end\">\(num(maxV * f))</text>"
        }
        h += "<text x=\"4\" y=\"\(Int(top + plotH / 2))\" font-size=\"10\" transform=\"rotate(-90 8 \(Int(top + plotH / 2)))\" text-anchor=\"middle\">\(esc(unit))</text>"
        let span = Int((t1 - t0).rounded())
        for f in [0.0, 0.5, 1.0] {
            let x = left + plotW * f
            let ago = Int((Double(span) * (1 - f)).rounded())
            h += "<text x=\"\(Int(x))\" y=\"\(Int(height - 6))\" font-size=\"10\" text-anchor=\"\(f == 0 ? "start" : f == 1 ? "end" : "middle")\">\(ago == 0 ? "now" : "-\(ago) s")</text>"
        }
        if t.isEmpty {
            h += "<text x=\"\(Int(left + plotW / 2))\" y=\"\(Int(top + plotH / 2))\" font-size=\"11\" text-anchor=\"middle\" fill=\"#777\">collecting (one sample a second)</text>"
        }
        for (k, (name, values)) in series.enumerated() where !t.isEmpty {
            var pts: [String] = []
            for (i, v) in values.enumerated() where i < t.count {
                let x = left + plotW * (t.count == 1 ? 1 : (t[i] - t0) / (t1 - t0))
                let y = top + plotH * (1 - min(1, max(0, v / maxV)))
                pts.append("\(Int(x)),\(Int(y))")
            }
            h += "<polyline fill=\"none\" stroke=\"\(palette[k % palette.count])\" stroke-width=\"\(k == 0 ? 2 : 1.2)\" points=\"\(pts.joined(separator: " "))\"><title>\(esc(name))</title></polyline>"
        }
        return h + "</svg></figure>"
    }
}
