import CLibellula
import Synchronization

/// One Libellula CPU: an OS thread pinned to a core, with its own run queue, IPI rings,
/// timers, sleep queues and event poller (DragonFly's `globaldata`). Nothing of a CPU is
/// changed by another thread except through its IPI rings, its inbox and the few atomic
/// words in ``CPUSignals``.
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

    @usableFromInline let local = UnsafeMutablePointer<CPULocal>.allocate(capacity: 1)
    @usableFromInline let signals: UnsafeMutablePointer<CPUSignals>
    /// One bit per source CPU with messages pending in its ring to this CPU.
    @usableFromInline let pending: UnsafeMutablePointer<Atomic<UInt64>>
    @usableFromInline let counters: CounterBlock
    let inbox = Mutex<[IPISlot]>([])
    let epollFD: Int32
    let eventFD: Int32
    let kernel: CPUKernel
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
            throw LWKTError.systemCall("epoll_create/eventfd", Int32(errnoValue()))
        }
        epollFD = ep
        eventFD = ev
        kernel = CPUKernel(cpuCount: system.cpuCount)
        local.initialize(to: CPULocal(cpu: Unmanaged.passUnretained(self), signals: signals, cpuCount: system.cpuCount))
        taskExecutor.cpu = self
        serialExecutor.cpu = self
        _ = lb_epoll_ctl(epollFD, 1, eventFD, LB_EPOLLIN, UInt64.max)
    }

    func release() {
        close(epollFD)
        close(eventFD)
        local.pointee.runq.deallocate()
        local.deinitialize(count: 1)
        local.deallocate()
        counters.deallocate()
    }

    // MARK: - Current CPU

    /// The CPU whose OS thread is running the caller, or `nil` on any other thread.
    public static var current: CPU? {
        guard let p = lb_current_cpu() else { return nil }
        return p.assumingMemoryBound(to: CPULocal.self).pointee.cpu.takeUnretainedValue()
    }

    @usableFromInline @inline(__always)
    static var currentLocal: UnsafeMutablePointer<CPULocal>? {
        lb_current_cpu()?.assumingMemoryBound(to: CPULocal.self)
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
        if !kernel.timers.isEmpty { kernel.fireDueTimers(cpu: self, now: lb_now_ns()) }
        l.pointee.critCount -= 1
        if l.pointee.deferred != 0 {
            l.pointee.deferred = 0
            _ = drainIPIs()
        }
    }

    // MARK: - Sending IPIs

    /// Sends an active IPI to this CPU from any thread: `function(arg, arg2)` runs on this
    /// CPU inside a critical section, and the CPU is woken if it announced sleep. From
    /// one of the same system's CPUs it travels through that CPU's ring to this one; from
    /// any other thread, through this CPU's inbox. Sending to the current CPU runs the
    /// function at once.
    @inlinable
    public func sendIPI(_ function: IPIFunction, _ arg: UnsafeMutableRawPointer?, _ arg2: Int) {
        post(function, arg, arg2, passive: false)
    }

    /// Sends a passive IPI: it never wakes this CPU, which picks it up at its next pass or
    /// timer tick. It turns active when the ring holds 64 or more entries.
    @inlinable
    public func sendPassiveIPI(_ function: IPIFunction, _ arg: UnsafeMutableRawPointer?, _ arg2: Int) {
        post(function, arg, arg2, passive: true)
    }

    @usableFromInline
    func post(_ function: IPIFunction, _ arg: UnsafeMutableRawPointer?, _ arg2: Int, passive: Bool) {
        if let l = CPU.currentLocal {
            let handled: Bool = l.pointee.cpu._withUnsafeGuaranteedRef { src in
                guard src.system === system else { return false }
                src.send(to: self, function, arg, arg2, passive: passive)
                return true
            }
            if handled { return }
        }
        postFromForeignThread(function, arg, arg2, wake: !passive)
    }

    /// Sends from this CPU (the caller's) to `target` through the crossbar.
    @usableFromInline
    func send(to target: CPU, _ function: IPIFunction, _ arg: UnsafeMutableRawPointer?, _ arg2: Int, passive: Bool) {
        if target === self {
            CPU.critical { function(arg, arg2) }
            return
        }
        let ring = system.ring(from: id, to: target.id)
        let l = local
        let inIPI = l.pointee.processingIPI > 0
        let high = inIPI ? IPIRing.nestedHighWater : IPIRing.highWater
        var w = ring.pointee.localWindex
        if w &- ring.pointee.cachedRindex >= high {
            ring.pointee.cachedRindex = ring.pointee.rindex.load(ordering: .acquiring)
            if w &- ring.pointee.cachedRindex >= high {
                stall(ring: ring, target: target, low: inIPI ? IPIRing.nestedLowWater : IPIRing.lowWater)
                // IPI functions run while stalled may have sent on this same ring.
                w = ring.pointee.localWindex
            }
        }
        ring.pointee.slots[w & IPIRing.mask] = IPISlot(function: function, arg: arg, arg2: arg2)
        w &+= 1
        ring.pointee.localWindex = w
        var wake = !passive
        if passive {
            counters.add(.ipiSentPassive)
            if w &- ring.pointee.cachedRindex >= IPIRing.passiveLimit {
                ring.pointee.cachedRindex = ring.pointee.rindex.load(ordering: .acquiring)
                if w &- ring.pointee.cachedRindex >= IPIRing.passiveLimit {
                    wake = true
                    counters.add(.ipiPassivePromoted)
                }
            }
        } else {
            counters.add(.ipiSentActive)
        }
        if l.pointee.batchDepth > 0 {
            if !ring.pointee.dirty {
                ring.pointee.dirty = true
                l.pointee.dirtyTargets[l.pointee.dirtyCount] = target.id
                l.pointee.dirtyCount += 1
            }
            if wake { l.pointee.dirtyNeedsWake[target.id] = true }
        } else {
            publish(ring: ring, to: target, wake: wake)
        }
    }

    /// Makes the ring's new slots visible to `target`, rings its doorbell and, for an
    /// active send, wakes it if it announced sleep. The seq_cst order between the index
    /// store and the loads of the pending bit, the doorbell and the sleeping flag is what
    /// guarantees that the target either sees the message or is told about it.
    @usableFromInline @inline(__always)
    func publish(ring: UnsafeMutablePointer<IPIRing>, to target: CPU, wake: Bool) {
        ring.pointee.windex.store(ring.pointee.localWindex, ordering: .sequentiallyConsistent)
        counters.add(.ipiPublishes)
        let word = target.pending + (id >> 6)
        let bit = UInt64(1) << UInt64(id & 63)
        if word.pointee.load(ordering: .sequentiallyConsistent) & bit == 0 {
            word.pointee.bitwiseOr(bit, ordering: .sequentiallyConsistent)
        }
        let s = target.signals
        if s.pointee.doorbell.load(ordering: .sequentiallyConsistent) == 0 {
            s.pointee.doorbell.store(1, ordering: .sequentiallyConsistent)
        }
        if wake { target.wakeIfSleeping(counters: counters) }
    }

    /// Wakes this CPU if it announced sleep; only one of several racing senders pays the
    /// system call.
    @usableFromInline @inline(__always)
    func wakeIfSleeping(counters c: CounterBlock) {
        let s = signals
        if s.pointee.sleeping.load(ordering: .sequentiallyConsistent) != 0,
           s.pointee.sleeping.exchange(0, ordering: .sequentiallyConsistent) != 0 {
            _ = lb_eventfd_signal(eventFD)
            c.add(.ipiWakeups)
        } else {
            c.add(.ipiWakeupsAvoided)
        }
    }

    /// Publishes every ring written inside a batch.
    @usableFromInline
    func flushBatch() {
        let l = local
        let n = l.pointee.dirtyCount
        if n == 0 { return }
        l.pointee.dirtyCount = 0
        for i in 0..<n {
            let t = l.pointee.dirtyTargets[i]
            let target = system.cpus[t]
            let ring = system.ring(from: id, to: t)
            ring.pointee.dirty = false
            let wake = l.pointee.dirtyNeedsWake[t]
            l.pointee.dirtyNeedsWake[t] = false
            publish(ring: ring, to: target, wake: wake)
        }
    }

    /// A sender facing a full ring: publish what it has, ask the target to drain down to
    /// `low`, and meanwhile drain this CPU's own incoming rings whose senders asked for it.
    /// That is why two CPUs flooding each other cannot deadlock.
    func stall(ring: UnsafeMutablePointer<IPIRing>, target: CPU, low: Int) {
        counters.add(.ipiSenderStalls)
        let l = local
        // Whatever is batched for anyone must be visible, or a peer could wait on us.
        if l.pointee.batchDepth > 0 { flushBatch() }
        publish(ring: ring, to: target, wake: true)
        // Nested stalls on the same ring (from IPI functions run while draining) must not
        // clear the outer stall's request: keep the old value and put it back.
        let previousRequest = ring.pointee.drainRequest.exchange(low, ordering: .acquiringAndReleasing)
        var spins = 0
        while true {
            let w = ring.pointee.localWindex
            let r = ring.pointee.rindex.load(ordering: .acquiring)
            if w &- r <= low {
                ring.pointee.cachedRindex = r
                break
            }
            if drainNested() == 0 { lb_cpu_relax() }
            spins &+= 1
            if spins & 1023 == 0 {
                // Re-assert the doorbell and wake, in case the target went to sleep.
                if target.signals.pointee.doorbell.load(ordering: .sequentiallyConsistent) == 0 {
                    target.signals.pointee.doorbell.store(1, ordering: .sequentiallyConsistent)
                }
                target.wakeIfSleeping(counters: counters)
            }
        }
        ring.pointee.drainRequest.store(previousRequest, ordering: .releasing)
    }

    /// Drains incoming rings whose stalled senders published a drain request, down to the
    /// level they asked for (DragonFly's `lwkt_process_ipiq_nested`). Returns how many
    /// messages ran.
    func drainNested() -> Int {
        let n = system.cpuCount
        var ran = 0
        local.pointee.nestedDrains += 1
        local.pointee.processingIPI += 1
        defer {
            local.pointee.nestedDrains -= 1
            local.pointee.processingIPI -= 1
        }
        for s in 0..<n where s != id {
            let ring = system.ring(from: s, to: id)
            let request = ring.pointee.drainRequest.load(ordering: .acquiring)
            if request != 0 {
                ran += drainRing(ring, limit: request)
            }
        }
        if ran > 0 {
            counters.add(.ipiNestedDrains)
            counters.add(.ipiReceived, Int64(ran))
        }
        return ran
    }

    /// Sends `function` from a thread that is not one of this system's CPUs.
    func postFromForeignThread(_ function: IPIFunction, _ arg: UnsafeMutableRawPointer?, _ arg2: Int, wake: Bool) {
        let slot = IPISlot(function: function, arg: arg, arg2: arg2)
        inbox.withLock { $0.append(slot) }
        let s = signals
        s.pointee.inboxFlag.store(1, ordering: .sequentiallyConsistent)
        if s.pointee.doorbell.load(ordering: .sequentiallyConsistent) == 0 {
            s.pointee.doorbell.store(1, ordering: .sequentiallyConsistent)
        }
        if wake {
            if s.pointee.sleeping.load(ordering: .sequentiallyConsistent) != 0,
               s.pointee.sleeping.exchange(0, ordering: .sequentiallyConsistent) != 0 {
                _ = lb_eventfd_signal(eventFD)
            }
        }
    }

    // MARK: - Receiving IPIs

    /// Runs every pending message if the doorbell rang; O(1) when it did not. Called by the
    /// run loop between jobs and by preemption points, inside a critical section.
    @usableFromInline @discardableResult
    func drainIPIs() -> Int {
        let s = signals
        if s.pointee.doorbell.load(ordering: .relaxed) == 0 { return 0 }
        counters.add(.doorbellPolls)
        s.pointee.doorbell.store(0, ordering: .sequentiallyConsistent)
        let l = local
        l.pointee.processingIPI += 1
        var ran = 0
        for wi in 0..<system.maskWords {
            let word = pending + wi
            var bits = word.pointee.load(ordering: .sequentiallyConsistent)
            while bits != 0 {
                let b = bits.trailingZeroBitCount
                bits &= bits &- 1
                let source = wi * 64 + b
                let ring = system.ring(from: source, to: id)
                ran += drainRing(ring, limit: 0)
                let bit = UInt64(1) << UInt64(b)
                word.pointee.bitwiseAnd(~bit, ordering: .sequentiallyConsistent)
                if ring.pointee.windex.load(ordering: .sequentiallyConsistent) != ring.pointee.localRindex {
                    word.pointee.bitwiseOr(bit, ordering: .sequentiallyConsistent)
                    s.pointee.doorbell.store(1, ordering: .sequentiallyConsistent)
                }
            }
        }
        if s.pointee.inboxFlag.load(ordering: .relaxed) != 0 {
            ran += drainInbox()
        }
        l.pointee.processingIPI -= 1
        if ran > 0 { counters.add(.ipiReceived, Int64(ran)) }
        return ran
    }

    /// Runs the messages of one incoming ring until it holds `limit` or fewer. Safe to
    /// re-enter: the consumer's own index is advanced before each function runs, since a
    /// function may send, stall and drain this same ring in a nested call. The index the
    /// producer reads is published every 32 messages and on the way out.
    @usableFromInline @inline(__always)
    func drainRing(_ ring: UnsafeMutablePointer<IPIRing>, limit: Int) -> Int {
        var ran = 0
        var w = ring.pointee.windex.load(ordering: .acquiring)
        while true {
            let r = ring.pointee.localRindex
            if w &- r <= limit {
                w = ring.pointee.windex.load(ordering: .acquiring)
                if w &- r <= limit { break }
            }
            let slot = ring.pointee.slots[r & IPIRing.mask]
            ring.pointee.localRindex = r &+ 1
            if (r &+ 1) & 31 == 0 { ring.pointee.rindex.store(r &+ 1, ordering: .releasing) }
            slot.function?(slot.arg, slot.arg2)
            ran &+= 1
        }
        if ran > 0 { ring.pointee.rindex.store(ring.pointee.localRindex, ordering: .releasing) }
        return ran
    }

    func drainInbox() -> Int {
        signals.pointee.inboxFlag.store(0, ordering: .sequentiallyConsistent)
        var batch = kernel.spareInbox
        kernel.spareInbox = []
        inbox.withLock { swap(&$0, &batch) }
        for slot in batch { slot.function?(slot.arg, slot.arg2) }
        let n = batch.count
        batch.removeAll(keepingCapacity: true)
        kernel.spareInbox = batch
        if n > 0 { counters.add(.inboxReceived, Int64(n)) }
        return n
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
            post(enqueueJobIPI, raw, tag, passive: false)
        }
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
