/// A byte buffer from a ``SlabAllocator`` that frees itself when it goes out of scope.
///
/// Noncopyable, so ownership moves instead of being shared: hand it to another CPU by
/// `consume` and it is freed there (a remote free, returned to its owner's zone).
public struct SlabBuffer: ~Copyable, @unchecked Sendable {
    /// Start of the bytes.
    public let baseAddress: UnsafeMutableRawPointer
    /// Bytes requested (the chunk may be larger; see ``capacity``).
    public let count: Int
    /// The allocator the bytes come from.
    public let allocator: SlabAllocator
    /// The malloc type charged.
    public let type: MallocType?

    /// Allocates `count` bytes; nil when the type is at its limit or memory runs out.
    public init?(count: Int, from allocator: SlabAllocator, type: MallocType? = nil, zeroed: Bool = false) {
        var flags: SlabFlags = [.mayReturnNil]
        if zeroed { flags.insert(.zero) }
        guard count >= 0, let p = allocator.allocate(count, type: type, flags: flags) else { return nil }
        baseAddress = p
        self.count = count
        self.allocator = allocator
        self.type = type
    }

    deinit { allocator.free(baseAddress, type: type) }

    /// Bytes actually usable (the chunk size).
    public var capacity: Int { allocator.usableSize(baseAddress) ?? count }

    /// Calls `body` with the buffer's bytes.
    public func withUnsafeMutableBytes<R, E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(UnsafeMutableRawBufferPointer(start: count == 0 ? nil : baseAddress, count: count))
    }

    /// Reads or writes one byte.
    public subscript(_ i: Int) -> UInt8 {
        get {
            precondition(i >= 0 && i < count, "SlabBuffer index out of range")
            return baseAddress.load(fromByteOffset: i, as: UInt8.self)
        }
        nonmutating set {
            precondition(i >= 0 && i < count, "SlabBuffer index out of range")
            baseAddress.storeBytes(of: newValue, toByteOffset: i, as: UInt8.self)
        }
    }

    /// Copies `bytes` in at `offset`; returns false if they would not fit.
    @discardableResult
    public func write(_ bytes: some Collection<UInt8>, at offset: Int = 0) -> Bool {
        guard offset >= 0, bytes.count <= count - offset else { return false }
        var i = offset
        for b in bytes {
            baseAddress.storeBytes(of: b, toByteOffset: i, as: UInt8.self)
            i += 1
        }
        return true
    }

    /// The contents as an array (for tests and logging).
    public var bytes: [UInt8] {
        Array(UnsafeRawBufferPointer(start: count == 0 ? nil : baseAddress, count: count))
    }
}
