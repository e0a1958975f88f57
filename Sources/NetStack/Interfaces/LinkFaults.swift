/// The faults a ``SimulatedLink`` direction injects, drawn from a seeded generator so a
/// run can be repeated.
public struct LinkFaults: Sendable {
    /// Probability that a frame is lost.
    public var loss: Double = 0
    /// Probability that a frame is delivered twice.
    public var duplication: Double = 0
    /// Probability that one bit of a frame (past its Ethernet header) is flipped.
    public var corruption: Double = 0
    /// Probability that a frame is held back by ``reorderDelay`` (so later frames overtake it).
    public var reordering: Double = 0
    public var reorderDelay: Duration = .milliseconds(2)
    /// Fixed one-way delay.
    public var delay: Duration = .zero
    /// Uniform extra delay in `0..<jitter`.
    public var jitter: Duration = .zero
    /// Line rate in bits per second (nil: unlimited).
    public var bandwidth: Int?
    /// Frames waiting per queue before tail drop.
    public var queueLimit = 4096
    /// Seed of the generator.
    public var seed: UInt64 = 1

    public init(loss: Double = 0, duplication: Double = 0, corruption: Double = 0, reordering: Double = 0,
                delay: Duration = .zero, jitter: Duration = .zero, bandwidth: Int? = nil, seed: UInt64 = 1) {
        self.loss = loss; self.duplication = duplication; self.corruption = corruption; self.reordering = reordering
        self.delay = delay; self.jitter = jitter; self.bandwidth = bandwidth; self.seed = seed
    }

    /// Whether nothing is injected (frames pass straight through).
    public var isNone: Bool {
        loss == 0 && duplication == 0 && corruption == 0 && reordering == 0 && delay == .zero
            && jitter == .zero && bandwidth == nil
    }

    /// No faults.
    public static let none = LinkFaults()
}
