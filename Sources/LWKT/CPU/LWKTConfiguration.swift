/// Settings of a booted LWKT system.
public struct LWKTConfiguration: Sendable {
    /// How long an idle CPU spins, watching its doorbell, before it sleeps. Spinning
    /// avoids the cost of a futex or eventfd wake (20–30 µs on a VM). `nil` picks 50 µs
    /// when every CPU has a core of its own and a few microseconds when oversubscribed.
    public var idleSpin: Duration?
    /// The longest a sleeping CPU sleeps without looking at its passive IPIs (DragonFly's
    /// hardclock tick). Passive messages are picked up no later than this.
    public var tick: Duration
    /// Pin each CPU's OS thread to a core (CPU i to core i modulo the core count).
    public var pin: Bool
    /// Print warnings (such as oversubscription) to standard error.
    public var warnings: Bool
    /// How many jobs a CPU runs between two looks at its timers and I/O events.
    public var jobsPerPoll: Int
    /// A name prefix for the CPUs' OS threads.
    public var namePrefix: String

    public init(idleSpin: Duration? = nil, tick: Duration = .milliseconds(10), pin: Bool = true,
                warnings: Bool = true, jobsPerPoll: Int = 32, namePrefix: String = "cpu") {
        self.idleSpin = idleSpin
        self.tick = tick
        self.pin = pin
        self.warnings = warnings
        self.jobsPerPoll = max(1, jobsPerPoll)
        self.namePrefix = namePrefix
    }
}

extension Duration {
    /// The duration in whole nanoseconds (saturating).
    var nanoseconds: Int64 {
        let (s, a) = components
        let (m, o) = s.multipliedReportingOverflow(by: 1_000_000_000)
        if o { return s < 0 ? Int64.min : Int64.max }
        return m &+ a / 1_000_000_000
    }
}
