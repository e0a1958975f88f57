/// One CPU's TCP timer schedule: a binary min-heap of (deadline, connection), so a timer run
/// touches only the connections whose deadline has passed instead of scanning every PCB
/// (thousands sit in TIME-WAIT under a connection-per-request load).
///
/// Rules: only the owner CPU touches it (it lives in ``TCPTable``). Entries are never
/// removed when a timer is cancelled or moved; a PCB's ``TCPControlBlock/scheduled`` names
/// the deadline of its one live entry, and an entry whose deadline differs from it (or
/// whose PCB left the table) is stale and skipped when it comes to the top. ``TCPTable``
/// rebuilds the heap from its connections when stale entries outnumber live ones.
/// (Generic over the element only so that it can be tested alone.)
struct TCPTimerHeap<Element> {
    private var deadlines: [UInt64] = []
    private var pcbs: [Element] = []

    var count: Int { deadlines.count }

    /// The earliest deadline held (live or stale).
    var earliest: UInt64? { deadlines.first }

    mutating func push(_ deadline: UInt64, _ tp: Element) {
        deadlines.append(deadline)
        pcbs.append(tp)
        var i = deadlines.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard deadlines[i] < deadlines[p] else { break }
            swap(i, p)
            i = p
        }
    }

    /// Removes and returns the entry with the earliest deadline.
    mutating func pop() -> (deadline: UInt64, pcb: Element)? {
        guard let d = deadlines.first else { return nil }
        let tp = pcbs[0]
        let last = deadlines.count - 1
        swap(0, last)
        deadlines.removeLast()
        pcbs.removeLast()
        var i = 0
        let n = deadlines.count
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < n, deadlines[l] < deadlines[m] { m = l }
            if r < n, deadlines[r] < deadlines[m] { m = r }
            if m == i { break }
            swap(i, m)
            i = m
        }
        return (d, tp)
    }

    mutating func removeAll() {
        deadlines.removeAll(keepingCapacity: true)
        pcbs.removeAll(keepingCapacity: true)
    }

    @inline(__always) private mutating func swap(_ a: Int, _ b: Int) {
        deadlines.swapAt(a, b)
        pcbs.swapAt(a, b)
    }
}
