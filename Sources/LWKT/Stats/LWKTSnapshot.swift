import CLibellula

/// A point-in-time copy of every counter of a system, for `libellula stat` and the
/// statistics pages. Reading it takes no lock on any CPU.
public struct LWKTSnapshot: Codable, Sendable {
    /// One CPU's counters and queue lengths.
    public struct CPUStats: Codable, Sendable {
        public var id: Int
        public var name: String
        public var core: Int
        public var osThreadID: Int32
        public var counters: [String: Int64]

        enum CodingKeys: String, CodingKey { case id, name, core, osThreadID = "osThreadId", counters }

        public init(id: Int, name: String, core: Int, osThreadID: Int32, counters: [String: Int64]) {
            self.id = id
            self.name = name
            self.core = core
            self.osThreadID = osThreadID
            self.counters = counters
        }

        /// Counter names are written in snake_case, like every other key of the documents.
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(name, forKey: .name)
            try c.encode(core, forKey: .core)
            try c.encode(osThreadID, forKey: .osThreadID)
            var snake: [String: Int64] = [:]
            for (k, v) in counters { snake[SnakeCase.from(camel: k)] = v }
            try c.encode(snake, forKey: .counters)
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = try c.decode(Int.self, forKey: .id)
            name = try c.decode(String.self, forKey: .name)
            core = try c.decode(Int.self, forKey: .core)
            osThreadID = try c.decode(Int32.self, forKey: .osThreadID)
            var camel: [String: Int64] = [:]
            for (k, v) in try c.decode([String: Int64].self, forKey: .counters) { camel[SnakeCase.toCamel(k)] = v }
            counters = camel
        }
    }

    /// One LWKT thread's counters.
    public struct ThreadStats: Codable, Sendable {
        public var name: String
        public var cpu: Int
        public var priority: String
        public var runs: Int64
        public var runTimeNanos: Int64
        public var migrations: Int64
    }

    public var uptimeNanos: UInt64
    public var cpuCount: Int
    public var cpus: [CPUStats]
    /// Messages sent on each ring, `[source][target]`.
    public var ipiMatrix: [[Int]]
    public var threads: [ThreadStats]
    public var giant: [Giant.Coverage]
    public var giantToken: TokenStats
    /// Counter sections of modules above LWKT, by name, one dictionary per CPU (for
    /// example the network stack's `net 10.0.0.1`); nil in documents written before them.
    public var sections: [String: [[String: Int64]]]?

    /// A token's counters.
    public struct TokenStats: Codable, Sendable {
        public var name: String
        public var acquisitions: Int
        public var contentions: Int
        public var heldNanos: Int
    }

    /// The sum of one counter over all CPUs.
    public func total(_ c: CPUCounter) -> Int64 {
        cpus.reduce(0) { $0 + ($1.counters[c.name] ?? 0) }
    }
}

extension LWKTSystem {
    /// Copies every counter now.
    public func snapshot() -> LWKTSnapshot {
        let cpuStats = cpus.map { cpu -> LWKTSnapshot.CPUStats in
            var counters: [String: Int64] = [:]
            for c in CPUCounter.allCases { counters[c.name] = cpu.counters.load(c) }
            return LWKTSnapshot.CPUStats(id: cpu.id, name: cpu.name, core: cpu.core, osThreadID: cpu.osThreadID,
                                         counters: counters)
        }
        let threads = liveThreads.map {
            LWKTSnapshot.ThreadStats(name: $0.name, cpu: $0.cpuID, priority: "\($0.priority)", runs: $0.runs,
                                     runTimeNanos: $0.runTimeNanos, migrations: $0.migrations)
        }.sorted { ($0.cpu, $0.name) < ($1.cpu, $1.name) }
        let g = Giant.token
        return LWKTSnapshot(uptimeNanos: lb_now_ns() &- bootTime, cpuCount: cpuCount, cpus: cpuStats,
                            ipiMatrix: crossbar.matrix(), threads: threads, giant: Giant.coverage(),
                            giantToken: .init(name: g.name, acquisitions: g.acquisitions,
                                              contentions: g.contentions, heldNanos: g.heldNanos),
                            sections: statSectionCounters())
    }
}

extension CPU {
    /// One counter of this CPU.
    public func counter(_ c: CPUCounter) -> Int64 { counters.load(c) }
}

extension LWKTSystem {
    /// Nanoseconds since the system booted.
    public var snapshotUptimeNanos: UInt64 { lb_now_ns() &- bootTime }
}
