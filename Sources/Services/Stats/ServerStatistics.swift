import FUSE
import Foundation
import LWKT
import Slab
import VFS

/// Everything `/_stats` shows, per subsystem and per CPU; `/_stats.json` is this, encoded
/// with ``encoder()`` (snake_case keys throughout, a schema version and a timestamp).
public struct ServerStatistics: Codable, Sendable {
    /// The scheduler: per-CPU counters, IPI matrix, threads, Giant coverage.
    public var lwkt: LWKTSnapshot
    /// The slab allocator: zones per CPU, size classes, malloc types.
    public var slab: SlabStatistics
    /// The namecache (one for the whole namespace).
    public var namecache: NamecacheCounters
    /// HTTP connections and requests per CPU.
    public var http: [HTTPCPUStatistics]
    /// The address the server listens on.
    public var address: String
    /// Threads listed in `lwkt.threads` before it was cut short.
    public var threadCount: Int
    /// Live LWKT threads per CPU (the length of each CPU's thread table).
    public var threadsPerCPU: [Int]
    /// The memcached service's counters per CPU (memcached's `stats` names), when one runs
    /// beside the HTTP server.
    public var memcached: [[String: Int]]?
    /// The JSON layout's version: 2 is snake_case with latency, stalls and pending messages.
    public static let currentSchemaVersion = 2
    /// The layout of this document (``currentSchemaVersion`` when written by this build).
    public var schemaVersion: Int = ServerStatistics.currentSchemaVersion
    /// When the snapshot was taken, seconds since 1970 (UTC).
    public var timestamp: Double = Date().timeIntervalSince1970
    /// Latency quantiles per histogram (`http_service`, `memcached_command`,
    /// `domsg_round_trip`, `ipi_delivery`), merged over CPUs.
    public var latency: [String: LatencySummary] = [:]
    /// The process: resident memory and the memcached memory limit.
    public var process: ProcessStatistics = .current()
    /// The stall watchdog: threshold, counts and the last reports with backtraces.
    public var stalls: StallStatistics = StallStatistics()
    /// The last second's rates (nil until the sampler has two snapshots).
    public var rates: RateSample? = nil
    /// Cross-CPU messages waiting on each ring at the last sample, with their functions
    /// (empty when every CPU keeps up).
    public var pendingMessages: [PendingRing] = []
    /// The FUSE mount served by this system, when one is (`libellula mount --stats`):
    /// per-channel requests and errors by operation, service time, node ids, namecache.
    public var fuse: FUSEStatistics? = nil
    /// The VFS's host-I/O pool: calls, queue depth, latency quantiles and histogram, and
    /// where the latency goes (nil when the server does not report it).
    public var hostIO: HostIOStatistics? = nil
    /// The socket stack's per-CPU listeners, accepts and cross-CPU forwarding (nil on host
    /// sockets, whose kernel keeps them).
    public var network: SocketStackStatistics? = nil

    /// The encoder `/_stats.json` uses: snake_case keys, sorted.
    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys]
        return e
    }

    /// The decoder that reads ``encoder()``'s output back (snake_case to the Swift names,
    /// acronyms included).
    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .custom { path in
            let key = path[path.count - 1]
            if key.intValue != nil { return key }
            return StatisticsKey(snakeCaseKeys[key.stringValue] ?? SnakeCase.toCamel(key.stringValue))
        }
        return d
    }

    /// Keys whose Swift names end in an acronym (plain camel-casing would miss them).
    static let snakeCaseKeys = ["zones_returned_to_os": "zonesReturnedToOS", "threads_per_cpu": "threadsPerCPU",
                                "host_io": "hostIO", "finished_on_cpu": "finishedOnCPU",
                                "watchdog_cpu_seconds": "watchdogCPUSeconds"]

    struct StatisticsKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ s: String) { stringValue = s }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// The process as the host kernel sees it.
    public struct ProcessStatistics: Codable, Sendable {
        /// Resident set size in bytes (`/proc/self/statm`).
        public var residentBytes: Int
        /// The memcached cache's memory limit in bytes, when one runs (0: none).
        public var memcachedLimitBytes: Int = 0

        /// The resident size now.
        public static func current() -> ProcessStatistics {
            var rss = 0
            if let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) {
                let fields = text.split(separator: " ")
                if fields.count > 1, let pages = Int(fields[1]) { rss = pages * Int(sysconf(Int32(_SC_PAGESIZE))) }
            }
            return ProcessStatistics(residentBytes: rss)
        }
    }

    /// The namecache's counters in a codable form.
    public struct NamecacheCounters: Codable, Sendable, Equatable {
        /// Components found positive in the cache.
        public var hits: Int
        /// Components found negative (ENOENT without asking the file system).
        public var negativeHits: Int
        /// Components not in the cache.
        public var misses: Int
        /// Calls into a file system to resolve or revalidate a name.
        public var resolves: Int
        /// Records reclaimed to bound negative entries.
        public var evictions: Int
        /// Path lookups answered by the lock-free path.
        public var fastLookups: Int
        /// Path lookups that took the locked path.
        public var slowLookups: Int
        /// Records in the table now.
        public var records: Int
        /// Positive records now.
        public var positives: Int
        /// Negative records now.
        public var negatives: Int

        init(_ s: NamecacheStatistics) {
            hits = s.hits; negativeHits = s.negativeHits; misses = s.misses; resolves = s.resolves
            evictions = s.evictions; fastLookups = s.fastLookups; slowLookups = s.slowLookups
            records = s.records; positives = s.positives; negatives = s.negatives
        }

        /// Hits (positive and negative) over all component lookups, 0…1.
        public var hitRate: Double {
            let all = hits + negativeHits + misses
            return all == 0 ? 0 : Double(hits + negativeHits) / Double(all)
        }
    }
}

/// Where a FUSE mount's statistics come from for the statistics documents of an HTTP
/// server on the same system: the mount registers one with ``register(on:_:)``.
public final class FUSEStatisticsSource: Sendable {
    static let key = "libellula.fuse-statistics"
    let provide: @Sendable () -> FUSEStatistics

    init(_ provide: @escaping @Sendable () -> FUSEStatistics) { self.provide = provide }

    /// Makes `provide` the FUSE section of every statistics document served on `system`
    /// for as long as the returned source is kept (the system holds it weakly); nil when
    /// another mount's source is registered already.
    public static func register(on system: LWKTSystem, _ provide: @escaping @Sendable () -> FUSEStatistics) -> FUSEStatisticsSource? {
        let source = FUSEStatisticsSource(provide)
        return system.attach(key, source) ? source : nil
    }

    /// The registered mount's statistics now (nil: no mount on `system`).
    public static func current(on system: LWKTSystem) -> FUSEStatistics? {
        system.attached(key, as: FUSEStatisticsSource.self)?.provide()
    }
}
