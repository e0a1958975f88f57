import Glibc
import LWKT

/// The host kernel's TCP behind the ``StreamSocketStack`` API: one `SO_REUSEPORT` listening
/// socket per CPU, each waited on through that CPU's epoll (`LWKT.wait`), so the kernel's
/// connection hash picks the CPU that accepts and serves a connection, and nothing about a
/// connection is ever touched by another CPU.
///
/// Deadlines are kept by a reaper thread per CPU that shuts down sockets whose operation
/// ran past its deadline (which wakes the waiting thread with ``SocketError/timedOut``).
public final class HostSocketStack: StreamSocketStack, @unchecked Sendable {
    /// The system whose CPUs run the sockets.
    public let system: LWKTSystem
    let perCPU: [HostCPUSockets]

    /// A stack for `system`'s CPUs.
    public init(system: LWKTSystem) {
        self.system = system
        perCPU = system.cpus.map { HostCPUSockets(cpu: $0) }
    }

    /// Opens one `SO_REUSEPORT` listener per CPU of `cpus` on `address`; with port 0 the
    /// first one picks the port and the others bind the same one.
    public func listen(on address: SocketAddress, cpus: [CPU], backlog: Int = 1024) throws(SocketError) -> [HostListener] {
        var listeners: [HostListener] = []
        var bound = address
        for cpu in cpus {
            let fd = try Self.openListener(bound, backlog: backlog)
            var sin = sockaddr_in()
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
            }
            bound = SocketAddress(sin)
            listeners.append(HostListener(fd: fd, address: bound, sockets: perCPU[cpu.id]))
        }
        return listeners
    }

    static func openListener(_ address: SocketAddress, backlog: Int) throws(SocketError) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system(call: "socket", errno: errno) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            let e = errno
            Glibc.close(fd)
            throw .system(call: "setsockopt(SO_REUSEPORT)", errno: e)
        }
        var sin = address.sockaddr
        let rc = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 {
            let e = errno
            Glibc.close(fd)
            throw .system(call: "bind \(address)", errno: e)
        }
        if Glibc.listen(fd, Int32(clamping: backlog)) != 0 {
            let e = errno
            Glibc.close(fd)
            throw .system(call: "listen", errno: e)
        }
        return fd
    }
}

/// What one CPU knows about its host sockets: the open connections and their deadlines.
/// Touched only by threads of that CPU.
final class HostCPUSockets: @unchecked Sendable {
    let cpu: CPU
    var connections: [Int32: Unmanaged<HostConnection>] = [:]
    var reaper: LWKTThread?
    /// How often the reaper looks at deadlines.
    static let reapInterval: Duration = .milliseconds(100)

    init(cpu: CPU) { self.cpu = cpu }

    func add(_ c: HostConnection) {
        connections[c.fd] = Unmanaged.passUnretained(c)
        if reaper == nil || reaper?.isFinished == true {
            reaper = LWKTThread.spawn(on: cpu, priority: .kernel, name: "sock-reaper") { [self] in
                await self.reap()
            }
        }
    }

    func remove(_ c: HostConnection) { connections[c.fd] = nil }

    private func reap() async {
        while !Task.isCancelled {
            do { try await LWKT.sleep(for: Self.reapInterval) } catch { return }
            if connections.isEmpty { continue }
            let now = MonotonicClock.now()
            var expired: [HostConnection] = []
            for (_, u) in connections {
                let c = u.takeUnretainedValue()
                if c.deadline != 0 && c.deadline <= now { expired.append(c) }
            }
            for c in expired { c.expire() }
        }
    }
}
