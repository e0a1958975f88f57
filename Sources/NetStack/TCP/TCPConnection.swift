import LWKT

/// A TCP socket: the handle an application holds on a connection. It has the shape of
/// Services' `StreamConnection` (async read and write with back-pressure and timeouts,
/// graceful close with linger) plus `shutdown(.write)` and an abortive close. Errors are
/// ``TCPError`` values carrying Linux errnos.
///
/// A connection belongs to the CPU its 4-tuple hashes to (``cpuID``); call it only from
/// an LWKT thread on that CPU — it then touches the PCB directly, without locks or IPIs.
public final class TCPConnection: @unchecked Sendable {
    let pcb: TCPControlBlock
    /// The stack it runs on.
    public var stack: NetStack { pcb.stack }
    /// The CPU that owns the connection.
    public var cpuID: Int { pcb.cpu }
    /// The remote end.
    public let peer: IPv4Endpoint
    /// The local end.
    public let local: IPv4Endpoint
    private var closed = false
    private var shutWrite = false

    init(_ pcb: TCPControlBlock) {
        self.pcb = pcb
        pcb.hasSocket = true
        peer = IPv4Endpoint(pcb.key.remoteAddress, pcb.key.remotePort)
        local = IPv4Endpoint(pcb.key.localAddress, pcb.key.localPort)
    }

    /// Which direction ``shutdown(_:)`` closes.
    public enum ShutdownDirection: Sendable { case write }

    /// The connection's state.
    public var state: TCPState { pcb.state }
    /// Segments leave as soon as they can (Nagle off).
    public var noDelay: Bool {
        get { pcb.noDelay }
        set { pcb.noDelay = newValue }
    }
    /// Whether keepalive probes run (on the owner CPU).
    public var keepalive: Bool {
        get { pcb.keepalive }
        set {
            guard onOwner() else { return }
            pcb.keepalive = newValue
            let st = stack.cpus[cpuID]
            pcb.keepaliveTimer = 0
            if newValue { pcb.arm(.keepalive, at: lb_now_ns_swift() &+ stack.configuration.tcp.keepaliveIdle.ns) }
            _ = st
        }
    }
    /// Bytes received and not yet read.
    public var readable: Int { pcb.receiveBuffer.count }
    /// The receive buffer's current size (it grows by auto-tuning).
    public var receiveBufferSize: Int { pcb.receiveBuffer.capacity }
    /// Bytes written and not yet acknowledged.
    public var unacknowledged: Int { pcb.sendBuffer.count }
    /// The smoothed RTT, the current RTO, the congestion window (diagnostics).
    public var smoothedRTT: Duration { .nanoseconds(Int64(pcb.rtt.srtt)) }
    public var congestionWindow: Int { pcb.cc.cwnd }
    /// The payload bytes per segment in use.
    public var maximumSegmentSize: Int { pcb.mss }

    private func onOwner() -> Bool { CPU.current.map { $0.id == cpuID && $0.system === stack.system } ?? false }

    private func ownerState() throws(TCPError) -> NetCPU {
        guard onOwner() else { throw .invalidArgument("TCP connection used off its CPU \(cpuID)") }
        let st = stack.cpus[cpuID]
        st.now = lb_now_ns_swift()
        return st
    }

    /// Sleeps until `condition` holds or the deadline passes; false on timeout.
    private func wait(until deadline: UInt64?, _ condition: @escaping () -> Bool) async throws(TCPError) -> Bool {
        var left: Duration? = nil
        if let deadline {
            let now = lb_now_ns_swift()
            if now >= deadline { return condition() }
            left = .nanoseconds(Int64(deadline - now))
        }
        pcb.waiters += 1
        defer { pcb.waiters -= 1 }
        do {
            let r = try await LWKT.tsleep(on: WaitChannel(pcb), timeout: left, until: condition)
            return r == .woken || condition()
        } catch {
            throw .cancelled
        }
    }

    // MARK: - Opening

    /// Opens a connection to `remote` from the calling CPU: the source port is chosen so
    /// that the 4-tuple hashes to this CPU, which therefore owns the connection. Call from
    /// an LWKT thread on a CPU of the stack's system.
    public static func connect(_ stack: NetStack, to remote: IPv4Endpoint, timeout: Duration? = nil) async throws(TCPError) -> TCPConnection {
        guard let st = stack.currentState() else { throw .invalidArgument("connect() must run on a CPU of the stack") }
        st.now = lb_now_ns_swift()
        let tp = try stack.tcpOpen(to: remote, st)
        let c = TCPConnection(tp)
        let deadline = timeout.map { st.now &+ $0.ns }
        while tp.state == .synSent || tp.state == .synReceived {
            if try await !c.wait(until: deadline, { tp.state != .synSent && tp.state != .synReceived }) {
                c.abort()
                throw .timedOut
            }
        }
        if tp.state.isSynchronized && tp.state != .timeWait { return c }
        c.closed = true
        tp.releaseBuffers()
        throw tp.error ?? .connectionRefused
    }

    // MARK: - Data

    /// Reads what is available (at least one byte, waiting for it); returns 0 at end of
    /// stream. Throws ``TCPError/timedOut`` when nothing came within `timeout`.
    public func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) async throws(TCPError) -> Int {
        let deadline = timeout.map { lb_now_ns_swift() &+ $0.ns }
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        while true {
            if closed { throw .closed }
            let st = try ownerState()
            if pcb.receiveBuffer.count > 0 {
                pcb.autotuneReceiveBuffer()
                let n = pcb.receiveBuffer.read(into: base, buffer.count)
                if pcb.inTable, stack.tcpWindowUpdateDue(pcb) { stack.tcpOutput(pcb, st) }
                return n
            }
            if pcb.finReceived { return 0 }
            if let e = pcb.error { throw e }
            if pcb.state == .closed { throw .notConnected }
            let tp = pcb
            if try await !wait(until: deadline, { tp.receiveBuffer.count > 0 || tp.finReceived || tp.error != nil || tp.state == .closed }) {
                throw .timedOut
            }
        }
    }

    /// Reads into a new array of at most `max` bytes ([] at end of stream).
    public func read(max: Int, timeout: Duration? = nil) async throws(TCPError) -> [UInt8] {
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: Swift.max(1, max), alignment: 16)
        defer { b.deallocate() }
        let n = try await read(into: UnsafeMutableRawBufferPointer(rebasing: b[0..<max]), timeout: timeout)
        return [UInt8](UnsafeRawBufferPointer(rebasing: b[0..<n]))
    }

    /// Writes every byte, waiting while the send buffer is full (back-pressure). Throws
    /// ``TCPError/timedOut`` when the peer does not take them within `timeout`,
    /// ``TCPError/brokenPipe`` after ``shutdown(_:)`` or a close.
    public func write(_ bytes: UnsafeRawBufferPointer, timeout: Duration? = nil) async throws(TCPError) {
        let deadline = timeout.map { lb_now_ns_swift() &+ $0.ns }
        guard let base = bytes.baseAddress else { return }
        var done = 0
        while done < bytes.count {
            if closed || shutWrite { throw .brokenPipe }
            let st = try ownerState()
            if let e = pcb.error { throw e }
            let s = pcb.state
            if s == .synSent || s == .synReceived {
                // Not yet established: wait for the handshake.
            } else if !s.canSend {
                throw s == .closed ? .notConnected : .brokenPipe
            } else {
                let n = pcb.sendBuffer.write(base + done, bytes.count - done)
                done += n
                if n > 0 { stack.tcpOutput(pcb, st) }
                if done == bytes.count { return }
            }
            let tp = pcb
            if try await !wait(until: deadline, { tp.sendBuffer.free > 0 && tp.state.canSend || tp.error != nil || !tp.state.canSend && tp.state != .synSent && tp.state != .synReceived }) {
                throw .timedOut
            }
        }
    }

    /// Writes an array.
    public func write(_ bytes: [UInt8], timeout: Duration? = nil) async throws(TCPError) {
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: Swift.max(1, bytes.count), alignment: 16)
        defer { b.deallocate() }
        bytes.withUnsafeBytes { src in if let s = src.baseAddress { b.baseAddress?.copyMemory(from: s, byteCount: src.count) } }
        try await write(UnsafeRawBufferPointer(rebasing: b[0..<bytes.count]), timeout: timeout)
    }

    /// Waits until everything written has been acknowledged (or `timeout` passes).
    public func flush(timeout: Duration? = nil) async throws(TCPError) {
        let deadline = timeout.map { lb_now_ns_swift() &+ $0.ns }
        _ = try ownerState()
        let tp = pcb
        while tp.sendBuffer.count > 0 {
            if let e = tp.error { throw e }
            if tp.state == .closed { throw .notConnected }
            if try await !wait(until: deadline, { tp.sendBuffer.count == 0 || tp.error != nil || tp.state == .closed }) { throw .timedOut }
        }
    }

    // MARK: - Closing

    /// Shuts down writing: a FIN follows the data already written; reading goes on.
    public func shutdown(_ how: ShutdownDirection = .write) throws(TCPError) {
        let st = try ownerState()
        guard !shutWrite else { return }
        shutWrite = true
        switch pcb.state {
        case .synSent:
            stack.tcpDetach(pcb, st)
        case .synReceived, .established:
            pcb.finQueued = true
            pcb.setState(.finWait1)
            stack.tcpOutput(pcb, st)
        case .closeWait:
            pcb.finQueued = true
            pcb.setState(.lastAck)
            stack.tcpOutput(pcb, st)
        default:
            break
        }
    }

    /// Closes gracefully: sends FIN, then for up to `linger` discards what the peer still
    /// sends until it closes too, then lets the stack finish the connection on its own
    /// (TIME-WAIT, or a bounded FIN-WAIT-2). Safe to call more than once.
    public func close(linger: Duration = .seconds(2)) async {
        guard !closed, let st = try? ownerState() else { return }
        try? shutdown(.write)
        closed = true
        pcb.orphaned = true
        pcb.receiveBuffer.discard(pcb.receiveBuffer.count)
        let tp = pcb
        let deadline = st.now &+ linger.ns
        while tp.state != .closed, tp.state != .timeWait, !(tp.finReceived && tp.finAcked) {
            guard let ok = try? await wait(until: deadline, { tp.state == .closed || tp.state == .timeWait || tp.finReceived && tp.finAcked }), ok else { break }
            tp.receiveBuffer.discard(tp.receiveBuffer.count)
        }
        st.now = lb_now_ns_swift()
        finishClose(st)
    }

    private func finishClose(_ st: NetCPU) {
        switch pcb.state {
        case .closed, .timeWait:
            pcb.releaseBuffers()
        case .finWait2:
            if pcb.closeTimer == 0 { pcb.arm(.close, at: st.now &+ stack.configuration.tcp.finWait2Timeout.ns) }
        default:
            break
        }
    }

    /// Closes abortively: a reset to the peer, buffered data discarded.
    public func abort() {
        guard let st = try? ownerState() else { return }
        closed = true
        pcb.orphaned = true
        if pcb.state != .closed { stack.tcpAbort(pcb, st) }
        pcb.releaseBuffers()
    }
}
