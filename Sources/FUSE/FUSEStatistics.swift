import CLibellula
import LWKT

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
    /// Requests by operation (`lookup`, `getattr`, `read`, …; only those seen), FORGETs
    /// included.
    public var requestsByOpcode: [String: UInt64] = [:]
    /// Error replies by operation (only those seen).
    public var errorsByOpcode: [String: UInt64] = [:]
    /// Service time of the channel's requests (read to reply written; replies written
    /// later by a helper thread, as for a host fsync, are not timed).
    public var latency: LatencySummary? = nil
}

/// A whole mount's statistics: its channels, the kernel's node ids and the namecache behind it.
public struct FUSEStatistics: Codable, Sendable, Equatable {
    /// Requests by operation over every channel.
    public var requestsByOpcode: [String: UInt64] {
        channels.reduce(into: [:]) { d, c in for (k, v) in c.requestsByOpcode { d[k, default: 0] += v } }
    }
    /// Error replies by operation over every channel.
    public var errorsByOpcode: [String: UInt64] {
        channels.reduce(into: [:]) { d, c in for (k, v) in c.errorsByOpcode { d[k, default: 0] += v } }
    }

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

/// The FUSE operations by opcode, for reports (the kernel's `fuse_opcode` names in
/// lower case; opcodes from 64 up share the last slot, `other`).
public enum FUSEOpcodeNames {
    /// Slots kept per channel.
    public static let slots = 64
    static let table: [UInt32: String] = [
        1: "lookup", 2: "forget", 3: "getattr", 4: "setattr", 5: "readlink", 6: "symlink", 8: "mknod",
        9: "mkdir", 10: "unlink", 11: "rmdir", 12: "rename", 13: "link", 14: "open", 15: "read",
        16: "write", 17: "statfs", 18: "release", 20: "fsync", 21: "setxattr", 22: "getxattr",
        23: "listxattr", 24: "removexattr", 25: "flush", 26: "init", 27: "opendir", 28: "readdir",
        29: "releasedir", 30: "fsyncdir", 31: "getlk", 32: "setlk", 33: "setlkw", 34: "access",
        35: "create", 36: "interrupt", 37: "bmap", 38: "destroy", 39: "ioctl", 40: "poll",
        41: "notify_reply", 42: "batch_forget", 43: "fallocate", 44: "readdirplus", 45: "rename2",
        46: "lseek", 47: "copy_file_range", 48: "setupmapping", 49: "removemapping", 50: "syncfs",
        51: "tmpfile",
    ]

    /// The counter slot of `opcode`.
    @inline(__always) public static func slot(_ opcode: UInt32) -> Int { opcode < UInt32(slots) ? Int(opcode) : slots - 1 }

    /// The name of slot `i`.
    public static func name(ofSlot i: Int) -> String {
        if i == slots - 1 { return "other" }
        return table[UInt32(i)] ?? "opcode_\(i)"
    }
}

/// The counters behind `FUSEChannelStatistics`: plain memory written only by the channel's
/// own CPU (a relaxed load and store, no read-modify-write across CPUs) and read by anyone
/// with relaxed loads for reports (the channel's reader and workers all run on that CPU, one
/// at a time). Per opcode: requests and errors; each answered request's service time goes
/// into the system's `fuse_request` histogram under the channel's CPU.
final class FUSEChannelCounters: @unchecked Sendable {
    enum Field: Int, CaseIterable {
        case requests, errors, lookups, negativeLookups, getattrs, reads, writes, bytesRead, bytesWritten, forgets, waits
    }
    private let values: UnsafeMutablePointer<Int64>
    /// `slots` request counts, then `slots` error counts.
    private let byOpcode: UnsafeMutablePointer<Int64>
    private let latency: LatencyHistogram?
    private let cpu: Int

    init(latency: LatencyHistogram? = nil, cpu: Int = 0) {
        values = .allocate(capacity: Field.allCases.count)
        values.initialize(repeating: 0, count: Field.allCases.count)
        byOpcode = .allocate(capacity: 2 * FUSEOpcodeNames.slots)
        byOpcode.initialize(repeating: 0, count: 2 * FUSEOpcodeNames.slots)
        self.latency = latency
        self.cpu = cpu
    }

    deinit {
        values.deallocate()
        byOpcode.deallocate()
    }

    @inline(__always)
    func add(_ f: Field, _ n: Int = 1) { lb_counter_add(values + f.rawValue, Int64(n)) }

    func get(_ f: Field) -> UInt64 { UInt64(bitPattern: lb_counter_load(values + f.rawValue)) }

    /// A request was read: counts it under its operation; returns its start time.
    @inline(__always)
    func begin(opcode: UInt32) -> UInt64 {
        add(.requests)
        lb_counter_add(byOpcode + FUSEOpcodeNames.slot(opcode), 1)
        return lb_now_ns()
    }

    /// The request's reply was written: an error reply counts under its operation (the
    /// channel's `fail` counts the total), and its service time since `start` is recorded.
    @inline(__always)
    func finish(opcode: UInt32, since start: UInt64, error: Bool) {
        if error { lb_counter_add(byOpcode + FUSEOpcodeNames.slots + FUSEOpcodeNames.slot(opcode), 1) }
        latency?.record(lb_now_ns() &- start, cpu: cpu)
    }

    func snapshot(cpu: Int) -> FUSEChannelStatistics {
        var requests: [String: UInt64] = [:], errors: [String: UInt64] = [:]
        for i in 0..<FUSEOpcodeNames.slots {
            let r = lb_counter_load(byOpcode + i), e = lb_counter_load(byOpcode + FUSEOpcodeNames.slots + i)
            if r > 0 { requests[FUSEOpcodeNames.name(ofSlot: i)] = UInt64(r) }
            if e > 0 { errors[FUSEOpcodeNames.name(ofSlot: i)] = UInt64(e) }
        }
        return FUSEChannelStatistics(
            cpu: cpu, requests: get(.requests), errors: get(.errors), lookups: get(.lookups),
            negativeLookups: get(.negativeLookups), getattrs: get(.getattrs), reads: get(.reads),
            writes: get(.writes), bytesRead: get(.bytesRead), bytesWritten: get(.bytesWritten),
            forgets: get(.forgets), waits: get(.waits), requestsByOpcode: requests, errorsByOpcode: errors,
            latency: latency?.snapshot(cpu: self.cpu).summary)
    }
}
