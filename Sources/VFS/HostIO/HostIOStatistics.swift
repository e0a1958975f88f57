/// Counters of a `HostIOPool`, summed since it was made.
public struct HostIOStatistics: Sendable, Equatable, Codable {
    /// Pool threads.
    public var threads: Int
    /// Calls handed to the pool by LWKT CPUs.
    public var submitted: Int
    /// Calls the pool has finished (their answer is on its way back or delivered).
    public var completed: Int
    /// Calls made off any CPU, which ran at once on the calling thread.
    public var inline: Int
    /// Calls waiting for a pool thread now.
    public var queueDepth: Int
    /// The deepest the queue has been.
    public var maxQueueDepth: Int
    /// Sum of the latencies, from submission on the CPU to the answer back on that CPU, in ns.
    public var totalLatencyNanos: Int
    /// The longest such latency, in ns.
    public var maxLatencyNanos: Int
    /// Parking-API calls (`VFSProcess.parking`) that finished on their CPU, without the pool.
    public var finishedOnCPU: Int = 0
    /// Times a parking-API call parked its LWKT thread on a lock another thread held.
    public var lockParks: Int = 0
    /// Calls that had to wake a sleeping pool thread (a semaphore post); the others found
    /// one watching for work.
    public var wakeups: Int = 0
    /// Pool threads asleep now.
    public var sleepingThreads: Int = 0
    /// Where the latency goes, summed over completed calls (ns): waiting for a pool thread,
    /// from submission to pick-up (a wakeup when the threads slept).
    public var totalQueueWaitNanos: Int = 0
    /// Running the host calls on a pool thread.
    public var totalRunNanos: Int = 0
    /// The answer's trip back: from the end of the call to the CPU running the answer IPI.
    public var totalAnswerNanos: Int = 0
    /// Median latency (submission to answer on the CPU), in ns, from the histogram.
    public var p50LatencyNanos: Int = 0
    /// 99th-percentile latency, in ns, from the histogram.
    public var p99LatencyNanos: Int = 0
    /// Latency histogram: entry i counts calls that took [2^i, 2^(i+1)) ns.
    public var latencyHistogram: [Int] = []

    /// Mean latency of a pooled call in ns (0 when none finished).
    public var meanLatencyNanos: Int { completed == 0 ? 0 : totalLatencyNanos / completed }
}
