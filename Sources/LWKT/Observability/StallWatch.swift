import CLibellula

/// The words a CPU's run loop writes around each job so that the stall watchdog can tell,
/// from another thread, how long the current job has been running and whose it is.
///
/// Rules of this file: the owning CPU writes the words (relaxed atomic stores, no locked
/// instruction: about 10 ns per job with the time-stamp counter); the watchdog only reads
/// them. Layout of the four words: start of the running job in `lb_cycles()` units (0: no
/// job), a sequence number bumped at each job start, the running LWKT thread's counter
/// block (0: not an LWKT thread), spare.
public enum StallWatch {
    @usableFromInline static let words = 4

    static func allocate() -> UnsafeMutablePointer<Int64> {
        let p = UnsafeMutablePointer<Int64>.allocate(capacity: words)
        p.initialize(repeating: 0, count: words)
        return p
    }

    /// A job starts on the calling CPU.
    @inlinable @inline(__always)
    static func begin(_ w: UnsafeMutablePointer<Int64>, _ stats: UnsafeMutablePointer<Int64>?) {
        lb_counter_store(w + 2, Int64(Int(bitPattern: stats)))
        lb_counter_store(w + 1, lb_counter_load(w + 1) &+ 1)
        lb_counter_store(w, Int64(bitPattern: max(1, lb_cycles())))
    }

    /// The running job turned out to be an LWKT thread's first run (it registers itself
    /// inside that job, after ``begin(_:_:)`` found no thread for it).
    static func attach(_ w: UnsafeMutablePointer<Int64>, _ stats: UnsafeMutablePointer<Int64>) {
        if lb_counter_load(w) != 0 && lb_counter_load(w + 2) == 0 { lb_counter_store(w + 2, Int64(Int(bitPattern: stats))) }
    }

    /// The job ended.
    @inlinable @inline(__always)
    static func end(_ w: UnsafeMutablePointer<Int64>) {
        lb_counter_store(w, 0)
    }
}
