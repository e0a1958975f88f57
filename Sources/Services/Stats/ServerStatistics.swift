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

    /// The namecache's counters in a codable form.
    public struct NamecacheCounters: Codable, Sendable, Equatable {
        public var hits: Int
        public var negativeHits: Int
        public var misses: Int
        public var resolves: Int
        public var evictions: Int
        public var fastLookups: Int
        public var slowLookups: Int
        public var records: Int
        public var positives: Int
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
