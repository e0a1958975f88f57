/// A fixed-capacity ring of samples, oldest first when read: the last `capacity` appended.
/// Appending never allocates once the ring is full (it overwrites the oldest slot).
public struct TimeSeriesRing<Element: Sendable>: Sendable {
    /// How many samples it keeps.
    public let capacity: Int
    private var storage: [Element] = []
    private var next = 0

    /// An empty ring that keeps the last `capacity` samples (at least 1).
    public init(capacity: Int) {
        self.capacity = max(1, capacity)
        storage.reserveCapacity(self.capacity)
    }

    /// Samples held.
    public var count: Int { storage.count }

    /// Appends `e`, dropping the oldest sample when full.
    public mutating func append(_ e: Element) {
        if storage.count < capacity {
            storage.append(e)
        } else {
            storage[next] = e
        }
        next = (next + 1) % capacity
    }

    /// The newest sample.
    public var last: Element? {
        storage.isEmpty ? nil : storage[(next + capacity - 1) % capacity]
    }

    /// Every sample, oldest first.
    public var elements: [Element] {
        storage.count < capacity ? storage : Array(storage[next...] + storage[..<next])
    }
}
