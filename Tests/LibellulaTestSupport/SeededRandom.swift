/// A small deterministic random generator (SplitMix64) shared by the test targets, so a
/// failing randomized test reproduces from its seed.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    /// The generator's whole state; the same seed gives the same sequence.
    public var state: UInt64

    /// A generator that starts from `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A value in `0..<n` (0 when `n` is 0); the small modulo bias does not matter in tests.
    public mutating func below(_ n: UInt64) -> UInt64 { n == 0 ? 0 : next() % n }
}
