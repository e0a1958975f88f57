/// The active parts of observability for one ``LWKTSystem``: the sampled IPI-delivery
/// probes and the stall watchdog. The latency histograms themselves are always on
/// (``LWKTSystem/latencies``).
public final class Observability: @unchecked Sendable {
    /// The system observed.
    public let system: LWKTSystem
    /// The stall watchdog, when started with a threshold.
    public let watchdog: StallWatchdog?
    private var probes: [LWKTThread] = []

    private init(system: LWKTSystem, watchdog: StallWatchdog?) {
        self.system = system
        self.watchdog = watchdog
    }

    /// Starts the probes and (unless `stallThreshold` is nil) the stall watchdog for `system`.
    ///
    /// - Parameters:
    ///   - stallThreshold: how long one job may run before it is reported (nil: no watchdog).
    ///   - probeInterval: how often each CPU sends an IPI-delivery probe to the next.
    ///   - onStall: called on the watchdog thread with each (rate-limited) report.
    public static func start(on system: LWKTSystem, stallThreshold: Duration? = .milliseconds(5),
                             probeInterval: Duration = .milliseconds(100),
                             onStall: (@Sendable (StallReport) -> Void)? = nil) -> Observability {
        let dog = stallThreshold.map { StallWatchdog(system: system, threshold: $0, onReport: onStall) }
        system.latencies.watchdog.withLock { $0 = dog }
        let o = Observability(system: system, watchdog: dog)
        o.probes = SystemLatencies.startIPIProbes(on: system, interval: probeInterval)
        return o
    }

    /// Stops what ``start(on:stallThreshold:probeInterval:onStall:)`` started (the
    /// watchdog's counters stay readable).
    public func stop() {
        for p in probes { p.cancel() }
        probes = []
        watchdog?.stop()
    }
}
