import CLibellula
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A booted set of Libellula CPUs with their IPI crossbar. Create one with
/// ``LWKT/boot(cpus:configuration:)`` and end it with ``shutdown(timeout:)``.
public final class LWKTSystem: @unchecked Sendable {
    /// The number of CPUs.
    public let cpuCount: Int
    /// The settings the system was booted with.
    public let configuration: LWKTConfiguration
    /// Counter sections modules add to snapshots (see `StatSections.swift`).
    let statSections = StatSectionRegistry()
    /// The CPUs, indexed by id.
    public private(set) var cpus: [CPU] = []

    let maskWords: Int
    let rings: UnsafeMutablePointer<IPIRing>
    let sleepMasks: UnsafeMutablePointer<Atomic<UInt64>>
    let spinNanos: Int64
    let tickNanos: Int64
    /// Time-stamp-counter ticks per nanosecond, measured at boot.
    let cyclesPerNano: Double
    let cpuTable: UnsafeMutablePointer<Unmanaged<CPU>>
    let started = Atomic<Int>(0)
    let exited = Atomic<Int>(0)
    let state = Atomic<Int>(0)   // 0 running, 1 stopping, 2 stopped
    let live = Mutex<[ObjectIdentifier: LWKTThread]>([:])
    /// Objects that modules keep one of per system (the slab allocator), held weakly.
    let attachments = Mutex<[String: WeakAttachment]>([:])
    let bootTime = lb_now_ns()
    /// Latency histograms (Observability/).
    public let latencies: SystemLatencies

    init(cpuCount: Int, configuration: LWKTConfiguration) throws {
        guard cpuCount >= 1 && cpuCount <= 1024 else { throw LWKTError.invalidCPUCount(cpuCount) }
        self.cpuCount = cpuCount
        self.configuration = configuration
        latencies = SystemLatencies(cpuCount: cpuCount)
        maskWords = (cpuCount + 63) / 64
        let cores = max(1, LWKT.onlineCores)
        if let spin = configuration.idleSpin {
            spinNanos = max(0, spin.nanoseconds)
        } else {
            spinNanos = cpuCount <= cores ? 50_000 : 2_000
        }
        tickNanos = max(100_000, configuration.tick.nanoseconds)
        cyclesPerNano = LWKTSystem.calibrateCycles()
        rings = IPIRing.allocate(count: cpuCount * cpuCount)
        let maskCount = SleepQueues.slots * maskWords
        sleepMasks = .allocate(capacity: maskCount)
        for i in 0..<maskCount { (sleepMasks + i).initialize(to: Atomic<UInt64>(0)) }
        cpuTable = .allocate(capacity: cpuCount)
        if cpuCount > cores && configuration.warnings {
            var err = StandardError()
            print("libellula: warning: \(cpuCount) CPUs on \(cores) cores (oversubscribed); spinning shortened", to: &err)
        }
        var list: [CPU] = []
        for i in 0..<cpuCount {
            let cpu = try CPU(id: i, system: self)
            list.append(cpu)
            (cpuTable + i).initialize(to: Unmanaged.passUnretained(cpu))
        }
        cpus = list
        for cpu in list {
            var tid = pthread_t()
            let arg = Unmanaged.passRetained(cpu).toOpaque()
            let rc = pthread_create(&tid, nil, { arg in
                guard let arg else { return nil }
                let cpu = Unmanaged<CPU>.fromOpaque(arg).takeRetainedValue()
                cpu.runLoop()
                return nil
            }, arg)
            if rc != 0 {
                Unmanaged<CPU>.fromOpaque(arg).release()
                throw LWKTError.systemCall("pthread_create", rc)
            }
            cpu.pthread = tid
        }
        while started.load(ordering: .acquiring) < cpuCount { usleep(50) }
    }

    deinit {
        IPIRing.deallocate(rings, count: cpuCount * cpuCount)
        sleepMasks.deallocate()
        cpuTable.deallocate()
    }

    func cpuStarted() { started.add(1, ordering: .releasing) }
    func cpuExited() { exited.add(1, ordering: .releasing) }

    /// The CPU with index `id`.
    public func cpu(_ id: Int) throws -> CPU {
        guard id >= 0 && id < cpuCount else { throw LWKTError.noSuchCPU(id) }
        return cpuTable[id].takeUnretainedValue()
    }

    @usableFromInline @inline(__always)
    func cpuUnchecked(_ id: Int) -> CPU { cpuTable[id].takeUnretainedValue() }

    @inline(__always)
    func ring(from source: Int, to target: Int) -> UnsafeMutablePointer<IPIRing> {
        rings + (source &* cpuCount &+ target)
    }

    @inline(__always)
    func sleepMaskWord(slot: Int, cpu: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        sleepMasks + (slot &* maskWords &+ (cpu >> 6))
    }

    /// The crossbar view of this system: sends, batches and cpusync.
    public var crossbar: IPICrossbar { IPICrossbar(system: self) }

    /// Whether the system still runs.
    public var isRunning: Bool { state.load(ordering: .acquiring) == 0 }

    // MARK: Per-system objects

    /// Returns the live object registered under `key`, or registers and returns the one
    /// `make` creates: how a module keeps exactly one of something per system (the slab
    /// allocator is one). The system holds it weakly, so it lives as long as its users.
    /// `make` runs under the registry's lock: it must not call back into it.
    public func attachment<T: AnyObject & Sendable>(_ key: String, as type: T.Type = T.self,
                                                   orMake make: () throws -> T) rethrows -> T {
        try attachments.withLock { table in
            if let existing = table[key]?.object as? T { return existing }
            let made = try make()
            table[key] = WeakAttachment(made)
            return made
        }
    }

    /// Registers `object` under `key` unless a live object already is; returns whether it
    /// was registered.
    @discardableResult
    public func attach(_ key: String, _ object: AnyObject & Sendable) -> Bool {
        attachments.withLock { table in
            if table[key]?.object != nil { return false }
            table[key] = WeakAttachment(object)
            return true
        }
    }

    /// The live object registered under `key`, if any.
    public func attached<T: AnyObject & Sendable>(_ key: String, as type: T.Type = T.self) -> T? {
        attachments.withLock { $0[key]?.object as? T }
    }

    // MARK: Threads

    func register(_ t: LWKTThread) {
        live.withLock { $0[ObjectIdentifier(t)] = t }
    }

    func unregister(_ t: LWKTThread) {
        live.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(t)) }
    }

    /// The LWKT threads that have not finished.
    public var liveThreads: [LWKTThread] { live.withLock { Array($0.values) } }

    // MARK: Shutdown

    /// What a shutdown found.
    public struct ShutdownReport: Sendable, Equatable {
        /// Threads that were still running and were cancelled.
        public var cancelledThreads: Int
        /// Threads that did not finish within the timeout (they keep their CPU stopped
        /// under them, so their tasks are leaked; zero in a clean shutdown).
        public var leakedThreads: Int
        /// OS threads joined.
        public var joinedCPUs: Int
    }

    /// Stops the system: cancels every LWKT thread still running, waits for them to
    /// finish (up to `timeout`), ends every pending sleep, timer and descriptor wait,
    /// stops each CPU's loop and joins its OS thread. Must not be called from one of the
    /// system's own CPUs. Calling it again returns at once.
    @discardableResult
    public func shutdown(timeout: Duration = .seconds(10)) async throws -> ShutdownReport {
        if let c = CPU.current, c.system === self { throw LWKTError.notOnCPU("shutdown (from outside)") }
        guard state.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged else {
            while state.load(ordering: .acquiring) != 2 { try? await Task.sleep(for: .milliseconds(1)) }
            return ShutdownReport(cancelledThreads: 0, leakedThreads: 0, joinedCPUs: 0)
        }
        let threads = liveThreads
        for t in threads { t.cancel() }
        let deadline = ContinuousClock.now + timeout
        while live.withLock({ $0.count }) > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .microseconds(200))
        }
        let leaked = live.withLock { $0.count }
        let joined = stopCPUs()
        state.store(2, ordering: .releasing)
        return ShutdownReport(cancelledThreads: threads.count, leakedThreads: leaked, joinedCPUs: joined)
    }

    /// A blocking shutdown for code that is not async (the command-line tool's main path).
    @discardableResult
    public func shutdownBlocking(timeout: Duration = .seconds(10)) throws -> ShutdownReport {
        if let c = CPU.current, c.system === self { throw LWKTError.notOnCPU("shutdown (from outside)") }
        guard state.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged else {
            while state.load(ordering: .acquiring) != 2 { usleep(1000) }
            return ShutdownReport(cancelledThreads: 0, leakedThreads: 0, joinedCPUs: 0)
        }
        let threads = liveThreads
        for t in threads { t.cancel() }
        let deadline = ContinuousClock.now + timeout
        while live.withLock({ $0.count }) > 0 && ContinuousClock.now < deadline { usleep(200) }
        let leaked = live.withLock { $0.count }
        let joined = stopCPUs()
        state.store(2, ordering: .releasing)
        return ShutdownReport(cancelledThreads: threads.count, leakedThreads: leaked, joinedCPUs: joined)
    }

    private func stopCPUs() -> Int {
        for cpu in cpus {
            cpu.signals.pointee.stop.store(1, ordering: .sequentiallyConsistent)
            cpu.signals.pointee.sleeping.store(0, ordering: .sequentiallyConsistent)
            cpu.signalEventFD()
        }
        var joined = 0
        for cpu in cpus {
            if let t = cpu.pthread {
                pthread_join(t, nil)
                cpu.pthread = nil
                joined += 1
            }
        }
        // Every CPU thread has exited: nothing polls the epoll instances any more, and
        // senders that still try to wake a CPU find its descriptors closed. Closing them now
        // (not when the system is freed) gives them back even while references to the
        // system or its CPUs live on.
        for cpu in cpus { cpu.closeDescriptors() }
        return joined
    }

    static func calibrateCycles() -> Double {
        let n0 = lb_now_ns(), c0 = lb_cycles()
        var n1 = n0
        while n1 &- n0 < 2_000_000 { n1 = lb_now_ns() }
        let c1 = lb_cycles()
        let r = Double(c1 &- c0) / Double(n1 &- n0)
        return r > 0 ? r : 1
    }
}

/// Standard error as a `TextOutputStream`.
struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        var s = string
        s.withUTF8 { b in _ = Glibc.write(2, b.baseAddress, b.count) }
    }
}

extension LWKTSystem {
    /// Runs `body` as an LWKT thread on CPU `cpu` and returns its result: a convenient
    /// way in from code that is not on a CPU (tests, `main`).
    public func run<R: Sendable>(on cpu: Int, priority: LWKTPriority = .kernel, name: String = "run",
                                 _ body: @escaping @Sendable () async throws -> R) async throws -> R {
        let target = try self.cpu(cpu)
        guard isRunning else { throw LWKTError.shutDown }
        let box = ResultBox<R>()
        let t = LWKTThread.spawn(on: target, priority: priority, name: name) {
            do { box.set(.success(try await body())) } catch { box.set(.failure(error)) }
        }
        await t.join()
        guard let r = box.get() else { throw LWKTError.shutDown }
        return try r.get()
    }
}

/// A weak reference to a per-system object.
final class WeakAttachment: @unchecked Sendable {
    // Written once at creation; read under the system's attachment lock.
    weak var object: AnyObject?
    init(_ object: AnyObject) { self.object = object }
}

final class ResultBox<R: Sendable>: @unchecked Sendable {
    private let m = Mutex<Result<R, any Error>?>(nil)
    func set(_ r: Result<R, any Error>) { m.withLock { $0 = r } }
    func get() -> Result<R, any Error>? { m.withLock { $0 } }
}
