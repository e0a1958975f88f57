import Glibc
import LWKT
import Synchronization

/// A small pool of OS threads that make host system calls which can block (`open`, `pread`,
/// `fstatat` on a slow disk, a network file system, a FIFO), so that no LWKT CPU ever waits
/// in the kernel.
///
/// An LWKT thread calls `perform(_:)`: the call is queued (one compare-and-swap and a
/// semaphore post, neither of which can block), the LWKT thread parks on a continuation and
/// its CPU goes on running its other threads and answering IPIs. A pool thread runs the
/// call and answers with an IPI through the CPU's inbox; the IPI resumes the parked thread on
/// its own CPU. Called from a thread that is not an LWKT CPU, `perform` runs the body at
/// once, because blocking such a thread harms nobody.
///
/// The round trip's cost is two cross-thread wakeups: CPU to pool and pool to CPU. The
/// second is usually free (an idle LWKT CPU spins a while before it sleeps, and an IPI that
/// finds it spinning needs no `eventfd` write). The first is avoided the same way: a pool
/// thread that has finished a call spins for `spin` watching `inbound` (yielding its core
/// between looks) before it sleeps, and
/// a CPU posts the semaphore (a futex wake, tens of µs on a VM) only when some pool thread
/// has announced that it sleeps (`sleepers`).
///
/// Rules of this file:
/// 1. CPUs only push onto `inbound` (lock-free), read `sleepers` and post the semaphore;
///    they never take `order`, which only pool threads take.
/// 4. Sleep handshake: a pool thread increments `sleepers`, then looks at `inbound` once
///    more before `sem_wait`; a CPU pushes, then reads `sleepers` (both sequentially
///    consistent), so either the thread sees the request or the CPU sees the sleeper.
/// 2. A request is answered exactly once, on the CPU that submitted it.
/// 3. The submitting thread stays suspended until the answer, so the body may use what the
///    caller owns (buffers, non-Sendable values) without copying it.
public final class HostIOPool: @unchecked Sendable {
    /// The pool every `VirtualFileSystem` uses unless it is given another.
    public static let shared = HostIOPool(threads: HostIOPool.defaultThreads)

    /// Threads of the shared pool: the `LIBELLULA_HOST_IO_THREADS` environment variable, else 4.
    public static var defaultThreads: Int {
        if let v = getenv("LIBELLULA_HOST_IO_THREADS"), let n = Int(String(cString: v)), n > 0 { return min(n, 256) }
        return 4
    }

    /// Number of pool threads.
    public let threadCount: Int
    /// How long an idle pool thread watches for the next call before it sleeps.
    public let spin: Duration
    private let spinNanos: UInt64
    private let sleepers = Atomic<Int>(0)
    private let inbound = Atomic<UInt>(0)
    /// Requests moved from `inbound` to `order` and not yet taken (so spinning threads see them).
    private let queued = Atomic<Int>(0)
    /// The requests in arrival order: the head of a chain linked through `next`, each
    /// retained (as on the inbound stack); only pool threads take it.
    private let order = Mutex<UInt>(0)
    private let semaphore: UnsafeMutablePointer<sem_t>
    private let started = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)
    private let running = Atomic<Int>(0)
    private let startLock = Mutex<Bool>(false)

    private let submittedCount = Atomic<Int>(0)
    private let completedCount = Atomic<Int>(0)
    private let inlineCount = Atomic<Int>(0)
    private let depth = Atomic<Int>(0)
    private let maxDepth = Atomic<Int>(0)
    private let latencyTotal = Atomic<Int>(0)
    private let latencyMax = Atomic<Int>(0)
    private let onCPUCount = Atomic<Int>(0)
    private let wakeups = Atomic<Int>(0)
    private let queueWaitTotal = Atomic<Int>(0)
    private let runTotal = Atomic<Int>(0)
    private let answerTotal = Atomic<Int>(0)
    /// Latency histogram: bucket i counts calls that took [2^i, 2^(i+1)) ns.
    private let histogram: UnsafeMutablePointer<Atomic<Int>>
    static let histogramBuckets = 40
    private let lockParkCount = Atomic<Int>(0)

    /// Default idle spin of a pool thread: `LIBELLULA_HOST_IO_SPIN_US` microseconds; else
    /// 50 µs where the host has cores to spare (at least twice the default thread count plus
    /// two), and none on a small host, where a spinning pool thread takes the core that the
    /// LWKT CPU waiting for its answer needs (measured: `bench vfs`, BENCHMARKS.md).
    public static var defaultSpin: Duration {
        if let v = getenv("LIBELLULA_HOST_IO_SPIN_US"), let n = Int(String(cString: v)), n >= 0 { return .microseconds(min(n, 10_000)) }
        return LWKT.onlineCores >= 2 * defaultThreads + 2 ? .microseconds(50) : .zero
    }

    /// A pool of `threads` threads (at least 1), started on first use, whose idle threads
    /// watch for work for `spin` before they sleep (0: they sleep at once).
    public init(threads: Int, spin: Duration = HostIOPool.defaultSpin) {
        threadCount = max(1, threads)
        self.spin = spin
        spinNanos = UInt64(max(0, spin.components.seconds * 1_000_000_000 + spin.components.attoseconds / 1_000_000_000))
        semaphore = .allocate(capacity: 1)
        sem_init(semaphore, 0, 0)
        histogram = .allocate(capacity: Self.histogramBuckets)
        for i in 0..<Self.histogramBuckets { (histogram + i).initialize(to: Atomic(0)) }
    }

    /// Current counters, with the latency quantiles read from the histogram.
    public var statistics: HostIOStatistics {
        let buckets = (0..<Self.histogramBuckets).map { histogram[$0].load(ordering: .relaxed) }
        var last = buckets.count
        while last > 0 && buckets[last - 1] == 0 { last -= 1 }
        return HostIOStatistics(
            threads: threadCount, submitted: submittedCount.load(ordering: .relaxed),
            completed: completedCount.load(ordering: .relaxed), inline: inlineCount.load(ordering: .relaxed),
            queueDepth: max(0, depth.load(ordering: .relaxed)), maxQueueDepth: maxDepth.load(ordering: .relaxed),
            totalLatencyNanos: latencyTotal.load(ordering: .relaxed), maxLatencyNanos: latencyMax.load(ordering: .relaxed),
            finishedOnCPU: onCPUCount.load(ordering: .relaxed), lockParks: lockParkCount.load(ordering: .relaxed),
            wakeups: wakeups.load(ordering: .relaxed), sleepingThreads: max(0, sleepers.load(ordering: .relaxed)),
            totalQueueWaitNanos: queueWaitTotal.load(ordering: .relaxed), totalRunNanos: runTotal.load(ordering: .relaxed),
            totalAnswerNanos: answerTotal.load(ordering: .relaxed),
            p50LatencyNanos: Self.quantile(buckets, 0.5), p99LatencyNanos: Self.quantile(buckets, 0.99),
            latencyHistogram: Array(buckets[0..<last]))
    }

    /// The `q` quantile of a log2 histogram (linear within the bucket), in ns; 0 when empty.
    static func quantile(_ buckets: [Int], _ q: Double) -> Int {
        let total = buckets.reduce(0, +)
        guard total > 0 else { return 0 }
        let rank = q * Double(total)
        var seen = 0
        for (i, n) in buckets.enumerated() where n > 0 {
            if Double(seen + n) >= rank {
                let low = Double(1 << i), within = (rank - Double(seen)) / Double(n)
                return Int(low + low * max(0, min(1, within)))
            }
            seen += n
        }
        return 1 << (buckets.count - 1)
    }

    deinit {
        histogram.deinitialize(count: Self.histogramBuckets)
        histogram.deallocate()
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    /// Lets the pool threads finish the queued calls and exit (they are started again on
    /// the next call). For pools a program or test made for itself, not `shared`.
    public func shutdown() {
        guard started.load(ordering: .acquiring) else { return }
        stopping.store(true, ordering: .sequentiallyConsistent)
        for _ in 0..<threadCount { sem_post(semaphore) }
        var waited = 0
        while running.load(ordering: .acquiring) > 0 && waited < 5_000 {
            usleep(1_000)
            waited += 1
        }
        startLock.withLock { (done: inout Bool) in
            done = false
            started.store(false, ordering: .releasing)
            stopping.store(false, ordering: .releasing)
        }
    }

    /// Runs `body` where blocking is harmless: on a pool thread when called on an LWKT CPU
    /// (the calling thread parks, its CPU runs on), else at once on the calling thread.
    public func perform<R>(_ body: () throws(VFSError) -> R) async throws(VFSError) -> R {
        guard let cpu = CPU.current else {
            inlineCount.wrappingAdd(1, ordering: .relaxed)
            return try body()
        }
        return try await withoutActuallyEscaping(body) { (escapable) async throws(VFSError) -> R in
            let request = HostIOJob<R>(escapable, cpu: cpu, pool: self)
            await withUnsafeContinuation { (c: UnsafeContinuation<Void, Never>) in
                request.continuation = c
                submit(request)
            }
            guard let result = request.result else { throw VFSError.io }
            return try result.get()
        }
    }

    /// A parking-API call finished on its CPU without the pool (`VFSParkingCalls`).
    func countOnCPU() { onCPUCount.wrappingAdd(1, ordering: .relaxed) }
    /// A parking-API call parked its thread on a held lock before trying again.
    func countLockPark() { lockParkCount.wrappingAdd(1, ordering: .relaxed) }

    // MARK: queueing

    private func submit(_ r: HostIORequest) {
        startIfNeeded()
        r.submittedAt = Self.now()
        submittedCount.wrappingAdd(1, ordering: .relaxed)
        let d = depth.wrappingAdd(1, ordering: .relaxed).newValue
        var m = maxDepth.load(ordering: .relaxed)
        while d > m {
            let (done, seen) = maxDepth.compareExchange(expected: m, desired: d, ordering: .relaxed)
            if done { break }
            m = seen
        }
        // Push on the lock-free inbound stack (rule 1); the pool restores arrival order.
        let me = UInt(bitPattern: Unmanaged.passRetained(r).toOpaque())
        var head = inbound.load(ordering: .relaxed)
        while true {
            r.next = head
            let (done, seen) = inbound.compareExchange(expected: head, desired: me, ordering: .releasing)
            if done { break }
            head = seen
        }
        // Rule 4: wake a thread only if one sleeps; a spinning one sees the push.
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            wakeups.wrappingAdd(1, ordering: .relaxed)
            sem_post(semaphore)
        }
    }

    /// The next request for a pool thread, in arrival order.
    private func take() -> HostIORequest? {
        order.withLock { (head: inout UInt) -> HostIORequest? in
            if head == 0 {
                // Reverse the inbound stack in place: arrival order, no allocation.
                var p = inbound.exchange(0, ordering: .acquiring)
                var reversed: UInt = 0
                var count = 0
                while p != 0, let raw = UnsafeMutableRawPointer(bitPattern: p) {
                    let r = Unmanaged<HostIORequest>.fromOpaque(raw).takeUnretainedValue()
                    let next = r.next
                    r.next = reversed
                    reversed = p
                    p = next
                    count += 1
                }
                head = reversed
                queued.store(count, ordering: .releasing)
            }
            guard head != 0, let raw = UnsafeMutableRawPointer(bitPattern: head) else { return nil }
            let r = Unmanaged<HostIORequest>.fromOpaque(raw).takeRetainedValue()
            head = r.next
            r.next = 0
            queued.wrappingSubtract(1, ordering: .releasing)
            return r
        }
    }

    private func startIfNeeded() {
        if started.load(ordering: .acquiring) { return }
        startLock.withLock { (done: inout Bool) in
            guard !done else { return }
            for i in 0..<threadCount {
                running.wrappingAdd(1, ordering: .relaxed)
                var tid = pthread_t()
                let ctx = Unmanaged.passRetained(HostIOWorkerContext(pool: self, index: i)).toOpaque()
                let rc = pthread_create(&tid, nil, { arg in
                    guard let arg else { return nil }
                    let ctx = Unmanaged<HostIOWorkerContext>.fromOpaque(arg).takeRetainedValue()
                    ctx.pool.workerLoop(index: ctx.index)
                    return nil
                }, ctx)
                if rc == 0 {
                    pthread_detach(tid)
                } else {
                    Unmanaged<HostIOWorkerContext>.fromOpaque(ctx).release()
                    running.wrappingSubtract(1, ordering: .relaxed)
                }
            }
            done = true
            started.store(true, ordering: .releasing)
        }
    }

    /// Whether a request is waiting (in `inbound` or already ordered).
    @inline(__always)
    private var hasWork: Bool {
        inbound.load(ordering: .sequentiallyConsistent) != 0 || queued.load(ordering: .acquiring) > 0
    }

    private func workerLoop(index: Int) {
        defer { running.wrappingSubtract(1, ordering: .releasing) }
        while true {
            if let r = take() {
                let picked = Self.now()
                depth.wrappingSubtract(1, ordering: .relaxed)
                r.execute()
                let done = Self.now()
                queueWaitTotal.wrappingAdd(Int(truncatingIfNeeded: picked &- r.submittedAt), ordering: .relaxed)
                runTotal.wrappingAdd(Int(truncatingIfNeeded: done &- picked), ordering: .relaxed)
                r.finishedAt = done
                completedCount.wrappingAdd(1, ordering: .relaxed)
                r.cpu.sendIPI(hostIOAnswerIPI, Unmanaged.passRetained(r).toOpaque(), 0)
                continue
            }
            if stopping.load(ordering: .acquiring) { return }
            // Idle: watch for the next call a while (no wakeup needed for it), then sleep.
            if spinNanos > 0 {
                let until = Self.now() &+ spinNanos
                var spins = 0
                while !hasWork && !stopping.load(ordering: .relaxed) {
                    spins &+= 1
                    // Polite: on a host with more runnable threads than cores, the core is
                    // given up between looks, so the spin never keeps a CPU thread waiting.
                    if spins & 7 == 0 {
                        sched_yield()
                        if Self.now() >= until { break }
                    }
                }
                if hasWork { continue }
            }
            sleepers.wrappingAdd(1, ordering: .sequentiallyConsistent)
            if hasWork || stopping.load(ordering: .acquiring) {
                sleepers.wrappingSubtract(1, ordering: .sequentiallyConsistent)
                continue
            }
            while sem_wait(semaphore) != 0 {}
            sleepers.wrappingSubtract(1, ordering: .sequentiallyConsistent)
        }
    }

    /// Called on the submitting CPU when the answer arrives.
    func answered(_ r: HostIORequest) {
        let now = Self.now()
        let latency = Int(truncatingIfNeeded: now &- r.submittedAt)
        answerTotal.wrappingAdd(Int(truncatingIfNeeded: now &- r.finishedAt), ordering: .relaxed)
        let bucket = min(Self.histogramBuckets - 1, max(0, Int.bitWidth - 1 - max(latency, 1).leadingZeroBitCount))
        histogram[bucket].wrappingAdd(1, ordering: .relaxed)
        latencyTotal.wrappingAdd(latency, ordering: .relaxed)
        var m = latencyMax.load(ordering: .relaxed)
        while latency > m {
            let (done, seen) = latencyMax.compareExchange(expected: m, desired: latency, ordering: .relaxed)
            if done { break }
            m = seen
        }
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}

/// What a pool thread starts with.
private final class HostIOWorkerContext: @unchecked Sendable {
    let pool: HostIOPool
    let index: Int
    init(pool: HostIOPool, index: Int) { self.pool = pool; self.index = index }
}

/// One queued host call. `next` links the inbound stack (an unretained address).
class HostIORequest: @unchecked Sendable {
    var next: UInt = 0
    let cpu: CPU
    unowned(unsafe) let pool: HostIOPool
    var submittedAt: UInt64 = 0
    var finishedAt: UInt64 = 0
    var continuation: UnsafeContinuation<Void, Never>?

    init(cpu: CPU, pool: HostIOPool) {
        self.cpu = cpu
        self.pool = pool
    }

    /// Runs the call (on a pool thread).
    func execute() {}
}

/// A host call returning `R`.
final class HostIOJob<R>: HostIORequest, @unchecked Sendable {
    /// Dropped as soon as it has run: the caller's closure must not outlive its call.
    private var body: (() throws(VFSError) -> R)?
    var result: Result<R, VFSError>?

    init(_ body: @escaping () throws(VFSError) -> R, cpu: CPU, pool: HostIOPool) {
        self.body = body
        super.init(cpu: cpu, pool: pool)
    }

    override func execute() {
        guard let run = body else { return }
        body = nil
        do throws(VFSError) { result = .success(try run()) } catch { result = .failure(error) }
    }
}

/// Delivers a pool thread's answer on the submitting CPU and resumes the parked thread.
let hostIOAnswerIPI: IPIFunction = { arg, _ in
    guard let arg else { return }
    let r = Unmanaged<HostIORequest>.fromOpaque(arg).takeRetainedValue()
    r.pool.answered(r)
    let c = r.continuation
    r.continuation = nil
    c?.resume()
}
