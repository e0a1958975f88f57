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
    var ioWaiters: [Int32: IOWaiter] = [:]
    var ioPool: [IOWaiter] = []
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

    /// A wait record for `fd`, from the pool when one is free.
    func takeIOWaiter(fd: Int32, interest: IOEvents) -> IOWaiter {
        let w = ioPool.popLast() ?? IOWaiter(fd: fd, interest: interest)
        w.fd = fd
        w.interest = interest
        w.generation &+= 1
        w.cancelled = false
        w.continuation = nil
        w.next = nil
        return w
    }

    /// Gives a finished wait record back to the pool.
    func returnIOWaiter(_ w: IOWaiter) {
        if ioPool.count < 256 && w.continuation == nil { w.next = nil; ioPool.append(w) }
    }

    /// Queues `w` on its descriptor (waiters of one fd form a linked list, so registering
    /// allocates nothing) and arms the epoll registration.
    func register(_ w: IOWaiter, cpu: CPU) throws {
        w.next = ioWaiters[w.fd]
        ioWaiters[w.fd] = w
        do {
            try arm(fd: w.fd, cpu: cpu)
        } catch {
            unlink(w)
            throw error
        }
    }

    private func unlink(_ w: IOWaiter) {
        guard var cur = ioWaiters[w.fd] else { return }
        if cur === w {
            if let n = w.next { ioWaiters[w.fd] = n } else { ioWaiters.removeValue(forKey: w.fd) }
            w.next = nil
            return
        }
        while let n = cur.next {
            if n === w {
                cur.next = w.next
                w.next = nil
                return
            }
            cur = n
        }
    }

    /// (Re)arms a one-shot epoll registration for the union of the fd's waiters' interests.
    func arm(fd: Int32, cpu: CPU) throws {
        guard var w = ioWaiters[fd] else { return }
        var interest: UInt32 = LB_EPOLLONESHOT | LB_EPOLLRDHUP | w.interest.rawValue
        while let n = w.next {
            interest |= n.interest.rawValue
            w = n
        }
        let data = UInt64(UInt32(bitPattern: fd))
        var rc: Int32
        if registeredFDs.contains(fd) {
            rc = lb_epoll_ctl(cpu.epollFD, 3, fd, interest, data)
            if rc == -ENOENT { rc = lb_epoll_ctl(cpu.epollFD, 1, fd, interest, data) }
        } else {
            rc = lb_epoll_ctl(cpu.epollFD, 1, fd, interest, data)
            if rc == -EEXIST { rc = lb_epoll_ctl(cpu.epollFD, 3, fd, interest, data) }
        }
        if rc != 0 { throw LWKTError.systemCall("epoll_ctl", -rc) }
        registeredFDs.insert(fd)
    }

    func unregister(fd: Int32, cpu: CPU) {
        if registeredFDs.remove(fd) != nil {
            _ = lb_epoll_ctl(cpu.epollFD, 2, fd, 0, 0)
        }
        var w = ioWaiters.removeValue(forKey: fd)
        while let cur = w {
            w = cur.next
            cur.next = nil
            if let c = cur.continuation {
                cur.continuation = nil
                c.resume(throwing: CancellationError())
            }
        }
    }

    func cancelIO(_ w: IOWaiter, generation: Int, cpu: CPU) {
        guard w.generation == generation else { return }   // a late cancel of an earlier use
        w.cancelled = true
        guard let c = w.continuation else { return }
        unlink(w)
        w.continuation = nil
        c.resume(throwing: CancellationError())
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
            guard let head = ioWaiters.removeValue(forKey: fd) else { continue }
            let failing = !ready.intersection([.error, .hangup]).isEmpty
            var keep: IOWaiter? = nil
            var w: IOWaiter? = head
            while let cur = w {
                w = cur.next
                cur.next = nil
                if failing || !ready.intersection(cur.interest.union(.readHangup)).isEmpty {
                    if let c = cur.continuation {
                        cur.continuation = nil
                        c.resume(returning: ready)
                    }
                } else {
                    cur.next = keep
                    keep = cur
                }
            }
            if let keep {
                ioWaiters[fd] = keep
                do { try arm(fd: fd, cpu: cpu) } catch {
                    // The descriptor went bad under its waiters: tell them.
                    var k: IOWaiter? = ioWaiters.removeValue(forKey: fd)
                    while let cur = k {
                        k = cur.next
                        cur.next = nil
                        if let c = cur.continuation {
                            cur.continuation = nil
                            c.resume(returning: .error)
                        }
                    }
                }
            }
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
