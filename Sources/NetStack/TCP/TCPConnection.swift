import CLibellula
import LWKT

/// A TCP socket: the handle an application holds on a connection. It has the shape of
/// Services' `StreamConnection` (async read and write with back-pressure and timeouts,
/// graceful close with linger) plus `shutdown(.write)` and an abortive close. Errors are
/// ``TCPError`` values carrying Linux errnos.
///
/// A connection belongs to the CPU its 4-tuple hashes to (``cpuID``); call it only from
/// an LWKT thread on that CPU — it then touches the PCB directly, without locks or IPIs.
///
/// The steady path (a read or write that finds data or room, or sleeps until it does)
/// allocates nothing: the owner check is one thread-local compare, waits sleep without an
/// LWKT timer, and a timeout is a deadline on the PCB that the CPU's TCP timer scan turns
/// into a wakeup. The async calls are `nonisolated(nonsending)`: they run on the calling
/// LWKT thread's executor without a hop.
public final class TCPConnection: @unchecked Sendable {
    let pcb: TCPControlBlock
    /// The stack it runs on (held strongly: the PCB refers to it unretained).
    public let stack: NetStack
    /// The CPU that owns the connection.
    public var cpuID: Int { pcb.cpu }
    /// The owner CPU's share of the stack.
    private let net: NetCPU
    /// The owner CPU's globaldata key (what `lb_current_cpu()` returns on its thread).
    private let cpuKey: UInt
    /// The remote end.
    public let peer: IPv4Endpoint
    /// The local end.
    public let local: IPv4Endpoint
    private var closed = false
    private var shutWrite = false

    init(_ pcb: TCPControlBlock) {
        self.pcb = pcb
        stack = pcb.stack
        net = pcb.stack.cpus[pcb.cpu]
        cpuKey = (try? pcb.stack.system.cpu(pcb.cpu))?.globaldataKey ?? 0
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
    /// The send buffer's current size (it grows by auto-tuning).
    public var sendBufferSize: Int { pcb.sendBuffer.capacity }
    /// Bytes written and not yet acknowledged.
    public var unacknowledged: Int { pcb.sendBuffer.count }
    /// The smoothed RTT, the current RTO, the congestion window (diagnostics).
    public var smoothedRTT: Duration { .nanoseconds(Int64(pcb.rtt.srtt)) }
    public var congestionWindow: Int { pcb.cc.cwnd }
    /// The payload bytes per segment in use.
    public var maximumSegmentSize: Int { pcb.mss }

    @inline(__always)
    private func onOwner() -> Bool { cpuKey != 0 && UInt(bitPattern: lb_current_cpu()) == cpuKey }

    /// The owner CPU's state, with its clock read (for calls that may send).
    @inline(__always)
    private func ownerState() throws(TCPError) -> NetCPU {
        guard onOwner() else { throw .invalidArgument("TCP connection used off its CPU \(cpuID)") }
        net.now = lb_now_ns_swift()
        return net
    }

    /// Brings the CPU's clock up to date for output from a socket call: the coarse clock
    /// (the kernel's last tick) is enough for TCP's timers and millisecond timestamps and
    /// costs a fraction of a precise read; `now` never goes backwards.
    @inline(__always)
    private func tick() {
        let c = lb_now_coarse_ns()
        if c > net.now { net.now = c }
    }

    /// The owner check alone (calls that only read the buffers).
    @inline(__always)
    private func checkOwner() throws(TCPError) {
        guard onOwner() else { throw .invalidArgument("TCP connection used off its CPU \(cpuID)") }
    }

    /// A deadline `timeout` from now (nil: none).
    @inline(__always)
    private static func deadline(_ timeout: Duration?) -> UInt64? { timeout.map { lb_now_ns_swift() &+ $0.ns } }

    /// What a socket call waits for.
    enum Condition: Sendable {
        case handshakeDone, readable, writable, acknowledged, closeDone
    }

    /// Whether `c` holds now.
    private func holds(_ c: Condition) -> Bool {
        let tp = pcb
        switch c {
        case .handshakeDone: return tp.state != .synSent && tp.state != .synReceived
        case .readable: return tp.receiveBuffer.count > 0 || tp.finReceived || tp.error != nil || tp.state == .closed
        case .writable:
            return tp.sendBuffer.free > 0 && tp.state.canSend || tp.error != nil
                || !tp.state.canSend && tp.state != .synSent && tp.state != .synReceived
        case .acknowledged: return tp.sendBuffer.count == 0 || tp.error != nil || tp.state == .closed
        case .closeDone: return tp.state == .closed || tp.state == .timeWait || tp.finReceived && tp.finAcked
        }
    }

    /// Sleeps until `condition` may hold; false when the deadline has passed and it does
    /// not. A true answer means "look again": callers loop. While the PCB is in its CPU's
    /// table the deadline is a PCB timer (no allocation); otherwise an LWKT timeout.
    private nonisolated(nonsending) func wait(until deadline: UInt64?, for c: Condition) async throws(TCPError) -> Bool {
        var left: Duration? = nil
        if let deadline {
            let now = lb_now_ns_swift()
            if now >= deadline { return holds(c) }
            if pcb.inTable {
                pcb.armSocketDeadline(deadline)
            } else {
                left = .nanoseconds(Int64(deadline - now))
            }
        }
        // The thread joins `waiters` in the interlock, once it is on the sleep queue: a
        // `wake()` that zeroes the count then always finds it there. (Counted earlier, a
        // wake between the count and the queueing would take it off the count without
        // waking it, and with the condition still false it would sleep uncounted: a lost
        // wakeup.) A `wake()` after that takes it off the count itself.
        var counted = false
        var generation: UInt32 = 0
        defer { if counted, pcb.wakeGeneration == generation { pcb.waiters -= 1 } }
        do {
            // The condition is a closure literal: non-escaping, so it is not heap-allocated.
            let r = try await LWKT.tsleep(on: WaitChannel(pcb), timeout: left, until: {
                if !counted {
                    counted = true
                    self.pcb.waiters += 1
                    generation = self.pcb.wakeGeneration
                }
                return self.holds(c)
            })
            if r == .woken || holds(c) { return true }
            return deadline.map { lb_now_ns_swift() < $0 } ?? true
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
            if try await !c.wait(until: deadline, for: .handshakeDone) {
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
    nonisolated(nonsending) public func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) async throws(TCPError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        var deadline: UInt64? = nil
        var waited = false
        while true {
            if closed { throw .closed }
            try checkOwner()
            let tp = pcb
            if tp.receiveBuffer.count > 0 {
                tp.autotuneReceiveBuffer()
                let n = tp.receiveBuffer.read(into: base, buffer.count)
                if tp.inTable, stack.tcpWindowUpdateDue(tp) {
                    tick()
                    stack.tcpOutput(tp, net)
                }
                return n
            }
            if tp.finReceived { return 0 }
            if let e = tp.error { throw e }
            if tp.state == .closed { throw .notConnected }
            if !waited { waited = true; deadline = Self.deadline(timeout) }
            if try await !wait(until: deadline, for: .readable) {
                throw .timedOut
            }
        }
    }

    /// Reads into a new array of at most `max` bytes ([] at end of stream).
    nonisolated(nonsending) public func read(max: Int, timeout: Duration? = nil) async throws(TCPError) -> [UInt8] {
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: Swift.max(1, max), alignment: 16)
        defer { b.deallocate() }
        let n = try await read(into: UnsafeMutableRawBufferPointer(rebasing: b[0..<max]), timeout: timeout)
        return [UInt8](UnsafeRawBufferPointer(rebasing: b[0..<n]))
    }

    /// Writes every byte, waiting while the send buffer is full (back-pressure). Throws
    /// ``TCPError/timedOut`` when the peer does not take them within `timeout`,
    /// ``TCPError/brokenPipe`` after ``shutdown(_:)`` or a close.
    nonisolated(nonsending) public func write(_ bytes: UnsafeRawBufferPointer, timeout: Duration? = nil) async throws(TCPError) {
        guard let base = bytes.baseAddress else { return }
        var deadline: UInt64? = nil
        var waited = false
        var done = 0
        while done < bytes.count {
            if closed || shutWrite { throw .brokenPipe }
            try checkOwner()
            let tp = pcb
            if let e = tp.error { throw e }
            let s = tp.state
            if s == .synSent || s == .synReceived {
                // Not yet established: wait for the handshake.
            } else if !s.canSend {
                throw s == .closed ? .notConnected : .brokenPipe
            } else {
                // A full segment already waiting unsent means the window or the congestion
                // window holds output back: more bytes change nothing until an ACK comes
                // (whose processing sends them), so output is not tried again.
                let unsent = tp.sendBuffer.count - TCPSequence.distance(tp.sndBase, tp.sndNxt)
                let n = tp.sendBuffer.write(base + done, bytes.count - done)
                done += n
                if n > 0, unsent < tp.mss || tp.sndNxt != tp.sndMax {
                    // Less than a segment unsent (and no retransmission under way): it waits
                    // until this thread gives up the CPU — no longer, and no timer or other
                    // thread is involved — so a close() or another write made before that
                    // leaves in the same segment (a reply and its FIN together).
                    if stack.tcpHoldSmallWrites, tp.sndNxt == tp.sndMax, tp.inTable,
                       tp.sendBuffer.count - TCPSequence.distance(tp.sndBase, tp.sndNxt) < tp.mss,
                       stack.tcpHoldOutput(tp, net) {
                        // Held.
                    } else {
                        tick()
                        stack.tcpOutput(tp, net)
                    }
                }
                if done == bytes.count { return }
                if tp.autotuneSendBuffer() { continue }
            }
            if !waited { waited = true; deadline = Self.deadline(timeout) }
            if try await !wait(until: deadline, for: .writable) {
                throw .timedOut
            }
        }
    }

    /// Writes an array.
    nonisolated(nonsending) public func write(_ bytes: [UInt8], timeout: Duration? = nil) async throws(TCPError) {
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: Swift.max(1, bytes.count), alignment: 16)
        defer { b.deallocate() }
        bytes.withUnsafeBytes { src in if let s = src.baseAddress { b.baseAddress?.copyMemory(from: s, byteCount: src.count) } }
        try await write(UnsafeRawBufferPointer(rebasing: b[0..<bytes.count]), timeout: timeout)
    }

    /// Waits until everything written has been acknowledged (or `timeout` passes).
    nonisolated(nonsending) public func flush(timeout: Duration? = nil) async throws(TCPError) {
        let deadline = timeout.map { lb_now_ns_swift() &+ $0.ns }
        _ = try ownerState()
        let tp = pcb
        while tp.sendBuffer.count > 0 {
            if let e = tp.error { throw e }
            if tp.state == .closed { throw .notConnected }
            if try await !wait(until: deadline, for: .acknowledged) { throw .timedOut }
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
    nonisolated(nonsending) public func close(linger: Duration = .seconds(2)) async {
        guard !closed, let st = try? ownerState() else { return }
        try? shutdown(.write)
        closed = true
        pcb.orphaned = true
        pcb.receiveBuffer.discard(pcb.receiveBuffer.count)
        let tp = pcb
        let deadline = st.now &+ linger.ns
        while tp.state != .closed, tp.state != .timeWait, !(tp.finReceived && tp.finAcked) {
            guard let ok = try? await wait(until: deadline, for: .closeDone), ok else { break }
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
