/// TCP timers of one CPU: retransmission (RFC 6298), persist (zero-window probes),
/// delayed ACK, keepalive, TIME-WAIT and the orphan FIN-WAIT-2 limit. The protocol thread
/// runs ``tcpTimers(_:)`` when the earliest deadline of its CPU has passed; each PCB keeps
/// absolute deadlines, so arming or cancelling a timer is a store.
extension NetStack {
    func tcpTimers(_ st: NetCPU) {
        let t = st.tcp
        let now = st.now
        t.due.removeAll(keepingCapacity: true)
        // Only the entries whose deadline has passed (the heap's stale entries are skipped).
        while let d = t.timers.earliest, d <= now, let (deadline, tp) = t.timers.pop() {
            guard deadline == tp.scheduled else { continue }
            tp.scheduled = 0
            if tp.inTable { t.due.append(tp) }
        }
        for tp in t.due where tp.inTable {
            tcpFire(tp, st)
            if tp.inTable { let d = tp.nextDeadline; if d != 0 { t.schedule(d, tp) } }
        }
        t.due.removeAll(keepingCapacity: true)
        t.nextTimer = t.timers.earliest ?? .max
    }

    func tcpFire(_ tp: TCPControlBlock, _ st: NetCPU) {
        let now = st.now
        if tp.socketTimer != 0, tp.socketTimer <= now {
            tp.socketTimer = 0
            tp.wake()
        }
        if tp.closeTimer != 0, tp.closeTimer <= now {
            tp.closeTimer = 0
            if tp.state != .timeWait { tp.error = tp.error ?? .timedOut; tcpSendReset(tp, st) }
            tcpDetach(tp, st)
            return
        }
        if tp.retransmitTimer != 0, tp.retransmitTimer <= now {
            tp.retransmitTimer = 0
            tcpRetransmitTimeout(tp, st)
            if !tp.inTable { return }
        }
        if tp.persistTimer != 0, tp.persistTimer <= now {
            tp.persistTimer = 0
            tp.persistShift = min(tp.persistShift + 1, 16)
            tp.sndNxt = tp.sndUna
            tp.forceProbe = true
            tcpOutput(tp, st)
        }
        if tp.delayedACKTimer != 0, tp.delayedACKTimer <= now {
            tp.delayedACKTimer = 0
            if tp.unackedSegments > 0 {
                counters.add(.tcpDelayedACKs, cpu: st.id)
                tp.ackNow = true
                tcpOutput(tp, st)
            }
        }
        if tp.keepaliveTimer != 0, tp.keepaliveTimer <= now {
            tp.keepaliveTimer = 0
            guard tp.keepalive, tp.state == .established || tp.state == .closeWait else { return }
            let c = configuration.tcp
            let idle = now &- tp.lastReceived
            if idle < c.keepaliveIdle.ns && tp.keepaliveSent == 0 {
                tp.arm(.keepalive, at: tp.lastReceived &+ c.keepaliveIdle.ns)
                return
            }
            if tp.keepaliveSent >= c.keepaliveProbes {
                counters.add(.tcpTimeouts, cpu: st.id)
                tp.error = .timedOut
                tcpSendReset(tp, st)
                tcpDetach(tp, st)
                return
            }
            // A probe: one sequence number below SND.UNA, so the peer must answer.
            tp.keepaliveSent += 1
            counters.add(.tcpKeepaliveProbes, cpu: st.id)
            tcpSendSegment(tp, seq: tp.sndUna &- 1, length: 0, flags: .ack, st)
            tp.arm(.keepalive, at: now &+ c.keepaliveInterval.ns)
        }
    }

    /// RTO expiry (RFC 6298 §5.4–5.7, RFC 5681 §3.1): back off, collapse the window,
    /// go back to SND.UNA; after too many tries, drop the connection with ETIMEDOUT.
    func tcpRetransmitTimeout(_ tp: TCPControlBlock, _ st: NetCPU) {
        let c = configuration.tcp
        tp.backoff += 1
        let handshake = tp.state == .synSent || tp.state == .synReceived
        if tp.backoff > (handshake ? c.synRetries : c.maxRetransmissions) {
            counters.add(.tcpTimeouts, cpu: st.id)
            tp.error = .timedOut
            if !handshake || tp.state == .synReceived { tcpSendReset(tp, st) }
            tcpDetach(tp, st)
            return
        }
        counters.add(.tcpRTOExpiries, cpu: st.id)
        tp.rtStart = 0
        if handshake {
            tp.sndNxt = tp.iss
            counters.add(.tcpRetransmits, cpu: st.id)
            tcpOutput(tp, st)
            return
        }
        tp.cc.onTimeout(flight: tp.flight)
        tp.inRecovery = false
        tp.recover = tp.sndMax
        tp.dupAcks = 0
        tp.sack.removeAll()
        tp.sndNxt = tp.sndUna
        tp.rxmitNext = tp.sndUna
        tcpOutput(tp, st)
    }

    /// Sends a reset for a connection being aborted.
    func tcpSendReset(_ tp: TCPControlBlock, _ st: NetCPU) {
        guard tp.state != .closed, tp.state != .listen, tp.state != .synSent else { return }
        tcpEmit(tp.key, seq: tp.sndNxt, ack: tp.rcvNxt, flags: [.rst, .ack], window: 0, options: TCPOptions(), st)
        counters.add(.tcpResetsSent, cpu: st.id)
    }

    /// Aborts: a reset to the peer, then CLOSED.
    func tcpAbort(_ tp: TCPControlBlock, _ st: NetCPU) {
        tcpSendReset(tp, st)
        tcpDetach(tp, st)
    }

    /// Enters CLOSED: out of the table, timers off, queued segments freed; the buffers
    /// go too unless a socket may still read what was received.
    func tcpDetach(_ tp: TCPControlBlock, _ st: NetCPU) {
        if tp.state == .synReceived, let l = tp.listener { l.synCount -= 1 }
        // Not yet accepted: it leaves the accept queue.
        if let l = tp.listener { l.remove(tp) }
        if tp.inTable {
            st.tcp.connections[tp.key] = nil
            tp.inTable = false
            counters.add(.tcpConnectionsClosed, cpu: st.id)
        }
        tp.retransmitTimer = 0; tp.persistTimer = 0; tp.delayedACKTimer = 0; tp.keepaliveTimer = 0; tp.closeTimer = 0
        tp.socketTimer = 0
        tp.reassembly.removeAll()
        tp.sack.removeAll()
        tp.setState(.closed)
        // The buffers go unless a socket may still read what was received.
        if tp.orphaned || !tp.hasSocket { tp.releaseBuffers() }
        tp.wake()
    }
}
