import LWKT
#if canImport(Glibc)
import Glibc
#endif

/// The byte stream a memcached session runs over. A host-kernel socket implements it here;
/// any other transport (Libellula's own TCP, a test pipe) can too.
protocol MemcachedTransport {
    /// Reads up to `buffer.count` bytes, waiting without blocking the CPU; 0 means the
    /// peer closed. Throws when the connection fails or the thread is cancelled.
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) async throws -> Int
    /// Writes all of `buffer`, waiting without blocking the CPU while the peer is slow.
    mutating func write(_ buffer: UnsafeRawBufferPointer) async throws
}

/// A nonblocking kernel socket, waited on through the current CPU's epoll.
struct SocketStream: MemcachedTransport {
    let fd: Int32

    struct Failure: Error { let errno: Int32 }

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) async throws -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            let e = errno
            if e == EAGAIN || e == EWOULDBLOCK {
                _ = try await LWKT.wait(for: .readable, on: fd)
                continue
            }
            if e == EINTR { continue }
            throw Failure(errno: e)
        }
    }

    mutating func write(_ buffer: UnsafeRawBufferPointer) async throws {
        var off = 0
        while off < buffer.count {
            let n = send(fd, buffer.baseAddress.unsafelyUnwrapped + off, buffer.count - off, Int32(MSG_NOSIGNAL))
            if n > 0 { off += n; continue }
            let e = errno
            if n < 0 && (e == EAGAIN || e == EWOULDBLOCK) {
                _ = try await LWKT.wait(for: .writable, on: fd)
                continue
            }
            if n < 0 && e == EINTR { continue }
            throw Failure(errno: e)
        }
    }

    func close() {
        try? LWKT.unregister(fd: fd)
        _ = Glibc.close(fd)
    }
}
