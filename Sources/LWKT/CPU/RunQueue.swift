/// A job waiting in a run queue: the runtime's job pointer and a tag (bit 0: actor job).
@usableFromInline
struct QueuedJob {
    @usableFromInline var job: UnsafeMutableRawPointer
    @usableFromInline var tag: Int
}

/// An owner-only FIFO of jobs that grows by doubling. No atomics: only its CPU touches it.
@usableFromInline
struct JobFIFO {
    @usableFromInline var buffer: UnsafeMutablePointer<QueuedJob>
    @usableFromInline var capacity: Int
    @usableFromInline var head = 0
    @usableFromInline var tail = 0

    init(capacity: Int = 256) {
        self.capacity = capacity
        buffer = .allocate(capacity: capacity)
    }

    @inlinable var count: Int { tail &- head }
    @inlinable var isEmpty: Bool { tail == head }

    @inlinable @inline(__always)
    mutating func push(_ j: QueuedJob) {
        if tail &- head == capacity { grow() }
        buffer[tail & (capacity &- 1)] = j
        tail &+= 1
    }

    @inlinable @inline(__always)
    mutating func pop() -> QueuedJob? {
        if head == tail { return nil }
        let j = buffer[head & (capacity &- 1)]
        head &+= 1
        return j
    }

    @usableFromInline
    mutating func grow() {
        let newCapacity = capacity * 2
        let nb = UnsafeMutablePointer<QueuedJob>.allocate(capacity: newCapacity)
        var i = 0
        while head &+ i != tail {
            nb[i] = buffer[(head &+ i) & (capacity &- 1)]
            i += 1
        }
        buffer.deallocate()
        buffer = nb
        capacity = newCapacity
        head = 0
        tail = i
    }

    func deallocate() { buffer.deallocate() }
}

/// A CPU's run queue: one FIFO per LWKT priority band and a bit mask of the non-empty
/// bands, so picking the next job is a bit scan.
@usableFromInline
struct RunQueue {
    @usableFromInline var bands: UnsafeMutablePointer<JobFIFO>
    @usableFromInline var readyMask = 0

    init() {
        bands = .allocate(capacity: LWKTPriority.bandCount)
        for i in 0..<LWKTPriority.bandCount { (bands + i).initialize(to: JobFIFO()) }
    }

    @inlinable @inline(__always)
    mutating func push(_ j: QueuedJob, band: Int) {
        bands[band].push(j)
        readyMask |= 1 << band
    }

    /// Removes the oldest job of the highest non-empty band.
    @inlinable @inline(__always)
    mutating func pop() -> (QueuedJob, Int)? {
        if readyMask == 0 { return nil }
        let band = (Int.bitWidth - 1) - readyMask.leadingZeroBitCount
        guard let j = bands[band].pop() else { readyMask &= ~(1 << band); return nil }
        if bands[band].isEmpty { readyMask &= ~(1 << band) }
        return (j, band)
    }

    /// Whether a job of `band` or higher is ready.
    @inlinable func hasReady(atLeast band: Int) -> Bool { (readyMask >> band) != 0 }

    var count: Int {
        var n = 0
        for i in 0..<LWKTPriority.bandCount { n += bands[i].count }
        return n
    }

    func count(band: Int) -> Int { bands[band].count }

    func deallocate() {
        for i in 0..<LWKTPriority.bandCount { bands[i].deallocate() }
        bands.deallocate()
    }
}
