import Synchronization

// A CPU's tsleep queues (DragonFly's `gd_tsleep_hash`): a sleeper is queued on the CPU it
// runs on, in the bucket of its channel's slot, and sets its CPU's bit in the system's
// slot mask so that `wakeup` knows which CPUs to send an IPI to. Queues are touched only
// by the owning CPU's thread; the slot masks are atomics any CPU reads.

/// The sleep queues of one CPU, held in its ``Globaldata``. Owner-only.
final class SleepQueues {
    /// The owning CPU's globaldata address, for the owner checks.
    let owner: UnsafeMutableRawPointer
    /// Sleep queues, one bucket per slot of the system's sleep-slot table.
    var buckets: [[SleepWaiter]]
    /// How many sleepers are queued on this CPU.
    var sleepers = 0
    /// Finished sleep records kept for reuse.
    var waiterPool: [SleepWaiter] = []

    /// Size of the slot table (per CPU buckets; per system masks).
    static let slots = 1024

    init(owner: UnsafeMutableRawPointer) {
        self.owner = owner
        buckets = Array(repeating: [], count: SleepQueues.slots)
    }

    /// A sleep record for `channel`, from the pool when one is free.
    func takeWaiter(channel: UInt) -> SleepWaiter {
        let w = waiterPool.popLast() ?? SleepWaiter(channel: channel)
        w.channel = channel
        w.generation &+= 1
        w.cancelled = false
        w.queued = false
        w.timer = nil
        w.continuation = nil
        return w
    }

    /// Gives a finished sleep record back to the pool.
    func returnWaiter(_ w: SleepWaiter) {
        if waiterPool.count < 256 && !w.queued { waiterPool.append(w) }
    }

    func insertSleeper(_ w: SleepWaiter, cpu: CPU) {
        assertOwner(owner, "SleepQueues.insertSleeper")
        let slot = WaitChannel(rawValue: w.channel).map { $0.slot(SleepQueues.slots) } ?? 0
        let wasEmpty = buckets[slot].isEmpty
        buckets[slot].append(w)
        w.queued = true
        sleepers += 1
        if wasEmpty {
            let word = cpu.system.sleepMaskWord(slot: slot, cpu: cpu.id)
            word.pointee.bitwiseOr(UInt64(1) << UInt64(cpu.id & 63), ordering: .sequentiallyConsistent)
        } else {
            atomicMemoryFence(ordering: .sequentiallyConsistent)
        }
    }

    func removeSleeper(_ w: SleepWaiter, cpu: CPU) {
        assertOwner(owner, "SleepQueues.removeSleeper")
        guard w.queued else { return }
        let slot = WaitChannel(rawValue: w.channel).map { $0.slot(SleepQueues.slots) } ?? 0
        if let i = buckets[slot].firstIndex(where: { $0 === w }) {
            buckets[slot].remove(at: i)
            sleepers -= 1
        }
        w.queued = false
        if let t = w.timer { _ = cpu.timers.cancel(t); w.timer = nil }
        if buckets[slot].isEmpty {
            let word = cpu.system.sleepMaskWord(slot: slot, cpu: cpu.id)
            word.pointee.bitwiseAnd(~(UInt64(1) << UInt64(cpu.id & 63)), ordering: .sequentiallyConsistent)
        }
    }

    /// Wakes sleepers on `channel` queued on this CPU; with `one`, at most one. Returns
    /// how many were woken.
    func wakeLocal(channel: UInt, one: Bool, cpu: CPU) -> Int {
        assertOwner(owner, "SleepQueues.wakeLocal")
        guard sleepers > 0, let ch = WaitChannel(rawValue: channel) else { return 0 }
        let slot = ch.slot(SleepQueues.slots)
        var woke = 0
        var i = 0
        while i < buckets[slot].count {
            let w = buckets[slot][i]
            if w.channel == channel {
                removeSleeper(w, cpu: cpu)
                if let c = w.continuation {
                    w.continuation = nil
                    c.resume(returning: .woken)
                }
                woke += 1
                if one { break }
            } else {
                i += 1
            }
        }
        return woke
    }

    func timeOut(_ w: SleepWaiter, cpu: CPU) {
        assertOwner(owner, "SleepQueues.timeOut")
        w.timer = nil
        guard w.queued else { return }
        removeSleeper(w, cpu: cpu)
        cpu.counters.add(.tsleepTimeouts)
        if let c = w.continuation {
            w.continuation = nil
            c.resume(returning: .timedOut)
        }
    }

    func cancelSleeper(_ w: SleepWaiter, generation: Int, cpu: CPU) {
        assertOwner(owner, "SleepQueues.cancelSleeper")
        guard w.generation == generation else { return }   // a late cancel of an earlier use
        w.cancelled = true
        guard w.queued else { return }
        removeSleeper(w, cpu: cpu)
        if let c = w.continuation {
            w.continuation = nil
            c.resume(throwing: CancellationError())
        }
    }

    /// Cancels every sleeper at shutdown.
    func cancelEverything(cpu: CPU) {
        for slot in 0..<buckets.count {
            for w in buckets[slot] { cancelSleeper(w, generation: w.generation, cpu: cpu) }
        }
    }
}
