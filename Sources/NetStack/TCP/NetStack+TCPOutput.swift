/// TCP output on the owner CPU: what to send now (data within the send and congestion
/// windows, Nagle, FIN, pure ACKs, window updates, SACK-recovery retransmissions, window
/// probes) and how a segment is built: payload copied from the send buffer into a slab
/// mbuf, header and options written in front, checksum computed or left to the device.
extension NetStack {
    /// Headroom of TCP segments: Ethernet, IPv4 and a TCP header with 40 bytes of options,
    /// plus a virtio-net header.
    static let tcpHeadroom = 128

    /// Sends what the connection may send now.
    func tcpOutput(_ tp: TCPControlBlock, _ st: NetCPU) {
        switch tp.state {
        case .closed, .listen:
            return
        case .synSent, .synReceived:
            if tp.sndNxt == tp.iss {
                tcpSendSegment(tp, seq: tp.iss, length: 0,
                               flags: tp.state == .synSent ? .syn : [.syn, .ack], st)
                tp.sndNxt = tp.iss &+ 1
                tp.sndMax = TCPSequence.max(tp.sndMax, tp.sndNxt)
                if tp.retransmitTimer == 0 {
                    tp.arm(.retransmit, at: st.now &+ tp.rtt.timeout(backoff: tp.backoff))
                }
                if tp.backoff == 0, tp.rtStart == 0 { tp.rtSeq = tp.iss; tp.rtStart = st.now }
            } else if tp.ackNow, tp.state == .synReceived {
                tcpSendACK(tp, st)
            }
            return
        default:
            break
        }
        var budget = 64
        while budget > 0 {
            budget -= 1
            // SACK recovery (RFC 6675 §5): fill holes while the pipe has room.
            var usable: Int
            if tp.inRecovery && tp.sackEnabled {
                let pipe = tp.flight - tp.sack.sackedBytes + tp.sack.holeBytes(from: tp.sndUna, upTo: tp.rxmitNext)
                if pipe >= tp.cc.cwnd { break }
                if let hole = tp.sack.nextHole(from: TCPSequence.max(tp.rxmitNext, tp.sndUna)),
                   TCPSequence.lt(hole.start, tp.sndNxt) {
                    let limit = min(tp.mss, TCPSequence.distance(hole.start, TCPSequence.min(hole.end, tp.sndNxt)))
                    let n = tcpRetransmit(tp, at: hole.start, limit: limit, st)
                    tp.rxmitNext = hole.start &+ UInt32(max(n, 1))
                    continue
                }
                usable = min(tp.cc.cwnd - pipe, tp.sndWnd - TCPSequence.distance(tp.sndUna, tp.sndNxt))
            } else {
                usable = min(tp.sndWnd, tp.cc.cwnd) - TCPSequence.distance(tp.sndUna, tp.sndNxt)
            }
            let off = TCPSequence.distance(tp.sndBase, tp.sndNxt)
            let avail = max(0, tp.sendBuffer.count - off)
            var probe = false
            var forced = false
            if tp.forceProbe {
                // The persist timer fired: send what the window allows even if it is less
                // than a segment (RFC 9293 §3.8.6.2.1's override), or probe a zero window
                // with one byte.
                tp.forceProbe = false
                forced = true
                if usable <= 0, avail > 0 || (tp.finQueued && !tp.finSent) { usable = 1; probe = true }
            }
            // With TSO the device cuts one large segment into MSS-sized ones.
            let segMax = offloadSegmentation && !tp.inRecovery ? tcpTSOLimit(tp) : tp.mss
            let len = max(0, min(avail, usable, segMax))
            let finHere = tp.finQueued && len == avail && TCPSequence.distance(tp.sndNxt, tp.finSeq) == len
                && (TCPSequence.le(tp.sndNxt, tp.finSeq))
            var send = false
            if len > 0 {
                if len >= tp.mss || probe || forced { send = true }
                else if (tp.noDelay || tp.sndNxt == tp.sndUna || tp.inRecovery) && len == avail { send = true }
                else if tp.maxSndWnd > 0, len >= tp.maxSndWnd / 2 { send = true }
                else if TCPSequence.lt(tp.sndNxt, tp.sndMax) { send = true }
                else if finHere { send = true }
            }
            if finHere, usable >= 0 || tp.sndWnd == 0 { send = true }
            if !send && tp.ackNow {
                tcpSendACK(tp, st)
                break
            }
            if !send && tcpWindowUpdateDue(tp) {
                tcpSendACK(tp, st)
                break
            }
            guard send else { break }
            let start = tp.sndNxt
            let rexmit = TCPSequence.lt(start, tp.sndMax)
            var flags: TCPFlags = .ack
            if finHere { flags.insert(.fin) }
            if len > 0 && len == avail { flags.insert(.psh) }
            guard tcpSendSegment(tp, seq: start, length: len, flags: flags, st) else { break }
            if rexmit && len > 0 { counters.add(.tcpRetransmits, cpu: st.id) }
            tp.sndNxt = start &+ UInt32(len) &+ (finHere ? 1 : 0)
            tp.sndMax = TCPSequence.max(tp.sndMax, tp.sndNxt)
            if finHere { tp.finSent = true }
            if probe {
                counters.add(.tcpWindowProbes, cpu: st.id)
                tp.arm(.persist, at: st.now &+ tcpPersistInterval(tp))
                break
            }
            if tp.retransmitTimer == 0 {
                tp.arm(.retransmit, at: st.now &+ tp.rtt.timeout(backoff: tp.backoff))
                tp.persistTimer = 0
            }
            if !rexmit, len > 0, tp.rtStart == 0, !tp.tsEnabled { tp.rtSeq = start; tp.rtStart = st.now }
            if finHere { break }
        }
        // Data waiting, nothing in flight, nothing sent: the window is zero (probe it,
        // RFC 9293 §3.8.6.1) or too small for sender SWS avoidance (send anyway later).
        // After a go-back-N into a closed window SND.MAX may still lie above SND.UNA with
        // nothing in flight from SND.NXT: that case probes too. Whatever is unacknowledged or
        // waiting always has a timer, so a connection can never stall silently.
        let pending = tp.sendBuffer.count - TCPSequence.distance(tp.sndBase, tp.sndNxt)
        let waiting = pending > 0 || (tp.finQueued && !tp.finSent) || tp.sndMax != tp.sndUna
        if tp.sndNxt == tp.sndUna, waiting {
            tp.retransmitTimer = 0
            if tp.persistTimer == 0 { tp.arm(.persist, at: st.now &+ tcpPersistInterval(tp)) }
        } else if tp.sndMax != tp.sndUna, tp.retransmitTimer == 0, tp.persistTimer == 0 {
            tp.arm(.retransmit, at: st.now &+ tp.rtt.timeout(backoff: tp.backoff))
        }
    }

    /// The largest TSO segment: whole MSS multiples that fit an IPv4 packet and a cluster.
    func tcpTSOLimit(_ tp: TCPControlBlock) -> Int {
        let room = min(65535 - IPv4Header.minimumSize, MbufPool.clusterCapacity - Self.tcpHeadroom) - TCPHeader.maximumSize
        return max(tp.mss, room / tp.mss * tp.mss)
    }

    func tcpPersistInterval(_ tp: TCPControlBlock) -> UInt64 {
        let base = max(tp.rtt.timeout(backoff: tp.persistShift), 5_000_000)
        return min(base, 60_000_000_000)
    }

    /// Whether reading opened the window enough to tell the peer (receiver SWS avoidance,
    /// RFC 9293 §3.8.6.2.2: by a full segment or half the buffer).
    func tcpWindowUpdateDue(_ tp: TCPControlBlock) -> Bool {
        guard tp.state.canReceive || tp.state == .synReceived else { return false }
        let advertised = max(0, TCPSequence.distance(tp.rcvNxt, tp.rcvAdv))
        let gain = tp.receiveBuffer.free - advertised
        return gain >= min(tp.receiveBuffer.capacity / 2, 2 * tp.mss) && gain > 0
    }

    /// A pure ACK with the current window. It carries SND.MAX, not SND.NXT: after a
    /// go-back-N retransmission SND.NXT lies below what the peer has received, and an ACK
    /// from there would look like an old duplicate to it (two such peers would trade
    /// ACKs forever).
    func tcpSendACK(_ tp: TCPControlBlock, _ st: NetCPU) {
        tcpSendSegment(tp, seq: tp.sndMax, length: 0, flags: .ack, st)
    }

    /// Resends up to `limit` bytes (and the FIN when it follows them) at `seq` without
    /// moving SND.NXT; returns the data bytes sent.
    @discardableResult
    func tcpRetransmit(_ tp: TCPControlBlock, at seq: UInt32, limit: Int, _ st: NetCPU) -> Int {
        let off = TCPSequence.distance(tp.sndBase, seq)
        guard off >= 0 else { return 0 }
        let avail = max(0, tp.sendBuffer.count - off)
        let len = min(avail, limit, tp.mss)
        var flags: TCPFlags = .ack
        if tp.finSent, TCPSequence.distance(seq, tp.finSeq) == len { flags.insert(.fin) }
        guard len > 0 || flags.contains(.fin) else { return 0 }
        if tcpSendSegment(tp, seq: seq, length: len, flags: flags, st) {
            counters.add(.tcpRetransmits, cpu: st.id)
        }
        return len
    }

    /// Builds and sends one segment of `tp` (options, window and ACK from its state);
    /// false when no buffer was free.
    @discardableResult
    func tcpSendSegment(_ tp: TCPControlBlock, seq: UInt32, length: Int, flags: TCPFlags, _ st: NetCPU) -> Bool {
        let c = configuration.tcp
        var o = TCPOptions()
        let syn = flags.contains(.syn)
        if syn {
            o.mss = UInt16(mtu - 40)
            if tp.state == .synSent {
                if c.windowScaling { o.windowScale = tp.rcvScale }
                o.sackPermitted = c.sack
                if c.timestamps { o.timestamp = (Self.tsClock(st.now), 0) }
            } else {
                if tp.wantScale { o.windowScale = tp.rcvScale }
                o.sackPermitted = tp.sackEnabled
                if tp.tsEnabled { o.timestamp = (Self.tsClock(st.now), tp.tsRecent) }
            }
        } else {
            if tp.tsEnabled { o.timestamp = (Self.tsClock(st.now), tp.tsRecent) }
            if tp.sackEnabled, !tp.reassembly.isEmpty {
                // SACK blocks only where the segment still fits the MTU.
                let room = mtu - 40 - length - (tp.tsEnabled ? 12 : 0) - 4
                let blocks = min(tp.tsEnabled ? 3 : 4, max(0, room / 8))
                if blocks > 0 { tp.reassembly.sackBlocks(max: blocks, into: &o) }
            }
        }
        let wnd = tp.receiveWindow
        let field = syn ? min(wnd, 65535) : min(wnd >> Int(tp.rcvScale), 65535)
        let right = tp.rcvNxt &+ UInt32(field << (syn ? 0 : Int(tp.rcvScale)))
        let ack = flags.contains(.ack) ? tp.rcvNxt : 0
        guard tcpEmit(tp.key, seq: seq, ack: ack, flags: flags, window: UInt16(field), options: o,
                      payload: length > 0 ? tp : nil, offset: TCPSequence.distance(tp.sndBase, seq), length: length,
                      segmentSize: length > tp.mss ? tp.mss : 0, st) else {
            return false
        }
        if TCPSequence.gt(right, tp.rcvAdv) || syn { tp.rcvAdv = right }
        if flags.contains(.ack) {
            tp.lastAckSent = tp.rcvNxt
            tp.ackNow = false
            tp.unackedSegments = 0
            tp.delayedACKTimer = 0
        }
        if length > 0 { counters.add(.tcpDataSegmentsSent, cpu: st.id) }
        return true
    }

    /// Writes a segment for `key` and hands it to IPv4: header, options and `length`
    /// payload bytes copied from `payload`'s send buffer at `offset`.
    @discardableResult
    func tcpEmit(_ key: TCPFlowKey, seq: UInt32, ack: UInt32, flags: TCPFlags, window: UInt16, options: TCPOptions,
                 payload: TCPControlBlock? = nil, offset: Int = 0, length: Int = 0, segmentSize: Int = 0,
                 _ st: NetCPU) -> Bool {
        guard let m = pool.allocate(forBytes: length + TCPHeader.maximumSize, headroom: Self.tcpHeadroom) else {
            counters.add(.dropNoBuffers, cpu: st.id)
            return false
        }
        if length > 0, let tp = payload {
            guard let p = m.append(length), tp.sendBuffer.peek(at: offset, length, into: p) else {
                m.free()
                counters.add(.dropNoBuffers, cpu: st.id)
                return false
            }
        }
        let h = TCPHeader(sourcePort: key.localPort, destinationPort: key.remotePort, sequence: seq, acknowledgment: ack,
                          flags: flags, window: window, options: options)
        let hl = h.headerLength
        guard let p = m.prepend(hl), h.write(to: p, capacity: hl) != nil else {
            m.free()
            counters.add(.dropNoBuffers, cpu: st.id)
            return false
        }
        let total = hl + length
        let src = key.localAddress, dst = key.remoteAddress
        if offloadChecksum, m.next == nil {
            NetworkBytes.put16(p, TCPHeader.checksumOffset, TCPHeader.pseudoHeaderSum(source: src, destination: dst, length: total))
            m.flags.insert(.checksumPartial)
            if segmentSize > 0 {
                // TSO: the device cuts the payload into `segmentSize` pieces, each with a
                // copy of these headers (Ethernet, IPv4, TCP).
                m.flags.insert(.segmentationOffload)
                m.words = (UInt32(IPv4Header.minimumSize), UInt32(TCPHeader.checksumOffset), UInt32(segmentSize),
                           UInt32(EthernetHeader.size + IPv4Header.minimumSize + hl))
                counters.add(.tcpTSOSegmentsSent, cpu: st.id)
            } else {
                m.words = (UInt32(IPv4Header.minimumSize), UInt32(TCPHeader.checksumOffset), 0, 0)
            }
        } else {
            NetworkBytes.put16(p, TCPHeader.checksumOffset, TCPHeader.checksum(of: m, from: 0, length: total, source: src, destination: dst))
        }
        counters.add(.tcpSegmentsSent, cpu: st.id)

        ipOutput(m, proto: IPv4Header.protocolTCP, source: src, destination: dst, st)
        return true
    }
}
