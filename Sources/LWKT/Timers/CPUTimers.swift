import CLibellula

// A CPU's timers (DragonFly's per-CPU callout wheel, here a heap): armed, fired and
// cancelled only on the owning CPU's thread. Another thread cancels a timer by sending
// the owner an IPI. Expiry runs inside the run loop or a preemption point, never inside
// a critical section's body.

/// The timer queue of one CPU, held in its ``Globaldata``. Owner-only.
final class CPUTimers {
    /// The owning CPU's globaldata address, for the owner checks.
    let owner: UnsafeMutableRawPointer
    var queue = TimerQueue()
    /// Reused between expiries so that firing allocates nothing.
    var dueScratch: [TimerAction] = []

    init(owner: UnsafeMutableRawPointer) { self.owner = owner }

    /// Whether no live timer is armed.
    var isEmpty: Bool { queue.isEmpty }

    /// The earliest deadline of a live timer.
    func nextDeadline() -> UInt64? { queue.nextDeadline() }

    /// Arms `node`.
    func arm(_ node: TimerNode) {
        assertOwner(owner, "CPUTimers.arm")
        queue.insert(node)
    }

    /// Cancels `node`; returns its action if it had not fired.
    func cancel(_ node: TimerNode) -> TimerAction? {
        assertOwner(owner, "CPUTimers.cancel")
        return queue.cancel(node)
    }

    /// Runs every timer that is due on `cpu` (this queue's owner). Returns how many fired.
    @discardableResult
    func fireDue(cpu: CPU, now: UInt64) -> Int {
        if queue.isEmpty { return 0 }
        assertOwner(owner, "CPUTimers.fireDue")
        guard let next = queue.nextDeadline(), next <= now else { return 0 }
        dueScratch.removeAll(keepingCapacity: true)
        queue.popDue(now: now, into: &dueScratch)
        let fired = dueScratch.count
        for a in dueScratch {
            switch a {
            case .resume(let c): c.resume()
            case .sleepTimeout(let w): cpu.sleepQueues.timeOut(w, cpu: cpu)
            case .call(let f, let arg, let arg2): CPU.critical { f(arg, arg2) }
            }
        }
        dueScratch.removeAll(keepingCapacity: true)
        cpu.counters.add(.timerFired, Int64(fired))
        return fired
    }

    /// Ends every pending timer at shutdown: sleeping tasks get a `CancellationError`.
    func cancelEverything() {
        for a in queue.removeAll() {
            switch a {
            case .resume(let c): c.resume(throwing: CancellationError())
            case .sleepTimeout: break
            case .call: break
            }
        }
    }
}
