import Glibc
import LWKT

/// The host kernel's TCP behind the ``StreamSocketStack`` API: one `SO_REUSEPORT` listening
/// socket per CPU, each waited on through that CPU's epoll (`LWKT.wait`), so the kernel's
/// connection hash picks the CPU that accepts and serves a connection, and nothing about a
/// connection is ever touched by another CPU.
///
/// `SO_REUSEPORT` would also let any other process of the same user bind the address and
/// take half of the connections, so ``listen(on:cpus:backlog:)`` first claims the address
/// with a probe socket that does not set it: the probe's bind fails with `EADDRINUSE` when
/// anything else listens there, as nginx and memcached refuse a second instance.
///
/// SIGPIPE is ignored once a stack exists (see ``init(system:)``).
///
/// Deadlines are kept by a reaper thread per CPU that shuts down sockets whose operation
/// ran past its deadline (which wakes the waiting thread with ``SocketError/timedOut``).
public final class HostSocketStack: StreamSocketStack, @unchecked Sendable {
    /// The system whose CPUs run the sockets.
    public let system: LWKTSystem
    let perCPU: [HostCPUSockets]

    /// A stack for `system`'s CPUs. It sets SIGPIPE to be ignored (if it still has its
    /// default action): `sendfile(2)` has no `MSG_NOSIGNAL`, and a client that goes away in
    /// the middle of a file must not end the process.
    public init(system: LWKTSystem) {
        var old = sigaction()
        if sigaction(SIGPIPE, nil, &old) == 0 && old.__sigaction_handler.sa_handler == nil {
            Glibc.signal(SIGPIPE, SIG_IGN)
        }
        self.system = system
        perCPU = system.cpus.map { HostCPUSockets(cpu: $0) }
    }

    /// Opens one `SO_REUSEPORT` listener per CPU of `cpus` on `address` (IPv4, or IPv6 where
    /// `[::]` also takes IPv4: dual stack). Throws `EADDRINUSE` when another socket, of this
    /// or any other process, already listens on the address; with port 0 the kernel picks a
    /// free port and every CPU's listener binds that one.
    public func listen(on address: SocketAddress, cpus: [CPU], backlog: Int = 1024) throws(SocketError) -> [HostListener] {
        // The probe: bound without SO_REUSEPORT it conflicts with every listening socket on
        // the address, and while it stays bound (not listening, SO_REUSEADDR set) our own
        // SO_REUSEPORT sockets may still bind and listen beside it.
        let probe = try Self.openSocket(address, reusePort: false, backlog: nil)
        defer { Glibc.close(probe) }
        guard let bound = SocketAddress.local(of: probe) else { throw .system(call: "getsockname", errno: errno) }
        var listeners: [HostListener] = []
        for cpu in cpus {
            let fd = try Self.openSocket(bound, reusePort: true, backlog: backlog)
            listeners.append(HostListener(fd: fd, address: bound, sockets: perCPU[cpu.id]))
        }
        return listeners
    }

    /// A nonblocking TCP socket bound to `address`, listening when `backlog` is given.
    static func openSocket(_ address: SocketAddress, reusePort: Bool, backlog: Int?) throws(SocketError) -> Int32 {
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system(call: "socket", errno: errno) }
        var one: Int32 = 1, zero: Int32 = 0
        let size = socklen_t(MemoryLayout<Int32>.size)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, size)
        if reusePort && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, size) != 0 {
            let e = errno
            Glibc.close(fd)
            throw .system(call: "setsockopt(SO_REUSEPORT)", errno: e)
        }
        // `[::]` takes IPv4 too (dual stack), whatever the host's bindv6only default;
        // a specific IPv6 address only ever sees IPv6.
        if address.isIPv6 { setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, size) }
        let rc = address.withSockaddr { bind(fd, $0, $1) }
        if rc != 0 {
            let e = errno
            Glibc.close(fd)
            throw .system(call: "bind \(address)", errno: e)
        }
        if let backlog, Glibc.listen(fd, Int32(clamping: backlog)) != 0 {
            let e = errno
            Glibc.close(fd)
            throw .system(call: "listen \(address)", errno: e)
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
