/// memcached's output buffers are ``IOBuffer``s. While a connection waits for a remote CPU,
/// that CPU appends to the request's own reply buffer (see ``ShardRequest``), never to the
/// connection's.
typealias OutputBuffer = IOBuffer

extension IOBuffer {
    /// A malloc-backed buffer (tests and tools); the service's connections use its slab.
    convenience init(capacity: Int = 16 * 1024) {
        self.init(capacity: capacity, maxCapacity: 1 << 30, allocator: nil, type: nil)
    }

    /// The written bytes (memcached's output never reads from the front).
    @inline(__always) var base: UnsafeMutableRawPointer { baseAddress }

    /// Bytes written; setting 0 empties the buffer.
    @inline(__always) var count: Int {
        get { writeIndex }
        set { writeIndex = newValue; readIndex = 0; if newValue == 0 { clear() } }
    }
}
