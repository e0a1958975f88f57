/// A connection's out-of-order segments (payload mbufs, sorted by sequence number,
/// disjoint), bounded in count. Each mbuf carries its sequence number in `word0` and a
/// FIN mark in `word1`. Owned by one connection on one CPU.
struct TCPReassemblyQueue {
    private(set) var head: Mbuf?
    private(set) var count = 0
    /// Sequence number of the segment queued last (its block leads the SACK option).
    private(set) var lastQueued: UInt32 = 0

    var isEmpty: Bool { head == nil }

    static func seq(_ m: Mbuf) -> UInt32 { m.words.0 }
    static func end(_ m: Mbuf) -> UInt32 { m.words.0 &+ UInt32(m.length) }
    static func hasFIN(_ m: Mbuf) -> Bool { m.words.1 != 0 }

    enum Outcome { case queued, duplicate, full }

    /// Queues `m` (one buffer holding payload only, starting at `seq`), trimming what
    /// queued segments already hold. Takes ownership in every outcome.
    mutating func insert(_ m: Mbuf, seq: UInt32, fin: Bool, limit: Int) -> Outcome {
        var s = seq
        guard m.length > 0 || fin else { m.free(); return .duplicate }
        m.words = (s, fin ? 1 : 0, 0, 0)
        m.nextPacket = nil
        var prev: Mbuf? = nil
        var cur = head
        while let c = cur, TCPSequence.le(Self.seq(c), s) { prev = c; cur = c.nextPacket }
        if let p = prev {
            let pe = Self.end(p)
            if TCPSequence.ge(pe, s &+ UInt32(m.length)) { m.free(); return .duplicate }
            if TCPSequence.gt(pe, s) {
                let cut = TCPSequence.distance(s, pe)
                m.trimFront(min(cut, m.length))
                s = pe
                m.words.0 = s
            }
        }
        // Drop queued segments the new one covers, trim it against the next one.
        while let c = cur, TCPSequence.ge(s &+ UInt32(m.length), Self.end(c)) {
            let n = c.nextPacket
            c.nextPacket = nil
            c.free()
            count -= 1
            cur = n
        }
        if let c = cur, TCPSequence.gt(s &+ UInt32(m.length), Self.seq(c)) {
            m.length = TCPSequence.distance(s, Self.seq(c))
            m.words.1 = 0
        }
        guard count < limit else {
            if let p = prev { p.nextPacket = cur } else { head = cur }
            m.free()
            return .full
        }
        m.nextPacket = cur
        if let p = prev { p.nextPacket = m } else { head = m }
        count += 1
        lastQueued = s
        return .queued
    }

    /// Removes and returns the first segment when it starts at or below `rcvNxt`.
    mutating func popReady(_ rcvNxt: UInt32) -> Mbuf? {
        guard let h = head, TCPSequence.le(Self.seq(h), rcvNxt) else { return nil }
        head = h.nextPacket
        h.nextPacket = nil
        count -= 1
        return h
    }

    /// Frees every queued segment.
    mutating func removeAll() {
        while let h = head { head = h.nextPacket; h.nextPacket = nil; h.free() }
        count = 0
    }

    /// Up to `max` SACK blocks describing the queue, the one holding the most recently
    /// queued segment first (RFC 2018 §4).
    func sackBlocks(max: Int, into o: inout TCPOptions) {
        o.removeSACKBlocks()
        guard max > 0 else { return }
        // First the block containing lastQueued.
        var first: TCPSACKBlock? = nil
        var cur = head
        while let c = cur {
            var s = Self.seq(c), e = Self.end(c)
            var n = c.nextPacket
            while let x = n, Self.seq(x) == e { e = Self.end(x); n = x.nextPacket }
            if TCPSequence.le(s, lastQueued), TCPSequence.lt(lastQueued, e) { first = TCPSACKBlock(start: s, end: e) }
            s = e
            cur = n
        }
        if let f = first { o.appendSACK(f) }
        cur = head
        while let c = cur, o.sackCount < max {
            let s = Self.seq(c)
            var e = Self.end(c)
            var n = c.nextPacket
            while let x = n, Self.seq(x) == e { e = Self.end(x); n = x.nextPacket }
            if first?.start != s { o.appendSACK(TCPSACKBlock(start: s, end: e)) }
            cur = n
        }
    }
}
