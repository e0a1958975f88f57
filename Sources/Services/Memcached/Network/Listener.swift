import LWKT
#if canImport(Glibc)
import Glibc
#endif

/// Errors from the memcached listener's socket calls.
public enum MemcachedNetworkError: Error, CustomStringConvertible {
    case badAddress(String)
    case systemCall(String, Int32)

    public var description: String {
        switch self {
        case .badAddress(let a): return "not an IPv4 address: \(a)"
        case .systemCall(let c, let e): return "\(c) failed: \(String(cString: strerror(e)))"
        }
    }
}

/// One listening socket per CPU (`SO_REUSEPORT`, nonblocking). The kernel spreads new
/// connections over the sockets; each CPU accepts on its own and serves what it accepted.
enum Listener {
    static func open(address: String, port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw MemcachedNetworkError.systemCall("socket", errno) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        guard inet_pton(AF_INET, address, &sa.sin_addr) == 1 else {
            close(fd)
            throw MemcachedNetworkError.badAddress(address)
        }
        let rc = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { let e = errno; close(fd); throw MemcachedNetworkError.systemCall("bind", e) }
        guard listen(fd, 1024) == 0 else { let e = errno; close(fd); throw MemcachedNetworkError.systemCall("listen", e) }
        return fd
    }

    static func localPort(_ fd: Int32) throws -> UInt16 {
        var sa = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeMutablePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard rc == 0 else { throw MemcachedNetworkError.systemCall("getsockname", errno) }
        return UInt16(bigEndian: sa.sin_port)
    }

    /// Accepts connections on this CPU until cancelled, spawning one LWKT thread per
    /// connection on the same CPU.
    static func acceptLoop(fd: Int32, service: MemcachedService, cpu: Int) async {
        defer { try? LWKT.unregister(fd: fd) }
        while !Task.isCancelled {
            let c = accept(fd, nil, nil)
            if c < 0 {
                let e = errno
                if e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == ECONNABORTED {
                    do { _ = try await LWKT.wait(for: .readable, on: fd) } catch { return }
                    continue
                }
                // EMFILE and friends: back off briefly rather than spin.
                do { try await LWKT.sleep(for: .milliseconds(10)) } catch { return }
                continue
            }
            _ = fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK)
            _ = fcntl(c, F_SETFD, FD_CLOEXEC)
            var one: Int32 = 1
            setsockopt(c, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            let store = service.stores[cpu]
            store.counters.totalConnections += 1
            store.counters.currConnections += 1
            let holder = ThreadHolder()
            let t = LWKTThread.spawn(on: service.system.cpus[cpu], priority: .kernel, name: "memcached-conn") {
                var stream = SocketStream(fd: c)
                let session = MemcachedSession(service: service, cpu: cpu)
                await session.serve(&stream)
                stream.close()
                store.counters.currConnections -= 1
                if let me = holder.thread { service.untrack(me) }
            }
            holder.thread = t
            service.track(t)
            if service.stopping.load(ordering: .acquiring) { t.cancel() }
        }
    }
}

/// Lets a connection thread find its own `LWKTThread` to untrack itself.
final class ThreadHolder: @unchecked Sendable {
    var thread: LWKTThread?
}
