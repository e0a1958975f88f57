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
/// Layout (512 bytes, rings allocated 128-byte aligned; 128 bytes is a pair of 64-byte
/// lines, the unit the adjacent-line prefetcher moves):
///
///   bytes   0..<128  `windex`: written by the producer, read by the consumer
///   bytes 128..<256  `rindex`: written by the consumer, read by the producer
///   bytes 256..<384  producer-private: `localWindex`, `cachedRindex`, `dirty`, slots
///   bytes 384..<512  consumer side: `localRindex`, `drainRequest` (set by a stalled
///                    producer, rarely), slots
///
/// So each published index sits alone on its own pair of lines, and neither side's
/// private words share a line with anything the other side writes. Each side caches the
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
    /// Bytes per ring and the alignment the crossbar allocates them with.
    static let stride = 512
    static let alignment = 128

    // Pair 0: the producer's published index.
    @usableFromInline let windex = Atomic<Int>(0)
    var pad0: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    // Pair 1: the consumer's published index.
    @usableFromInline let rindex = Atomic<Int>(0)
    var pad1: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    // Pair 2: producer-private.
    @usableFromInline var localWindex = 0
    @usableFromInline var cachedRindex = 0
    @usableFromInline var dirty = false
    /// The slots, as the producer reads the pointer.
    @usableFromInline let slots: UnsafeMutablePointer<IPISlot>
    var pad2: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    // Pair 3: consumer side.
    /// The consumer's own read position. `rindex` (what the producer sees) is published
    /// from it every few messages and whenever the consumer stops, so the producer's
    /// polling does not steal the line on every message.
    @usableFromInline var localRindex = 0
    /// Set by a stalled producer: the level it needs the ring drained to (0: none).
    @usableFromInline let drainRequest = Atomic<Int>(0)
    /// The slots, as the consumer reads the pointer (the same memory as `slots`).
    @usableFromInline let consumerSlots: UnsafeMutablePointer<IPISlot>
    var pad3: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)

    init() {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: IPIRing.capacity * MemoryLayout<IPISlot>.stride,
                                                   alignment: IPIRing.alignment)
        slots = raw.bindMemory(to: IPISlot.self, capacity: IPIRing.capacity)
        slots.initialize(repeating: IPISlot(function: nil, arg: nil, arg2: 0), count: IPIRing.capacity)
        consumerSlots = slots
    }

    deinit { UnsafeMutableRawPointer(slots).deallocate() }

    /// Allocates `count` rings, each 128-byte aligned.
    static func allocate(count: Int) -> UnsafeMutablePointer<IPIRing> {
        precondition(MemoryLayout<IPIRing>.stride == IPIRing.stride, "IPIRing layout changed")
        let raw = UnsafeMutableRawPointer.allocate(byteCount: count * IPIRing.stride, alignment: IPIRing.alignment)
        let rings = raw.bindMemory(to: IPIRing.self, capacity: count)
        for i in 0..<count { (rings + i).initialize(to: IPIRing()) }
        return rings
    }

    /// Deinitializes and frees rings from ``allocate(count:)``.
    static func deallocate(_ rings: UnsafeMutablePointer<IPIRing>, count: Int) {
        for i in 0..<count { (rings + i).deinitialize(count: 1) }
        UnsafeMutableRawPointer(rings).deallocate()
    }
}
