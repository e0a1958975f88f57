/// The active parts of observability for one ``LWKTSystem``: the sampled IPI-delivery
/// probes (and, when started, the stall watchdog and the per-second time series). The
/// latency histograms themselves are always on (``LWKTSystem/latencies``).
public final class Observability: @unchecked Sendable {
    /// The system observed.
    public let system: LWKTSystem
    private var probes: [LWKTThread] = []

    private init(system: LWKTSystem) { self.system = system }

    /// Starts the probes for `system`.
    ///
    /// - Parameter probeInterval: how often each CPU sends an IPI-delivery probe to the next.
    public static func start(on system: LWKTSystem, probeInterval: Duration = .milliseconds(10)) -> Observability {
        let o = Observability(system: system)
        o.probes = SystemLatencies.startIPIProbes(on: system, interval: probeInterval)
        return o
    }

    /// Stops what ``start(on:probeInterval:)`` started (a system shutdown stops it too).
    public func stop() {
        for p in probes { p.cancel() }
        probes = []
    }
}
