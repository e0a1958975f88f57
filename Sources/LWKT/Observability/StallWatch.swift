import CLibellula

/// The words a CPU's run loop writes around each job so that the stall watchdog can tell,
/// from another thread, whether the job it saw at its last look is still running and whose
/// it is.
///
/// Rules of this file: the owning CPU writes the words (relaxed stores, no locked
/// instruction and no clock read: the watchdog keeps the time itself); the watchdog only
/// reads them. The words sit alone in one cache line (no false sharing with another CPU's
/// words or with other data). Layout: word 0 is the job sequence number, odd while a job
/// runs and even between jobs (each ``begin(_:_:)`` and each ``end(_:)`` adds one); word 1
/// is the running LWKT thread's counter block (0: not an LWKT thread); the rest is padding.
/// Jobs never nest (the run loop is the only caller), so the parity is always right.
///
/// The watchdog parks (sleeps without a timer) while every CPU is in its idle sleep; the
/// system's parked word (``SystemLatencies/watchdogParked``) says so. A CPU reads it with
/// ``watchdogParked(_:)`` right after it clears its `sleeping` flag (both sequentially
/// consistent: see ``StallDetector`` point 4) and, if it was raised, calls
/// ``wakeWatchdog(_:)`` before it starts its next job. Both are off the per-job path.
public enum StallWatch {
    /// Words in the block: one cache line.
    @usableFromInline static let words = 8
    static let lineBytes = 64

    static func allocate() -> UnsafeMutablePointer<Int64> {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: lineBytes, alignment: lineBytes)
        let p = raw.bindMemory(to: Int64.self, capacity: words)
        p.initialize(repeating: 0, count: words)
        return p
    }

    /// A job starts on the calling CPU: two stores to a line no other CPU writes.
    @inlinable @inline(__always)
    static func begin(_ w: UnsafeMutablePointer<Int64>, _ stats: UnsafeMutablePointer<Int64>?) {
        lb_counter_store(w + 1, Int64(Int(bitPattern: stats)))
        lb_counter_store(w, lb_counter_load(w) &+ 1)
    }

    /// The running job turned out to be an LWKT thread's first run (it registers itself
    /// inside that job, after ``begin(_:_:)`` found no thread for it).
    static func attach(_ w: UnsafeMutablePointer<Int64>, _ stats: UnsafeMutablePointer<Int64>) {
        if lb_counter_load(w) & 1 != 0 && lb_counter_load(w + 1) == 0 { lb_counter_store(w + 1, Int64(Int(bitPattern: stats))) }
    }

    /// The job ended.
    @inlinable @inline(__always)
    static func end(_ w: UnsafeMutablePointer<Int64>) {
        lb_counter_store(w, lb_counter_load(w) &+ 1)
    }

    /// Whether the stall watchdog is parked: read by a CPU right after it cleared its
    /// `sleeping` flag (one load per wakeup from the idle sleep).
    @inline(__always)
    static func watchdogParked(_ word: UnsafeMutablePointer<UInt32>) -> Bool { lb_u32_load_seq(word) != 0 }

    /// Wakes the parked watchdog before the calling CPU starts a job: the first CPU to get
    /// here after a parking lowers the word and pays the futex wake (of every waiter: a
    /// system may run two watchdogs); the others find it low. Only CPUs lower the word.
    static func wakeWatchdog(_ word: UnsafeMutablePointer<UInt32>) {
        if lb_u32_exchange_seq(word, 0) != 0 { _ = lb_futex_wake(word, Int32.max) }
    }

    /// Whether sequence number `seq` (word 0) says a job is running.
    @inlinable static func isRunning(_ seq: Int64) -> Bool { seq & 1 != 0 }
}
