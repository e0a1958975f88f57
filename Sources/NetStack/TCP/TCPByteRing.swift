/// A fixed-capacity byte ring: a connection's send buffer (unacknowledged and unsent
/// bytes, starting at SND.UNA) or receive buffer (bytes not yet read). Owned by one
/// connection on one CPU; its memory is allocated when the connection is established and
/// released explicitly with ``release()``.
struct TCPByteRing {
    private(set) var base: UnsafeMutableRawPointer?
    private(set) var capacity: Int
    private var head = 0
    /// Bytes held.
    private(set) var count = 0

    /// A ring of `capacity` bytes; its memory comes with ``allocate()``.
    init(capacity: Int) {
        self.capacity = capacity
        base = nil
    }

    /// Whether the memory is there.
    var isAllocated: Bool { base != nil }

    /// Allocates the memory (once).
    mutating func allocate() {
        if base == nil, capacity > 0 { base = .allocate(byteCount: capacity, alignment: 16) }
    }

    var free: Int { capacity - count }

    /// Takes the first `n` bytes already placed at the start of the (empty) memory as
    /// the ring's content.
    mutating func adopt(count n: Int) {
        precondition(count == 0 && n <= capacity, "adopt on a non-empty ring")
        head = 0
        count = n
    }

    /// Frees the memory; the ring then holds nothing and accepts nothing.
    mutating func release() {
        base?.deallocate()
        base = nil
        capacity = 0
        head = 0
        count = 0
    }

    /// Appends up to `n` bytes from `p`; returns how many fit.
    @discardableResult
    mutating func write(_ p: UnsafeRawPointer, _ n: Int) -> Int {
        guard let base else { return 0 }
        let k = Swift.min(n, free)
        var tail = (head + count) % capacity
        var done = 0
        while done < k {
            let run = Swift.min(k - done, capacity - tail)
            (base + tail).copyMemory(from: p + done, byteCount: run)
            done += run
            tail = (tail + run) % capacity
        }
        count += k
        return k
    }

    /// Appends up to `n` bytes of `packet` starting at `offset`; returns how many.
    @discardableResult
    mutating func write(packet: Mbuf, offset: Int, count n: Int) -> Int {
        guard let base else { return 0 }
        let k = Swift.min(n, free)
        var tail = (head + count) % capacity
        var done = 0
        while done < k {
            let run = Swift.min(k - done, capacity - tail)
            guard packet.copy(from: offset + done, count: run, into: base + tail) else { break }
            done += run
            tail = (tail + run) % capacity
        }
        count += done
        return done
    }

    /// Copies `n` bytes starting `offset` bytes past the head to `dest` (false when the
    /// ring holds fewer).
    func peek(at offset: Int, _ n: Int, into dest: UnsafeMutableRawPointer) -> Bool {
        guard let base, offset >= 0, n >= 0, offset + n <= count else { return false }
        var from = (head + offset) % capacity
        var done = 0
        while done < n {
            let run = Swift.min(n - done, capacity - from)
            (dest + done).copyMemory(from: base + from, byteCount: run)
            done += run
            from = (from + run) % capacity
        }
        return true
    }

    /// Drops `n` bytes from the head.
    mutating func discard(_ n: Int) {
        let k = Swift.min(Swift.max(0, n), count)
        guard capacity > 0 else { return }
        head = (head + k) % capacity
        count -= k
        if count == 0 { head = 0 }
    }

    /// Moves up to `n` bytes from the head to `dest`; returns how many.
    mutating func read(into dest: UnsafeMutableRawPointer, _ n: Int) -> Int {
        let k = Swift.min(n, count)
        guard k > 0, peek(at: 0, k, into: dest) else { return 0 }
        discard(k)
        return k
    }
}
