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
    /// Tokens held, innermost last. Touched only on the CPU the thread runs on: by the
    /// thread itself, and by the run loop between its jobs.
    var tokens: [HeldToken] = []
    var taskKey: UInt = 0
    /// The I/O wait (``LWKT/wait(for:on:)``) the thread is suspended in, and its record's
    /// generation: set and cleared by the thread on its CPU, read by ``cancelIOWaitIPI`` on
    /// the same CPU, so no lock. The thread-wide cancellation handler (installed once by
    /// ``spawn(on:priority:name:_:)``) ends this wait, so that a wait does not install and
    /// remove a handler of its own (a status record under the task's lock, and an executor
    /// switch into and out of the handler's operation) every time.
    /// (Unretained: the waiting call holds the record for as long as this is set.)
    var ioWait: Unmanaged<IOWaiter>?
    var ioWaitGeneration = 0

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
            await withTaskCancellationHandler {
                await LWKTThread.$currentThread.withValue(t) {
                    t.attach()
                    if t.system.isRunning { await body() }
                    t.detach()
                }
            } onCancel: {
                t.cancelIOWait()
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

    /// The thread whose ``stats`` words are `stats` (they hold its address).
    @inline(__always)
    static func unretained(_ stats: UnsafeMutablePointer<Int64>) -> LWKTThread {
        Unmanaged<LWKTThread>.fromOpaque(UnsafeRawPointer(bitPattern: Int(stats[threadAddress]))!).takeUnretainedValue()
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
    public func cancel() { task.withLock { $0 }?.cancel() }

    /// The thread's task was cancelled (any thread may call this, after the task's cancelled
    /// flag is set): ends the I/O wait it is suspended in, on its CPU. A wait that begins
    /// after the flag was set sees it and throws at once, so only a wait the thread was
    /// already in needs ending; the thread cannot migrate while in it, so the CPU read here
    /// is the wait's.
    func cancelIOWait() {
        system.cpuUnchecked(cpuID).sendIPI(cancelIOWaitIPI, Unmanaged.passRetained(self).toOpaque(), 0)
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

/// Ends the I/O wait of the thread passed (retained) as the argument, if it is in one on this
/// CPU (see ``LWKTThread/cancelIOWait()``).
let cancelIOWaitIPI: IPIFunction = { arg, _ in
    guard let arg, let l = CPU.currentLocal else { return }
    let t = Unmanaged<LWKTThread>.fromOpaque(arg).takeRetainedValue()
    l.pointee.cpu._withUnsafeGuaranteedRef { cpu in
        guard t.currentCPU.load(ordering: .relaxed) == cpu.id, let w = t.ioWait else { return }
        cpu.events.cancelIO(w.takeUnretainedValue(), generation: t.ioWaitGeneration, cpu: cpu)
    }
}
