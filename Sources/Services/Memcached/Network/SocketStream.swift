import LWKT

/// What a memcached session reads requests from and writes responses to. A protocol so the
/// session can be driven by in-memory streams in tests as well as by sockets.
protocol MemcachedTransport {
    /// Reads up to `buffer.count` bytes, waiting without blocking the CPU; 0 means the
    /// peer closed. Throws when the connection fails or the thread is cancelled.
    nonisolated(nonsending) mutating func read(into buffer: UnsafeMutableRawBufferPointer) async throws -> Int
    /// Writes all of `buffer`, waiting without blocking the CPU while the peer is slow.
    nonisolated(nonsending) mutating func write(_ buffer: UnsafeRawBufferPointer) async throws
}

/// A connection of the shared socket layer as a memcached transport. memcached keeps idle
/// connections open, so reads wait up to a day; a peer that stops reading its responses
/// for a minute is dropped.
struct ConnectionStream<C: StreamConnection>: MemcachedTransport {
    let connection: C

    nonisolated(nonsending) mutating func read(into buffer: UnsafeMutableRawBufferPointer) async throws -> Int {
        try await connection.read(into: buffer, timeout: .seconds(86_400))
    }

    nonisolated(nonsending) mutating func write(_ buffer: UnsafeRawBufferPointer) async throws {
        try await connection.write(buffer, timeout: .seconds(60))
    }
}
