import FUSE
import LWKT

/// `/metrics`: the Prometheus text exposition format (version 0.0.4), written by hand from
/// a ``ServerStatistics`` snapshot and the system's latency histograms.
///
/// Why by hand and not swift-metrics with a Prometheus exporter: every number here already
/// lives in per-CPU counters that their owner CPU bumps with a plain store, and in
/// ``LatencyHistogram`` blocks that allocate nothing on record. swift-metrics would put an
/// existential handler call (and, in the Prometheus backends, a lock and label-dictionary
/// work) on every increment, on the hot paths. Here all the cost is on the read side, at
/// most once per CPU per statistics interval.
enum PrometheusExposition {
    /// Bucket bounds (`le`) of the exported histograms, in seconds: 1 µs … 10 s, 1-2-5.
    static let bounds: [Double] = [1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3,
                                   0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10]

    struct Writer {
        var text = ""
        var declared: Set<String> = []

        mutating func family(_ name: String, _ type: String, _ help: String) {
            guard declared.insert(name).inserted else { return }
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }

        mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Double) {
            text += name
            if !labels.isEmpty {
                text += "{" + labels.map { "\($0.0)=\"\(PrometheusExposition.escape($0.1))\"" }.joined(separator: ",") + "}"
            }
            text += " " + PrometheusExposition.format(value) + "\n"
        }

        mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Int) {
            sample(name, labels, Double(value))
        }
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    static func format(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }

    /// The exposition text.
    static func render(_ s: ServerStatistics, latencies: SystemLatencies?) -> String {
        var w = Writer()
        let p = "libellula_"
        w.family(p + "up", "gauge", "1 while the server answers.")
        w.sample(p + "up", [], 1)
        w.family(p + "cpus", "gauge", "LWKT CPUs (pinned OS threads).")
        w.sample(p + "cpus", [], s.lwkt.cpuCount)
        w.family(p + "uptime_seconds", "gauge", "Seconds since the system booted.")
        w.sample(p + "uptime_seconds", [], Double(s.lwkt.uptimeNanos) / 1e9)
        w.family(p + "process_resident_bytes", "gauge", "Resident set size of the process.")
        w.sample(p + "process_resident_bytes", [], s.process.residentBytes)
        if s.process.memcachedLimitBytes > 0 {
            w.family(p + "memcached_limit_bytes", "gauge", "Memory the memcached cache may use for items.")
            w.sample(p + "memcached_limit_bytes", [], s.process.memcachedLimitBytes)
        }

        // HTTP, per CPU.
        let http: [(String, String, String, (HTTPCPUStatistics) -> Int)] = [
            ("http_requests_total", "counter", "HTTP requests parsed.", { $0.requests }),
            ("http_bytes_sent_total", "counter", "HTTP response bytes sent.", { $0.bytesSent }),
            ("http_connections_accepted_total", "counter", "HTTP connections accepted.", { $0.connectionsAccepted }),
            ("http_connections_rejected_total", "counter", "HTTP connections refused with 503 (over the limit).", { $0.connectionsRejected }),
            ("http_timeouts_total", "counter", "HTTP connections closed by a deadline.", { $0.timeouts }),
            ("http_connections_open", "gauge", "HTTP connections open now.", { $0.connectionsOpen }),
        ]
        for (name, type, help, f) in http {
            w.family(p + name, type, help)
            for c in s.http { w.sample(p + name, [("cpu", "\(c.cpu)")], f(c)) }
        }
        w.family(p + "http_responses_total", "counter", "HTTP responses by status class.")
        for c in s.http {
            for (cls, v) in [("2xx", c.responses2xx), ("3xx", c.responses3xx), ("4xx", c.responses4xx), ("5xx", c.responses5xx)] {
                w.sample(p + "http_responses_total", [("cpu", "\(c.cpu)"), ("class", cls)], v)
            }
        }

        // LWKT scheduler counters, per CPU.
        for counter in CPUCounter.allCases {
            let snake = SnakeCase.from(camel: counter.name)
            let isNanos = snake.hasSuffix("_nanos")
            let name = p + "lwkt_" + (isNanos ? String(snake.dropLast(6)) + "_seconds_total" : snake + "_total")
            w.family(name, "counter", "LWKT per-CPU counter \(counter.name)\(isNanos ? " (seconds)" : "").")
            for c in s.lwkt.cpus {
                let v = Double(c.counters[counter.name] ?? 0)
                w.sample(name, [("cpu", "\(c.id)")], isNanos ? v / 1e9 : v)
            }
        }
        w.family(p + "lwkt_threads", "gauge", "Live LWKT threads per CPU.")
        for (i, n) in s.threadsPerCPU.enumerated() { w.sample(p + "lwkt_threads", [("cpu", "\(i)")], n) }
        if let depth = s.rates?.readyDepth {
            w.family(p + "lwkt_ready_depth", "gauge", "Jobs waiting in each CPU's ready queue, mean of ten readings over the last second.")
            for (i, d) in depth.enumerated() { w.sample(p + "lwkt_ready_depth", [("cpu", "\(i)")], d) }
        }
        if let depth = s.rates?.readyDepthMax {
            w.family(p + "lwkt_ready_depth_max", "gauge", "Jobs waiting in each CPU's ready queue, largest of ten readings over the last second.")
            for (i, d) in depth.enumerated() { w.sample(p + "lwkt_ready_depth_max", [("cpu", "\(i)")], d) }
        }
        w.family(p + "ipi_messages_total", "counter", "IPI messages sent on each ring of the crossbar.")
        for (src, row) in s.lwkt.ipiMatrix.enumerated() {
            for (dst, v) in row.enumerated() { w.sample(p + "ipi_messages_total", [("source", "\(src)"), ("target", "\(dst)")], v) }
        }
        w.family(p + "giant_acquisitions_total", "counter", "Acquisitions of the Giant token.")
        w.sample(p + "giant_acquisitions_total", [], s.lwkt.giantToken.acquisitions)
        w.family(p + "giant_contentions_total", "counter", "Contended acquisitions of the Giant token.")
        w.sample(p + "giant_contentions_total", [], s.lwkt.giantToken.contentions)

        // Stalls.
        w.family(p + "stalls_total", "counter", "Jobs that ran longer than the stall threshold on one CPU.")
        w.sample(p + "stalls_total", [], s.stalls.detected)
        w.family(p + "stalled_cpus", "gauge", "CPUs running one job longer than the stall threshold right now (as of the watchdog's last look).")
        w.sample(p + "stalled_cpus", [], Set(s.stalls.recent.filter(\.ongoing).map(\.cpu)).count)
        w.family(p + "stall_threshold_seconds", "gauge", "The stall watchdog's threshold (0: no watchdog).")
        w.sample(p + "stall_threshold_seconds", [], Double(s.stalls.thresholdNanos) / 1e9)
        if s.stalls.thresholdNanos > 0 {
            w.family(p + "stall_watchdog_cpu_seconds_total", "counter", "CPU time the stall watchdog thread has used.")
            w.sample(p + "stall_watchdog_cpu_seconds_total", [], s.stalls.watchdogCPUSeconds)
            w.family(p + "stall_watchdog_polls_total", "counter", "Looks the stall watchdog has taken at the CPUs.")
            w.sample(p + "stall_watchdog_polls_total", [], s.stalls.polls)
            w.family(p + "stall_watchdog_looks_per_second", "gauge", "The stall watchdog's wakeup rate over its last second.")
            w.sample(p + "stall_watchdog_looks_per_second", [], s.stalls.looksPerSecond)
            w.family(p + "stall_watchdog_parks_total", "counter", "Times the stall watchdog parked because every CPU slept.")
            w.sample(p + "stall_watchdog_parks_total", [], s.stalls.parks)
            w.family(p + "stall_watchdog_late_looks_total", "counter", "Stall watchdog wakeups more than its 50 us margin late (detection bound not kept for those).")
            w.sample(p + "stall_watchdog_late_looks_total", [], s.stalls.lateLooks)
        }

        // Slab.
        w.family(p + "slab_bytes_in_use", "gauge", "Slab bytes in use by malloc type.")
        for t in s.slab.types { w.sample(p + "slab_bytes_in_use", [("type", t.name)], t.bytesInUse) }
        w.family(p + "slab_zones_held", "gauge", "Slab zones held per CPU arena (cpu -1: shared).")
        for c in s.slab.cpus { w.sample(p + "slab_zones_held", [("cpu", "\(c.cpu)")], c.zonesHeld) }

        // Namecache.
        let n = s.namecache
        w.family(p + "namecache_lookups_total", "counter", "Namecache component lookups by result.")
        for (r, v) in [("hit", n.hits), ("negative_hit", n.negativeHits), ("miss", n.misses)] {
            w.sample(p + "namecache_lookups_total", [("result", r)], v)
        }
        w.family(p + "namecache_records", "gauge", "Namecache records now.")
        w.sample(p + "namecache_records", [], n.records)
        if let io = s.hostIO {
            w.family(p + "host_io_calls_total", "counter", "VFS calls by where they ran: the host-I/O pool or their CPU.")
            w.sample(p + "host_io_calls_total", [("where", "pool")], io.completed)
            w.sample(p + "host_io_calls_total", [("where", "cpu")], io.finishedOnCPU)
            w.family(p + "host_io_queue_depth", "gauge", "Calls waiting for a host-I/O pool thread.")
            w.sample(p + "host_io_queue_depth", [], io.queueDepth)
            w.family(p + "host_io_latency_seconds", "gauge", "Host-I/O pool latency quantiles (submission to answer).")
            w.sample(p + "host_io_latency_seconds", [("quantile", "0.5")], Double(io.p50LatencyNanos) / 1e9)
            w.sample(p + "host_io_latency_seconds", [("quantile", "0.99")], Double(io.p99LatencyNanos) / 1e9)
        }

        // memcached, per CPU (memcached's own stat names).
        if let mc = s.memcached {
            let gauges: Set<String> = ["curr_items", "curr_connections", "bytes"]
            let keys = Set(mc.flatMap { $0.keys }).sorted()
            for k in keys {
                let gauge = gauges.contains(k)
                let name = p + "memcached_" + k + (gauge ? "" : "_total")
                w.family(name, gauge ? "gauge" : "counter", "memcached \(k) per owner CPU.")
                for (cpu, d) in mc.enumerated() { w.sample(name, [("cpu", "\(cpu)")], d[k] ?? 0) }
            }
        }

        // FUSE channels, per CPU and operation.
        if let f = s.fuse {
            // (A family is declared only with samples: the parsers want none empty.)
            let families: [(String, String, (FUSEChannelStatistics) -> [String: UInt64])] = [
                ("fuse_requests_total", "FUSE requests read per CPU channel and operation.", { (c: FUSEChannelStatistics) in c.requestsByOpcode }),
                ("fuse_errors_total", "FUSE error replies per CPU channel and operation.", { (c: FUSEChannelStatistics) in c.errorsByOpcode }),
            ]
            for (family, help, pick) in families where f.channels.contains(where: { !pick($0).isEmpty }) {
                w.family(p + family, "counter", help)
                for c in f.channels {
                    for (op, v) in pick(c).sorted(by: { $0.key < $1.key }) {
                        w.sample(p + family, [("cpu", "\(c.cpu)"), ("op", op)], Double(v))
                    }
                }
            }
            w.family(p + "fuse_bytes_total", "counter", "FUSE payload bytes per CPU channel and direction.")
            for c in f.channels {
                w.sample(p + "fuse_bytes_total", [("cpu", "\(c.cpu)"), ("direction", "read")], Double(c.bytesRead))
                w.sample(p + "fuse_bytes_total", [("cpu", "\(c.cpu)"), ("direction", "written")], Double(c.bytesWritten))
            }
            w.family(p + "fuse_known_nodes", "gauge", "FUSE node ids the kernel holds.")
            w.sample(p + "fuse_known_nodes", [], f.knownNodes)
        }

        // The socket stack's listeners and forwarding (own stack only), per CPU.
        if let net = s.network, !net.cpus.isEmpty {
            let fields: [(String, String, (SocketStackStatistics.CPU) -> Int)] = [
                ("net_listen_replicas", "Listening PCB replicas per CPU.", { $0.listeners }),
                ("net_accepted_total", "Connections accepted per CPU.", { $0.accepted }),
                ("net_established", "Established connections per CPU now.", { $0.established }),
                ("net_forwarded_total", "Packets this CPU forwarded to the flow's owner CPU.", { $0.forwarded }),
                ("net_forwarded_in_total", "Packets this CPU received from other CPUs as their owner.", { $0.forwardedIn }),
            ]
            for (name, help, f) in fields {
                w.family(p + name, name.hasSuffix("_total") ? "counter" : "gauge", help)
                for (cpu, c) in net.cpus.enumerated() { w.sample(p + name, [("cpu", "\(cpu)"), ("backend", net.backend)], f(c)) }
            }
            if let steering = net.flowSteering {
                w.family(p + "net_flow_steering", "gauge", "1 when the TAP's eBPF program queues every frame on its owner CPU, 0 when the kernel picks queues.")
                w.sample(p + "net_flow_steering", [("backend", net.backend)], steering.hasPrefix("eBPF") ? 1 : 0)
            }
        }
        ModuleCounters.prometheus(s.lwkt.sections, into: &w)

        // Latency histograms, per CPU (cpu "none": threads that are not CPUs).
        if let latencies {
            for h in latencies.all {
                let name = p + h.name + "_seconds"
                w.family(name, "histogram", h.help + ", seconds.")
                for cpu in 0...h.cpuCount {
                    let snap = h.snapshot(cpu: cpu)
                    // Counted from the buckets, so the cumulative series stays monotonic
                    // even when values arrive while the snapshot is read.
                    let total = snap.buckets.reduce(0, &+)
                    if cpu == h.cpuCount && total == 0 { continue }
                    let label = cpu == h.cpuCount ? "none" : "\(cpu)"
                    for b in bounds {
                        let le = UInt64(b * 1e9)
                        w.sample(name + "_bucket", [("cpu", label), ("le", format(b))], Double(snap.countAtOrBelow(le)))
                    }
                    w.sample(name + "_bucket", [("cpu", label), ("le", "+Inf")], Double(total))
                    w.sample(name + "_sum", [("cpu", label)], Double(snap.sum) / 1e9)
                    w.sample(name + "_count", [("cpu", label)], Double(total))
                }
            }
        }
        return w.text
    }
}
