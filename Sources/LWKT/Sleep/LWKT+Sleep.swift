import CLibellula
import Synchronization

extension LWKT {
    /// Sleeps on `channel` until a ``wakeup(_:)`` or ``wakeupOne(_:)`` names it, the
    /// timeout expires, or the task is cancelled (DragonFly's `tsleep`). The sleeper is
    /// queued on its own CPU; its CPU's bit in the channel's slot mask tells wakers which
    /// CPUs to send an IPI to. Tokens held are released while asleep. Without a timeout
    /// it allocates nothing (sleep records are pooled per CPU).
    public nonisolated(nonsending) static func tsleep(on channel: WaitChannel, timeout: Duration? = nil) async throws -> SleepResult {
        try await tsleep(on: channel, timeout: timeout, interlocked: false, until: { false })
    }

    /// ``tsleep(on:timeout:)`` with an interlock condition (DragonFly's `tsleep_interlock`):
    /// `condition` is evaluated after the thread is queued and visible to wakers; if it is
    /// already true the call returns `.woken` at once, so a wakeup that raced with the
    /// decision to sleep is never lost. Allocates nothing without a timeout.
    public nonisolated(nonsending) static func tsleep(on channel: WaitChannel, timeout: Duration? = nil,
                              until condition: () -> Bool) async throws -> SleepResult {
        try await tsleep(on: channel, timeout: timeout, interlocked: true, until: condition)
    }

    nonisolated(nonsending) static func tsleep(on channel: WaitChannel, timeout: Duration?, interlocked: Bool,
                       until condition: () -> Bool) async throws -> SleepResult {
        let cpu = try currentCPU("LWKT.tsleep")
        try Task.checkCancellation()
        cpu.counters.add(.tsleeps)
        let waiter = cpu.sleepQueues.takeWaiter(channel: channel.rawValue)
        let generation = waiter.generation
        defer { cpu.sleepQueues.returnWaiter(waiter) }
        let deadline: UInt64? = timeout.map { lb_now_ns() &+ UInt64(max(0, $0.nanoseconds)) }
        let held = LWKTThread.currentThread.map { Token.releaseAll(of: $0) } ?? false
        let result: SleepResult
        do {
            result = try await withTaskCancellationHandler {
                try await withUnsafeThrowingContinuation { (c: UnsafeContinuation<SleepResult, any Error>) in
                    if waiter.cancelled {
                        c.resume(throwing: CancellationError())
                        return
                    }
                    waiter.continuation = c
                    cpu.sleepQueues.insertSleeper(waiter, cpu: cpu)
                    if interlocked && condition() {
                        cpu.sleepQueues.removeSleeper(waiter, cpu: cpu)
                        waiter.continuation = nil
                        c.resume(returning: .woken)
                        return
                    }
                    if let deadline {
                        let node = TimerNode(deadline: deadline, action: .sleepTimeout(waiter))
                        waiter.timer = node
                        cpu.timers.arm(node)
                    }
                }
            } onCancel: {
                cpu.sendIPI(cancelSleepIPI, Unmanaged.passRetained(waiter).toOpaque(), generation)
            }
        } catch {
            if held, let t = LWKTThread.currentThread { await Token.reacquireAll(of: t) }
            throw error
        }
        if held, let t = LWKTThread.currentThread { await Token.reacquireAll(of: t) }
        return result
    }

    /// Wakes every thread sleeping on `channel`, on every CPU (DragonFly's `wakeup`).
    /// Sleepers on the caller's CPU are made runnable at once; other CPUs get an IPI only
    /// if their bit is set in the channel's slot mask. Callable from any thread.
    public static func wakeup(_ channel: WaitChannel, in system: LWKTSystem? = nil) {
        wake(channel, one: false, system: system)
    }

    /// Wakes one thread sleeping on `channel`: the caller's CPU first, then the other CPUs
    /// that have sleepers in the channel's slot, one after another, until one is woken.
    public static func wakeupOne(_ channel: WaitChannel, in system: LWKTSystem? = nil) {
        wake(channel, one: true, system: system)
    }

    static func wake(_ channel: WaitChannel, one: Bool, system explicit: LWKTSystem?) {
        let current = CPU.current
        guard let system = explicit ?? current?.system else { return }
        var origin = system.cpuCount
        if let cpu = current, cpu.system === system {
            cpu.counters.add(.wakeups)
            let woke = cpu.sleepQueues.wakeLocal(channel: channel.rawValue, one: one, cpu: cpu)
            if one && woke > 0 { return }
            origin = cpu.id
        }
        // Pairs with the sleeper's seq_cst mask update: either it sees our state change in
        // its interlock, or we see its bit.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let slot = channel.slot(SleepQueues.slots)
        let n = system.cpuCount
        let arg = UnsafeMutableRawPointer(bitPattern: channel.rawValue)
        var first = -1
        var sent = 0
        // Visit CPUs after the origin first, so no CPU is always favoured.
        for k in 1...n {
            let c = (origin + k) % n
            if c == origin && origin < n { continue }
            let word = system.sleepMaskWord(slot: slot, cpu: c).pointee.load(ordering: .sequentiallyConsistent)
            guard word & (UInt64(1) << UInt64(c & 63)) != 0 else { continue }
            if one {
                first = c
                break
            }
            system.cpuUnchecked(c).sendIPI(wakeupIPI, arg, 0)
            sent += 1
        }
        if one && first >= 0 {
            // The chain stops when it comes back to `stop`.
            let stop = origin < n ? origin : first
            system.cpuUnchecked(first).sendIPI(wakeupIPI, arg, (stop << 2) | 1)
            sent += 1
        }
        if let cpu = current, cpu.system === system {
            cpu.counters.add(.wakeupIPIs, Int64(sent))
            if sent == 0 { cpu.counters.add(.wakeupIPIsAvoided) }
        }
    }
}

/// Runs a wakeup on the CPU that received it. With the low bit of `arg2` set it is a
/// `wakeupOne` chain: if nobody is woken here it moves on to the next CPU with sleepers
/// in the slot, until it reaches the CPU encoded in `arg2 >> 2`.
let wakeupIPI: IPIFunction = { arg, arg2 in
    guard let l = CPU.currentLocal else { return }
    let channel = UInt(bitPattern: arg)
    l.pointee.cpu._withUnsafeGuaranteedRef { cpu in
        let one = arg2 & 1 != 0
        let woke = cpu.sleepQueues.wakeLocal(channel: channel, one: one, cpu: cpu)
        guard one && woke == 0, let ch = WaitChannel(rawValue: channel) else { return }
        let stop = arg2 >> 2
        let n = cpu.system.cpuCount
        let slot = ch.slot(SleepQueues.slots)
        var c = (cpu.id + 1) % n
        while c != stop && c != cpu.id {
            let word = cpu.system.sleepMaskWord(slot: slot, cpu: c).pointee.load(ordering: .sequentiallyConsistent)
            if word & (UInt64(1) << UInt64(c & 63)) != 0 {
                cpu.send(to: cpu.system.cpuUnchecked(c), wakeupIPI, arg, arg2, passive: false)
                return
            }
            c = (c + 1) % n
        }
    }
}

/// Ends a cancelled `tsleep` on the sleeper's CPU.
let cancelSleepIPI: IPIFunction = { arg, generation in
    guard let arg, let l = CPU.currentLocal else { return }
    let w = Unmanaged<SleepWaiter>.fromOpaque(arg).takeRetainedValue()
    l.pointee.cpu._withUnsafeGuaranteedRef { cpu in cpu.sleepQueues.cancelSleeper(w, generation: generation, cpu: cpu) }
}
