import LWKT

/// A TCP connection's protocol control block: the RFC 9293 transmission control block
/// plus buffers, timers, RTT estimator, congestion and SACK state.
///
/// Rules of this file: a PCB belongs to the CPU its 4-tuple hashes to (`cpu`); it is
/// created, processed, timed and freed only there, by the protocol thread or by a socket
/// call running on that CPU (LWKT threads of one CPU never run at once, so no lock is
/// needed). Debug builds assert the CPU on every entry point (``assertOwner()``).
final class TCPControlBlock {
    let key: TCPFlowKey
    let cpu: Int
    /// Unretained: a PCB is reached only through its stack's tables (which the stack
    /// outlives) or through a ``TCPConnection`` or ``TCPListener``, which hold the stack.
    unowned(unsafe) let stack: NetStack
    private(set) var state: TCPState = .closed

    // Send sequence space (RFC 9293 §3.3.1).
    var iss: UInt32 = 0
    var sndUna: UInt32 = 0
    var sndNxt: UInt32 = 0
    /// Highest sequence number sent plus one.
    var sndMax: UInt32 = 0
    var sndWnd = 0
    var sndWl1: UInt32 = 0
    var sndWl2: UInt32 = 0
    var maxSndWnd = 0
    /// Sequence number of the first byte in ``sendBuffer``.
    var sndBase: UInt32 = 0

    // Receive sequence space.
    var irs: UInt32 = 0
    var rcvNxt: UInt32 = 0
    /// Right edge of the window last advertised.
    var rcvAdv: UInt32 = 0
    var lastAckSent: UInt32 = 0

    // Options.
    var sndScale: UInt8 = 0
    var rcvScale: UInt8 = 0
    var wantScale = false
    var sackEnabled = false
    var tsEnabled = false
    var tsRecent: UInt32 = 0
    var tsRecentAge: UInt64 = 0
    /// Payload bytes per segment (MSS less the options every segment carries).
    var mss = 536
    var peerMSS = 536

    // Buffers.
    // The rings live behind raw pointers (as the project keeps hot state): a ring call
    // mutates in place without a dynamic exclusivity check on a class property.
    private let sendStorage: UnsafeMutablePointer<TCPByteRing>
    private let receiveStorage: UnsafeMutablePointer<TCPByteRing>
    /// Unacknowledged and unsent bytes, starting at ``sndBase``.
    var sendBuffer: TCPByteRing {
        unsafeAddress { UnsafePointer(sendStorage) }
        unsafeMutableAddress { sendStorage }
    }
    /// Bytes received in order and not yet read.
    var receiveBuffer: TCPByteRing {
        unsafeAddress { UnsafePointer(receiveStorage) }
        unsafeMutableAddress { receiveStorage }
    }
    var reassembly = TCPReassemblyQueue()
    /// Buffer bytes charged to the CPU (send plus receive capacity).
    private(set) var bufferBytes: Int
    /// The receive buffer's ceiling for auto-tuning.
    let receiveLimit: Int
    /// The send buffer's ceiling for auto-tuning.
    let sendLimit: Int

    // FIN handling.
    /// The socket asked for FIN after the buffered data.
    var finQueued = false
    /// Our FIN has been sent at least once / has been acknowledged.
    var finSent = false
    var finAcked = false
    /// The peer's FIN arrived (in order).
    var finReceived = false

    // Reliability.
    var rtt: TCPRTTEstimator
    var cc: TCPCongestionControl
    var sack = TCPSACKScoreboard()
    var dupAcks = 0
    var inRecovery = false
    var recover: UInt32 = 0
    /// Next byte to retransmit in SACK recovery.
    var rxmitNext: UInt32 = 0
    /// Sequence timed for an RTT sample without timestamps (Karn), and when it was sent.
    var rtSeq: UInt32 = 0
    var rtStart: UInt64 = 0
    /// Retransmissions of the current segment (the backoff shift).
    var backoff = 0
    var persistShift = 0
    var keepaliveSent = 0
    var lastReceived: UInt64 = 0

    // Timers: absolute deadlines in ns, 0 when off.
    var retransmitTimer: UInt64 = 0
    var persistTimer: UInt64 = 0
    var delayedACKTimer: UInt64 = 0
    var keepaliveTimer: UInt64 = 0
    /// TIME-WAIT, FIN-WAIT-2 of an orphan.
    var closeTimer: UInt64 = 0
    /// The earliest deadline of a socket call sleeping on this PCB (its expiry wakes the
    /// sleepers, which check their own deadlines).
    var socketTimer: UInt64 = 0

    // Output requests.
    var ackNow = false
    /// On its CPU's deferred-output list for the current receive batch.
    var outputDeferred = false
    /// On its CPU's held-output list: a small socket write waits for the writing thread to
    /// give up the CPU (``TCPTable/held``).
    var outputHeld = false
    /// Full-sized segments received since the last ACK we sent.
    var unackedSegments = 0
    /// The next output sends one byte beyond a zero window (persist probe).
    var forceProbe = false

    // Socket side.
    var noDelay = false
    var keepalive = false
    /// The socket closed; the stack finishes the connection on its own.
    var orphaned = false
    /// The error the socket reports next.
    var error: TCPError?
    /// A socket (``TCPConnection``) holds this PCB.
    var hasSocket = false
    /// Made by a listener (passive open).
    var passive = false
    /// Listener that made this PCB, until it is accepted.
    weak var listener: TCPListener?
    /// Socket threads asleep on this PCB that no ``wake()`` has woken yet.
    var waiters = 0
    /// Bumped by every ``wake()`` that wakes someone: a sleeper that comes back with it
    /// unchanged was not woken by ``wake()`` (timeout, interlock, cancellation) and takes
    /// itself off ``waiters``.
    var wakeGeneration: UInt32 = 0
    /// Whether the PCB is in its CPU's table.
    var inTable = false
    /// The deadline of this PCB's live entry in its CPU's ``TCPTimerHeap`` (0: none).
    var scheduled: UInt64 = 0

    init(stack: NetStack, key: TCPFlowKey, cpu: Int, configuration c: TCPConfiguration, mtu: Int) {
        self.stack = stack
        self.key = key
        self.cpu = cpu
        sendStorage = .allocate(capacity: 1)
        sendStorage.initialize(to: TCPByteRing(capacity: c.sendBufferSize))
        receiveLimit = max(c.receiveBufferSize, 1)
        sendLimit = max(c.sendBufferLimit, c.sendBufferSize)
        let initial = min(max(c.initialReceiveBufferSize, 4096), receiveLimit)
        receiveStorage = .allocate(capacity: 1)
        receiveStorage.initialize(to: TCPByteRing(capacity: initial))
        bufferBytes = c.sendBufferSize + initial
        rtt = TCPRTTEstimator(initial: c.initialRTO.ns, minimum: c.minimumRTO.ns, maximum: c.maximumRTO.ns)
        mss = min(536, mtu - 40)
        cc = TCPCongestionControl(algorithm: c.congestionControl, mss: mss, initialWindow: c.initialWindow)
        var s: UInt8 = 0
        while s < TCPOptions.maxWindowScale, (65535 << Int(s)) < c.receiveBufferSize { s += 1 }
        rcvScale = s
    }

    deinit {
        sendBuffer.release()
        receiveBuffer.release()
        reassembly.removeAll()
        sendStorage.deinitialize(count: 1)
        sendStorage.deallocate()
        receiveStorage.deinitialize(count: 1)
        receiveStorage.deallocate()
    }

    /// Debug check that the caller runs on the owner CPU.
    @inline(__always) func assertOwner() {
        assert(CPU.current.map { $0.id == cpu && $0.system === stack.system } ?? false,
               "TCP connection used off its owner CPU \(cpu)")
    }

    /// Moves to `s`, keeping the per-CPU state gauges right. Entering ESTABLISHED
    /// allocates the buffers (half-open connections hold none).
    func setState(_ s: TCPState) {
        guard s != state else { return }
        if s == .established { allocateBuffers() }
        if let g = state.gauge { stack.counters.add(g, cpu: cpu, -1) }
        if let g = s.gauge { stack.counters.add(g, cpu: cpu, 1) }
        state = s
        wake()
    }

    /// Wakes socket threads waiting on this connection. They all sleep on this CPU (socket
    /// calls run only on the owner), so they are woken one by one: a `wakeupOne` that finds
    /// a sleeper on the calling CPU looks at no other CPU and sends no IPI, where `wakeup`
    /// would signal every CPU whose sleepers share the channel's slot. A thread is woken
    /// once: the segments that arrive before it runs find ``waiters`` at zero and cost a
    /// compare (a `wakeupOne` that found nobody here would go on to scan the other CPUs'
    /// sleep masks and might send an IPI for another connection's sleeper in the slot).
    @inline(__always) func wake() {
        guard waiters > 0 else { return }
        let n = waiters
        waiters = 0
        wakeGeneration &+= 1
        for _ in 0..<n { LWKT.wakeupOne(WaitChannel(self), in: stack.system) }
    }

    /// The receive window we can offer now (bytes), never shrinking the right edge
    /// already advertised (RFC 9293 §3.8.6.2.2).
    var receiveWindow: Int {
        let free = max(0, receiveBuffer.free)
        let advertised = max(0, TCPSequence.distance(rcvNxt, rcvAdv))
        return max(free, advertised)
    }

    /// Bytes sent and not yet acknowledged.
    var flight: Int { TCPSequence.distance(sndUna, sndMax) }

    /// The sequence number our FIN takes (valid once ``finQueued``).
    var finSeq: UInt32 { sndBase &+ UInt32(sendBuffer.count) }

    /// The earliest armed timer, or 0.
    var nextDeadline: UInt64 {
        var d = UInt64.max
        if retransmitTimer != 0 { d = min(d, retransmitTimer) }
        if persistTimer != 0 { d = min(d, persistTimer) }
        if delayedACKTimer != 0 { d = min(d, delayedACKTimer) }
        if keepaliveTimer != 0 { d = min(d, keepaliveTimer) }
        if closeTimer != 0 { d = min(d, closeTimer) }
        if socketTimer != 0 { d = min(d, socketTimer) }
        return d == .max ? 0 : d
    }

    /// The connection's timers.
    enum Timer { case retransmit, persist, delayedACK, keepalive, close }

    /// Arms a timer and tells the CPU's schedule.
    @inline(__always) func arm(_ timer: Timer, at deadline: UInt64) {
        let d = max(1, deadline)
        switch timer {
        case .retransmit: retransmitTimer = d
        case .persist: persistTimer = d
        case .delayedACK: delayedACKTimer = d
        case .keepalive: keepaliveTimer = d
        case .close: closeTimer = d
        }
        stack.cpus[cpu].tcp.schedule(d, self)
    }

    /// Arms the socket-deadline timer for a socket call that sleeps until `deadline`.
    @inline(__always) func armSocketDeadline(_ deadline: UInt64) {
        if socketTimer == 0 || deadline < socketTimer {
            socketTimer = max(1, deadline)
            stack.cpus[cpu].tcp.schedule(socketTimer, self)
        }
    }

    /// Allocates the send and receive buffers and charges them to the CPU.
    func allocateBuffers() {
        guard !sendBuffer.isAllocated, sendBuffer.capacity > 0 else { return }
        sendBuffer.allocate()
        receiveBuffer.allocate()
        stack.cpus[cpu].tcp.bufferBytes += bufferBytes
    }

    /// Receive-buffer auto-tuning, called when the socket reads: a reader that finds the
    /// buffer more than three quarters full is being held back by the window, so the buffer
    /// doubles (up to ``receiveLimit``, within the CPU's memory limit). Returns whether it grew.
    @discardableResult
    func autotuneReceiveBuffer() -> Bool {
        guard receiveBuffer.isAllocated, receiveBuffer.capacity < receiveLimit,
              receiveBuffer.count * 4 >= receiveBuffer.capacity * 3 else { return false }
        let t = stack.cpus[cpu].tcp
        let grown = min(receiveBuffer.capacity * 2, receiveLimit)
        let delta = grown - receiveBuffer.capacity
        guard t.bufferBytes + delta <= stack.configuration.tcp.memoryLimitPerCPU else { return false }
        var bigger = TCPByteRing(capacity: grown)
        bigger.allocate()
        guard let base = bigger.base else { return false }
        let n = receiveBuffer.count
        guard receiveBuffer.peek(at: 0, n, into: base) else { bigger.release(); return false }
        bigger.adopt(count: n)
        receiveBuffer.release()
        receiveBuffer = bigger
        bufferBytes += delta
        t.bufferBytes += delta
        return true
    }

    /// Send-buffer auto-tuning, called by a writer that found the buffer full: when the
    /// window (the smaller of the congestion and the peer's window) could carry at least
    /// half of it, the buffer and not the network limits the sender, so it doubles (up to
    /// ``sendLimit``, within the CPU's memory limit). Returns whether it grew.
    @discardableResult
    func autotuneSendBuffer() -> Bool {
        guard sendBuffer.isAllocated, sendBuffer.capacity < sendLimit, sendBuffer.free == 0,
              min(cc.cwnd, sndWnd) * 2 > sendBuffer.capacity else { return false }
        let t = stack.cpus[cpu].tcp
        let grown = min(sendBuffer.capacity * 2, sendLimit)
        let delta = grown - sendBuffer.capacity
        guard t.bufferBytes + delta <= stack.configuration.tcp.memoryLimitPerCPU else { return false }
        var bigger = TCPByteRing(capacity: grown)
        bigger.allocate()
        guard let base = bigger.base else { return false }
        let n = sendBuffer.count
        guard sendBuffer.peek(at: 0, n, into: base) else { bigger.release(); return false }
        bigger.adopt(count: n)
        sendBuffer.release()
        sendBuffer = bigger
        bufferBytes += delta
        t.bufferBytes += delta
        return true
    }

    /// Frees the buffers once neither side needs them.
    func releaseBuffers() {
        if sendBuffer.isAllocated { stack.cpus[cpu].tcp.bufferBytes -= bufferBytes }
        sendBuffer.release()
        receiveBuffer.release()
        reassembly.removeAll()
    }
}
