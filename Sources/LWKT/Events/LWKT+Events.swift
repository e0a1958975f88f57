import CLibellula

extension LWKT {
    /// Waits until `fd` has one of `events` (or an error or hang-up), using the epoll of
    /// the caller's CPU: the descriptor is owned by that CPU from now on, and the CPU's
    /// loop wakes this thread when the kernel reports readiness. Tokens are released
    /// while waiting. Throws `CancellationError` if cancelled or unregistered meanwhile.
    ///
    /// In an ``LWKTThread``'s own task the wait installs no runtime cancellation handler:
    /// ``LWKTThread/cancel()`` reaches it by IPI instead (see ``LWKTThread/ioWait``). The
    /// handler (`withTaskCancellationHandler`) cost every wait four executor switches, each
    /// taking the task's status-record lock, and two more lock rounds to add and remove
    /// the record. Other tasks (child tasks of a thread, plain tasks on a CPU's executor)
    /// keep the handler.
    public nonisolated(nonsending) static func wait(for events: IOEvents, on fd: Int32) async throws -> IOEvents {
        guard let l = CPU.currentLocal else { throw LWKTError.notOnCPU("LWKT.wait(for:on:)") }
        try Task.checkCancellation()
        // One reference to the poller for the whole wait.
        let poller = l.pointee.events
        // An edge-triggered descriptor whose readiness came while nobody waited.
        if let ready = poller.takeEdgeReadiness(fd: fd, interest: events) { return ready }
        // The running job's LWKT thread, when this task is the thread's own (the run loop
        // found it in its thread table; child tasks are not there).
        if let stats = l.pointee.runningThreadStats, let address = UnsafeRawPointer(bitPattern: Int(stats[LWKTThread.threadAddress])) {
            let thread = Unmanaged<LWKTThread>.fromOpaque(address).takeUnretainedValue()
            return try await waitInThread(thread, stats: stats, l: l, poller: poller, events: events, fd: fd)
        }
        let cpu = l.pointee.cpu.takeUnretainedValue()
        let waiter = poller.takeIOWaiter(fd: fd, interest: events)
        let generation = waiter.generation
        defer { poller.returnIOWaiter(waiter) }
        let held = LWKTThread.currentThread.map { Token.releaseAll(of: $0) } ?? false
        let ready: IOEvents
        do {
            ready = try await withTaskCancellationHandler {
                try await withUnsafeThrowingContinuation { (c: UnsafeContinuation<IOEvents, any Error>) in
                    if waiter.cancelled {
                        c.resume(throwing: CancellationError())
                        return
                    }
                    waiter.continuation = c
                    do {
                        try poller.register(waiter, cpu: cpu)
                    } catch {
                        waiter.continuation = nil
                        c.resume(throwing: error)
                    }
                }
            } onCancel: {
                cpu.sendIPI(cancelIOIPI, Unmanaged.passRetained(waiter).toOpaque(), generation)
            }
        } catch {
            if held, let t = LWKTThread.currentThread { await Token.reacquireAll(of: t) }
            throw error
        }
        if held, let t = LWKTThread.currentThread { await Token.reacquireAll(of: t) }
        return ready
    }

    /// ``wait(for:on:)`` in an LWKT thread's own task: the thread announces the wait in
    /// ``LWKTThread/ioWait`` (its CPU and the descriptor) and suspends without a runtime
    /// cancellation handler; ``LWKTThread/cancel()`` sends an IPI to the thread's CPU, which
    /// ends the announced wait (``EventPoller/cancelWaits(of:fd:)``). The IPI runs on that
    /// CPU between jobs, so it sees the wait either announced and suspended, or not begun
    /// (then the wait's cancellation check sees the flag `cancel()` set before sending it).
    nonisolated(nonsending) static func waitInThread(_ thread: LWKTThread, stats: UnsafeMutablePointer<Int64>,
                                                     l: UnsafeMutablePointer<Globaldata>, poller: EventPoller,
                                                     events: IOEvents, fd: Int32) async throws -> IOEvents {
        let waiter = poller.takeIOWaiter(fd: fd, interest: events)
        waiter.thread = stats
        defer {
            waiter.thread = nil
            poller.returnIOWaiter(waiter)
        }
        // Only a thread holding tokens has any to release.
        let held = stats[LWKTThread.physicalTokens] != 0 && Token.releaseAll(of: thread)
        thread.ioWait.store(LWKTThread.ioWaitWord(cpu: l.pointee.cpuID, fd: fd), ordering: .releasing)
        let ready: IOEvents
        do {
            // Inherits the caller's executor: no hop in before suspending (the isolated
            // `withUnsafeThrowingContinuation` hops to its isolation first).
            ready = try await _unsafeInheritExecutor_withUnsafeThrowingContinuation { (c: UnsafeContinuation<IOEvents, any Error>) in
                waiter.continuation = c
                do {
                    try poller.register(waiter, cpu: l.pointee.cpu.takeUnretainedValue())
                } catch {
                    waiter.continuation = nil
                    c.resume(throwing: error)
                }
            }
        } catch {
            thread.ioWait.store(0, ordering: .relaxed)
            if held { await Token.reacquireAll(of: thread) }
            throw error
        }
        thread.ioWait.store(0, ordering: .relaxed)
        if held { await Token.reacquireAll(of: thread) }
        return ready
    }

    /// Registers `fd` with the current CPU's epoll once, edge-triggered, for reading,
    /// writing and hang-ups, so that later ``wait(for:on:)`` calls on it make no
    /// `epoll_ctl` call (a one-shot descriptor is re-armed by every wait). The CPU owns the
    /// descriptor from now on; ``unregister(fd:)`` ends the registration.
    ///
    /// The edge-triggered contract: wait only once the descriptor was seen not ready since
    /// the last wait returned (a call failed with `EAGAIN`, or a read returned less than
    /// it asked for). Readiness reported while nobody waited is kept for the next wait, so
    /// an edge is never lost; a kept one may be stale (the data was read meanwhile), so
    /// a woken waiter must expect `EAGAIN`.
    public static func registerEdgeTriggered(fd: Int32) throws {
        let cpu = try currentCPU("LWKT.registerEdgeTriggered(fd:)")
        try cpu.events.registerEdges(fd: fd)
    }

    /// Removes `fd` from the current CPU's epoll (call it before closing a descriptor you
    /// waited on); threads still waiting on it get `CancellationError`.
    public static func unregister(fd: Int32) throws {
        let cpu = try currentCPU("LWKT.unregister(fd:)")
        cpu.events.unregister(fd: fd, cpu: cpu)
    }
}

let cancelIOIPI: IPIFunction = { arg, generation in
    guard let arg, let l = CPU.currentLocal else { return }
    let w = Unmanaged<IOWaiter>.fromOpaque(arg).takeRetainedValue()
    l.pointee.cpu._withUnsafeGuaranteedRef { cpu in cpu.events.cancelIO(w, generation: generation, cpu: cpu) }
}

/// Ends the descriptor wait an ``LWKTThread`` announced, on the CPU it announced it on
/// (forwarded there if the IPI reached another CPU).
let cancelThreadIOIPI: IPIFunction = { arg, _ in
    guard let arg, let l = CPU.currentLocal else { return }
    let thread = Unmanaged<LWKTThread>.fromOpaque(arg).takeRetainedValue()
    let word = thread.ioWait.load(ordering: .acquiring)
    guard word != 0 else { return }
    let (cpuID, fd) = LWKTThread.ioWaitParts(word)
    if cpuID != l.pointee.cpuID {
        let cpus = l.pointee.cpu._withUnsafeGuaranteedRef { $0.system.cpus }
        if cpuID < cpus.count { cpus[cpuID].sendIPI(cancelThreadIOIPI, Unmanaged.passRetained(thread).toOpaque(), 0) }
        return
    }
    l.pointee.events.cancelWaits(of: thread.stats, fd: fd)
}
