import Foundation
import LWKT

/// The `/_stats` page: inline SVG charts of every subsystem per CPU, refreshed every two
/// seconds, with no script and nothing loaded from elsewhere.
enum StatsPage {
    static let palette = ["#2b6cb0", "#d69e2e", "#38a169", "#e53e3e", "#805ad5", "#dd6b20"]

    static func render(_ s: ServerStatistics) -> String {
        let cpus = s.lwkt.cpus.map { $0.name }
        func counter(_ c: CPUCounter) -> [Double] { s.lwkt.cpus.map { Double($0.counters[c.name] ?? 0) } }
        var h = """
        <!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
        <title>libellula statistics</title><style>
        body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}h2{margin-top:1.6em;font-size:1.1em}
        .grid{display:flex;flex-wrap:wrap;gap:1.5em}figure{margin:0}figcaption{font-size:.85em;color:#555}
        table{border-collapse:collapse;font-size:.85em}td,th{padding:.15em .6em;text-align:right}th{text-align:left}
        </style></head><body>
        <h1>libellula statistics</h1>
        <p>\(esc(s.address)) · \(s.lwkt.cpuCount) CPUs · up \(s.lwkt.uptimeNanos / 1_000_000_000) s · \(s.threadCount) LWKT threads ·
        <a href="/_stats.json">JSON</a> · refreshes every 2 s</p>
        """
        h += "<h2>HTTP</h2><div class=grid>"
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
        h += "</div><h2>Giant coverage</h2><p>Subsystems registered with the Giant token; red ones still take it (DragonFly's BGL chart). Token: \(s.lwkt.giantToken.acquisitions) acquisitions, \(s.lwkt.giantToken.contentions) contended.</p>"
        h += giant(s.lwkt.giant)
        h += "</body></html>\n"
        return h
    }

    static func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func num(_ v: Double) -> String {
        v >= 1e9 ? "\(Int(v / 1e8) / 10)G" : v >= 1e6 ? "\(Int(v / 1e5) / 10)M" : v >= 1e4 ? "\(Int(v / 1e3))k" : "\(Int(v))"
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
                         latencies: SystemLatencies?) -> [UInt8]? {
        switch d {
        case .html: return Array(render(s()).utf8)
        case .json: return (try? ServerStatistics.encoder().encode(s())).map { Array($0) }
        case .metrics: return Array(PrometheusExposition.render(s(), latencies: latencies).utf8)
        case .health: return nil
        }
    }
}

extension StatsPage {
    /// `/_health`: answered by the CPU that accepted the connection, so an answer means
    /// that CPU runs; reports the schema version, a timestamp, uptime and CPU count.
    static func health(_ system: LWKTSystem) -> [UInt8] {
        let up = Double(system.snapshotUptimeNanos) / 1e9
        let ts = Date().timeIntervalSince1970
        return Array("{\"cpus\":\(system.cpuCount),\"schema_version\":\(ServerStatistics.currentSchemaVersion),\"status\":\"ok\",\"timestamp\":\(ts),\"uptime_seconds\":\(up)}\n".utf8)
    }
}
