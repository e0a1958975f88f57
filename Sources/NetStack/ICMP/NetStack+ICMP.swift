import LWKT

extension NetStack {
    /// ICMP input: answers echo requests in place and records echo replies.
    func icmpInput(_ m: Mbuf, _ h: IPv4Header, _ st: NetCPU) {
        counters.add(.icmpReceived, cpu: st.id)
        let hl = h.headerLength
        let len = h.totalLength - hl
        guard len >= ICMPHeader.size, m.length >= hl + ICMPHeader.size,
              let icmp = ICMPHeader.parse(m.data + hl, count: len) else { return drop(m, .dropTruncated, st) }
        var sum = InternetChecksum()
        sum.add(packet: m, from: hl, count: len)
        guard sum.folded == 0xffff else { return drop(m, .dropBadTransportChecksum, st) }
        switch icmp.type {
        case ICMPHeader.echoRequest where configuration.answersPing && h.destination == configuration.address:
            m.trimFront(hl)
            NetworkBytes.put8(m.data, 0, ICMPHeader.echoReply)
            NetworkBytes.put16(m.data, 2, 0)
            var c = InternetChecksum()
            c.add(packet: m, from: 0, count: len)
            NetworkBytes.put16(m.data, 2, c.value)
            counters.add(.icmpEchoReplies, cpu: st.id)
            ipOutput(m, proto: IPv4Header.protocolICMP, source: configuration.address, destination: h.source, st)
        case ICMPHeader.echoReply:
            m.free()
            echoReplies.withLock { $0[icmp.rest, default: 0] += 1 }
        default:
            m.free()
        }
    }

    /// Sends an ICMP error about `m` (IPv4 header at its front) unless that would be
    /// wrong (about a broadcast, a fragment after the first, or another ICMP error) or
    /// this CPU's budget is spent.
    func sendICMPError(type: UInt8, code: UInt8, about m: Mbuf, _ h: IPv4Header, _ st: NetCPU) {
        guard h.destination == configuration.address, h.fragmentOffset == 0 else { return }
        if h.proto == IPv4Header.protocolICMP, m.length > h.headerLength {
            let t = NetworkBytes.u8(m.data, h.headerLength)
            if t != ICMPHeader.echoRequest && t != ICMPHeader.echoReply { return }
        }
        guard st.icmpErrorsLeft > 0 else { return }
        st.icmpErrorsLeft -= 1
        let quoted = min(m.packetLength, h.headerLength + 8)
        guard let e = pool.allocate(), let p = e.append(ICMPHeader.size + quoted) else {
            counters.add(.dropNoBuffers, cpu: st.id)
            return
        }
        _ = m.copy(from: 0, count: quoted, into: p + ICMPHeader.size)
        ICMPHeader(type: type, code: code).write(to: p, payloadCount: quoted)
        counters.add(.icmpUnreachableSent, cpu: st.id)
        ipOutput(e, proto: IPv4Header.protocolICMP, source: configuration.address, destination: h.source, st)
    }

    /// Sends `count` echo requests to `destination` and returns how many replies came back
    /// within `timeout` (call from an LWKT thread).
    public func ping(_ destination: IPv4Address, count: Int = 3, payload: Int = 56,
                     timeout: Duration = .seconds(3)) async throws -> Int {
        let id = UInt16.random(in: 1...0xffff)
        let target = owner(configuration.address, destination)
        for seq in 0..<count {
            guard let m = pool.allocate(), let p = m.append(ICMPHeader.size + payload) else { throw NetError.noBuffers }
            for i in 0..<payload { NetworkBytes.put8(p, ICMPHeader.size + i, UInt8(truncatingIfNeeded: i)) }
            ICMPHeader(type: ICMPHeader.echoRequest, code: 0, rest: UInt32(id) << 16 | UInt32(seq)).write(to: p, payloadCount: payload)
            m.kind = .ipOutput
            m.words = (destination.value, UInt32(IPv4Header.protocolICMP), 0, 0)
            send(m, to: target)
        }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let got = echoReplies.withLock { r in (0..<count).filter { r[UInt32(id) << 16 | UInt32($0)] != nil }.count }
            if got == count { break }
            try await LWKT.sleep(for: .milliseconds(10))
        }
        return echoReplies.withLock { r in
            var n = 0
            for s in 0..<count { if r.removeValue(forKey: UInt32(id) << 16 | UInt32(s)) != nil { n += 1 } }
            return n
        }
    }
}
