import CLibellula
import Synchronization

// The IPI queues of a CPU (DragonFly's `lwkt_ipiq.c`): sending through the crossbar,
// publishing, stalling on a full ring, nested drains, draining the rings and the inbox.
//
// Ownership: ring (s, t) is written only by CPU s's thread (slots, `localWindex`,
// `windex`) and read only by CPU t's thread (`localRindex`, `rindex`); `drainRequest` is
// set by the stalled sender and read by the target. A CPU's `IPIGlobaldata` is touched
// only by its own thread. The inbox (for threads that are not CPUs) is a mutex-protected
// array, never taken by a CPU thread except to swap it out when draining.

/// A CPU's own IPI bookkeeping, inline in its ``Globaldata``.
@usableFromInline
struct IPIGlobaldata {
    /// Depth of IPI-function execution (DragonFly's `gd_processing_ipiq`).
    @usableFromInline var processingIPI = 0
    /// Depth of ``IPICrossbar/batch(_:)`` nesting.
    @usableFromInline var batchDepth = 0
    @usableFromInline var nestedDrains = 0
    /// Targets whose rings hold unpublished slots (inside `IPICrossbar.batch`).
    @usableFromInline var dirtyTargets: UnsafeMutablePointer<Int>
    @usableFromInline var dirtyCount = 0
    @usableFromInline var dirtyNeedsWake: UnsafeMutablePointer<Bool>
    /// The inbox buffer swapped in when draining, so a drain allocates nothing.
    var spareInbox: [IPISlot] = []

    init(cpuCount: Int) {
        dirtyTargets = .allocate(capacity: cpuCount)
        dirtyNeedsWake = .allocate(capacity: cpuCount)
        dirtyNeedsWake.initialize(repeating: false, count: cpuCount)
    }

    func deallocate() {
        dirtyTargets.deallocate()
        dirtyNeedsWake.deallocate()
    }
}

extension CPU {
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
        assertCurrent("IPI send through \(name)'s rings")
        if target === self {
            CPU.critical { function(arg, arg2) }
            return
        }
        let ring = system.ring(from: id, to: target.id)
        let l = local
        let inIPI = l.pointee.ipi.processingIPI > 0
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
        if l.pointee.ipi.batchDepth > 0 {
            if !ring.pointee.dirty {
                ring.pointee.dirty = true
                l.pointee.ipi.dirtyTargets[l.pointee.ipi.dirtyCount] = target.id
                l.pointee.ipi.dirtyCount += 1
            }
            if wake { l.pointee.ipi.dirtyNeedsWake[target.id] = true }
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
            signalEventFD()
            c.add(.ipiWakeups)
        } else {
            c.add(.ipiWakeupsAvoided)
        }
    }

    /// Publishes every ring written inside a batch.
    @usableFromInline
    func flushBatch() {
        let l = local
        let n = l.pointee.ipi.dirtyCount
        if n == 0 { return }
        l.pointee.ipi.dirtyCount = 0
        for i in 0..<n {
            let t = l.pointee.ipi.dirtyTargets[i]
            let target = system.cpus[t]
            let ring = system.ring(from: id, to: t)
            ring.pointee.dirty = false
            let wake = l.pointee.ipi.dirtyNeedsWake[t]
            l.pointee.ipi.dirtyNeedsWake[t] = false
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
        if l.pointee.ipi.batchDepth > 0 { flushBatch() }
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
        assertCurrent("nested IPI drain")
        let n = system.cpuCount
        var ran = 0
        // IPI functions run inside a critical section, here as in every other drain.
        local.pointee.critCount += 1
        local.pointee.ipi.nestedDrains += 1
        local.pointee.ipi.processingIPI += 1
        defer {
            local.pointee.ipi.nestedDrains -= 1
            local.pointee.ipi.processingIPI -= 1
            local.pointee.critCount -= 1
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
                signalEventFD()
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
        assertCurrent("IPI drain")
        CPU.assertInCritical("IPI drain")
        counters.add(.doorbellPolls)
        s.pointee.doorbell.store(0, ordering: .sequentiallyConsistent)
        let l = local
        l.pointee.ipi.processingIPI += 1
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
        l.pointee.ipi.processingIPI -= 1
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
            let slot = ring.pointee.consumerSlots[r & IPIRing.mask]
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
        let l = local
        var batch = l.pointee.ipi.spareInbox
        l.pointee.ipi.spareInbox = []
        inbox.withLock { swap(&$0, &batch) }
        for slot in batch { slot.function?(slot.arg, slot.arg2) }
        let n = batch.count
        batch.removeAll(keepingCapacity: true)
        l.pointee.ipi.spareInbox = batch
        if n > 0 { counters.add(.inboxReceived, Int64(n)) }
        return n
    }

}
