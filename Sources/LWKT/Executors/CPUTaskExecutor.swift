import CLibellula

/// The `TaskExecutor` face of a CPU: tasks created with this executor as their preference
/// (every ``LWKTThread``) run on the CPU's OS thread, in its run queue's priority bands.
/// Enqueueing from the CPU itself touches no atomic; from another CPU it is an active
/// IPI; from any other thread it goes through the CPU's inbox.
public final class CPUTaskExecutor: TaskExecutor, @unchecked Sendable {
    /// The CPU this executor runs jobs on.
    public internal(set) unowned(unsafe) var cpu: CPU?

    init() {}

    public func enqueue(_ job: consuming ExecutorJob) {
        let j = UnownedJob(job)
        guard let cpu else { return }
        cpu.enqueueJob(j, actor: false)
    }
}

/// The `SerialExecutor` face of a CPU, for actors pinned to it: return
/// `cpu.serialExecutor.asUnownedSerialExecutor()` from an actor's `unownedExecutor`.
public final class CPUSerialExecutor: SerialExecutor, @unchecked Sendable {
    /// The CPU this executor runs jobs on.
    public internal(set) unowned(unsafe) var cpu: CPU?

    init() {}

    public func enqueue(_ job: consuming ExecutorJob) {
        let j = UnownedJob(job)
        guard let cpu else { return }
        cpu.enqueueJob(j, actor: true)
    }

    public func checkIsolated() {
        precondition(cpu?.isCurrent == true, "not on the CPU this actor is pinned to")
    }

    public func isIsolatingCurrentContext() -> Bool? {
        cpu?.isCurrent == true
    }
}
