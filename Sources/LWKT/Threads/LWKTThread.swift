import CLibellula
import Synchronization

/// A lightweight kernel thread: a Swift task bound to one CPU's executor with a fixed LWKT
/// priority. It never migrates unless it asks to (``LWKT/migrate(to:_:)``), and the CPU
/// counts its runs and run time.
public final class LWKTThread: @unchecked Sendable, CustomStringConvertible {
    /// The thread's name.
    public let name: String
    /// Its fixed priority band.
    public let priority: LWKTPriority
    /// The system it belongs to.
    public let system: LWKTSystem
    /// The CPU it was spawned on.
    public let homeCPU: Int
    let currentCPU = Atomic<Int>(-1)
    /// Per-thread words the CPU's run loop reads without touching the object: runs, run
    /// cycles, migrations (counters), then the token words: ``physicalTokens`` (how many
    /// holds on the token stack are real, not nested), ``tokensReleased`` (1 while they
    /// are released because the thread is suspended), and the thread's address.
    let stats: UnsafeMutablePointer<Int64>
    static let physicalTokens = 3
    static let tokensReleased = 4
    static let threadAddress = 5
    let task = Mutex<Task<Void, Never>?>(nil)
    let finished = Atomic<Bool>(false)
    /// The descriptor wait the thread is in, announced for ``cancel()``: 0 when none, else
    /// ``ioWaitWord(cpu:fd:)``. Written by the thread on its CPU; read by the cancel IPI.
    let ioWait = Atomic<UInt64>(0)
    /// Tokens held, innermost last. Touched only on the CPU the thread runs on: by the
    /// thread itself, and by the run loop between its jobs.
    var tokens: [HeldToken] = []
    var taskKey: UInt = 0

    @TaskLocal static var currentThread: LWKTThread?

    init(name: String, priority: LWKTPriority, system: LWKTSystem, home: Int) {
        self.name = name
        self.priority = priority
        self.system = system
        self.homeCPU = home
        stats = .allocate(capacity: 6)
        stats.initialize(repeating: 0, count: 6)
        stats[LWKTThread.threadAddress] = Int64(Int(bitPattern: Unmanaged.passUnretained(self).toOpaque()))
    }

    deinit { stats.deallocate() }

    /// The LWKT thread running the caller, if any.
    public static var current: LWKTThread? { currentThread }

    /// Creates a thread on `cpu` and makes it runnable.
    ///
    /// - Parameters:
    ///   - cpu: the CPU it runs on.
    ///   - priority: its LWKT band; within a band threads run round robin.
    ///   - name: a name for reports.
    ///   - body: what it runs. It is cancelled at shutdown and should return then.
    @discardableResult
    public static func spawn(on cpu: CPU, priority: LWKTPriority = .kernel, name: String,
                             _ body: @escaping @Sendable () async -> Void) -> LWKTThread {
        let t = LWKTThread(name: name, priority: priority, system: cpu.system, home: cpu.id)
        cpu.system.register(t)
        let task = Task(executorPreference: cpu.taskExecutor, priority: priority.taskPriority) {
            await LWKTThread.$currentThread.withValue(t) {
                t.attach()
                if t.system.isRunning { await body() }
                t.detach()
            }
            t.finished.store(true, ordering: .releasing)
            t.task.withLock { $0 = nil }
            t.system.unregister(t)
        }
        t.task.withLock { $0 = task }
        if !cpu.system.isRunning { task.cancel() }
        return t
    }

    /// Registers the running task with the current CPU's thread table.
    func attach() {
        guard let l = CPU.currentLocal else { return }
        let key: UInt = withUnsafeCurrentTask { ut in
            guard let ut else { return 0 }
            return unsafeBitCast(ut, to: UInt.self)
        }
        taskKey = key
        if key != 0 { l.pointee.threads.insert(key, stats) }
        // The run loop did not know this job was ours: tell it, so that tokens taken in
        // this first job are released if it suspends.
        if l.pointee.runningThreadStats == nil { l.pointee.runningThreadStats = stats }
        StallWatch.attach(l.pointee.watch, stats)
        let id = l.pointee.cpu._withUnsafeGuaranteedRef { $0.id }
        currentCPU.store(id, ordering: .relaxed)
        l.pointee.cpu._withUnsafeGuaranteedRef { $0.counters.add(.threadsSpawned) }
    }

    /// Removes the running task from the current CPU's thread table.
    func detach() {
        // Whatever the slab deferred in this thread's last job goes out before it is joined.
        CPU.flushSlabDeferredWork()
        // A thread that ends holding tokens must not keep them held.
        if !tokens.isEmpty {
            _ = Token.releaseAll(of: self)
            tokens.removeAll()
            stats[LWKTThread.physicalTokens] = 0
            stats[LWKTThread.tokensReleased] = 0
        }
        guard let l = CPU.currentLocal else { return }
        if taskKey != 0 { l.pointee.threads.remove(taskKey) }
        if l.pointee.runningThreadStats == stats {
            lb_counter_add(stats, 1)
            l.pointee.runningThreadStats = nil
        }
        l.pointee.cpu._withUnsafeGuaranteedRef { $0.counters.add(.threadsExited) }
    }

    /// Waits until the thread's body has returned.
    public func join() async {
        let t = task.withLock { $0 }
        await t?.value
    }

    /// Requests cancellation; the LWKT wait it is in (or its next one) ends with `CancellationError`.
    ///
    /// A descriptor wait of the thread carries no runtime cancellation handler (see
    /// ``LWKT/wait(for:on:)``), so after cancelling the task this sends an IPI to the
    /// thread's CPU, which ends the wait if one is announced. It is sent whether or not a
    /// wait is announced now: one may be about to begin on that CPU, and the IPI runs there
    /// only after the thread's current job, so it cannot miss it.
    public func cancel() {
        task.withLock { $0 }?.cancel()
        let cpus = system.cpus
        let c = cpuID
        guard c >= 0 && c < cpus.count, !isFinished else { return }
        cpus[c].sendIPI(cancelThreadIOIPI, Unmanaged.passRetained(self).toOpaque(), 0)
    }

    /// The ``ioWait`` word of a wait on `fd` on CPU `cpu`.
    @inline(__always)
    static func ioWaitWord(cpu: Int, fd: Int32) -> UInt64 {
        (1 << 63) | (UInt64(UInt16(truncatingIfNeeded: cpu)) << 32) | UInt64(UInt32(bitPattern: fd))
    }

    /// The CPU and descriptor of an ``ioWait`` word.
    @inline(__always)
    static func ioWaitParts(_ word: UInt64) -> (cpu: Int, fd: Int32) {
        (Int(UInt16(truncatingIfNeeded: word >> 32)), Int32(bitPattern: UInt32(truncatingIfNeeded: word)))
    }

    /// Whether the body has returned.
    public var isFinished: Bool { finished.load(ordering: .acquiring) }

    /// The CPU it runs on now (it changes only by explicit migration).
    public var cpuID: Int { let c = currentCPU.load(ordering: .relaxed); return c < 0 ? homeCPU : c }

    /// How many times the CPU ran a job of this thread.
    public var runs: Int64 { lb_counter_load(stats) }

    /// The time its jobs ran, in nanoseconds.
    public var runTimeNanos: Int64 { Int64(Double(lb_counter_load(stats + 1)) / system.cyclesPerNano) }

    /// How many times it migrated.
    public var migrations: Int64 { lb_counter_load(stats + 2) }

    public var description: String { "LWKTThread(\(name) on cpu\(cpuID), \(priority))" }
}
