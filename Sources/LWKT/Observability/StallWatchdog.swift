import CLibellula
import Glibc
import Synchronization

/// One stall the watchdog caught: a CPU that ran one job (or one IPI drain, a critical
/// section) longer than the threshold.
public struct StallReport: Codable, Sendable, Equatable {
    /// The CPU.
    public var cpu: Int
    /// The LWKT thread whose job it was (`-` when the job is not an LWKT thread's, for
    /// example an IPI drain or a plain task).
    public var thread: String
    /// Its priority band.
    public var priority: String
    /// How long the job had run when last seen (it may still be running), counted from the
    /// watchdog's first look that saw it: a lower bound, at most about one `poll` short.
    public var durationNanos: Int64
    /// Whether the job was still running at the last look.
    public var ongoing: Bool
    /// The CPU thread's stack while stalled, innermost first, demangled.
    public var backtrace: [String]
    /// When it was caught, seconds since 1970.
    public var timestamp: Double

    public init(cpu: Int, thread: String, priority: String, durationNanos: Int64, ongoing: Bool, backtrace: [String], timestamp: Double) {
        self.cpu = cpu
        self.thread = thread
        self.priority = priority
        self.durationNanos = durationNanos
        self.ongoing = ongoing
        self.backtrace = backtrace
        self.timestamp = timestamp
    }
}

/// The watchdog's counters and its most recent reports.
public struct StallStatistics: Codable, Sendable, Equatable {
    /// The threshold in nanoseconds (0: no watchdog runs).
    public var thresholdNanos: Int64 = 0
    /// Stalls detected (each long job counts once).
    public var detected: Int = 0
    /// Stalls reported with a backtrace (the rest were rate-limited).
    public var reported: Int = 0
    /// Stalls not reported because the CPU had been reported less than the rate limit ago.
    public var suppressed: Int = 0
    /// The last reports, newest last (at most 16).
    public var recent: [StallReport] = []
    /// Looks the watchdog has taken at the CPUs: its wakeups (at most one per 0.9 ms while a
    /// CPU is awake, about one per second while every CPU sleeps; see ``StallDetector``).
    public var polls: Int = 0
    /// Looks per second over the watchdog's last accounting second (its wakeup rate).
    public var looksPerSecond: Double = 0
    /// Times the watchdog parked because every CPU was in its idle sleep.
    public var parks: Int = 0
    /// Looks that woke more than the schedule's margin (50 µs) late: for jobs seen at those,
    /// detection within the threshold plus the resolution is not guaranteed.
    public var lateLooks: Int = 0
    /// CPU time the watchdog thread itself has used, in seconds (its cost: each look is a
    /// timer wakeup on some core), as of its last second.
    public var watchdogCPUSeconds: Double = 0

    public init() {}
}

/// A watchdog OS thread (not a CPU) that looks at every CPU's ``StallWatch`` words and
/// reports any job that has been running longer than `threshold`: the CPU, the LWKT thread's
/// name and priority, the duration, and a backtrace of the CPU's thread taken while it is
/// stalled (by a signal whose handler records the frames into a preallocated buffer; symbols
/// are looked up and demangled afterwards, on the watchdog thread).
///
/// The CPUs read no clock for it: a job is timed from the first look that saw its sequence
/// number. ``StallDetector`` holds the schedule and the argument for its bound: a look at
/// most every `poll - 100 µs` while some CPU is awake, an extra look at the moment a seen job
/// would cross the threshold, none while every CPU sleeps (the watchdog parks, and the first
/// CPU to wake up wakes it); a stall is detected within `threshold + poll` of the job's start
/// whenever the watchdog's wakeups are at most 50 µs late (later ones are counted). Its cost
/// is its own wakeups, which it accounts in ``StallStatistics/watchdogCPUSeconds`` and
/// ``StallStatistics/looksPerSecond``.
///
/// Reports are rate-limited per CPU (`minimumInterval`); every stall is counted.
public final class StallWatchdog: @unchecked Sendable {
    public let system: LWKTSystem
    public let threshold: Duration
    public let poll: Duration
    public let minimumInterval: Duration
    private let state = Mutex<StallStatistics>(StallStatistics())
    private let running = Atomic<Bool>(true)
    /// Set by the watchdog thread as it leaves its loop.
    private let finished = Atomic<Bool>(false)
    private let onReport: (@Sendable (StallReport) -> Void)?
    private var thread: pthread_t?
    /// Whether the watchdog thread got a real-time priority (it drops it while it names
    /// frames, which can read files, so that it never holds a core a CPU needs for long).
    private var realTime = false

    static func setRealTime(_ on: Bool) -> Bool {
        var param = sched_param()
        param.sched_priority = on ? 1 : 0
        return pthread_setschedparam(pthread_self(), on ? SCHED_FIFO : SCHED_OTHER, &param) == 0
    }

    /// Starts a watchdog for `system`.
    ///
    /// - Parameters:
    ///   - threshold: how long one job may run before it is a stall (default 5 ms).
    ///   - poll: the detection resolution (default 1 ms: a stall is detected within the
    ///     threshold plus this of the job's start; looks are at most `poll - 100 µs` apart
    ///     while some CPU is awake).
    ///   - minimumInterval: the least time between two reports for one CPU.
    ///   - onReport: called on the watchdog thread with each report.
    public init(system: LWKTSystem, threshold: Duration = .milliseconds(5), poll: Duration = .milliseconds(1),
                minimumInterval: Duration = .seconds(1), onReport: (@Sendable (StallReport) -> Void)? = nil) {
        self.system = system
        self.threshold = threshold
        self.poll = poll
        self.minimumInterval = minimumInterval
        self.onReport = onReport
        state.withLock { $0.thresholdNanos = threshold.nanoseconds }
        _ = lb_stall_install()
        // CPU threads inherit the blocked signal mask of whoever booted the system.
        try? system.crossbar.sync(cpus: Array(0..<system.cpuCount)) { _ in _ = lb_stall_unblock() }
        let box = Unmanaged.passRetained(self).toOpaque()
        var tid = pthread_t()
        if pthread_create(&tid, nil, { arg in
            guard let arg else { return nil }
            let w = Unmanaged<StallWatchdog>.fromOpaque(arg).takeRetainedValue()
            lb_set_thread_name("stall-watchdog")
            // A watchdog that the load it watches can starve is no watchdog: ask for the
            // lowest real-time priority (it sleeps between looks), else the best nice value.
            w.realTime = StallWatchdog.setRealTime(true)
            if !w.realTime { _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(lb_gettid()), -20) }
            w.loop()
            w.finished.store(true, ordering: .releasing)
            return nil
        }, box) == 0 {
            thread = tid
        } else {
            Unmanaged<StallWatchdog>.fromOpaque(box).release()
        }
    }

    /// Starts a watchdog for `system` when the environment asks for one with
    /// `LIBELLULA_STALL_MS` (a threshold in milliseconds; programs that start their own, like
    /// `libellula serve`, get two): lets any program built on LWKT, and the benchmarks, run
    /// with the watchdog without code changes.
    static func startFromEnvironment(_ system: LWKTSystem) {
        guard let raw = getenv("LIBELLULA_STALL_MS") else { return }
        let text = String(decoding: UnsafeRawBufferPointer(start: raw, count: strlen(raw)), as: UTF8.self)
        guard let ms = Double(text), ms > 0 else { return }
        // LIBELLULA_STALL_POLL_US: the detection resolution in microseconds (benchmarks of
        // the watchdog's own cost; default 1,000).
        var pollMicros: Int64 = 1_000
        if let p = getenv("LIBELLULA_STALL_POLL_US"),
           let v = Int64(String(decoding: UnsafeRawBufferPointer(start: p, count: strlen(p)), as: UTF8.self)), v >= 100 {
            pollMicros = v
        }
        let dog = StallWatchdog(system: system, threshold: .microseconds(Int64(ms * 1000)), poll: .microseconds(pollMicros))
        system.latencies.watchdog.withLock { if $0 == nil { $0 = dog } }
    }

    /// Stops the watchdog thread and waits for it (about a millisecond at most). Call it off
    /// the LWKT CPUs: the wait sleeps the calling OS thread.
    public func stop() {
        assert(CPU.current == nil, "StallWatchdog.stop() waits for a thread: call it off the LWKT CPUs")
        guard running.exchange(false, ordering: .sequentiallyConsistent), let t = thread else { return }
        // Wake it if it is parked. The word stays as it is (another watchdog of the system may
        // be parked on it); one that was about to park when `running` dropped is woken by
        // the next of these wakes.
        let parked = system.latencies.watchdogParked
        while !finished.load(ordering: .acquiring) {
            _ = lb_futex_wake(parked, Int32.max)
            usleep(1_000)
        }
        pthread_join(t, nil)
    }

    /// The counters and recent reports now.
    public var statistics: StallStatistics { state.withLock { $0 } }

    private func loop() {
        let n = system.cpuCount
        let limitNanos = UInt64(max(0, minimumInterval.nanoseconds))
        let parked = system.latencies.watchdogParked
        var detector = StallDetector(cpus: n, threshold: UInt64(max(0, threshold.nanoseconds)),
                                     resolution: UInt64(max(1, poll.nanoseconds)), now: lb_now_ns())
        var lastReport = [UInt64](repeating: 0, count: n)
        var reported = [Bool](repeating: false, count: n)
        var counts = LoopCounts()
        var lastAccount = lb_now_ns()
        var wanted = lb_now_ns()
        defer { account(counts, window: 0) }
        while running.load(ordering: .acquiring) && system.isRunning {
            let now = lb_now_ns()
            counts.looks += 1
            if now > wanted &+ detector.margin { counts.late += 1 }
            if now &- lastAccount >= 1_000_000_000 {
                account(counts, window: now &- lastAccount)
                counts.windowLooks = 0
                lastAccount = now
            }
            counts.windowLooks += 1
            var allAsleep = true
            for i in 0..<n {
                let cpu = system.cpuUnchecked(i)
                let w = cpu.local.pointee.watch
                let seq = lb_counter_load(w)
                if allAsleep && cpu.signals.pointee.sleeping.load(ordering: .relaxed) == 0 { allAsleep = false }
                switch detector.observe(cpu: i, sequence: seq, now: now) {
                case .none:
                    continue
                case .ended:
                    if reported[i] { finish(cpu: i) }
                    reported[i] = false
                case .ongoing(let elapsed):
                    if reported[i] { update(cpu: i, durationNanos: Int64(elapsed)) }
                case .stall(let elapsed, _, _):
                    if lastReport[i] != 0 && now &- lastReport[i] < limitNanos {
                        state.withLock { $0.detected += 1; $0.suppressed += 1 }
                        continue
                    }
                    lastReport[i] = now
                    var r = capture(cpu: cpu, statsBits: lb_counter_load(w + 1), elapsed: Int64(elapsed))
                    // Only if the same job is still running is the backtrace the stalled one.
                    if lb_counter_load(w) != seq { r.backtrace = ["(the job ended before the backtrace was taken)"] }
                    state.withLock {
                        $0.detected += 1
                        $0.reported += 1
                        $0.recent.append(r)
                        if $0.recent.count > 16 { $0.recent.removeFirst($0.recent.count - 16) }
                    }
                    reported[i] = true
                    onReport?(r)
                }
            }
            switch detector.finish(now: now, allAsleep: allAsleep) {
            case .at(let t):
                wanted = t
                sleep(until: t)
            case .park:
                // Raise the word, then look again: a CPU that left its sleep before the raise
                // is seen awake here; one that leaves it after sees the word and wakes us.
                lb_u32_store_seq(parked, 1)
                var stillAsleep = true
                for i in 0..<n where system.cpuUnchecked(i).signals.pointee.sleeping.load(ordering: .sequentiallyConsistent) == 0 {
                    stillAsleep = false
                    break
                }
                // (The word is only ever lowered by a CPU, which then wakes every waiter: a
                // second watchdog of the same system may be parked on it.)
                guard stillAsleep, running.load(ordering: .sequentiallyConsistent) else {
                    detector.unparked(woken: true)
                    wanted = lb_now_ns()
                    continue
                }
                state.withLock { $0.parks += 1 }
                let rc = lb_futex_wait(parked, 1, Self.parkingTimeout)
                detector.unparked(woken: rc != -Int(ETIMEDOUT))
                wanted = lb_now_ns()
            }
        }
    }

    /// The longest the watchdog stays parked without a CPU waking it (it accounts its own
    /// cost and notices a stop request at least this often).
    static let parkingTimeout: Int64 = 1_000_000_000

    private struct LoopCounts {
        var looks = 0
        var windowLooks = 0
        var late = 0
    }

    private func sleep(until t: UInt64) {
        var ts = timespec(tv_sec: Int(t / 1_000_000_000), tv_nsec: Int(t % 1_000_000_000))
        while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nil) == EINTR {}
    }

    /// Publishes the loop's counts and the thread's own CPU time (`window`: nanoseconds
    /// since the last call, for the look rate; 0: keep the last rate).
    private func account(_ c: LoopCounts, window: UInt64) {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        let cpu = Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
        state.withLock {
            $0.polls = c.looks
            $0.lateLooks = c.late
            if window > 0 { $0.looksPerSecond = Double(c.windowLooks) * 1e9 / Double(window) }
            $0.watchdogCPUSeconds = cpu
        }
    }

    private func update(cpu: Int, durationNanos: Int64) {
        state.withLock { s in
            if let k = s.recent.lastIndex(where: { $0.cpu == cpu && $0.ongoing }) { s.recent[k].durationNanos = durationNanos }
        }
    }

    private func finish(cpu: Int) {
        state.withLock { s in
            if let k = s.recent.lastIndex(where: { $0.cpu == cpu && $0.ongoing }) { s.recent[k].ongoing = false }
        }
    }

    private func capture(cpu: CPU, statsBits: Int64, elapsed: Int64) -> StallReport {
        var name = "-", priority = "-"
        if statsBits != 0 {
            let ptr = UnsafeMutablePointer<Int64>(bitPattern: Int(statsBits))
            if let t = system.liveThreads.first(where: { $0.stats == ptr }) {
                name = t.name
                priority = "\(t.priority)"
            }
        }
        var frames: [String] = []
        if let pt = cpu.pthread {
            let depth = lb_stall_capture(UInt(pt), cpu.osThreadID, 200_000_000)
            if depth > 0 {
                if realTime { _ = Self.setRealTime(false) }
                frames = Self.symbolicate(Int(depth))
                if realTime { _ = Self.setRealTime(true) }
            }
        }
        if frames.isEmpty { frames = ["(no backtrace: the CPU thread did not answer the capture signal)"] }
        var tv = timeval()
        gettimeofday(&tv, nil)
        return StallReport(cpu: cpu.id, thread: name, priority: priority, durationNanos: elapsed, ongoing: true,
                           backtrace: frames, timestamp: Double(tv.tv_sec) + Double(tv.tv_usec) / 1e6)
    }

    /// Names for the frames of the last capture, demangled, skipping the signal frames.
    static func symbolicate(_ depth: Int) -> [String] {
        var out: [String] = []
        var buffer = [CChar](repeating: 0, count: 512)
        for i in 0..<depth {
            var address: UInt = 0
            let kind = lb_stall_symbol(Int32(i), &buffer, Int32(buffer.count), &address)
            let raw = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress.unsafelyUnwrapped) }
            let text: String
            switch kind {
            case 1: text = demangle(raw)
            case 2: text = raw
            default: text = "0x" + String(address, radix: 16)
            }
            out.append(text)
        }
        // Drop the capture machinery at the top (the handler and the signal trampoline).
        if let k = out.firstIndex(where: { $0.contains("__restore_rt") || $0.contains("libc.so") && $0.contains("+0x") }) {
            out.removeFirst(min(out.count, k + 1))
        }
        return out
    }

    static func demangle(_ name: String) -> String {
        guard name.hasPrefix("$s") || name.hasPrefix("_T") || name.hasPrefix("$S") else { return name }
        return name.withCString { p in
            guard let d = swift_demangle(p, strlen(p), nil, nil, 0) else { return name }
            defer { free(d) }
            return String(cString: d)
        }
    }
}

@_silgen_name("swift_demangle")
private func swift_demangle(_ mangled: UnsafePointer<CChar>, _ length: Int, _ output: UnsafeMutablePointer<CChar>?,
                            _ outputSize: UnsafeMutablePointer<Int>?, _ flags: UInt32) -> UnsafeMutablePointer<CChar>?
