/// One CPU's fragment reassembly queues, keyed by (source, destination, protocol,
/// identification). Each incomplete datagram is built in place in a 64 KiB cluster;
/// overlapping fragments discard the datagram (RFC 5722's rule), and the number of
/// datagrams, fragments per datagram and their age are all bounded.
struct IPv4Reassembly {
    struct Key: Hashable { var src: UInt32; var dst: UInt32; var id: UInt16; var proto: UInt8 }

    final class Entry {
        let buffer: Mbuf
        var ranges: [(start: Int, end: Int)] = []
        var total: Int? = nil
        var received = 0
        let created: UInt64
        init(buffer: Mbuf, created: UInt64) {
            self.buffer = buffer
            self.created = created
            ranges.reserveCapacity(8)
        }
    }

    /// What became of a fragment.
    enum Outcome {
        /// Kept; the datagram is still incomplete.
        case queued
        /// The datagram is complete: its IPv4 header and payload, in one buffer.
        case complete(Mbuf)
        /// Refused, for the reason counted.
        case dropped(NetCounter)
    }

    private(set) var entries: [Key: Entry] = [:]
    let limit: Int
    let fragmentLimit: Int

    init(limit: Int, fragmentLimit: Int) {
        self.limit = limit
        self.fragmentLimit = fragmentLimit
    }

    /// Adds the fragment `m` (IPv4 header at its front, described by `h`); `m` is consumed.
    mutating func insert(_ m: Mbuf, header h: IPv4Header, pool: MbufPool, now: UInt64) -> Outcome {
        defer { m.free() }
        let off = h.fragmentOffset
        let len = h.totalLength - h.headerLength
        let end = off + len
        guard len > 0, !h.hasMoreFragments || len % 8 == 0 else { return .dropped(.dropBadIPHeader) }
        guard end <= 65535 - IPv4Header.minimumSize else { return .dropped(.dropTooBig) }
        let key = Key(src: h.source.value, dst: h.destination.value, id: h.identification, proto: h.proto)
        let entry: Entry
        if let e = entries[key] {
            entry = e
        } else {
            guard entries.count < limit else { return .dropped(.dropReassemblyLimit) }
            guard let c = pool.allocateCluster(headroom: 64) else { return .dropped(.dropNoBuffers) }
            entry = Entry(buffer: c, created: now)
            entries[key] = entry
        }
        // Exact duplicates are dropped alone; any other overlap discards the datagram.
        for r in entry.ranges where off < r.end && end > r.start {
            if r.start == off && r.end == end { return .dropped(.dropFragmentOverlap) }
            discard(key)
            return .dropped(.dropFragmentOverlap)
        }
        if !h.hasMoreFragments {
            if let t = entry.total, t != end { discard(key); return .dropped(.dropBadIPHeader) }
            if entry.ranges.contains(where: { $0.end > end }) { discard(key); return .dropped(.dropBadIPHeader) }
            entry.total = end
        } else if let t = entry.total, end > t {
            discard(key)
            return .dropped(.dropBadIPHeader)
        }
        guard entry.ranges.count < fragmentLimit else { discard(key); return .dropped(.dropReassemblyLimit) }
        guard m.copy(from: h.headerLength, count: len, into: entry.buffer.data + IPv4Header.minimumSize + off) else {
            discard(key)
            return .dropped(.dropTruncated)
        }
        entry.ranges.append((off, end))
        entry.received += len
        guard let total = entry.total, entry.received == total else { return .queued }
        entries[key] = nil
        let b = entry.buffer
        b.length = IPv4Header.minimumSize + total
        IPv4Header(totalLength: IPv4Header.minimumSize + total, proto: h.proto, source: h.source,
                   destination: h.destination, identification: h.identification, ttl: h.ttl, tos: h.tos).write(to: b.data)
        return .complete(b)
    }

    /// Drops datagrams older than `cutoff`; returns how many.
    mutating func expire(before cutoff: UInt64) -> Int {
        var n = 0
        for (k, e) in entries where e.created < cutoff { discard(k); n += 1 }
        return n
    }

    /// Drops everything.
    mutating func removeAll() { for k in Array(entries.keys) { discard(k) } }

    /// Incomplete datagrams held.
    var count: Int { entries.count }

    private mutating func discard(_ k: Key) {
        if let e = entries.removeValue(forKey: k) { e.buffer.free() }
    }
}
