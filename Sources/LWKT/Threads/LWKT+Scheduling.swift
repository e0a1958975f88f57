import CLibellula

extension LWKT {
    /// The CPU running the caller; throws when the caller is not on a CPU.
    @inlinable
    public static func currentCPU(_ what: String = "this call") throws -> CPU {
        guard let c = CPU.current else { throw LWKTError.notOnCPU(what) }
        return c
    }

    /// Gives the CPU to another job of equal or higher priority, if one is ready; returns
    /// at once otherwise (DragonFly's `lwkt_yield`). Also a preemption point: pending
    /// IPIs run first, then armed ``ParkFlush`` work (even when the caller keeps the CPU).
    /// Allocates nothing. Off a CPU it is `Task.yield()`.
    public static func yield() async {
        guard let l = CPU.currentLocal else {
            await Task.yield()
            return
        }
        l.pointee.cpu._withUnsafeGuaranteedRef { $0.counters.add(.yields) }
        if l.pointee.critCount == 0 {
            l.pointee.cpu._withUnsafeGuaranteedRef { $0.splz() }
        }
        if _slowPath(l.pointee.parkFlushes != nil) { CPU.runParkFlushes(l) }
        let band = l.pointee.currentBand
        guard l.pointee.runq.hasReady(atLeast: band) else { return }
        l.pointee.cpu._withUnsafeGuaranteedRef { $0.counters.add(.yieldSwitches) }
        let held = LWKTThread.currentThread.map { Token.releaseAll(of: $0) } ?? false
        await withUnsafeContinuation { (c: UnsafeContinuation<Void, Never>) in
            // Resumed by the run loop once this job has returned: the task goes to the
            // tail of its band, behind everything that was ready.
            l.pointee.yielders.append(c)
        }
        if held, let t = LWKTThread.currentThread { await Token.reacquireAll(of: t) }
    }

    /// Suspends the caller for `duration` on its CPU's timer queue. Tokens it holds are
    /// released meanwhile. Throws `CancellationError` if cancelled.
    public static func sleep(for duration: Duration) async throws {
        let cpu = try currentCPU("LWKT.sleep")
        try Task.checkCancellation()
        let deadline = lb_now_ns() &+ UInt64(max(0, duration.nanoseconds))
        let held = LWKTThread.currentThread.map { Token.releaseAll(of: $0) } ?? false
        // The timer belongs to this CPU: the sleeper arms it here and a cancellation from
        // any thread sends it here by IPI (checked in debug builds by CPUBound).
        let timer = CPUBound(SleepTimer(), on: cpu)
        do {
            try await withTaskCancellationHandler {
                try await withUnsafeThrowingContinuation { (c: UnsafeContinuation<Void, any Error>) in
                    if timer.value.cancelled {
                        c.resume(throwing: CancellationError())
                        return
                    }
                    let node = TimerNode(deadline: deadline, action: .resume(c))
                    timer.value.node = node
                    cpu.timers.arm(node)
                }
            } onCancel: {
                cpu.sendIPI(cancelTimerIPI, timer.retainedOpaque(), 0)
            }
        } catch {
            if held, let t = LWKTThread.currentThread { await Token.reacquireAll(of: t) }
            throw error
        }
        if held, let t = LWKTThread.currentThread { await Token.reacquireAll(of: t) }
    }

    /// Runs `body` on `cpu` (explicit migration, DragonFly's `lwkt_setcpu_self`): the
    /// calling thread hops to `cpu`, its counters follow it, and it comes back when `body`
    /// returns. Tokens are released across each hop.
    public static func migrate<R: Sendable>(to cpu: CPU, _ body: @Sendable () async throws -> R) async rethrows -> R {
        let thread = LWKTThread.currentThread
        let held = thread.map { Token.releaseAll(of: $0) } ?? false
        thread?.detachForMigration()
        let r = try await withTaskExecutorPreference(cpu.taskExecutor) {
            thread?.attachAfterMigration()
            if held, let t = thread { await Token.reacquireAll(of: t) }
            defer {
                if let t = thread {
                    _ = Token.releaseAll(of: t)
                    t.detachForMigration()
                }
            }
            return try await body()
        }
        thread?.attachAfterMigration()
        if held, let t = thread { await Token.reacquireAll(of: t) }
        return r
    }
}

extension LWKTThread {
    func detachForMigration() {
        guard let l = CPU.currentLocal else { return }
        if taskKey != 0 { l.pointee.threads.remove(taskKey) }
        if l.pointee.runningThreadStats == stats { l.pointee.runningThreadStats = nil }
    }

    func attachAfterMigration() {
        guard let l = CPU.currentLocal else { return }
        if taskKey != 0 { l.pointee.threads.insert(taskKey, stats) }
        if l.pointee.runningThreadStats == nil { l.pointee.runningThreadStats = stats }
        let id = l.pointee.cpu._withUnsafeGuaranteedRef { $0.id }
        if currentCPU.exchange(id, ordering: .relaxed) != id { lb_counter_add(stats + 2, 1) }
    }
}

/// The timer of one `LWKT.sleep`, shared by the sleeper and its cancellation handler
/// inside a ``CPUBound`` of the sleeper's CPU.
struct SleepTimer {
    var node: TimerNode?
    var cancelled = false
}

/// Cancels a `LWKT.sleep` on the CPU that owns its timer.
let cancelTimerIPI: IPIFunction = { arg, _ in
    guard let arg, let l = CPU.currentLocal else { return }
    l.pointee.cpu._withUnsafeGuaranteedRef { cpu in
        let timer = CPUBound<SleepTimer>(takingRetained: arg, on: cpu)
        let node = timer.withValue { t in
            t.cancelled = true
            return t.node
        }
        guard let node else { return }
        if case .resume(let c)? = cpu.timers.cancel(node) {
            c.resume(throwing: CancellationError())
        }
    }
}
