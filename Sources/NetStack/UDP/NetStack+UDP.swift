extension NetStack {
    /// UDP input: validates length and checksum, answers the echo port in place, and
    /// queues the payload on the bound socket (or answers port unreachable).
    func udpInput(_ m: Mbuf, _ h: IPv4Header, _ st: NetCPU) {
        counters.add(.udpReceived, cpu: st.id)
        let hl = h.headerLength
        guard m.length >= hl + UDPHeader.size else { return drop(m, .dropTruncated, st) }
        guard let u = UDPHeader.parse(m.data + hl, count: h.totalLength - hl) else {
            return drop(m, .dropBadTransportHeader, st)
        }
        if u.length < h.totalLength - hl { m.truncate(to: hl + u.length) }
        if u.checksum != 0, m.flags.isDisjoint(with: [.checksumVerified, .checksumPartial]) {
            var c = InternetChecksum()
            c.addPseudoHeader(source: h.source, destination: h.destination, protocol: IPv4Header.protocolUDP, length: u.length)
            c.add(packet: m, from: hl, count: u.length)
            guard c.folded == 0xffff else { return drop(m, .dropBadTransportChecksum, st) }
        }
        if let echo = configuration.udpEchoPort, u.destinationPort == echo, h.destination == configuration.address {
            counters.add(.udpDelivered, cpu: st.id)
            m.trimFront(hl)
            NetworkBytes.put16(m.data, 0, u.destinationPort)
            NetworkBytes.put16(m.data, 2, u.sourcePort)
            return udpFinish(m, source: h.destination, destination: h.source, length: u.length, st)
        }
        guard let sock = st.udpTable[u.destinationPort], sock.accepts(from: h.source, port: u.sourcePort) else {
            sendICMPError(type: ICMPHeader.destinationUnreachable, code: ICMPHeader.codePortUnreachable, about: m, h, st)
            return drop(m, .dropNoSocket, st)
        }
        m.trimFront(hl + UDPHeader.size)
        m.words = (h.source.value, UInt32(u.sourcePort), UInt32(st.id), h.destination.value)
        m.flags.remove([.checksumPartial, .checksumVerified, .hashValid, .forwarded])
        if sock.deliver(m) {
            counters.add(.udpDelivered, cpu: st.id)
        } else {
            drop(m, .dropSocketFull, st)
        }
    }

    /// Output of a socket's datagram on its owner CPU: `m` holds the payload, the words
    /// the addresses (see ``Mbuf/Kind/udpOutput``).
    func udpOutput(_ m: Mbuf, _ st: NetCPU) {
        let (dst, ports, src, _) = m.words
        let length = m.packetLength + UDPHeader.size
        guard let p = m.prepend(UDPHeader.size) else { return drop(m, .dropNoBuffers, st) }
        UDPHeader(sourcePort: UInt16(truncatingIfNeeded: ports), destinationPort: UInt16(truncatingIfNeeded: ports >> 16),
                  length: length).write(to: p)
        let source = src == 0 ? configuration.address : IPv4Address(src)
        udpFinish(m, source: source, destination: IPv4Address(dst), length: length, st)
    }

    /// Fills in the checksum of a UDP datagram (`m` starts at the UDP header) — or only
    /// its pseudo-header part when the device completes it — and sends it.
    func udpFinish(_ m: Mbuf, source: IPv4Address, destination: IPv4Address, length: Int, _ st: NetCPU) {
        NetworkBytes.put16(m.data, 6, 0)
        var c = InternetChecksum()
        c.addPseudoHeader(source: source, destination: destination, protocol: IPv4Header.protocolUDP, length: length)
        m.flags.remove([.checksumPartial, .checksumVerified, .hashValid, .forwarded])
        if offloadChecksum, length + IPv4Header.minimumSize <= mtu, m.next == nil {
            NetworkBytes.put16(m.data, 6, c.folded)
            m.flags.insert(.checksumPartial)
            m.words = (UInt32(IPv4Header.minimumSize), 6, 0, 0)
        } else {
            c.add(packet: m, from: 0, count: length)
            let v = c.value
            NetworkBytes.put16(m.data, 6, v == 0 ? 0xffff : v)
        }
        counters.add(.udpSent, cpu: st.id)
        ipOutput(m, proto: IPv4Header.protocolUDP, source: source, destination: destination, st)
    }
}
