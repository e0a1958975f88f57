import Glibc
import LWKT
import NetStack
import Synchronization

/// Libellula's own TCP/IP stack (``NetStack``) behind the ``StreamSocketStack`` API, so the
/// services run on it unchanged.
///
/// Rules of this adaptor: it adds no state of its own beyond one small handle per
/// connection; every call on a listener or connection runs on the CPU that owns it (the
/// CPU its 4-tuple hashes to), where NetStack touches the PCB directly. A listening port is
/// replicated on every CPU of the stack (NetStack's per-CPU wildcard tables), so
/// ``listen(on:cpus:backlog:)`` must be asked for all of them: a connection hashed to a
/// CPU without an accepting listener would never be served.
///
/// Errors are NetStack's ``TCPError`` values turned into ``SocketError``s the way the host
/// backend reports the same failures (see ``SocketError/init(_:call:)``), so a service
/// cannot tell the backends apart; ``SocketError/errno`` gives the Linux errno either way.
public final class NetStackSocketStack: StreamSocketStack, @unchecked Sendable {
    /// The TCP/IP stack the sockets live on.
    public let stack: NetStack

    /// What ``statistics()`` calls the backend.
    public let name: String
    /// Listening replicas open per CPU and connections accepted per CPU (written by the
    /// owning CPU, read by anyone).
    let counts: [PerCPUCounts]

    /// One CPU's listening replicas and accepts.
    final class PerCPUCounts: Sendable {
        let listeners = Atomic<Int>(0)
        let accepted = Atomic<Int>(0)
    }

    /// Sockets on `stack` (which must be started, on the system that runs the services).
    public init(stack: NetStack) {
        self.stack = stack
        name = "Libellula TCP/IP on \(stack.interface.name)"
        counts = (0..<stack.system.cpuCount).map { _ in PerCPUCounts() }
    }

    /// Per CPU: listening replicas, accepts, passive opens, established connections, and
    /// packets forwarded to (and from) other CPUs; and the TAP's flow steering.
    public func statistics() -> SocketStackStatistics? {
        let c = stack.counters
        return SocketStackStatistics(backend: name, cpus: (0..<stack.system.cpuCount).map { i in
            .init(listeners: counts[i].listeners.load(ordering: .relaxed), accepted: counts[i].accepted.load(ordering: .relaxed),
                  passiveOpens: c.value(.tcpPassiveOpens, cpu: i), established: c.value(.tcpEstablished, cpu: i),
                  forwarded: c.value(.forwarded, cpu: i), forwardedIn: c.value(.forwardedIn, cpu: i))
        }, flowSteering: (stack.interface as? TAPInterface)?.flowSteering.description)
    }

    /// Opens the port on every CPU of the stack (one ``NetStackListener`` each). `address`
    /// must be IPv4, either any (`0.0.0.0`) or the stack's own address; port 0 picks a free
    /// one. Throws `EAFNOSUPPORT` for IPv6, `EADDRNOTAVAIL` for another address,
    /// `EADDRINUSE` when the port is taken, and `EINVAL` when `cpus` is not every CPU of
    /// the stack.
    public func listen(on address: SocketAddress, cpus: [CPU], backlog: Int = 1024) throws(SocketError) -> [NetStackListener] {
        guard !address.isIPv6 else { throw .system(call: "listen \(address) (the own stack is IPv4 only)", errno: EAFNOSUPPORT) }
        let own = stack.configuration.address
        guard address.ipv4 == 0 || address.ipv4 == own.value else {
            throw .system(call: "bind \(address) (the stack's address is \(own))", errno: EADDRNOTAVAIL)
        }
        let all = Set(0..<stack.system.cpuCount)
        guard Set(cpus.map(\.id)) == all, cpus.allSatisfy({ $0.system === stack.system }) else {
            throw .system(call: "listen \(address) (the own stack listens on every CPU of its system)", errno: EINVAL)
        }
        let replicas: [TCPListener]
        do { replicas = try stack.listen(port: address.port, backlog: backlog) } catch {
            throw SocketError(error, call: "listen \(address)")
        }
        let bound = SocketAddress(ipv4: address.ipv4, port: replicas.first?.address.port ?? address.port)
        let byCPU = Dictionary(uniqueKeysWithValues: replicas.map { ($0.cpuID, $0) })
        for r in replicas { counts[r.cpuID].listeners.add(1, ordering: .relaxed) }
        return cpus.compactMap { cpu in byCPU[cpu.id].map { NetStackListener($0, address: bound, sockets: self) } }
    }
}

extension SocketError {
    /// The socket error a service sees for a NetStack failure: the same case the host
    /// backend reports for the same errno (resets, broken pipes and unconnected sockets are
    /// ``reset``; refused, in-use and out-of-buffers are ``system(call:errno:)`` with their
    /// errno; timeouts, cancellation and use after close keep their own cases).
    public init(_ error: TCPError, call: String) {
        switch error {
        case .connectionReset, .brokenPipe, .notConnected: self = .reset
        case .timedOut: self = .timedOut
        case .cancelled: self = .cancelled
        case .closed: self = .closed
        case .invalidArgument(let why): self = .system(call: "\(call): \(why)", errno: error.errno)
        case .connectionRefused, .addressInUse, .addressNotAvailable, .noBuffers:
            self = .system(call: call, errno: error.errno)
        }
    }
}
