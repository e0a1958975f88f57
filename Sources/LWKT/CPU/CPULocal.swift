import Synchronization

/// The words other threads write to reach a CPU: its doorbell, its "asleep" flag and its
/// inbox flag. Padded so that no other CPU's words share the cache line.
@usableFromInline
struct CPUSignals: ~Copyable {
    var pad0: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    /// Non-zero when some ring or the inbox may hold messages (DragonFly's RQF_IPIQ).
    @usableFromInline let doorbell = Atomic<Int>(0)
    /// 1 while the CPU has announced that it is about to sleep or sleeps.
    @usableFromInline let sleeping = Atomic<Int>(0)
    /// 1 when the inbox for threads that are not CPUs may hold messages.
    @usableFromInline let inboxFlag = Atomic<Int>(0)
    /// 1 once the CPU has been asked to stop.
    @usableFromInline let stop = Atomic<Int>(0)
    var pad1: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
}

/// A growable owner-only stack of continuations that `LWKT.yield()` parks until the job
/// that parked them has finished.
@usableFromInline
struct ContinuationBuffer {
    @usableFromInline var items: UnsafeMutablePointer<UnsafeContinuation<Void, Never>>
    @usableFromInline var capacity: Int
    @usableFromInline var count = 0

    init() {
        capacity = 16
        items = .allocate(capacity: capacity)
    }

    @inlinable mutating func append(_ c: UnsafeContinuation<Void, Never>) {
        if count == capacity {
            let n = UnsafeMutablePointer<UnsafeContinuation<Void, Never>>.allocate(capacity: capacity * 2)
            n.moveInitialize(from: items, count: count)
            items.deallocate()
            items = n
            capacity *= 2
        }
        (items + count).initialize(to: c)
        count += 1
    }
}

/// Open-addressing table from a task's address to its LWKT thread's counters, so the run
/// loop can charge runs and run time to threads without allocating. Owner-only.
@usableFromInline
struct ThreadTable {
    @usableFromInline var keys: UnsafeMutablePointer<UInt>
    @usableFromInline var values: UnsafeMutablePointer<UnsafeMutablePointer<Int64>?>
    @usableFromInline var capacity: Int
    @usableFromInline var count = 0

    init(capacity: Int = 64) {
        self.capacity = capacity
        keys = .allocate(capacity: capacity)
        keys.initialize(repeating: 0, count: capacity)
        values = .allocate(capacity: capacity)
        values.initialize(repeating: nil, count: capacity)
    }

    @inlinable @inline(__always)
    func lookup(_ key: UInt) -> UnsafeMutablePointer<Int64>? {
        if count == 0 { return nil }
        var i = Int(truncatingIfNeeded: (key >> 4) &* 0x9E37_79B9_7F4A_7C15) & (capacity - 1)
        while true {
            let k = keys[i]
            if k == key { return values[i] }
            if k == 0 { return nil }
            i = (i + 1) & (capacity - 1)
        }
    }

    mutating func insert(_ key: UInt, _ value: UnsafeMutablePointer<Int64>) {
        if (count + 1) * 2 > capacity { rehash(capacity * 2) }
        var i = Int(truncatingIfNeeded: (key >> 4) &* 0x9E37_79B9_7F4A_7C15) & (capacity - 1)
        while keys[i] != 0 && keys[i] != key { i = (i + 1) & (capacity - 1) }
        if keys[i] == 0 { count += 1 }
        keys[i] = key
        values[i] = value
    }

    /// Removes `key` with backward-shift deletion (no tombstones, no allocation).
    mutating func remove(_ key: UInt) {
        guard count > 0 else { return }
        let mask = capacity - 1
        var i = Int(truncatingIfNeeded: (key >> 4) &* 0x9E37_79B9_7F4A_7C15) & mask
        while keys[i] != key {
            if keys[i] == 0 { return }
            i = (i + 1) & mask
        }
        keys[i] = 0
        values[i] = nil
        count -= 1
        var j = (i + 1) & mask
        while keys[j] != 0 {
            let home = Int(truncatingIfNeeded: (keys[j] >> 4) &* 0x9E37_79B9_7F4A_7C15) & mask
            // Move j back to the hole at i unless its home lies cyclically in (i, j].
            let between = i <= j ? (home > i && home <= j) : (home > i || home <= j)
            if !between {
                keys[i] = keys[j]
                values[i] = values[j]
                keys[j] = 0
                values[j] = nil
                i = j
            }
            j = (j + 1) & mask
        }
    }

    private mutating func rehash(_ newCapacity: Int) {
        let oldKeys = keys, oldValues = values, oldCap = capacity
        capacity = newCapacity
        keys = .allocate(capacity: newCapacity)
        keys.initialize(repeating: 0, count: newCapacity)
        values = .allocate(capacity: newCapacity)
        values.initialize(repeating: nil, count: newCapacity)
        count = 0
        for i in 0..<oldCap where oldKeys[i] != 0 {
            if let v = oldValues[i] { insert(oldKeys[i], v) }
        }
        oldKeys.deallocate()
        oldValues.deallocate()
    }
}

/// Everything about a CPU that only its own OS thread reads and writes, in raw memory so
/// that no dynamic exclusivity check or reference count touches it on hot paths. The
/// thread-local "current CPU" pointer points here.
@usableFromInline
struct CPULocal {
    @usableFromInline let cpu: Unmanaged<CPU>
    @usableFromInline let signals: UnsafeMutablePointer<CPUSignals>
    @usableFromInline var critCount = 0
    /// Set when a preemption point was reached inside a critical section.
    @usableFromInline var deferred = 0
    @usableFromInline var processingIPI = 0
    @usableFromInline var batchDepth = 0
    @usableFromInline var nestedDrains = 0
    @usableFromInline var currentBand = 1
    @usableFromInline var runq = RunQueue()
    @usableFromInline var yielders = ContinuationBuffer()
    /// Targets whose rings hold unpublished slots (inside `IPICrossbar.batch`).
    @usableFromInline var dirtyTargets: UnsafeMutablePointer<Int>
    @usableFromInline var dirtyCount = 0
    @usableFromInline var dirtyNeedsWake: UnsafeMutablePointer<Bool>
    @usableFromInline var threads = ThreadTable()
    @usableFromInline var runningThreadStats: UnsafeMutablePointer<Int64>? = nil

    init(cpu: Unmanaged<CPU>, signals: UnsafeMutablePointer<CPUSignals>, cpuCount: Int) {
        self.cpu = cpu
        self.signals = signals
        dirtyTargets = .allocate(capacity: cpuCount)
        dirtyNeedsWake = .allocate(capacity: cpuCount)
        dirtyNeedsWake.initialize(repeating: false, count: cpuCount)
    }
}
