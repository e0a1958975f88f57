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

    /// Mean latency of a pooled call in ns (0 when none finished).
    public var meanLatencyNanos: Int { completed == 0 ? 0 : totalLatencyNanos / completed }
}
