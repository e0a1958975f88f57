import CLibellula
import Synchronization

// A CPU's event poller: its epoll instance, the eventfd other threads write to wake it,
// and the threads waiting for descriptor readiness. Registration, polling and
// cancellation happen only on the owning CPU's thread (others cancel by IPI); the eventfd
// is written by any thread, through `CPU.wakeIfSleeping`.
//
// Two kinds of registration: one-shot (the default: each wait re-arms the descriptor with
// `epoll_ctl`, for the union of its waiters' interests) and edge-triggered (a descriptor
// registered once with `registerEdges`, for reading and writing, and never re-armed; the
// readiness a poll reports while nobody waits for it is kept in `edgePending` and handed
// to the next wait, so no edge is lost).

/// The descriptor waiters and epoll instance of one CPU, held in its ``Globaldata``.
/// Owner-only.
final class EventPoller {
    /// The owning CPU's globaldata address, for the owner checks.
    let owner: UnsafeMutableRawPointer
    /// The CPU's epoll instance.
    let epollFD: Int32
    /// The eventfd that wakes the CPU from `epoll_wait` (registered with data `UInt64.max`).
    let eventFD: Int32
    /// The poller's mutable tables, behind a pointer: as stored `var`s of this class every
    /// access paid Swift's run-time exclusivity check (`swift_beginAccess`, about eight per
    /// wait and wake-up of a connection); a pointer's pointee is not checked. Owner-only, like
    /// the rest.
    struct Tables {
        /// The waiters of each descriptor (a linked list), indexed by descriptor number:
        /// descriptors are small integers, so the per-event lookups hash nothing.
        var ioWaiters = DescriptorTable<IOWaiter?>(empty: nil)
        var ioPool: [IOWaiter] = []
        var registeredFDs: Set<Int32> = []
        /// Edge-triggered descriptors, each with the readiness (epoll bits) reported while no
        /// waiter wanted it, plus `EventPoller.edgeTriggered`; 0 for other descriptors.
        var edgePending = DescriptorTable<UInt64>(empty: 0)
    }
    private let tables: UnsafeMutablePointer<Tables>
    var ioWaiters: DescriptorTable<IOWaiter?> {
        @inline(__always) get { tables.pointee.ioWaiters }
        @inline(__always) _modify { yield &tables.pointee.ioWaiters }
    }
    var ioPool: [IOWaiter] {
        @inline(__always) get { tables.pointee.ioPool }
        @inline(__always) _modify { yield &tables.pointee.ioPool }
    }
    var registeredFDs: Set<Int32> {
        @inline(__always) get { tables.pointee.registeredFDs }
        @inline(__always) _modify { yield &tables.pointee.registeredFDs }
    }
    var edgePending: DescriptorTable<UInt64> {
        @inline(__always) get { tables.pointee.edgePending }
        @inline(__always) _modify { yield &tables.pointee.edgePending }
    }
    /// The mark of an edge-triggered descriptor in `edgePending` (above every epoll bit).
    static let edgeTriggered: UInt64 = 1 << 32
    let eventBits = UnsafeMutablePointer<UInt32>.allocate(capacity: 64)
    let eventData = UnsafeMutablePointer<UInt64>.allocate(capacity: 64)

    init(owner: UnsafeMutableRawPointer, epollFD: Int32, eventFD: Int32) {
        self.owner = owner
        self.epollFD = epollFD
        self.eventFD = eventFD
        tables = .allocate(capacity: 1)
        tables.initialize(to: Tables())
    }

    deinit {
        tables.deinitialize(count: 1)
        tables.deallocate()
        eventBits.deallocate()
        eventData.deallocate()
    }

    /// Whether any descriptor is registered (the run loop polls only then).
    var hasDescriptors: Bool { !registeredFDs.isEmpty }

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

    /// Registers `fd` once, edge-triggered, for reading, writing and hang-ups (see
    /// ``LWKT/registerEdgeTriggered(fd:)``).
    func registerEdges(fd: Int32) throws {
        assertOwner(owner, "EventPoller.registerEdges")
        let interest = LB_EPOLLIN | LB_EPOLLOUT | LB_EPOLLRDHUP | LB_EPOLLET
        let data = UInt64(UInt32(bitPattern: fd))
        var rc = lb_epoll_ctl(epollFD, 1, fd, interest, data)
        if rc == -EEXIST { rc = lb_epoll_ctl(epollFD, 3, fd, interest, data) }
        if rc != 0 { throw LWKTError.systemCall("epoll_ctl", -rc) }
        registeredFDs.insert(fd)
        edgePending[fd] = Self.edgeTriggered
    }

    /// The events a waiter with `interest` is woken by: its interest, errors and hang-ups,
    /// and for readers the peer's shutdown (a read then returns end of stream). A writer is
    /// not woken by the peer's shutdown of its own sending side.
    @inline(__always)
    static func wakingEvents(_ interest: IOEvents) -> UInt32 {
        var bits = interest.rawValue | LB_EPOLLERR | LB_EPOLLHUP
        if interest.contains(.readable) { bits |= LB_EPOLLRDHUP }
        return bits
    }

    /// For an edge-triggered `fd`, takes the kept readiness that would wake a waiter with
    /// `interest` (errors and hang-ups stay kept: they stay true). Nil when `fd` is not
    /// edge-triggered or nothing kept matches.
    @inline(__always)
    func takeEdgeReadiness(fd: Int32, interest: IOEvents) -> IOEvents? {
        let entry = edgePending[fd]
        if entry == 0 { return nil }
        let kept = UInt32(truncatingIfNeeded: entry)
        let match = kept & Self.wakingEvents(interest)
        if match == 0 { return nil }
        edgePending[fd] = Self.edgeTriggered | UInt64(kept & ~Self.consumedEvents(interest))
        return IOEvents(rawValue: kept)
    }

    /// The kept readiness a woken waiter with `interest` uses up: its interest, and the
    /// peer's shutdown for a reader (which then reads end of stream).
    @inline(__always)
    static func consumedEvents(_ interest: IOEvents) -> UInt32 {
        interest.contains(.readable) ? interest.rawValue | LB_EPOLLRDHUP : interest.rawValue
    }

    /// Queues `w` on its descriptor (waiters of one fd form a linked list, so registering
    /// allocates nothing) and arms the epoll registration (one-shot descriptors only).
    func register(_ w: IOWaiter, cpu: CPU) throws {
        assertOwner(owner, "EventPoller.register")
        w.next = ioWaiters[w.fd]
        ioWaiters[w.fd] = w
        if edgePending[w.fd] != 0 { return }
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
            ioWaiters[w.fd] = w.next
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
            rc = lb_epoll_ctl(epollFD, 3, fd, interest, data)
            if rc == -ENOENT { rc = lb_epoll_ctl(epollFD, 1, fd, interest, data) }
        } else {
            rc = lb_epoll_ctl(epollFD, 1, fd, interest, data)
            if rc == -EEXIST { rc = lb_epoll_ctl(epollFD, 3, fd, interest, data) }
        }
        if rc != 0 { throw LWKTError.systemCall("epoll_ctl", -rc) }
        registeredFDs.insert(fd)
    }

    func unregister(fd: Int32, cpu: CPU) {
        assertOwner(owner, "EventPoller.unregister")
        if registeredFDs.remove(fd) != nil {
            _ = lb_epoll_ctl(epollFD, 2, fd, 0, 0)
        }
        edgePending[fd] = 0
        var w = ioWaiters.take(fd)
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
        assertOwner(owner, "EventPoller.cancelIO")
        guard w.generation == generation else { return }   // a late cancel of an earlier use
        w.cancelled = true
        guard let c = w.continuation else { return }
        unlink(w)
        w.continuation = nil
        c.resume(throwing: CancellationError())
    }

    /// Ends with `CancellationError` the waits on `fd` of the LWKT thread whose stats words
    /// are `thread` (its cancellation, by IPI: see ``LWKTThread/cancel()``).
    func cancelWaits(of thread: UnsafeMutablePointer<Int64>, fd: Int32) {
        assertOwner(owner, "EventPoller.cancelWaits")
        var w = ioWaiters[fd]
        while let cur = w {
            w = cur.next
            guard cur.thread == thread, let c = cur.continuation else { continue }
            unlink(cur)
            cur.continuation = nil
            c.resume(throwing: CancellationError())
        }
    }

    /// Polls the CPU's epoll once; `timeout` in nanoseconds (< 0 forever, 0 poll).
    /// Returns the number of descriptor events delivered.
    @discardableResult
    func poll(cpu: CPU, timeout: Int64) -> Int {
        assertOwner(owner, "EventPoller.poll")
        let n = lb_epoll_wait(epollFD, eventBits, eventData, 64, timeout)
        if n <= 0 { return 0 }
        var delivered = 0
        for i in 0..<Int(n) {
            let data = eventData[i]
            if data == UInt64.max {
                _ = lb_eventfd_drain(eventFD)
                continue
            }
            let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: data))
            let ready = IOEvents(rawValue: eventBits[i])
            delivered += 1
            let entry = edgePending[fd]
            if entry != 0 {
                // Edge-triggered: wake the waiters the events concern, keep the rest of the
                // readiness for later waits; nothing to re-arm.
                var unclaimed = ready.rawValue
                var keep: IOWaiter? = nil
                var w = ioWaiters.take(fd)
                while let cur = w {
                    w = cur.next
                    cur.next = nil
                    let wakes = Self.wakingEvents(cur.interest)
                    if ready.rawValue & wakes != 0 {
                        unclaimed &= ~Self.consumedEvents(cur.interest)
                        if let c = cur.continuation {
                            cur.continuation = nil
                            c.resume(returning: ready)
                        }
                    } else {
                        cur.next = keep
                        keep = cur
                    }
                }
                if let keep { ioWaiters[fd] = keep }
                edgePending[fd] = entry | UInt64(unclaimed)
                continue
            }
            guard let head = ioWaiters.take(fd) else { continue }
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
                    var k: IOWaiter? = ioWaiters.take(fd)
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

    /// Ends every descriptor wait at shutdown.
    func cancelEverything(cpu: CPU) {
        for fd in ioWaiters.indices(where: { $0 != nil }) { unregister(fd: fd, cpu: cpu) }
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// Per-descriptor values indexed by descriptor number (the kernel hands out the lowest free
/// number, so the table stays about as long as the most descriptors open at once). Reads
/// past the end see `empty`; a write past the end grows the table, the only time it
/// allocates. Negative descriptors are never stored (reads see `empty`, writes are dropped).
struct DescriptorTable<Value> {
    private var values: [Value] = []
    private let empty: Value

    init(empty: Value) { self.empty = empty }

    subscript(fd: Int32) -> Value {
        @inline(__always) get {
            let i = Int(fd)
            return i >= 0 && i < values.count ? values[i] : empty
        }
        @inline(__always) set {
            let i = Int(fd)
            if i < 0 { return }
            if i >= values.count {
                values.reserveCapacity(max(i + 1, values.count * 2, 64))
                values.append(contentsOf: repeatElement(empty, count: i + 1 - values.count))
            }
            values[i] = newValue
        }
    }

    /// Takes the descriptor's value out, leaving `empty`.
    @inline(__always)
    mutating func take(_ fd: Int32) -> Value {
        let v = self[fd]
        let i = Int(fd)
        if i >= 0 && i < values.count { values[i] = empty }
        return v
    }

    /// The descriptors whose values pass `test`.
    func indices(where test: (Value) -> Bool) -> [Int32] {
        values.indices.filter { test(values[$0]) }.map { Int32($0) }
    }
}
