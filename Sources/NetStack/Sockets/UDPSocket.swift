import LWKT
import Synchronization

/// A UDP socket. Its port is entered in every CPU's table, so a datagram is delivered by
/// the protocol thread of whichever CPU owns its flow; sends are handed to that CPU too.
/// The calls are `async` so that TCP's sockets can offer the same shape; `receive`
/// suspends (an LWKT `tsleep`) until a datagram arrives.
public final class UDPSocket: @unchecked Sendable {
    public let stack: NetStack
    /// The bound port.
    public let localPort: UInt16
    private let queue = Mutex<PacketQueue>(PacketQueue())
    private let limit: Int
    private let waiters = Atomic<Int>(0)
    /// The connected peer as `address << 16 | port`, or 0.
    private let peer = Atomic<UInt64>(0)
    private let isClosed = Atomic<Bool>(false)

    struct PacketQueue {
        var head: Mbuf?
        var tail: Mbuf?
        var count = 0
    }

    private init(stack: NetStack, port: UInt16) {
        self.stack = stack
        localPort = port
        limit = stack.configuration.socketQueueLimit
    }

    /// Binds a socket to `port` on the stack's address (0: an ephemeral port).
    public static func bind(_ stack: NetStack, port: UInt16 = 0) async throws -> UDPSocket {
        let chosen: UInt16 = try stack.boundPorts.withLock { used in
            if port != 0 {
                guard !used.contains(port) else { throw NetError.addressInUse(port) }
                used.insert(port)
                return port
            }
            let start = UInt16.random(in: 49152...65535)
            var p = start
            repeat {
                if !used.contains(p) { used.insert(p); return p }
                p = p == 65535 ? 49152 : p + 1
            } while p != start
            throw NetError.noPortsAvailable
        }
        let s = UDPSocket(stack: stack, port: chosen)
        try stack.system.crossbar.sync(cpus: Array(0..<stack.cpuCount)) { id in
            stack.cpus[id].udpTable[chosen] = s
        }
        return s
    }

    /// The peer set by ``connect(to:)``.
    public var remote: IPv4Endpoint? {
        let v = peer.load(ordering: .relaxed)
        return v == 0 ? nil : IPv4Endpoint(IPv4Address(UInt32(truncatingIfNeeded: v >> 16)), UInt16(truncatingIfNeeded: v))
    }

    /// Fixes the peer: sends without a destination go there, and only its datagrams are received.
    public func connect(to remote: IPv4Endpoint) async throws {
        guard !isClosed.load(ordering: .relaxed) else { throw NetError.closed }
        peer.store(UInt64(remote.address.value) << 16 | UInt64(remote.port), ordering: .relaxed)
    }

    /// Whether a datagram from `address`:`port` is for this socket.
    @inline(__always)
    func accepts(from address: IPv4Address, port: UInt16) -> Bool {
        let v = peer.load(ordering: .relaxed)
        return v == 0 || v == (UInt64(address.value) << 16 | UInt64(port))
    }

    /// Sends `bytes` to `destination`.
    public func send(_ bytes: UnsafeRawBufferPointer, to destination: IPv4Endpoint) async throws {
        try sendNow(bytes, to: destination)
    }

    /// Sends without suspending (a datagram never waits for room).
    public func sendNow(_ bytes: UnsafeRawBufferPointer, to destination: IPv4Endpoint) throws {
        guard !isClosed.load(ordering: .relaxed) else { throw NetError.closed }
        guard bytes.count <= 65535 - IPv4Header.minimumSize - UDPHeader.size else { throw NetError.messageTooLong(bytes.count) }
        guard let m = stack.pool.packet(copying: bytes, headroom: MbufPool.defaultHeadroom) else { throw NetError.noBuffers }
        send(packet: m, to: destination)
    }

    /// Sends `bytes` to `destination`.
    public func send(_ bytes: [UInt8], to destination: IPv4Endpoint) async throws {
        try bytes.withUnsafeBytes { try sendNow($0, to: destination) }
    }

    /// Sends to the connected peer.
    public func send(_ bytes: [UInt8]) async throws {
        guard let r = remote else { throw NetError.notConnected }
        try await send(bytes, to: r)
    }

    /// Sends the payload in `packet` (taking ownership) to `destination` from the CPU
    /// that owns the flow. Does not wait.
    public func send(packet m: Mbuf, to destination: IPv4Endpoint) {
        m.kind = .udpOutput
        m.words = (destination.address.value, UInt32(destination.port) << 16 | UInt32(localPort), stack.configuration.address.value, 0)
        let target = stack.owner(IPv4Endpoint(stack.configuration.address, localPort), destination)
        if let st = stack.currentState(), st.id == target {
            st.now = lb_now_ns_swift()
            stack.udpOutput(m, st)
        } else {
            stack.send(m, to: target)
        }
    }

    /// Called by the protocol thread that owns the datagram's flow.
    func deliver(_ m: Mbuf) -> Bool {
        let ok = queue.withLock { q -> Bool in
            guard q.count < limit else { return false }
            m.nextPacket = nil
            if let t = q.tail { t.nextPacket = m } else { q.head = m }
            q.tail = m
            q.count += 1
            return true
        }
        if ok, waiters.load(ordering: .relaxed) > 0 { LWKT.wakeup(WaitChannel(self), in: stack.system) }
        return ok
    }

    private func pop() -> Mbuf? {
        queue.withLock { q in
            guard let m = q.head else { return nil }
            q.head = m.nextPacket
            if q.head == nil { q.tail = nil }
            q.count -= 1
            m.nextPacket = nil
            return m
        }
    }

    /// Datagrams waiting.
    public var queued: Int { queue.withLock { $0.count } }

    /// Receives the next datagram's packet (payload only; ownership passes to the caller)
    /// with its source and delivering CPU; nil when `timeout` passes first. Call from an
    /// LWKT thread.
    public func receivePacket(timeout: Duration? = nil) async throws -> (packet: Mbuf, source: IPv4Endpoint, cpu: Int)? {
        while true {
            if let m = pop() {
                let (ip, port, cpu, _) = m.words
                return (m, IPv4Endpoint(IPv4Address(ip), UInt16(truncatingIfNeeded: port)), Int(cpu))
            }
            if isClosed.load(ordering: .relaxed) { throw NetError.closed }
            waiters.add(1, ordering: .sequentiallyConsistent)
            let r: SleepResult
            do {
                r = try await LWKT.tsleep(on: WaitChannel(self), timeout: timeout, until: { [self] in
                    queue.withLock { $0.count > 0 } || isClosed.load(ordering: .relaxed)
                })
            } catch {
                waiters.subtract(1, ordering: .relaxed)
                throw error
            }
            waiters.subtract(1, ordering: .relaxed)
            if r == .timedOut, queued == 0 { return nil }
        }
    }

    /// Receives the next datagram; nil when `timeout` passes first.
    public func receive(timeout: Duration? = nil) async throws -> UDPDatagram? {
        guard let (m, src, cpu) = try await receivePacket(timeout: timeout) else { return nil }
        let d = UDPDatagram(payload: m.array, source: src, cpu: cpu)
        m.free()
        return d
    }

    /// Unbinds the port on every CPU and frees queued datagrams.
    public func close() async throws {
        guard !isClosed.exchange(true, ordering: .relaxed) else { return }
        let port = localPort
        let stack = self.stack
        if stack.system.isRunning {
            try stack.system.crossbar.sync(cpus: Array(0..<stack.cpuCount)) { id in
                stack.cpus[id].udpTable[port] = nil
            }
        }
        stack.boundPorts.withLock { _ = $0.remove(port) }
        while let m = pop() { m.free() }
        LWKT.wakeup(WaitChannel(self), in: stack.system)
    }
}
