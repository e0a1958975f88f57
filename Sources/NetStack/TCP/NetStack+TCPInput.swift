import CLibellula
import LWKT

/// TCP input (RFC 9293 §3.10.7 "SEGMENT ARRIVES") on the CPU that owns the segment's
/// flow. Every segment ends in exactly one answer: processed, dropped (one drop counter),
/// acknowledged, challenge-acknowledged (RFC 5961) or reset.
extension NetStack {
    /// Milliseconds for timestamps.
    @inline(__always) static func tsClock(_ nowNs: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: nowNs / 1_000_000) }

    func tcpInput(_ m0: Mbuf, _ h: IPv4Header, _ st: NetCPU) {
        counters.add(.tcpSegmentsReceived, cpu: st.id)
        let hl = h.headerLength
        let total = h.totalLength - hl
        guard total >= TCPHeader.minimumSize, m0.packetLength >= hl + total else { return drop(m0, .dropTruncated, st) }
        // A coalesced segment (GRO/LRO from the device) arrives as a chain; TCP works on
        // one buffer, so such a segment is copied into a cluster once.
        guard let m = m0.next == nil ? m0 : tcpLinearize(m0, st) else { return }
        guard m.length >= hl + TCPHeader.minimumSize else { return drop(m, .dropTruncated, st) }
        let th: TCPHeader
        switch TCPHeader.parse(m.data + hl, count: total) {
        case .success(let v): th = v
        case .failure(.truncated): return drop(m, .dropTruncated, st)
        case .failure: return drop(m, .dropBadTransportHeader, st)
        }
        guard h.destination == configuration.address, !h.source.isMulticast else { return drop(m, .dropNotForUs, st) }
        if m.flags.isDisjoint(with: [.checksumVerified, .checksumPartial]) {
            guard TCPHeader.verify(m, from: hl, length: total, source: h.source, destination: h.destination) else {
                return drop(m, .dropBadTransportChecksum, st)
            }
        }
        guard th.sourcePort != 0, th.destinationPort != 0 else { return drop(m, .dropBadTransportHeader, st) }
        m.trimFront(hl + th.headerLength)
        m.length = total - th.headerLength
        m.flags.remove([.checksumPartial, .checksumVerified, .hashValid, .forwarded])
        let key = TCPFlowKey(local: h.destination, localPort: th.destinationPort, remote: h.source, remotePort: th.sourcePort)
        if let u = st.tcp.lookup(key) {
            // Unretained: the table holds the PCB, or `detached` does once it leaves it.
            return u._withUnsafeGuaranteedRef { tp in
                if tp.state == .timeWait, th.flags.contains(.syn), !th.flags.contains(.ack), !th.flags.contains(.rst),
                   tcpTimeWaitAcceptsSYN(tp, th), let l = st.tcp.listeners[key.localPort] {
                    // A new incarnation of a connection in TIME-WAIT (RFC 9293 §3.6.1,
                    // RFC 6191).
                    let floor = tp.sndMax &+ 250_000
                    tcpDetach(tp, st)
                    return tcpListenInput(l, key, th, m, st, issFloor: floor)
                }
                return tcpProcess(tp, th, m, st)
            }
        }
        if let l = st.tcp.listeners[key.localPort], !l.isClosed {
            return tcpListenInput(l, key, th, m, st, issFloor: nil)
        }
        tcpRespondWithoutConnection(key, th, length: m.length, st)
        drop(m, .dropNoSocket, st)
    }

    /// Whether a SYN may open a new incarnation of a connection in TIME-WAIT. With
    /// timestamps on the old connection and in the SYN, a newer timestamp than the last
    /// one seen (or an equal one with a higher sequence number) proves the SYN is no old
    /// duplicate (RFC 6191 §2), whatever its ISN; otherwise its sequence number must lie
    /// above the old connection's (RFC 9293 §3.6.1, the BSD rule).
    func tcpTimeWaitAcceptsSYN(_ tp: TCPControlBlock, _ th: TCPHeader) -> Bool {
        if tp.tsEnabled, configuration.tcp.timestamps, let ts = th.options.timestamp {
            if TCPSequence.gt(ts.value, tp.tsRecent) { return true }
            if ts.value == tp.tsRecent { return TCPSequence.gt(th.sequence, tp.rcvNxt) }
            return false
        }
        return TCPSequence.gt(th.sequence, tp.rcvNxt)
    }

    /// A one-buffer copy of a chained packet (the chain is freed), or nil (counted) when
    /// no cluster is free.
    func tcpLinearize(_ m: Mbuf, _ st: NetCPU) -> Mbuf? {
        let n = m.packetLength
        guard let c = pool.allocate(forBytes: n, headroom: 0), let p = c.append(n), m.copy(from: 0, count: n, into: p) else {
            drop(m, .dropNoBuffers, st)
            return nil
        }
        c.flags = m.flags.subtracting(.cluster).union(c.flags.intersection(.cluster))
        c.words = m.words
        m.free()
        return c
    }

    /// The answer to a segment for no connection (RFC 9293 §3.10.7.1): a reset unless it
    /// is one.
    func tcpRespondWithoutConnection(_ key: TCPFlowKey, _ th: TCPHeader, length: Int, _ st: NetCPU) {
        guard !th.flags.contains(.rst) else { return }
        if th.flags.contains(.ack) {
            tcpEmit(key, seq: th.acknowledgment, ack: 0, flags: .rst, window: 0, options: TCPOptions(), st)
        } else {
            let len = UInt32(length) &+ (th.flags.contains(.syn) ? 1 : 0) &+ (th.flags.contains(.fin) ? 1 : 0)
            tcpEmit(key, seq: 0, ack: th.sequence &+ len, flags: [.rst, .ack], window: 0, options: TCPOptions(), st)
        }
        counters.add(.tcpResetsSent, cpu: st.id)
    }

    // MARK: - LISTEN

    func tcpListenInput(_ l: TCPListener, _ key: TCPFlowKey, _ th: TCPHeader, _ m: Mbuf, _ st: NetCPU, issFloor: UInt32?) {
        let f = th.flags
        if f.contains(.rst) { return drop(m, .dropTCPBadFlags, st) }
        if f.contains(.ack) {
            if !f.contains(.syn), let tp = tcpCookieConnection(l, key, th, st) {
                return tcpProcess(tp, th, m, st)
            }
            tcpRespondWithoutConnection(key, th, length: m.length, st)
            return drop(m, f.contains(.syn) ? .dropTCPBadFlags : .dropTCPBadCookie, st)
        }
        guard f.contains(.syn), !f.contains(.fin) else { return drop(m, .dropTCPBadFlags, st) }
        let c = configuration.tcp
        if l.synCount >= c.synQueueLimit {
            tcpSendCookie(key, th, st)
            return m.free()
        }
        guard l.pending.count < l.backlog else { return drop(m, .dropTCPListenOverflow, st) }
        guard let tp = tcpMakeConnection(key, st) else { return drop(m, .dropTCPMemory, st) }
        var iss = tcpSecrets.initialSequence(key, nowNs: st.now)
        if let floor = issFloor, TCPSequence.lt(iss, floor) { iss = floor }
        tp.iss = iss
        tp.sndUna = iss; tp.sndNxt = iss; tp.sndMax = iss; tp.sndBase = iss &+ 1; tp.recover = iss
        tp.irs = th.sequence
        tp.rcvNxt = th.sequence &+ 1
        tp.rcvAdv = tp.rcvNxt
        tp.lastAckSent = tp.rcvNxt
        tcpApplySYNOptions(tp, th.options, passive: true, st)
        tp.sndWnd = Int(th.window)
        tp.maxSndWnd = tp.sndWnd
        tp.sndWl1 = th.sequence; tp.sndWl2 = 0
        tp.listener = l
        tp.passive = true
        l.synCount += 1
        tcpInsert(tp, st)
        tp.setState(.synReceived)
        tcpOutput(tp, st)
        m.free()
    }

    /// A new PCB for `key` on this CPU, or nil when its buffers would not fit the CPU's
    /// memory limit (they are allocated and charged when it is established).
    func tcpMakeConnection(_ key: TCPFlowKey, _ st: NetCPU) -> TCPControlBlock? {
        let c = configuration.tcp
        let need = c.sendBufferSize + min(c.initialReceiveBufferSize, c.receiveBufferSize)
        guard st.tcp.bufferBytes + need <= c.memoryLimitPerCPU else { return nil }
        return TCPControlBlock(stack: self, key: key, cpu: st.id, configuration: c, mtu: mtu)
    }

    func tcpInsert(_ tp: TCPControlBlock, _ st: NetCPU) {
        st.tcp.last = nil
        st.tcp.connections[tp.key] = tp
        tp.inTable = true
    }

    /// Takes the options of the peer's SYN (or SYN-ACK) and sizes the segments.
    func tcpApplySYNOptions(_ tp: TCPControlBlock, _ o: TCPOptions, passive: Bool, _ st: NetCPU) {
        let c = configuration.tcp
        tp.peerMSS = Int(o.mss ?? 536)
        if c.windowScaling, let ws = o.windowScale {
            tp.sndScale = ws
            tp.wantScale = true
        } else {
            tp.sndScale = 0
            tp.rcvScale = 0
            tp.wantScale = false
        }
        tp.sackEnabled = c.sack && o.sackPermitted
        if c.timestamps, let ts = o.timestamp {
            tp.tsEnabled = true
            tp.tsRecent = ts.value
            tp.tsRecentAge = st.now
        } else {
            tp.tsEnabled = false
        }
        tcpSetMSS(tp)
    }

    func tcpSetMSS(_ tp: TCPControlBlock) {
        let m = max(64, min(tp.peerMSS, mtu - 40) - (tp.tsEnabled ? 12 : 0))
        tp.mss = m
        tp.cc.mss = m
        tp.cc.cwnd = max(2, configuration.tcp.initialWindow) * m
    }

    /// Answers a SYN statelessly with a cookie (the SYN queue is full). The options the
    /// connection needs later (window scale, SACK) ride in the low bits of our timestamp.
    func tcpSendCookie(_ key: TCPFlowKey, _ th: TCPHeader, _ st: NetCPU) {
        let c = configuration.tcp
        let peerMSS = th.options.mss ?? 536
        let iss = tcpSecrets.cookie(key, peerISN: th.sequence, mss: min(peerMSS, UInt16(mtu - 40)), nowNs: st.now)
        var o = TCPOptions()
        o.mss = UInt16(mtu - 40)
        let scale = tcpReceiveScale
        if let ts = th.options.timestamp, c.timestamps {
            let ws: UInt32 = (c.windowScaling && th.options.windowScale != nil) ? UInt32(th.options.windowScale ?? 0) : 0xf
            let sackBit: UInt32 = (c.sack && th.options.sackPermitted) ? 0x10 : 0
            let clock = (Self.tsClock(st.now) &- 32) & ~0x1f
            o.timestamp = (clock | sackBit | ws, ts.value)
            if ws != 0xf { o.windowScale = scale }
            o.sackPermitted = sackBit != 0
        }
        let window = UInt16(min(c.initialReceiveBufferSize, c.receiveBufferSize, 65535))
        tcpEmit(key, seq: iss, ack: th.sequence &+ 1, flags: [.syn, .ack], window: window, options: o, st)
        counters.add(.tcpCookiesSent, cpu: st.id)
    }

    /// The shift we announce for our receive window.
    var tcpReceiveScale: UInt8 {
        var s: UInt8 = 0
        while s < TCPOptions.maxWindowScale, (65535 << Int(s)) < configuration.tcp.receiveBufferSize { s += 1 }
        return s
    }

    /// An ACK for a listener: when it returns a valid cookie, the connection it completes.
    func tcpCookieConnection(_ l: TCPListener, _ key: TCPFlowKey, _ th: TCPHeader, _ st: NetCPU) -> TCPControlBlock? {
        let peerISN = th.sequence &- 1
        guard let mss = tcpSecrets.validate(cookie: th.acknowledgment &- 1, key, peerISN: peerISN, nowNs: st.now) else { return nil }
        guard l.pending.count < l.backlog, let tp = tcpMakeConnection(key, st) else { return nil }
        let c = configuration.tcp
        tp.iss = th.acknowledgment &- 1
        tp.sndUna = th.acknowledgment; tp.sndNxt = tp.sndUna; tp.sndMax = tp.sndUna; tp.sndBase = tp.sndUna
        tp.recover = tp.sndUna
        tp.irs = peerISN
        tp.rcvNxt = th.sequence
        tp.rcvAdv = tp.rcvNxt
        tp.lastAckSent = tp.rcvNxt
        tp.peerMSS = Int(mss)
        if let ts = th.options.timestamp, c.timestamps {
            let ws = ts.echo & 0xf
            tp.tsEnabled = true
            tp.tsRecent = ts.value
            tp.tsRecentAge = st.now
            tp.sackEnabled = ts.echo & 0x10 != 0
            if ws != 0xf { tp.sndScale = UInt8(min(ws, 14)); tp.rcvScale = tcpReceiveScale; tp.wantScale = true } else { tp.sndScale = 0; tp.rcvScale = 0 }
        } else {
            tp.sndScale = 0; tp.rcvScale = 0
        }
        tcpSetMSS(tp)
        tp.sndWnd = Int(th.window) << Int(tp.sndScale)
        tp.maxSndWnd = tp.sndWnd
        tp.sndWl1 = th.sequence; tp.sndWl2 = th.acknowledgment
        tcpInsert(tp, st)
        tp.setState(.established)
        counters.add(.tcpCookiesAccepted, cpu: st.id)
        counters.add(.tcpPassiveOpens, cpu: st.id)
        tp.listener = l
        tp.passive = true
        l.enqueue(tp)
        return tp
    }

    // MARK: - Connections

    func tcpProcess(_ tp: TCPControlBlock, _ th: TCPHeader, _ m: Mbuf, _ st: NetCPU) {
        assert(tp.cpu == st.id, "segment of a CPU \(tp.cpu) connection processed on CPU \(st.id)")
        let now = st.now
        tp.lastReceived = now
        tp.keepaliveSent = 0
        switch tp.state {
        case .closed, .listen:
            return drop(m, .dropTCPBadFlags, st)
        case .synSent:
            return tcpSynSentInput(tp, th, m, st)
        default:
            break
        }
        var flags = th.flags
        var seq = th.sequence
        var len = m.length
        let o = th.options

        // RFC 5961 §4: a SYN on a synchronized connection gets a challenge ACK, whatever its
        // sequence number. A retransmitted SYN in SYN-RECEIVED gets the SYN-ACK again.
        if flags.contains(.syn), tp.state == .synReceived, !tp.passive, flags.contains(.ack), seq == tp.irs,
           th.acknowledgment == tp.iss &+ 1, !flags.contains(.rst) {
            // Simultaneous open: the peer's SYN-ACK acknowledges our SYN. Its SYN is old
            // news; the rest is processed as an ACK.
            flags.remove(.syn)
            seq = seq &+ 1
        }
        if flags.contains(.syn) {
            if tp.state == .synReceived, !flags.contains(.ack), seq == tp.irs {
                tp.sndNxt = tp.iss
                tcpOutput(tp, st)
                return drop(m, .dropTCPDuplicate, st)
            }
            tcpChallengeACK(tp, st)
            return m.free()
        }
        // PAWS (RFC 7323 §5.3).
        if tp.tsEnabled, let ts = o.timestamp, !flags.contains(.rst), TCPSequence.lt(ts.value, tp.tsRecent),
           now &- tp.tsRecentAge < 24 * 86_400 * 1_000_000_000 {
            tp.ackNow = true
            tcpOutput(tp, st)
            return drop(m, .dropTCPPAWS, st)
        }
        // Acceptability (RFC 9293 §3.10.7.4, first check).
        let wnd = tp.receiveWindow
        let segLen = len + (flags.contains(.fin) ? 1 : 0)
        let inWindow: (UInt32) -> Bool = { s in
            TCPSequence.le(tp.rcvNxt, s) && TCPSequence.lt(s, tp.rcvNxt &+ UInt32(wnd))
        }
        var acceptable: Bool
        if segLen == 0 {
            acceptable = wnd == 0 ? seq == tp.rcvNxt : inWindow(seq)
        } else if wnd == 0 {
            acceptable = false
        } else {
            acceptable = inWindow(seq) || inWindow(seq &+ UInt32(segLen) &- 1)
        }
        if !acceptable, wnd == 0, seq == tp.rcvNxt {
            // Zero window: the data cannot be taken, but its ACK and RST bits count.
            len = 0
            m.length = 0
            flags.remove(.fin)
            tp.ackNow = true
            acceptable = true
        }
        if !acceptable {
            if !flags.contains(.rst) {
                if tp.state == .timeWait, flags.contains(.fin) { arm(timeWait: tp, st) }
                tp.ackNow = true
                tcpOutput(tp, st)
            }
            return drop(m, TCPSequence.lt(seq &+ UInt32(segLen), tp.rcvNxt) || segLen > 0 && TCPSequence.le(seq &+ UInt32(segLen), tp.rcvNxt) ? .dropTCPDuplicate : .dropTCPOutOfWindow, st)
        }
        // RST (RFC 5961 §3.2): exact match resets, otherwise a challenge ACK.
        if flags.contains(.rst) {
            if seq != tp.rcvNxt {
                tcpChallengeACK(tp, st)
                return m.free()
            }
            counters.add(.tcpResetsReceived, cpu: st.id)
            switch tp.state {
            case .synReceived:
                tp.error = tp.passive ? nil : .connectionRefused
                if tp.passive { tp.orphaned = true }
            case .established, .finWait1, .finWait2, .closeWait:
                tp.error = .connectionReset
            case .timeWait:
                // RFC 1337: a reset does not end TIME-WAIT early.
                return drop(m, .dropTCPReset, st)
            default:
                break
            }
            tcpDetach(tp, st)
            return m.free()
        }
        // Trim what was received already, then what lies past the window.
        if TCPSequence.lt(seq, tp.rcvNxt) {
            let dup = TCPSequence.distance(seq, tp.rcvNxt)
            let d = min(dup, len)
            m.trimFront(d)
            len -= d
            seq = seq &+ UInt32(d)
            if dup > d { flags.remove(.fin) }
            tp.ackNow = true
        }
        let room = max(0, wnd - TCPSequence.distance(tp.rcvNxt, seq))
        if len > room {
            m.length = room
            len = room
            flags.remove(.fin)
            tp.ackNow = true
        }
        // Timestamps: remember the peer's latest (RFC 7323 §4.3).
        if tp.tsEnabled, let ts = o.timestamp, TCPSequence.ge(ts.value, tp.tsRecent), TCPSequence.le(seq, tp.lastAckSent) {
            tp.tsRecent = ts.value
            tp.tsRecentAge = now
        }
        // ACK.
        guard flags.contains(.ack) else { return drop(m, .dropTCPBadFlags, st) }
        let ack = th.acknowledgment
        if tp.state == .synReceived {
            guard TCPSequence.lt(tp.sndUna, ack), TCPSequence.le(ack, tp.sndMax) else {
                tcpEmit(tp.key, seq: ack, ack: 0, flags: .rst, window: 0, options: TCPOptions(), st)
                counters.add(.tcpResetsSent, cpu: st.id)
                return drop(m, .dropTCPBadACK, st)
            }
            tp.sndWnd = Int(th.window) << Int(tp.sndScale)
            tp.maxSndWnd = max(tp.maxSndWnd, tp.sndWnd)
            tp.sndWl1 = seq; tp.sndWl2 = ack
            tp.setState(.established)
            counters.add(.tcpPassiveOpens, cpu: st.id)
            if tp.passive {
                guard let l = tp.listener, !l.isClosed else {
                    tp.orphaned = true
                    tcpAbort(tp, st)
                    return m.free()
                }
                l.synCount -= 1
                l.enqueue(tp)
            }
        }
        if TCPSequence.gt(ack, tp.sndMax) || TCPSequence.lt(ack, tp.sndUna &- UInt32(max(tp.maxSndWnd, 65535))) {
            // RFC 5961 §5.2: an ACK of data never sent (or far too old) is answered and dropped.
            tp.ackNow = true
            tcpOutput(tp, st)
            return drop(m, .dropTCPBadACK, st)
        }
        tcpAckInput(tp, th, ack: ack, seq: seq, length: len, fin: flags.contains(.fin), st)
        if !tp.inTable && tp.state == .closed { return m.free() }
        switch tp.state {
        case .finWait1 where tp.finAcked:
            tp.setState(.finWait2)
            if tp.orphaned { tp.arm(.close, at: now &+ configuration.tcp.finWait2Timeout.ns) }
        case .closing where tp.finAcked:
            enterTimeWait(tp, st)
        case .lastAck where tp.finAcked:
            tcpDetach(tp, st)
            return m.free()
        default:
            break
        }
        // Text.
        var consumed = false
        if len > 0 {
            if tp.state.canReceive {
                if seq == tp.rcvNxt && tp.reassembly.isEmpty {
                    let n = tp.orphaned ? len : tp.receiveBuffer.write(packet: m, offset: 0, count: len)
                    tp.rcvNxt = tp.rcvNxt &+ UInt32(n)
                    if n < len { flags.remove(.fin); tp.ackNow = true }
                    tp.unackedSegments += 1
                    // Every second segment is acknowledged (RFC 9293 §3.8.6.3). Inside a
                    // receive batch the ACK goes out once, at the batch's end, as a receiver
                    // with GRO acknowledges a coalesced segment once; like GRO's 64 KB
                    // aggregate, no ACK covers more than `stretchACKLimit` bytes.
                    if tp.unackedSegments >= 2,
                       !st.tcp.batching || TCPSequence.distance(tp.lastAckSent, tp.rcvNxt) >= Self.stretchACKLimit {
                        tp.ackNow = true
                    }
                    tp.wake()
                } else {
                    // Out of order, or it fills a hole: queue and acknowledge at once.
                    tp.ackNow = true
                    consumed = true
                    switch tp.reassembly.insert(m, seq: seq, fin: flags.contains(.fin), limit: configuration.tcp.outOfOrderLimit) {
                    case .queued: counters.add(.tcpOutOfOrderQueued, cpu: st.id)
                    case .duplicate: counters.add(.dropTCPDuplicate, cpu: st.id)
                    case .full: counters.add(.dropTCPOutOfOrderFull, cpu: st.id)
                    }
                    flags.remove(.fin)
                    tcpDrainReassembly(tp, st)
                }
            } else {
                tp.ackNow = true
            }
        }
        // FIN, in order.
        if flags.contains(.fin), seq &+ UInt32(len) == tp.rcvNxt || (len == 0 && seq == tp.rcvNxt) {
            tcpFINReceived(tp, st)
        }
        if !consumed { m.free() }
        if tp.inTable, !tp.ackNow, tp.unackedSegments > 0, tp.delayedACKTimer == 0 {
            tp.arm(.delayedACK, at: now &+ configuration.tcp.delayedACK.ns)
        }
        guard tp.inTable else { return }
        if st.tcp.batching, !tp.ackNow {
            // Nothing to answer at once (in-order data, an ACK): output at the batch's end.
            if !tp.outputDeferred {
                tp.outputDeferred = true
                st.tcp.deferred.append(tp)
            }
        } else {
            tcpOutput(tp, st)
        }
    }

    /// The most new data, in bytes, that one ACK of a receive batch may acknowledge (the
    /// size of a GRO aggregate): past it the ACK goes out at once, mid-batch.
    static let stretchACKLimit = 65_535

    /// Starts a receive batch on this CPU (see ``TCPTable/batching``).
    @inline(__always) func tcpBeginBatch(_ st: NetCPU) { st.tcp.batching = true }

    /// Holds a small socket write's output until the writing job gives up the CPU (see
    /// ``TCPTable/held``). False when it cannot be held (not on a CPU): send it now.
    @inline(__always)
    func tcpHoldOutput(_ tp: TCPControlBlock, _ st: NetCPU) -> Bool {
        guard st.heldOutput.arm() else { return false }
        if !tp.outputHeld {
            tp.outputHeld = true
            st.tcp.held.append(tp)
        }
        return true
    }

    /// Sends the held output of CPU `st` (its park flush: the writing job has just given
    /// up the CPU, and no other job has run since).
    func tcpFlushHeld(_ st: NetCPU) {
        let t = st.tcp
        guard !t.held.isEmpty else { return }
        let c = lb_now_coarse_ns()
        if c > st.now { st.now = c }
        for tp in t.held {
            tp.outputHeld = false
            if tp.inTable { tcpOutput(tp, st) }
        }
        t.held.removeAll(keepingCapacity: true)
    }

    /// The park flush of every CPU's ``NetCPU/heldOutput``: context is the stack.
    static let flushHeldOutput: ParkFlushFunction = { ctx, cpu in
        guard let ctx else { return }
        Unmanaged<NetStack>.fromOpaque(ctx)._withUnsafeGuaranteedRef { stack in
            guard cpu < stack.cpuCount else { return }
            stack.tcpFlushHeld(stack.cpus[cpu])
        }
    }

    /// Ends a receive batch: the deferred output of each connection, with an ACK where two
    /// or more segments wait for one (the delayed-ACK timer covers a single one).
    func tcpEndBatch(_ st: NetCPU) {
        let t = st.tcp
        t.batching = false
        guard !t.deferred.isEmpty else { t.reap(); return }
        for tp in t.deferred {
            tp.outputDeferred = false
            guard tp.inTable else { continue }
            if tp.unackedSegments >= 2 { tp.ackNow = true }
            tcpOutput(tp, st)
        }
        t.deferred.removeAll(keepingCapacity: true)
        t.reap()
    }

    /// Moves queued segments that are now in order into the receive buffer.
    func tcpDrainReassembly(_ tp: TCPControlBlock, _ st: NetCPU) {
        while let s = tp.reassembly.popReady(tp.rcvNxt) {
            let end = TCPReassemblyQueue.end(s)
            let fin = TCPReassemblyQueue.hasFIN(s)
            let skip = TCPSequence.distance(TCPReassemblyQueue.seq(s), tp.rcvNxt)
            if TCPSequence.gt(end, tp.rcvNxt) {
                let want = s.length - skip
                let n = tp.orphaned ? want : tp.receiveBuffer.write(packet: s, offset: skip, count: want)
                tp.rcvNxt = tp.rcvNxt &+ UInt32(n)
                tp.wake()
                if n < want { s.free(); continue }
            }
            s.free()
            if fin, end == tp.rcvNxt {
                tcpFINReceived(tp, st)
                tp.reassembly.removeAll()
                break
            }
        }
    }

    /// The peer's FIN, in sequence (RFC 9293 §3.10.7.4, eighth check).
    func tcpFINReceived(_ tp: TCPControlBlock, _ st: NetCPU) {
        guard !tp.finReceived else {
            if tp.state == .timeWait { arm(timeWait: tp, st) }
            tp.ackNow = true
            return
        }
        tp.finReceived = true
        tp.rcvNxt = tp.rcvNxt &+ 1
        tp.ackNow = true
        tp.wake()
        switch tp.state {
        case .synReceived, .established: tp.setState(.closeWait)
        case .finWait1: if tp.finAcked { enterTimeWait(tp, st) } else { tp.setState(.closing) }
        case .finWait2: enterTimeWait(tp, st)
        case .timeWait: arm(timeWait: tp, st)
        default: break
        }
    }

    func enterTimeWait(_ tp: TCPControlBlock, _ st: NetCPU) {
        tp.setState(.timeWait)
        tp.retransmitTimer = 0; tp.persistTimer = 0; tp.keepaliveTimer = 0; tp.delayedACKTimer = 0
        arm(timeWait: tp, st)
        if tp.orphaned { tp.releaseBuffers() }
    }

    func arm(timeWait tp: TCPControlBlock, _ st: NetCPU) {
        tp.arm(.close, at: st.now &+ 2 &* configuration.tcp.msl.ns)
    }

    /// SYN-SENT (RFC 9293 §3.10.7.3).
    func tcpSynSentInput(_ tp: TCPControlBlock, _ th: TCPHeader, _ m: Mbuf, _ st: NetCPU) {
        let f = th.flags
        let ack = th.acknowledgment
        if f.contains(.ack), TCPSequence.le(ack, tp.iss) || TCPSequence.gt(ack, tp.sndMax) {
            if !f.contains(.rst) {
                tcpEmit(tp.key, seq: ack, ack: 0, flags: .rst, window: 0, options: TCPOptions(), st)
                counters.add(.tcpResetsSent, cpu: st.id)
            }
            return drop(m, .dropTCPBadACK, st)
        }
        if f.contains(.rst) {
            guard f.contains(.ack) else { return drop(m, .dropTCPReset, st) }
            counters.add(.tcpResetsReceived, cpu: st.id)
            tp.error = .connectionRefused
            tcpDetach(tp, st)
            return m.free()
        }
        guard f.contains(.syn) else { return drop(m, .dropTCPBadFlags, st) }
        tp.irs = th.sequence
        tp.rcvNxt = th.sequence &+ 1
        tp.rcvAdv = tp.rcvNxt
        tp.lastAckSent = tp.rcvNxt
        tcpApplySYNOptions(tp, th.options, passive: false, st)
        tp.sndWnd = Int(th.window)
        tp.maxSndWnd = tp.sndWnd
        tp.sndWl1 = th.sequence
        tp.sndWl2 = ack
        if f.contains(.ack) {
            tp.sndUna = ack
            if TCPSequence.lt(tp.sndNxt, ack) { tp.sndNxt = ack }
            tp.retransmitTimer = 0
            if tp.rtStart != 0, !tp.tsEnabled { tp.rtt.sample(st.now &- tp.rtStart); tp.rtStart = 0 }
            if tp.tsEnabled, let ts = th.options.timestamp, ts.echo != 0 {
                tp.rtt.sample(UInt64(Self.tsClock(st.now) &- ts.echo) &* 1_000_000)
            }
            tp.backoff = 0
            tp.setState(.established)
            counters.add(.tcpActiveOpens, cpu: st.id)
            if tp.keepalive { tp.arm(.keepalive, at: st.now &+ configuration.tcp.keepaliveIdle.ns) }
            tp.ackNow = true
            let len = m.length
            if len > 0 {
                let n = tp.receiveBuffer.write(packet: m, offset: 0, count: len)
                tp.rcvNxt = tp.rcvNxt &+ UInt32(n)
            }
            if f.contains(.fin), m.length == len { tcpFINReceived(tp, st) }
        } else {
            // Simultaneous open: answer with SYN-ACK from the same ISN.
            tp.setState(.synReceived)
            tp.sndNxt = tp.iss
            tp.retransmitTimer = 0
        }
        m.free()
        tcpOutput(tp, st)
    }

    /// Sends a challenge ACK (RFC 5961 §3.2, §4.2), within the CPU's per-second budget.
    func tcpChallengeACK(_ tp: TCPControlBlock, _ st: NetCPU) {
        let t = st.tcp
        if st.now >= t.challengeReset {
            t.challengeBudget = configuration.tcp.challengeACKsPerSecond
            t.challengeReset = st.now &+ 1_000_000_000
        }
        guard t.challengeBudget > 0 else {
            counters.add(.dropTCPChallengeLimit, cpu: st.id)
            return
        }
        t.challengeBudget -= 1
        counters.add(.tcpChallengeACKs, cpu: st.id)
        tcpSendACK(tp, st)
    }

    // MARK: - ACK processing

    func tcpAckInput(_ tp: TCPControlBlock, _ th: TCPHeader, ack: UInt32, seq: UInt32, length: Int, fin: Bool, _ st: NetCPU) {
        let now = st.now
        let newWindow = Int(th.window) << Int(tp.sndScale)
        var newSACK = false
        if tp.sackEnabled, th.options.sackCount > 0 {
            for i in 0..<th.options.sackCount {
                if tp.sack.add(th.options.sackBlock(i), una: tp.sndUna, max: tp.sndMax) { newSACK = true }
            }
        }
        if TCPSequence.le(ack, tp.sndUna) {
            if ack == tp.sndUna, length == 0, !fin, newWindow == tp.sndWnd, tp.sndMax != tp.sndUna {
                tp.dupAcks += 1
                if tp.inRecovery {
                    if !tp.sackEnabled { tp.cc.cwnd += tp.mss }
                } else if tp.dupAcks >= 3 || (tp.sackEnabled && newSACK && tp.sack.sackedBytes >= 3 * tp.mss) {
                    if TCPSequence.ge(ack, tp.recover) { tcpEnterRecovery(tp, st) } else { tp.dupAcks = 0 }
                }
            } else if ack != tp.sndUna || length > 0 || newWindow != tp.sndWnd {
                tp.dupAcks = tp.inRecovery ? tp.dupAcks : 0
            }
            tcpUpdateWindow(tp, newWindow, seq: seq, ack: ack)
            return
        }
        // New data acknowledged.
        let acked = TCPSequence.distance(tp.sndUna, ack)
        var sampled = false
        if tp.tsEnabled, let ts = th.options.timestamp, ts.echo != 0 {
            let r = Self.tsClock(now) &- ts.echo
            if r < 60_000 { tp.rtt.sample(UInt64(r) &* 1_000_000 + 500_000); sampled = true }
        } else if tp.rtStart != 0, TCPSequence.gt(ack, tp.rtSeq) {
            tp.rtt.sample(now &- tp.rtStart)
            tp.rtStart = 0
            sampled = true
        }
        if sampled { tp.backoff = 0 }
        let ringAcked = min(max(0, TCPSequence.distance(tp.sndBase, ack)), tp.sendBuffer.count)
        tp.sendBuffer.discard(ringAcked)
        tp.sndBase = tp.sndBase &+ UInt32(ringAcked)
        if tp.finSent, TCPSequence.gt(ack, tp.finSeq) { tp.finAcked = true }
        tp.sndUna = ack
        if TCPSequence.lt(tp.sndNxt, ack) { tp.sndNxt = ack }
        if TCPSequence.lt(tp.rxmitNext, ack) { tp.rxmitNext = ack }
        tp.sack.advance(to: ack)
        tp.keepaliveSent = 0
        if tp.inRecovery {
            if TCPSequence.ge(ack, tp.recover) {
                tp.inRecovery = false
                tp.dupAcks = 0
                tp.cc.onRecoveryEnd(flight: tp.flight)
            } else if !tp.sackEnabled {
                // NewReno partial ACK (RFC 6582 §3.2 step 5): retransmit the next hole and
                // deflate the window by what was acknowledged.
                tcpRetransmit(tp, at: tp.sndUna, limit: tp.mss, st)
                tp.cc.cwnd = max(tp.cc.cwnd - acked + tp.mss, tp.mss)
            }
        } else {
            tp.dupAcks = 0
            tp.cc.onAck(acked: ringAcked, nowNs: now, srttNs: tp.rtt.srtt)
        }
        if tp.sndUna == tp.sndMax {
            tp.retransmitTimer = 0
        } else {
            tp.arm(.retransmit, at: now &+ tp.rtt.timeout(backoff: tp.backoff))
        }
        tcpUpdateWindow(tp, newWindow, seq: seq, ack: ack)
        tp.wake()
    }

    func tcpUpdateWindow(_ tp: TCPControlBlock, _ window: Int, seq: UInt32, ack: UInt32) {
        if TCPSequence.lt(tp.sndWl1, seq) || (tp.sndWl1 == seq && TCPSequence.le(tp.sndWl2, ack)) {
            let opened = tp.sndWnd == 0 && window > 0
            tp.sndWnd = window
            tp.sndWl1 = seq
            tp.sndWl2 = ack
            tp.maxSndWnd = max(tp.maxSndWnd, window)
            if window > 0 {
                tp.persistTimer = 0
                tp.persistShift = 0
                if opened { tp.wake() }
            }
        }
    }

    /// Fast retransmit and the start of loss recovery (RFC 5681 §3.2, RFC 6675 §5, RFC 6582).
    func tcpEnterRecovery(_ tp: TCPControlBlock, _ st: NetCPU) {
        tp.inRecovery = true
        tp.recover = tp.sndMax
        tp.cc.onFastLoss(flight: tp.flight)
        if !tp.sackEnabled { tp.cc.cwnd = tp.cc.ssthresh + 3 * tp.mss }
        counters.add(.tcpFastRetransmits, cpu: st.id)
        counters.add(tp.sackEnabled ? .tcpSACKRecoveries : .tcpNewRenoRecoveries, cpu: st.id)
        tp.rtStart = 0
        let n = tcpRetransmit(tp, at: tp.sndUna, limit: tp.mss, st)
        tp.rxmitNext = tp.sndUna &+ UInt32(max(n, 1))
        tp.arm(.retransmit, at: st.now &+ tp.rtt.timeout(backoff: tp.backoff))
    }
}
