import Synchronization

/// The function an IPI carries: it runs on the target CPU, inside a critical section,
/// with the two words that were sent.
public typealias IPIFunction = @convention(c) (UnsafeMutableRawPointer?, Int) -> Void

/// One slot of a ring: a function and its two arguments (24 bytes, no allocation).
@usableFromInline
struct IPISlot: @unchecked Sendable {
    @usableFromInline var function: IPIFunction?
    @usableFromInline var arg: UnsafeMutableRawPointer?
    @usableFromInline var arg2: Int
}

/// A single-producer single-consumer ring of IPI slots from one CPU to another (DragonFly's
/// `lwkt_ipiq`). The source CPU's thread is the only writer of the slots and of `windex`;
/// the target CPU's thread is the only writer of `rindex`. Indices grow without bound and
/// the slot is `index & mask`.
///
/// Producer and consumer fields sit on separate 128-byte lines; each side caches the
/// other's index so that a steady stream touches the shared lines once per batch.
@usableFromInline
struct IPIRing: ~Copyable {
    static let capacity = 256
    static let mask = 255
    /// High-water mark in normal context: above it the sender stalls and drains.
    static let highWater = 128
    /// Low-water mark the stalled sender waits for.
    static let lowWater = 64
    /// The marks used while the sender is itself running IPI functions.
    static let nestedHighWater = 253
    static let nestedLowWater = 251
    /// A passive send becomes active when the ring holds this many entries.
    static let passiveLimit = 64

    // Producer line.
    @usableFromInline let windex = Atomic<Int>(0)
    @usableFromInline var localWindex = 0
    @usableFromInline var cachedRindex = 0
    @usableFromInline var dirty = false
    var pad0: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    // Consumer line.
    @usableFromInline let rindex = Atomic<Int>(0)
    /// The consumer's own read position. `rindex` (what the producer sees) is published
    /// from it every few messages and whenever the consumer stops, so the producer's
    /// polling does not steal the line on every message.
    @usableFromInline var localRindex = 0
    /// Set by a stalled producer: the level it needs the ring drained to (0: none).
    @usableFromInline let drainRequest = Atomic<Int>(0)
    var pad1: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    @usableFromInline let slots: UnsafeMutablePointer<IPISlot>

    init() {
        slots = .allocate(capacity: IPIRing.capacity)
        slots.initialize(repeating: IPISlot(function: nil, arg: nil, arg2: 0), count: IPIRing.capacity)
    }

    deinit { slots.deallocate() }
}
