/// The sender's record of what the receiver reported holding above SND.UNA (RFC 6675):
/// sorted, disjoint blocks, bounded in number (the oldest-reported excess is dropped,
/// which only costs an extra retransmission). Storage is reserved once per connection.
struct TCPSACKScoreboard {
    static let limit = 32
    private(set) var blocks: [TCPSACKBlock] = []
    /// Bytes the blocks cover.
    private(set) var sackedBytes = 0

    init() { blocks.reserveCapacity(Self.limit + 1) }

    var isEmpty: Bool { blocks.isEmpty }
    /// The highest sequence number reported held.
    var highest: UInt32? { blocks.last?.end }

    mutating func removeAll() { blocks.removeAll(keepingCapacity: true); sackedBytes = 0 }

    /// Adds a reported block, clamped to `una..<max`; returns whether it added anything new.
    @discardableResult
    mutating func add(_ b: TCPSACKBlock, una: UInt32, max sndMax: UInt32) -> Bool {
        let s = TCPSequence.max(b.start, una), e = TCPSequence.min(b.end, sndMax)
        guard TCPSequence.lt(s, e) else { return false }
        let before = sackedBytes
        var i = 0
        while i < blocks.count, TCPSequence.lt(blocks[i].end, s) { i += 1 }
        var ns = s, ne = e
        var j = i
        while j < blocks.count, TCPSequence.le(blocks[j].start, ne) {
            ns = TCPSequence.min(ns, blocks[j].start)
            ne = TCPSequence.max(ne, blocks[j].end)
            j += 1
        }
        blocks.replaceSubrange(i..<j, with: CollectionOfOne(TCPSACKBlock(start: ns, end: ne)))
        if blocks.count > Self.limit { blocks.removeLast() }
        recount()
        return sackedBytes > before
    }

    /// SND.UNA moved to `una`: forgets what lies below.
    mutating func advance(to una: UInt32) {
        var drop = 0
        while drop < blocks.count, TCPSequence.le(blocks[drop].end, una) { drop += 1 }
        if drop > 0 { blocks.removeFirst(drop) }
        if let f = blocks.first, TCPSequence.lt(f.start, una) { blocks[0].start = una }
        recount()
    }

    private mutating func recount() {
        var n = 0
        for b in blocks { n += TCPSequence.distance(b.start, b.end) }
        sackedBytes = n
    }

    /// Whether `seq` is covered by a block.
    func isSACKed(_ seq: UInt32) -> Bool {
        for b in blocks {
            if TCPSequence.lt(seq, b.start) { return false }
            if TCPSequence.lt(seq, b.end) { return true }
        }
        return false
    }

    /// The first byte at or above `from` that is not covered and lies below the highest
    /// covered byte (the start of the next hole to retransmit), with the hole's end.
    func nextHole(from: UInt32) -> (start: UInt32, end: UInt32)? {
        var seq = from
        for b in blocks {
            if TCPSequence.le(b.end, seq) { continue }
            if TCPSequence.lt(seq, b.start) { return (seq, b.start) }
            seq = b.end
        }
        return nil
    }

    /// Bytes in `una..<upTo` not covered by a block.
    func holeBytes(from una: UInt32, upTo: UInt32) -> Int {
        guard TCPSequence.lt(una, upTo) else { return 0 }
        var n = TCPSequence.distance(una, upTo)
        for b in blocks {
            let s = TCPSequence.max(b.start, una), e = TCPSequence.min(b.end, upTo)
            if TCPSequence.lt(s, e) { n -= TCPSequence.distance(s, e) }
        }
        return n
    }
}
