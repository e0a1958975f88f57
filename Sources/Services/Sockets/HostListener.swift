import Glibc
import LWKT

/// One CPU's listening socket on the host kernel (see ``HostSocketStack/listen(on:cpus:backlog:)``).
public final class HostListener: StreamListener, @unchecked Sendable {
    let fd: Int32
    let sockets: HostCPUSockets
    private var closed = false
    /// Registered with the CPU's epoll, edge-triggered (done by the first accept, on the
    /// listener's CPU; `accept` tries the socket before every wait, as that mode needs).
    private var registered = false
    /// The bound address (every CPU's listener has the same one).
    public let address: SocketAddress
    /// The CPU whose epoll the listener is waited on.
    public var cpuID: Int { sockets.cpu.id }

    init(fd: Int32, address: SocketAddress, sockets: HostCPUSockets) {
        self.fd = fd
        self.address = address
        self.sockets = sockets
    }

    deinit { if !closed { Glibc.close(fd) } }

    /// Accepts the next connection the kernel hashed to this listener; the connection is
    /// non-blocking, has `TCP_NODELAY`, and belongs to this CPU.
    public func accept() async throws(SocketError) -> HostConnection {
        if !registered {
            registered = true
            try? LWKT.registerEdgeTriggered(fd: fd)
        }
        while true {
            if closed { throw .closed }
            var peer = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let c = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.accept(fd, $0, &len)
                }
            }
            if c >= 0 {
                // Glibc's Swift module lacks accept4: set the flags with fcntl instead.
                _ = fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK)
                _ = fcntl(c, F_SETFD, FD_CLOEXEC)
                var one: Int32 = 1
                setsockopt(c, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                let conn = HostConnection(fd: c, peer: SocketAddress(peer) ?? address, sockets: sockets)
                sockets.add(conn)
                return conn
            }
            let e = errno
            switch e {
            case EAGAIN, EWOULDBLOCK:
                do { _ = try await LWKT.wait(for: .readable, on: fd) } catch { throw .cancelled }
            case EINTR, ECONNABORTED, EPROTO:
                continue
            case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                // Out of descriptors: back off instead of spinning on a readable listener.
                do { try await LWKT.sleep(for: .milliseconds(10)) } catch { throw .cancelled }
            default:
                throw .system(call: "accept", errno: e)
            }
        }
    }

    /// Stops listening and removes the socket from this CPU's epoll.
    public func close() {
        guard !closed else { return }
        closed = true
        try? LWKT.unregister(fd: fd)
        Glibc.close(fd)
    }
}
