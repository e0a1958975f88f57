/// A fixed-size array of plain values in slab memory, freed when it goes out of scope.
///
/// For tables and rings of trivial values (headers, descriptors, counters) that want slab
/// placement and per-type accounting without Swift array overhead.
public struct SlabArray<Element: BitwiseCopyable>: ~Copyable, @unchecked Sendable {
    /// Start of the elements.
    public let baseAddress: UnsafeMutablePointer<Element>
    /// Number of elements.
    public let count: Int
    /// The allocator the memory comes from.
    public let allocator: SlabAllocator
    /// The malloc type charged.
    public let type: MallocType?

    /// Allocates `count` elements, each set to `value`; nil when the type is at its limit,
    /// memory runs out or the byte size overflows.
    public init?(repeating value: Element, count: Int, from allocator: SlabAllocator, type: MallocType? = nil) {
        let (bytes, overflow) = MemoryLayout<Element>.stride.multipliedReportingOverflow(by: max(count, 0))
        guard count >= 0, !overflow, MemoryLayout<Element>.alignment <= 8 || bytes == 0
                || MemoryLayout<Element>.alignment <= bytes & -bytes,
              let raw = allocator.allocate(max(bytes, 1), type: type, flags: .mayReturnNil) else { return nil }
        baseAddress = raw.bindMemory(to: Element.self, capacity: count)
        baseAddress.initialize(repeating: value, count: count)
        self.count = count
        self.allocator = allocator
        self.type = type
    }

    deinit { allocator.free(UnsafeMutableRawPointer(baseAddress), type: type) }

    /// Reads or writes element `i`.
    public subscript(_ i: Int) -> Element {
        get {
            precondition(i >= 0 && i < count, "SlabArray index out of range")
            return baseAddress[i]
        }
        nonmutating set {
            precondition(i >= 0 && i < count, "SlabArray index out of range")
            baseAddress[i] = newValue
        }
    }

    /// Calls `body` with the elements.
    public func withUnsafeMutableBufferPointer<R, E: Error>(
        _ body: (UnsafeMutableBufferPointer<Element>) throws(E) -> R
    ) throws(E) -> R {
        try body(UnsafeMutableBufferPointer(start: baseAddress, count: count))
    }
}
