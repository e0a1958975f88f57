import LWKT
import Slab
import VFS

/// Everything `/_stats` shows, per subsystem and per CPU; `/_stats.json` is this, encoded.
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
