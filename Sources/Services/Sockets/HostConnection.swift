import Glibc
import LWKT

/// A TCP connection accepted from the host kernel, owned by the CPU that accepted it.
public final class HostConnection: StreamConnection, @unchecked Sendable {
    let fd: Int32
    let sockets: HostCPUSockets
    /// The client's address.
    public let peer: SocketAddress
    /// The CPU that accepted the connection and alone may use it.
    public var cpuID: Int { sockets.cpu.id }
    /// Monotonic deadline of the operation in progress (0: none).
    var deadline: UInt64 = 0
    /// Whether the operation waiting now is a write.
    private var writing = false
    /// The receive queue was seen empty (a `recv` failed with `EAGAIN`, or returned less
    /// than it asked for) since the last readiness: the next read waits for readiness
    /// before trying `recv`, saving a `recv` that would fail. Sound because the descriptor
    /// is edge-triggered: data that arrives later raises a new edge, which the CPU's poller
    /// keeps if nobody waits yet. A read that filled the buffer leaves it false, so the
    /// rest is read before the connection waits.
    private var receiveDrained = false
    /// Whether the descriptor is registered edge-triggered (it is unless that failed; then
    /// every wait re-arms it one-shot and `receiveDrained` is not trusted).
    private let edgeTriggered: Bool
    /// A read ran out of time (the receive side is shut; writing still works).
    private(set) var readTimedOut = false
    /// A write ran out of time (the socket is shut both ways).
    private(set) var timedOut = false
    private var closed = false

    init(fd: Int32, peer: SocketAddress, sockets: HostCPUSockets) {
        self.fd = fd
        self.peer = peer
        self.sockets = sockets
        // Once per connection: no `epoll_ctl` per wait from now on.
        edgeTriggered = (try? LWKT.registerEdgeTriggered(fd: fd)) != nil
    }

    deinit {
        if !closed {
            sockets.remove(self)
            if CPU.current === sockets.cpu { try? LWKT.unregister(fd: fd) }
            Glibc.close(fd)
        }
    }

    /// Called by the reaper: the deadline passed, so wake the waiter by shutting the socket.
    func expire() {
        guard !closed, !timedOut else { return }
        if writing {
            timedOut = true
            Glibc.shutdown(fd, Int32(SHUT_RDWR))
        } else if !readTimedOut {
            // Shutting only the receive side wakes the reader and still lets the owner send
            // a last response (408) before it closes.
            readTimedOut = true
            Glibc.shutdown(fd, Int32(SHUT_RD))
        }
    }

    @inline(__always)
    private nonisolated(nonsending) func await(_ events: IOEvents) async throws(SocketError) {
        do { _ = try await LWKT.wait(for: events, on: fd) } catch { throw .cancelled }
    }

    /// Reads what is available, waiting on this CPU's epoll; 0 at end of stream.
    public nonisolated(nonsending) func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration) async throws(SocketError) -> Int {
        if closed { throw .closed }
        if timedOut || readTimedOut { throw .timedOut }
        deadline = 0
        writing = false
        if receiveDrained && edgeTriggered {
            // Nothing to read until the next edge: wait first (usually after a response,
            // for the peer's next request).
            receiveDrained = false
            deadline = MonotonicClock.deadline(after: timeout)
            try await self.await(.readable)
        }
        while true {
            let n = recv(fd, buffer.baseAddress, buffer.count, 0)
            if n > 0 {
                deadline = 0
                receiveDrained = n < buffer.count
                return n
            }
            if n == 0 {
                deadline = 0
                if timedOut || readTimedOut { throw .timedOut }
                return 0
            }
            let e = errno
            switch e {
            case EAGAIN, EWOULDBLOCK:
                if deadline == 0 { deadline = MonotonicClock.deadline(after: timeout) }
                try await self.await(.readable)
            case EINTR:
                continue
            case ECONNRESET, EPIPE, ENOTCONN:
                deadline = 0
                throw timedOut || readTimedOut ? .timedOut : .reset
            default:
                deadline = 0
                throw timedOut || readTimedOut ? .timedOut : .system(call: "recv", errno: e)
            }
        }
    }

    /// Sends every byte, waiting for room while the socket buffer is full.
    public nonisolated(nonsending) func write(_ bytes: UnsafeRawBufferPointer, timeout: Duration) async throws(SocketError) {
        if closed { throw .closed }
        if timedOut { throw .timedOut }
        guard let base = bytes.baseAddress else { return }
        var offset = 0
        deadline = 0
        writing = true
        defer {
            deadline = 0
            writing = false
        }
        while offset < bytes.count {
            let n = send(fd, base + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            if n >= 0 {
                offset += n
                continue
            }
            try await writeFailed(errno, call: "send", timeout: timeout)
        }
    }

    /// What a failed `send` or `sendfile` does next: waits for room when the socket buffer
    /// is full (back-pressure, bounded by `timeout`), returns to retry after a signal, or
    /// throws the error the caller should see.
    fileprivate nonisolated(nonsending) func writeFailed(_ e: Int32, call: String, timeout: Duration) async throws(SocketError) {
        switch e {
        case EAGAIN, EWOULDBLOCK:
            if deadline == 0 { deadline = MonotonicClock.deadline(after: timeout) }
            try await self.await(.writable)
        case EINTR:
            return
        case ECONNRESET, EPIPE, ENOTCONN:
            throw timedOut ? .timedOut : .reset
        default:
            throw timedOut ? .timedOut : .system(call: call, errno: e)
        }
    }

    /// Sends FIN, drains the peer for up to `linger`, then closes the descriptor.
    public func close(linger: Duration) async {
        guard !closed else { return }
        if linger > .zero && !timedOut && !readTimedOut {
            Glibc.shutdown(fd, Int32(SHUT_WR))
            // Drain what the peer still sends, so our last response is not reset away.
            let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: 8)
            defer { buf.deallocate() }
            let end = MonotonicClock.deadline(after: linger)
            for _ in 0..<64 where MonotonicClock.now() < end {
                guard let n = try? await read(into: buf, timeout: linger), n > 0 else { break }
            }
        }
        closed = true
        sockets.remove(self)
        try? LWKT.unregister(fd: fd)
        Glibc.close(fd)
    }

    /// Closes at once with a reset (SO_LINGER 0), discarding unsent data.
    public func abort() {
        guard !closed else { return }
        var lg = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, socklen_t(MemoryLayout<linger>.size))
        closed = true
        sockets.remove(self)
        try? LWKT.unregister(fd: fd)
        Glibc.close(fd)
    }
}

/// A connection that can send a host file's bytes straight from the kernel's page cache,
/// without copying them through user space.
public protocol FileSendingConnection: StreamConnection {
    /// Sends `count` bytes of host file `hostFD` from `offset`, waiting for room while the
    /// send buffer is full, bounded by `timeout` per wait. Throws ``SocketError/reset`` if
    /// the file ends early (it shrank), since the bytes promised cannot be sent. `head` (a
    /// response head, possibly empty) goes first, held back by the kernel until the file's
    /// bytes join it (`MSG_MORE`), so a head never travels in a packet of its own.
    nonisolated(nonsending) func sendFile(_ hostFD: Int32, offset: Int64, count: Int64, head: UnsafeRawBufferPointer, timeout: Duration) async throws(SocketError)
}

extension HostConnection: FileSendingConnection {
    /// `send(2)` of `head` with `MSG_MORE`, then `sendfile(2)` from `hostFD` into this socket.
    public nonisolated(nonsending) func sendFile(_ hostFD: Int32, offset: Int64, count: Int64, head: UnsafeRawBufferPointer,
                         timeout: Duration) async throws(SocketError) {
        if closed { throw .closed }
        if timedOut { throw .timedOut }
        var off = off_t(offset)
        var remaining = count
        deadline = 0
        writing = true
        defer {
            deadline = 0
            writing = false
        }
        var sent = 0
        while sent < head.count, let base = head.baseAddress {
            let n = send(fd, base + sent, head.count - sent, Int32(MSG_NOSIGNAL) | Int32(MSG_MORE))
            if n >= 0 {
                sent += n
                deadline = 0
                continue
            }
            try await writeFailed(errno, call: "send", timeout: timeout)
        }
        while remaining > 0 {
            let n = Glibc.sendfile(fd, hostFD, &off, Int(min(remaining, 1 << 30)))
            if n > 0 {
                remaining -= Int64(n)
                deadline = 0
                continue
            }
            if n == 0 { throw .reset }  // end of file before `count` bytes
            try await writeFailed(errno, call: "sendfile", timeout: timeout)
        }
    }
}
