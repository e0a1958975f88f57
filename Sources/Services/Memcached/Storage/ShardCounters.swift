/// The counters of one shard (one CPU), written only on that CPU. Other CPUs read them by
/// asking the owner for a copy (a message), never by reading them directly. Names follow
/// memcached's `stats` output where memcached has the counter.
public struct ShardCounters: Sendable, Equatable {
    /// Key lookups (`cmd_get`), and how many hit, missed, or found an expired or flushed item.
    public var cmdGet = 0, getHits = 0, getMisses = 0, getExpired = 0, getFlushed = 0
    /// Store commands (`cmd_set`) and touches, with their hits and misses.
    public var cmdSet = 0, cmdTouch = 0, touchHits = 0, touchMisses = 0
    /// Deletes that found their key, and those that did not.
    public var deleteHits = 0, deleteMisses = 0
    /// incr/decr hits and misses.
    public var incrHits = 0, incrMisses = 0, decrHits = 0, decrMisses = 0
    /// cas commands: stored, key missing, and CAS id mismatched (`cas_badval`).
    public var casHits = 0, casMisses = 0, casBadval = 0
    /// Flushes, LRU evictions, items that expired or were evicted before their first read,
    /// and expired items whose memory was reclaimed.
    public var cmdFlush = 0, evictions = 0, expiredUnfetched = 0, evictedUnfetched = 0, reclaimed = 0
    /// Items held now and ever stored, their key and value bytes, the bytes they are charged
    /// against the memory limit (slab chunk sizes), and stores refused for lack of memory.
    public var currItems = 0, totalItems = 0, bytes = 0, chargedBytes = 0, outOfMemory = 0
    /// Stores refused as larger than the item size limit (`store_too_large`).
    public var storeTooLarge = 0
    /// Connections accepted on this CPU, and open now.
    public var totalConnections = 0, currConnections = 0
    /// Bytes read from and written to this CPU's connections.
    public var bytesRead = 0, bytesWritten = 0
    /// Key operations whose owner was this CPU and whose connection was too.
    public var localRequests = 0
    /// Messages this CPU's connections sent to other CPUs (one per owner per command).
    public var remoteSent = 0
    /// Key operations those messages carried (batch size = remoteOps / remoteSent).
    public var remoteOps = 0
    /// Messages this CPU served for connections on other CPUs.
    public var remoteServed = 0
    /// Messages sent, by how many key operations each carried: 1, 2–3, 4–7, 8 or more
    /// (the batch-size distribution behind `remoteOps / remoteSent`).
    public var remoteBatch1 = 0, remoteBatch2to3 = 0, remoteBatch4to7 = 0, remoteBatch8Plus = 0
    /// Windows whose connection thread had to suspend until other CPUs answered (a
    /// message that was not answered by the time every message of the window was sent).
    public var remoteWaits = 0

    /// All counters zero.
    public init() {}

    /// Counts one message of `ops` key operations in the batch-size buckets.
    @inline(__always) public mutating func countBatch(_ ops: Int) {
        if ops <= 1 { remoteBatch1 += 1 } else if ops < 4 { remoteBatch2to3 += 1 } else if ops < 8 { remoteBatch4to7 += 1 } else { remoteBatch8Plus += 1 }
    }

    /// Adds every counter of `o` to this one.
    public mutating func add(_ o: ShardCounters) {
        cmdGet += o.cmdGet; getHits += o.getHits; getMisses += o.getMisses
        getExpired += o.getExpired; getFlushed += o.getFlushed
        cmdSet += o.cmdSet; cmdTouch += o.cmdTouch; touchHits += o.touchHits; touchMisses += o.touchMisses
        deleteHits += o.deleteHits; deleteMisses += o.deleteMisses
        incrHits += o.incrHits; incrMisses += o.incrMisses; decrHits += o.decrHits; decrMisses += o.decrMisses
        casHits += o.casHits; casMisses += o.casMisses; casBadval += o.casBadval
        cmdFlush += o.cmdFlush; evictions += o.evictions; expiredUnfetched += o.expiredUnfetched
        evictedUnfetched += o.evictedUnfetched; reclaimed += o.reclaimed
        currItems += o.currItems; totalItems += o.totalItems; bytes += o.bytes
        chargedBytes += o.chargedBytes; outOfMemory += o.outOfMemory; storeTooLarge += o.storeTooLarge
        totalConnections += o.totalConnections; currConnections += o.currConnections
        bytesRead += o.bytesRead; bytesWritten += o.bytesWritten
        localRequests += o.localRequests; remoteSent += o.remoteSent; remoteOps += o.remoteOps; remoteServed += o.remoteServed
        remoteBatch1 += o.remoteBatch1; remoteBatch2to3 += o.remoteBatch2to3; remoteBatch4to7 += o.remoteBatch4to7
        remoteBatch8Plus += o.remoteBatch8Plus; remoteWaits += o.remoteWaits
    }

    /// The counters as memcached-style `(name, value)` pairs.
    public var pairs: [(String, Int)] {
        [("cmd_get", cmdGet), ("cmd_set", cmdSet), ("cmd_flush", cmdFlush), ("cmd_touch", cmdTouch),
         ("get_hits", getHits), ("get_misses", getMisses), ("get_expired", getExpired),
         ("get_flushed", getFlushed), ("delete_misses", deleteMisses), ("delete_hits", deleteHits),
         ("incr_misses", incrMisses), ("incr_hits", incrHits), ("decr_misses", decrMisses),
         ("decr_hits", decrHits), ("cas_misses", casMisses), ("cas_hits", casHits),
         ("cas_badval", casBadval), ("touch_hits", touchHits), ("touch_misses", touchMisses),
         ("bytes_read", bytesRead), ("bytes_written", bytesWritten),
         ("curr_connections", currConnections), ("total_connections", totalConnections),
         ("curr_items", currItems), ("total_items", totalItems), ("bytes", bytes),
         ("expired_unfetched", expiredUnfetched), ("evicted_unfetched", evictedUnfetched),
         ("evictions", evictions), ("reclaimed", reclaimed),
         ("store_too_large", storeTooLarge), ("store_no_memory", outOfMemory),
         ("local_requests", localRequests), ("remote_requests_sent", remoteSent), ("remote_ops_sent", remoteOps),
         ("remote_requests_served", remoteServed),
         ("remote_batches_1", remoteBatch1), ("remote_batches_2_3", remoteBatch2to3),
         ("remote_batches_4_7", remoteBatch4to7), ("remote_batches_8_up", remoteBatch8Plus),
         ("remote_waits", remoteWaits)]
    }
}
