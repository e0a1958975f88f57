import CLibellula

/// The per-CPU counters a CPU keeps about itself. Each is written only by its CPU and may
/// be read by anyone (relaxed atomics: never torn, never a lock).
public enum CPUCounter: Int, CaseIterable, Sendable, Codable {
    case jobsIdle, jobsUser, jobsKernel, jobsSoftInterrupt, jobsInterrupt
    case actorJobs
    case busyNanos
    case ipiReceived
    case ipiSentActive
    case ipiSentPassive
    case ipiPassivePromoted
    case ipiPublishes
    case ipiWakeups
    case ipiWakeupsAvoided
    case ipiSenderStalls
    case ipiNestedDrains
    case inboxReceived
    case doorbellPolls
    case criticalDeferrals
    case idleSpins
    case sleeps
    case sleepNanos
    case timerFired
    case ioEvents
    case tsleeps
    case tsleepTimeouts
    case wakeups
    case wakeupIPIs
    case wakeupIPIsAvoided
    case yields
    case yieldSwitches
    case tokenContended
    case threadsSpawned
    case threadsExited
    case cpusyncs

    /// A stable name for reports.
    public var name: String { String(describing: self) }
}

/// A fixed block of `Int64` counters in raw memory, one block per CPU or per object.
@usableFromInline
struct CounterBlock: @unchecked Sendable {
    @usableFromInline let base: UnsafeMutablePointer<Int64>
    @usableFromInline let count: Int

    init(count: Int) {
        self.count = count
        base = .allocate(capacity: count)
        base.initialize(repeating: 0, count: count)
    }

    func deallocate() { base.deallocate() }

    @usableFromInline @inline(__always) func add(_ i: Int, _ v: Int64 = 1) { lb_counter_add(base + i, v) }
    @usableFromInline @inline(__always) func load(_ i: Int) -> Int64 { lb_counter_load(base + i) }
    @usableFromInline @inline(__always) func store(_ i: Int, _ v: Int64) { lb_counter_store(base + i, v) }

    @usableFromInline @inline(__always) func add(_ c: CPUCounter, _ v: Int64 = 1) { add(c.rawValue, v) }
    @usableFromInline @inline(__always) func load(_ c: CPUCounter) -> Int64 { load(c.rawValue) }
}
