import CLibellula
import Synchronization

/// The parts of a CPU that only its own thread touches and that are not on the hottest
/// paths: timers, sleep queues, descriptor waiters. Reached only through its `CPU`.
final class CPUKernel: @unchecked Sendable {
    var timers = TimerQueue()
    var dueScratch: [TimerAction] = []
    /// Sleep queues, one bucket per slot of the system's sleep-slot table.
    var sleepBuckets: [[SleepWaiter]]
    var sleepers = 0
    var ioWaiters: [Int32: [IOWaiter]] = [:]
    var registeredFDs: Set<Int32> = []
    var spareInbox: [IPISlot] = []
    var waiterPool: [SleepWaiter] = []
    let eventBits = UnsafeMutablePointer<UInt32>.allocate(capacity: 64)
    let eventData = UnsafeMutablePointer<UInt64>.allocate(capacity: 64)

    static let sleepSlots = 1024

    init(cpuCount: Int) {
        sleepBuckets = Array(repeating: [], count: CPUKernel.sleepSlots)
    }

    // MARK: Timers

    func arm(_ node: TimerNode) { timers.insert(node) }

    /// Runs every timer that is due. Returns how many fired.
    @discardableResult
    func fireDueTimers(cpu: CPU, now: UInt64) -> Int {
        if timers.isEmpty { return 0 }
        guard let next = timers.nextDeadline(), next <= now else { return 0 }
        dueScratch.removeAll(keepingCapacity: true)
        timers.popDue(now: now, into: &dueScratch)
        let fired = dueScratch.count
        for a in dueScratch {
            switch a {
            case .resume(let c): c.resume()
            case .sleepTimeout(let w): timeOut(w, cpu: cpu)
            case .call(let f, let arg, let arg2): CPU.critical { f(arg, arg2) }
            }
        }
        dueScratch.removeAll(keepingCapacity: true)
        cpu.counters.add(.timerFired, Int64(fired))
        return fired
    }

    // MARK: Sleep queues

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
        let slot = WaitChannel(rawValue: w.channel).map { $0.slot(CPUKernel.sleepSlots) } ?? 0
        let wasEmpty = sleepBuckets[slot].isEmpty
        sleepBuckets[slot].append(w)
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
        guard w.queued else { return }
        let slot = WaitChannel(rawValue: w.channel).map { $0.slot(CPUKernel.sleepSlots) } ?? 0
        if let i = sleepBuckets[slot].firstIndex(where: { $0 === w }) {
            sleepBuckets[slot].remove(at: i)
            sleepers -= 1
        }
        w.queued = false
        if let t = w.timer { _ = timers.cancel(t); w.timer = nil }
        if sleepBuckets[slot].isEmpty {
            let word = cpu.system.sleepMaskWord(slot: slot, cpu: cpu.id)
            word.pointee.bitwiseAnd(~(UInt64(1) << UInt64(cpu.id & 63)), ordering: .sequentiallyConsistent)
        }
    }

    /// Wakes sleepers on `channel` queued on this CPU; with `one`, at most one. Returns
    /// how many were woken.
    func wakeLocal(channel: UInt, one: Bool, cpu: CPU) -> Int {
        guard sleepers > 0, let ch = WaitChannel(rawValue: channel) else { return 0 }
        let slot = ch.slot(CPUKernel.sleepSlots)
        var woke = 0
        var i = 0
        while i < sleepBuckets[slot].count {
            let w = sleepBuckets[slot][i]
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
        guard w.generation == generation else { return }   // a late cancel of an earlier use
        w.cancelled = true
        guard w.queued else { return }
        removeSleeper(w, cpu: cpu)
        if let c = w.continuation {
            w.continuation = nil
            c.resume(throwing: CancellationError())
        }
    }

    // MARK: Descriptors

    func register(_ w: IOWaiter, cpu: CPU) throws {
        var list = ioWaiters[w.fd] ?? []
        list.append(w)
        ioWaiters[w.fd] = list
        try arm(fd: w.fd, cpu: cpu)
    }

    /// (Re)arms a one-shot epoll registration for the union of the fd's waiters' interests.
    func arm(fd: Int32, cpu: CPU) throws {
        guard let list = ioWaiters[fd], !list.isEmpty else { return }
        var interest: UInt32 = LB_EPOLLONESHOT | LB_EPOLLRDHUP
        for w in list { interest |= w.interest.rawValue }
        var rc: Int32
        if registeredFDs.contains(fd) {
            rc = lb_epoll_ctl(cpu.epollFD, 3, fd, interest, UInt64(UInt32(bitPattern: fd)))
            if rc == -ENOENT { rc = lb_epoll_ctl(cpu.epollFD, 1, fd, interest, UInt64(UInt32(bitPattern: fd))) }
        } else {
            rc = lb_epoll_ctl(cpu.epollFD, 1, fd, interest, UInt64(UInt32(bitPattern: fd)))
            if rc == -EEXIST { rc = lb_epoll_ctl(cpu.epollFD, 3, fd, interest, UInt64(UInt32(bitPattern: fd))) }
        }
        if rc != 0 {
            ioWaiters[fd]?.removeAll { w in list.contains { $0 === w } }
            throw LWKTError.systemCall("epoll_ctl", -rc)
        }
        registeredFDs.insert(fd)
    }

    func unregister(fd: Int32, cpu: CPU) {
        if registeredFDs.remove(fd) != nil {
            _ = lb_epoll_ctl(cpu.epollFD, 2, fd, 0, 0)
        }
        if let list = ioWaiters.removeValue(forKey: fd) {
            for w in list {
                if let c = w.continuation {
                    w.continuation = nil
                    c.resume(throwing: CancellationError())
                }
            }
        }
    }

    func cancelIO(_ w: IOWaiter, cpu: CPU) {
        w.cancelled = true
        guard var list = ioWaiters[w.fd], let i = list.firstIndex(where: { $0 === w }) else { return }
        list.remove(at: i)
        ioWaiters[w.fd] = list.isEmpty ? nil : list
        if let c = w.continuation {
            w.continuation = nil
            c.resume(throwing: CancellationError())
        }
    }

    /// Polls the CPU's epoll once; `timeout` in nanoseconds (< 0 forever, 0 poll).
    /// Returns the number of descriptor events delivered.
    @discardableResult
    func pollEvents(cpu: CPU, timeout: Int64) -> Int {
        let n = lb_epoll_wait(cpu.epollFD, eventBits, eventData, 64, timeout)
        if n <= 0 { return 0 }
        var delivered = 0
        for i in 0..<Int(n) {
            let data = eventData[i]
            if data == UInt64.max {
                _ = lb_eventfd_drain(cpu.eventFD)
                continue
            }
            let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: data))
            let ready = IOEvents(rawValue: eventBits[i])
            delivered += 1
            guard let list = ioWaiters[fd] else { continue }
            var keep: [IOWaiter] = []
            let failing = !ready.intersection([.error, .hangup]).isEmpty
            for w in list {
                if failing || !ready.intersection(w.interest.union(.readHangup)).isEmpty {
                    if let c = w.continuation {
                        w.continuation = nil
                        c.resume(returning: ready)
                    }
                } else {
                    keep.append(w)
                }
            }
            ioWaiters[fd] = keep.isEmpty ? nil : keep
            if !keep.isEmpty { try? arm(fd: fd, cpu: cpu) }
        }
        if delivered > 0 { cpu.counters.add(.ioEvents, Int64(delivered)) }
        return delivered
    }

    /// Ends every wait still pending at shutdown so that no task is left suspended.
    func cancelEverything(cpu: CPU) {
        for a in timers.removeAll() {
            switch a {
            case .resume(let c): c.resume(throwing: CancellationError())
            case .sleepTimeout: break
            case .call: break
            }
        }
        for slot in 0..<sleepBuckets.count {
            for w in sleepBuckets[slot] { cancelSleeper(w, generation: w.generation, cpu: cpu) }
        }
        for fd in Array(ioWaiters.keys) { unregister(fd: fd, cpu: cpu) }
    }
}

#if canImport(Glibc)
import Glibc
#endif
