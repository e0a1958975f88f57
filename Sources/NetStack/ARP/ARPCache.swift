/// One CPU's ARP cache and the packets it holds while an address is being resolved.
/// Only its CPU touches it; CPU 0 resolves and sends every other CPU the result.
struct ARPCache {
    struct Entry { var mac: MACAddress; var expires: UInt64 }
    struct Held { var nextHop: IPv4Address; var packet: Mbuf; var since: UInt64 }

    private(set) var entries: [UInt32: Entry] = [:]
    private(set) var held: [Held] = []
    let limit: Int
    let holdLimit: Int

    init(limit: Int, holdLimit: Int) {
        self.limit = limit
        self.holdLimit = holdLimit
        entries.reserveCapacity(min(limit, 256))
        held.reserveCapacity(holdLimit)
    }

    /// The hardware address of `ip` if known and not expired at `now`.
    @inline(__always)
    func lookup(_ ip: IPv4Address, now: UInt64) -> MACAddress? {
        guard let e = entries[ip.value], e.expires > now else { return nil }
        return e.mac
    }

    /// When `ip`'s entry expires (0 when there is none).
    func expiry(_ ip: IPv4Address) -> UInt64 { entries[ip.value]?.expires ?? 0 }

    /// Whether `ip` has an entry at all (expired or not).
    func knows(_ ip: IPv4Address) -> Bool { entries[ip.value] != nil }

    /// Records `ip` → `mac`; false when the cache is full of live entries.
    mutating func set(_ ip: IPv4Address, _ mac: MACAddress, expires: UInt64, now: UInt64) -> Bool {
        if entries[ip.value] == nil, entries.count >= limit {
            entries = entries.filter { $0.value.expires > now }
            if entries.count >= limit { return false }
        }
        entries[ip.value] = Entry(mac: mac, expires: expires)
        return true
    }

    /// Holds `packet` for `nextHop`; when the hold queue is full the oldest packet is
    /// returned to be dropped.
    mutating func hold(_ packet: Mbuf, for nextHop: IPv4Address, now: UInt64) -> Mbuf? {
        var evicted: Mbuf? = nil
        if held.count >= holdLimit { evicted = held.removeFirst().packet }
        held.append(Held(nextHop: nextHop, packet: packet, since: now))
        return evicted
    }

    /// Removes and passes to `body` every packet held for `nextHop`.
    mutating func release(_ nextHop: IPv4Address, _ body: (Mbuf) -> Void) {
        var i = 0
        while i < held.count {
            if held[i].nextHop == nextHop { body(held.remove(at: i).packet) } else { i += 1 }
        }
    }

    /// Removes packets held since before `cutoff`, passing each to `body`.
    mutating func expireHeld(before cutoff: UInt64, _ body: (Mbuf) -> Void) {
        var i = 0
        while i < held.count {
            if held[i].since < cutoff { body(held.remove(at: i).packet) } else { i += 1 }
        }
    }

    /// Removes every held packet.
    mutating func removeAllHeld(_ body: (Mbuf) -> Void) {
        for h in held { body(h.packet) }
        held.removeAll(keepingCapacity: true)
    }
}
