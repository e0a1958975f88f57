import CLibellula

extension LWKT {
    /// Waits until `fd` has one of `events` (or an error or hang-up), using the epoll of
    /// the caller's CPU: the descriptor is owned by that CPU from now on, and the CPU's
    /// loop wakes this thread when the kernel reports readiness. Tokens are released
    /// while waiting. Throws `CancellationError` if cancelled or unregistered meanwhile.
    public nonisolated(nonsending) static func wait(for events: IOEvents, on fd: Int32) async throws -> IOEvents {
        let cpu = try currentCPU("LWKT.wait(for:on:)")
        try Task.checkCancellation()
        // An edge-triggered descriptor whose readiness came while nobody waited.
        if let ready = cpu.events.takeEdgeReadiness(fd: fd, interest: events) { return ready }
        let waiter = cpu.events.takeIOWaiter(fd: fd, interest: events)
        let generation = waiter.generation
        defer { cpu.events.returnIOWaiter(waiter) }
        // The LWKT thread whose own task runs this job (the run loop's per-job pointer, no
        // task-local lookup), else the one the task inherited, if any.
        let own = cpu.local.pointee.runningThreadStats
        let thread = own.map { LWKTThread.unretained($0) } ?? LWKTThread.currentThread
        let held = thread.map { Token.releaseAll(of: $0) } ?? false
        let ready: IOEvents
        do {
            if own != nil, let thread {
                // An LWKT thread's own task: its thread-wide cancellation handler ends this
                // wait (see `LWKTThread.ioWait`); a cancel that came before the check above
                // made it throw. (A task that only inherited the thread, such as a child
                // task, has a handler of its own below.)
                thread.ioWait = Unmanaged.passUnretained(waiter)
                thread.ioWaitGeneration = generation
                defer { thread.ioWait = nil }
                ready = try await withUnsafeThrowingContinuation { (c: UnsafeContinuation<IOEvents, any Error>) in
                    suspend(waiter, c, cpu)
                }
            } else {
                ready = try await withTaskCancellationHandler {
                    try await withUnsafeThrowingContinuation { (c: UnsafeContinuation<IOEvents, any Error>) in
                        suspend(waiter, c, cpu)
                    }
                } onCancel: {
                    cpu.sendIPI(cancelIOIPI, Unmanaged.passRetained(waiter).toOpaque(), generation)
                }
            }
        } catch {
            if held, let t = thread { await Token.reacquireAll(of: t) }
            throw error
        }
        if held, let t = thread { await Token.reacquireAll(of: t) }
        return ready
    }

    /// Registers `waiter` (resumed through `c`) with the CPU's epoll, or ends it at once if
    /// it was cancelled or the registration failed.
    @inline(__always)
    private static func suspend(_ waiter: IOWaiter, _ c: UnsafeContinuation<IOEvents, any Error>, _ cpu: CPU) {
        if waiter.cancelled {
            c.resume(throwing: CancellationError())
            return
        }
        waiter.continuation = c
        do {
            try cpu.events.register(waiter, cpu: cpu)
        } catch {
            waiter.continuation = nil
            c.resume(throwing: error)
        }
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
