import LWKT
import Slab
#if canImport(Glibc)
import Glibc
#endif

/// Writes memcached's `stats` replies from counters already gathered from every CPU. A
/// slow path: it formats with Swift strings.
struct MemcachedStatsWriter {
    let service: MemcachedService
    let out: OutputBuffer

    func stat(_ name: String, _ value: String) {
        out.append(string: "STAT \(name) \(value)\r\n")
    }

    func micros(_ tv: timeval) -> String {
        let s = String(tv.tv_usec)
        return "\(tv.tv_sec)." + String(repeating: "0", count: max(0, 6 - s.count)) + s
    }

    func total(_ all: [ShardRequest]) -> ShardCounters {
        var t = ShardCounters()
        for r in all { t.add(r.counters) }
        return t
    }

    /// `stats`: memcached's general statistics (the ones this cache keeps).
    func general(_ all: [ShardRequest], now: Int64) {
        let t = total(all)
        var ru = rusage()
        getrusage(Int32(RUSAGE_SELF.rawValue), &ru)
        stat("pid", "\(getpid())")
        stat("uptime", "\(now - service.startTime)")
        stat("time", "\(now)")
        stat("version", MemcachedService.version)
        stat("pointer_size", "64")
        stat("rusage_user", micros(ru.ru_utime))
        stat("rusage_system", micros(ru.ru_stime))
        stat("max_connections", "\(service.maxConnections)")
        stat("rejected_connections", "\(service.rejectedConnections.load(ordering: .relaxed))")
        for (k, v) in t.pairs { stat(k, "\(v)") }
        stat("limit_maxbytes", "\(service.memoryLimit)")
        // Every CPU always accepts; a connection over the limit is answered and closed
        // (memcached's maxconns_fast), so the listeners are never disabled.
        stat("accepting_conns", "1")
        stat("listen_disabled_num", "0")
        stat("threads", "\(service.stores.count)")
        // A connection yields its CPU between reads, never in the middle of a batch of
        // commands, so memcached's reqs_per_event yields do not happen.
        stat("conn_yields", "0")
        stat("total_malloced", "\(t.chargedBytes)")
        schedulerStats()
        out.append("END\r\n")
    }

    /// Where the CPUs' time went, summed over the service's LWKT CPUs (counters of the
    /// whole LWKT system, so other services on it count too): how often a CPU slept in
    /// epoll and for how long, how long it ran, its idle spins, the IPIs it sent, and how
    /// many of those had to wake a sleeping CPU with a system call. Divided by the
    /// requests of an interval, these are the per-request costs of the cross-CPU path.
    func schedulerStats() {
        let names: [(String, CPUCounter, Int64)] = [
            ("lwkt_busy_usec", .busyNanos, 1000), ("lwkt_sleep_usec", .sleepNanos, 1000), ("lwkt_sleeps", .sleeps, 1),
            ("lwkt_idle_spins", .idleSpins, 1), ("lwkt_ipis_sent", .ipiSentActive, 1),
            ("lwkt_ipi_publishes", .ipiPublishes, 1), ("lwkt_ipi_wakeups", .ipiWakeups, 1),
            ("lwkt_io_events", .ioEvents, 1)]
        for (name, counter, divisor) in names {
            var sum: Int64 = 0
            for cpu in service.system.cpus { sum &+= cpu.counter(counter) }
            stat(name, "\(sum / divisor)")
        }
    }

    /// `stats cpus`: every counter per CPU.
    func perCPU(_ all: [ShardRequest]) {
        for (i, r) in all.enumerated() {
            for (k, v) in r.counters.pairs { stat("cpu\(i):\(k)", "\(v)") }
        }
        out.append("END\r\n")
    }

    /// `stats slabs` and `stats items`, by slab size class.
    func classes(_ all: [ShardRequest], items showItems: Bool) {
        var items = [Int](repeating: 0, count: MemcachedSlabClasses.sizes.count)
        var bytes = items
        var ev = items
        for r in all {
            for c in 0..<min(items.count, r.classItems.count) {
                items[c] += r.classItems[c]; bytes[c] += r.classBytes[c]; ev[c] += r.classEvictions[c]
            }
        }
        var active = 0
        var sum = 0
        for c in 0..<items.count where items[c] > 0 || ev[c] > 0 {
            active += 1
            sum += bytes[c]
            let id = c + 1
            if showItems {
                stat("items:\(id):number", "\(items[c])")
                stat("items:\(id):evicted", "\(ev[c])")
            } else {
                stat("\(id):chunk_size", "\(MemcachedSlabClasses.sizes[c])")
                stat("\(id):used_chunks", "\(items[c])")
                stat("\(id):mem_requested", "\(bytes[c])")
            }
        }
        if !showItems {
            stat("active_slabs", "\(active)")
            stat("total_malloced", "\(sum)")
        }
        out.append("END\r\n")
    }

    /// `stats settings`.
    func settings() {
        stat("maxbytes", "\(service.memoryLimit)")
        stat("maxconns", "\(service.maxConnections)")
        stat("tcpport", "\(service.port)")
        stat("num_threads", "\(service.stores.count)")
        stat("detail_enabled", service.detail.on.load(ordering: .relaxed) ? "yes" : "no")
        stat("cas_enabled", "yes")
        stat("item_size_max", "\(service.maxValueSize)")
        stat("evictions", "on")
        stat("maxconns_fast", "yes")
        out.append("END\r\n")
    }

    /// `stats conns`: one block per open connection (its CPU, peer, idle time).
    func connections(_ all: [ShardRequest], now: Int64) {
        for (cpu, r) in all.enumerated() {
            for (id, c) in r.connections.sorted(by: { $0.key < $1.key }) {
                stat("\(id):addr", "tcp:\(c.peer)")
                stat("\(id):listen_addr", "tcp:\(service.address):\(service.port)")
                stat("\(id):cpu", "\(cpu)")
                stat("\(id):state", "conn_parse_cmd")
                stat("\(id):secs_since_last_cmd", "\(max(0, now - c.lastCommand))")
            }
        }
        out.append("END\r\n")
    }

    /// `stats detail dump`: per key prefix (up to memcached's `:`), gets, hits, sets, deletes.
    func detailDump(_ all: [ShardRequest]) {
        var merged: [String: PrefixCounters] = [:]
        for r in all { for (k, v) in r.prefixes { merged[k, default: PrefixCounters()].add(v) } }
        for (k, v) in merged.sorted(by: { $0.key < $1.key }) {
            out.append(string: "PREFIX \(k) get \(v.gets) hit \(v.hits) set \(v.sets) del \(v.deletes)\r\n")
        }
        out.append("END\r\n")
    }
}

/// `stats detail` counters of one key prefix.
struct PrefixCounters {
    var gets = 0, hits = 0, sets = 0, deletes = 0

    mutating func add(_ o: PrefixCounters) {
        gets += o.gets; hits += o.hits; sets += o.sets; deletes += o.deletes
    }
}
