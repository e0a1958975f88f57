import CLibellula
import Synchronization

// A CPU: identity, critical sections and job queueing. Its run loop is in RunLoop.swift,
// its per-subsystem state in its Globaldata (Globaldata.swift lists who owns what), the
// IPI code in IPI/, timers in Timers/, sleep queues in Sleep/, the event poller in Events/.

/// One Libellula CPU: an OS thread pinned to a core, with its own run queue, IPI rings,
/// timers, sleep queues and event poller, all in its ``Globaldata`` (DragonFly's
/// `globaldata`). Nothing of a CPU is changed by another thread except through its IPI
/// rings, its inbox and the few atomic words in ``CPUSignals``.
public final class CPU: @unchecked Sendable {
    /// The CPU's index in its system, `0..<system.cpuCount`.
    public let id: Int
    /// A readable name, such as `cpu3`.
    public let name: String
    /// The system this CPU belongs to.
    public unowned(unsafe) let system: LWKTSystem
    /// The executor that LWKT threads on this CPU run on (a Swift `TaskExecutor`).
    public let taskExecutor: CPUTaskExecutor
    /// The executor for actors pinned to this CPU (a Swift `SerialExecutor`).
    public let serialExecutor: CPUSerialExecutor

    /// This CPU's ``Globaldata`` (what the thread-local current-CPU pointer points to).
    @usableFromInline let local = UnsafeMutablePointer<Globaldata>.allocate(capacity: 1)
    @usableFromInline let signals: UnsafeMutablePointer<CPUSignals>
    /// One bit per source CPU with messages pending in its ring to this CPU.
    @usableFromInline let pending: UnsafeMutablePointer<Atomic<UInt64>>
    @usableFromInline let counters: CounterBlock
    let inbox = Mutex<[IPISlot]>([])
    let epollFD: Int32
    let eventFD: Int32
    let unownedTask: UnownedTaskExecutor
    let unownedSerial: UnownedSerialExecutor
    /// The core this CPU's thread is pinned to, or -1.
    public internal(set) var core: Int = -1
    /// The kernel thread id of this CPU's OS thread (0 until it has started).
    public internal(set) var osThreadID: Int32 = 0
    var pthread: pthread_t? = nil

    init(id: Int, system: LWKTSystem) throws {
        self.id = id
        self.name = "\(system.configuration.namePrefix)\(id)"
        self.system = system
        taskExecutor = CPUTaskExecutor()
        serialExecutor = CPUSerialExecutor()
        unownedTask = taskExecutor.asUnownedTaskExecutor()
        unownedSerial = serialExecutor.asUnownedSerialExecutor()
        signals = .allocate(capacity: 1)
        signals.initialize(to: CPUSignals())
        pending = .allocate(capacity: system.maskWords)
        for i in 0..<system.maskWords { (pending + i).initialize(to: Atomic<UInt64>(0)) }
        counters = CounterBlock(count: CPUCounter.allCases.count)
        let ep = lb_epoll_create()
        let ev = lb_eventfd()
        guard ep >= 0, ev >= 0 else {
            let e = Int32(errnoValue())
            if ep >= 0 { close(ep) }
            if ev >= 0 { close(ev) }
            throw LWKTError.systemCall("epoll_create/eventfd", e)
        }
        epollFD = ep
        eventFD = ev
        local.initialize(to: Globaldata(address: UnsafeMutableRawPointer(local), cpu: Unmanaged.passUnretained(self), signals: signals, cpuID: id,
                                        system: Unmanaged.passUnretained(system).toOpaque(),
                                        cpuCount: system.cpuCount, epollFD: ep, eventFD: ev))
        taskExecutor.cpu = self
        serialExecutor.cpu = self
        _ = lb_epoll_ctl(epollFD, 1, eventFD, LB_EPOLLIN, UInt64.max)
    }

    /// Wakes the CPU from `epoll_wait` through its eventfd, unless its descriptors are
    /// already closed (then its thread has exited and there is no one to wake). The
    /// `wakers` count keeps a closing shutdown from closing the eventfd, and the number
    /// being reused for another file, while a wake is between its check and its write.
    @usableFromInline @inline(never)
    func signalEventFD() {
        let s = signals
        s.pointee.wakers.add(1, ordering: .sequentiallyConsistent)
        if s.pointee.descriptorsClosed.load(ordering: .sequentiallyConsistent) == 0 {
            _ = lb_eventfd_signal(eventFD)
        }
        s.pointee.wakers.subtract(1, ordering: .sequentiallyConsistent)
    }

    /// Closes the CPU's epoll instance and eventfd. Only after its OS thread has been
    /// joined (the shutdown does this; nothing else uses the epoll instance). Idempotent.
    func closeDescriptors() {
        precondition(pthread == nil, "CPU descriptors closed while its thread runs")
        let s = signals
        guard s.pointee.descriptorsClosed.exchange(1, ordering: .sequentiallyConsistent) == 0 else { return }
        // A waker that incremented before the flag was set may still write: let it finish
        // (a few instructions; the caller is the shutdown, off every CPU of this system).
        while s.pointee.wakers.load(ordering: .sequentiallyConsistent) != 0 { usleep(10) }
        close(epollFD)
        close(eventFD)
    }

    /// Whether ``closeDescriptors()`` has run.
    var descriptorsClosed: Bool { signals.pointee.descriptorsClosed.load(ordering: .acquiring) != 0 }

    /// Frees the CPU's descriptors and globaldata. Only once nothing can reach the CPU.
    func release() {
        closeDescriptors()
        local.pointee.release()
        local.deinitialize(count: 1)
        local.deallocate()
        counters.deallocate()
    }

    // MARK: - Subsystems (the globaldata's members)

    /// This CPU's timer queue. Owner-only.
    var timers: CPUTimers { local.pointee.timers }
    /// This CPU's sleep queues. Owner-only.
    var sleepQueues: SleepQueues { local.pointee.sleepQueues }
    /// This CPU's event poller. Owner-only.
    var events: EventPoller { local.pointee.events }

    // MARK: - Current CPU

    /// The CPU whose OS thread is running the caller, or `nil` on any other thread.
    public static var current: CPU? {
        guard let p = lb_current_cpu() else { return nil }
        return p.assumingMemoryBound(to: Globaldata.self).pointee.cpu.takeUnretainedValue()
    }

    @inlinable @inline(__always)
    static var currentLocal: UnsafeMutablePointer<Globaldata>? {
        lb_current_cpu()?.assumingMemoryBound(to: Globaldata.self)
    }

    /// Whether the caller runs on this CPU's OS thread.
    @inlinable public var isCurrent: Bool { lb_current_cpu() == UnsafeMutableRawPointer(local) }

    // MARK: - Critical sections

    /// Runs `body` in a critical section (DragonFly's `crit_enter`/`crit_exit`). Inside,
    /// IPIs, timer expiries and I/O events that reach a preemption point are deferred;
    /// leaving the outermost section runs them (DragonFly's `splz`). Sections nest. The
    /// closure is synchronous, so nothing can `await` inside. On a thread that is not a
    /// CPU there is nothing to defer and `body` just runs.
    @inlinable @inline(__always)
    public static func critical<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        guard let l = currentLocal else { return try body() }
        l.pointee.critCount &+= 1
        defer {
            l.pointee.critCount &-= 1
            if l.pointee.critCount == 0,
               l.pointee.deferred != 0 || l.pointee.signals.pointee.doorbell.load(ordering: .relaxed) != 0 {
                l.pointee.cpu._withUnsafeGuaranteedRef { $0.splz() }
            }
        }
        return try body()
    }

    /// The critical-section nesting depth of the calling CPU (0 on other threads).
    public static var criticalDepth: Int { currentLocal?.pointee.critCount ?? 0 }

    /// A preemption point: runs pending IPIs and expired timers now. Inside a critical
    /// section it only records that work is pending; the section's end runs it.
    public static func processPending() {
        guard let l = currentLocal else { return }
        l.pointee.cpu._withUnsafeGuaranteedRef { $0.splz() }
    }

    /// DragonFly's `splz`: drain what a preemption point owes unless in a critical section.
    @usableFromInline
    func splz() {
        let l = local
        if l.pointee.critCount > 0 {
            if l.pointee.deferred == 0 { counters.add(.criticalDeferrals) }
            l.pointee.deferred = 1
            return
        }
        l.pointee.deferred = 0
        l.pointee.critCount += 1
        _ = drainIPIs()
        if !l.pointee.timers.isEmpty { l.pointee.timers.fireDue(cpu: self, now: lb_now_ns()) }
        l.pointee.critCount -= 1
        if l.pointee.deferred != 0 {
            l.pointee.deferred = 0
            _ = drainIPIs()
        }
    }

    // MARK: - Jobs

    /// Queues a runtime job on this CPU. On this CPU's thread it goes straight into the run
    /// queue; from another CPU it travels as an active IPI; from any other thread, through
    /// the inbox.
    @usableFromInline @inline(__always)
    func enqueueJob(_ job: UnownedJob, actor: Bool) {
        let raw = unsafeBitCast(job, to: UnsafeMutableRawPointer.self)
        let band = LWKTPriority.band(ofRaw: job.priority.rawValue)
        let tag = (band << 1) | (actor ? 1 : 0)
        if lb_current_cpu() == UnsafeMutableRawPointer(local) {
            local.pointee.runq.push(QueuedJob(job: raw, tag: tag), band: band)
        } else {
            if let here = CPU.currentLocal, here.pointee.runningThreadStats != nil { handOff(raw, from: here) }
            post(enqueueJobIPI, raw, tag, passive: false)
        }
    }

    /// The running LWKT thread's task hopping to another CPU (an actor pinned there, a
    /// migration): release its tokens now, before it can run there, and stop the run
    /// loop's end-of-job hook from touching it afterwards, when it may already be running.
    @usableFromInline @inline(never)
    func handOff(_ raw: UnsafeMutableRawPointer, from here: UnsafeMutablePointer<Globaldata>) {
        guard let st = here.pointee.runningThreadStats,
              here.pointee.threads.lookup(UInt(bitPattern: raw)) == st else { return }
        if st[LWKTThread.physicalTokens] != 0 { Token.schedulerRelease(st) }
        lb_counter_add(st, 1)
        here.pointee.runningThreadStats = nil
    }
}

/// The IPI that puts a job from another thread into the current CPU's run queue.
@usableFromInline
let enqueueJobIPI: IPIFunction = { arg, tag in
    guard let l = CPU.currentLocal, let job = arg else { return }
    l.pointee.runq.push(QueuedJob(job: job, tag: tag), band: tag >> 1)
}

@usableFromInline
func errnoValue() -> Int32 {
    #if canImport(Glibc)
    return Glibc.errno
    #else
    return 0
    #endif
}

#if canImport(Glibc)
import Glibc
#endif
