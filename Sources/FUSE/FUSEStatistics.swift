import CLibellula

/// Counters of one FUSE channel (one CPU's cloned `/dev/fuse` descriptor).
public struct FUSEChannelStatistics: Codable, Sendable, Equatable {
    /// The CPU that serves the channel.
    public var cpu: Int
    /// Requests read from the channel.
    public var requests: UInt64
    /// Requests answered with an error.
    public var errors: UInt64
    /// LOOKUPs answered, and those answered with a negative entry.
    public var lookups: UInt64
    public var negativeLookups: UInt64
    /// GETATTRs answered.
    public var getattrs: UInt64
    /// READ and WRITE requests, and their payload bytes.
    public var reads: UInt64
    public var writes: UInt64
    public var bytesRead: UInt64
    public var bytesWritten: UInt64
    /// FORGET and BATCH_FORGET messages.
    public var forgets: UInt64
    /// Times the channel's thread waited for the descriptor to become readable.
    public var waits: UInt64
}

/// A whole mount's statistics: its channels, the kernel's node ids and the namecache behind it.
public struct FUSEStatistics: Codable, Sendable, Equatable {
    /// The mount point.
    public var mountPoint: String
    /// One entry per CPU channel.
    public var channels: [FUSEChannelStatistics]
    /// Node ids the kernel holds (besides the root).
    public var knownNodes: Int
    /// Namecache counters: component hits, negative hits, misses, file-system resolves,
    /// records, positives, negatives.
    public var namecacheHits: Int
    public var namecacheNegativeHits: Int
    public var namecacheMisses: Int
    public var namecacheResolves: Int
    public var namecacheRecords: Int
    public var namecachePositives: Int
    public var namecacheNegatives: Int
}

/// The counters behind `FUSEChannelStatistics`: plain memory written only by the channel's
/// own CPU (a relaxed load and store, no read-modify-write across CPUs) and read by anyone
/// with relaxed loads for reports.
final class FUSEChannelCounters: @unchecked Sendable {
    enum Field: Int, CaseIterable {
        case requests, errors, lookups, negativeLookups, getattrs, reads, writes, bytesRead, bytesWritten, forgets, waits
    }
    private let values: UnsafeMutablePointer<Int64>

    init() {
        values = .allocate(capacity: Field.allCases.count)
        values.initialize(repeating: 0, count: Field.allCases.count)
    }

    deinit { values.deallocate() }

    @inline(__always)
    func add(_ f: Field, _ n: Int = 1) { lb_counter_add(values + f.rawValue, Int64(n)) }

    func get(_ f: Field) -> UInt64 { UInt64(bitPattern: lb_counter_load(values + f.rawValue)) }

    func snapshot(cpu: Int) -> FUSEChannelStatistics {
        FUSEChannelStatistics(
            cpu: cpu, requests: get(.requests), errors: get(.errors), lookups: get(.lookups),
            negativeLookups: get(.negativeLookups), getattrs: get(.getattrs), reads: get(.reads),
            writes: get(.writes), bytesRead: get(.bytesRead), bytesWritten: get(.bytesWritten),
            forgets: get(.forgets), waits: get(.waits))
    }
}
