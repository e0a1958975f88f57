extension NetStack {
    /// IPv4 input: validates the header, trims link padding, reassembles fragments (and
    /// re-dispatches the datagram to the CPU its 4-tuple names) and delivers.
    func ipInput(_ m: Mbuf, _ st: NetCPU) {
        counters.add(.ipv4Received, cpu: st.id)
        guard m.length >= IPv4Header.minimumSize else { return drop(m, .dropTruncated, st) }
        let hl = Int(NetworkBytes.u8(m.data, 0) & 0xf) * 4
        guard hl <= m.length else { return drop(m, .dropTruncated, st) }
        let h: IPv4Header
        switch IPv4Header.parse(m.data, count: m.packetLength) {
        case .success(let v): h = v
        case .failure(.truncated): return drop(m, .dropTruncated, st)
        case .failure(.badChecksum): return drop(m, .dropBadIPChecksum, st)
        case .failure: return drop(m, .dropBadIPHeader, st)
        }
        if m.packetLength > h.totalLength { m.truncate(to: h.totalLength) }
        let dst = h.destination
        guard dst == configuration.address || dst == .broadcast || dst == subnetBroadcast else {
            return drop(m, .dropNotForUs, st)
        }
        guard !h.source.isMulticast, h.source != .broadcast else { return drop(m, .dropBadIPHeader, st) }
        if h.isFragment {
            counters.add(.fragmentsReceived, cpu: st.id)
            switch st.reassembly.insert(m, header: h, pool: pool, now: st.now) {
            case .queued: return
            case .dropped(let why): counters.add(why, cpu: st.id); return
            case .complete(let whole):
                counters.add(.datagramsReassembled, cpu: st.id)
                whole.kind = .ipv4
                let target = transportOwner(whole)
                if target != st.id { return forward(whole, to: target, from: st) }
                switch IPv4Header.parse(whole.data, count: whole.length) {
                case .success(let wh): return deliver(whole, wh, st)
                case .failure: return drop(whole, .dropBadIPHeader, st)
                }
            }
        }
        deliver(m, h, st)
    }

    /// The owner of a whole datagram (IPv4 header at the front) by its 4-tuple.
    func transportOwner(_ m: Mbuf) -> Int {
        let p = UnsafeRawPointer(m.data)
        let hl = Int(NetworkBytes.u8(p, 0) & 0xf) * 4
        let src = IPv4Address(NetworkBytes.u32(p, 12)), dst = IPv4Address(NetworkBytes.u32(p, 16))
        let proto = NetworkBytes.u8(p, 9)
        let h: UInt32
        if (proto == IPv4Header.protocolUDP || proto == IPv4Header.protocolTCP), m.length >= hl + 4 {
            h = hasher.hash(src, dst, NetworkBytes.u16(p, hl), NetworkBytes.u16(p, hl + 2))
        } else {
            h = hasher.hash(src, dst)
        }
        m.hash = h
        return owner(hash: h)
    }

    /// Hands a whole datagram (header at the front) to its transport protocol.
    func deliver(_ m: Mbuf, _ h: IPv4Header, _ st: NetCPU) {
        switch h.proto {
        case IPv4Header.protocolUDP: udpInput(m, h, st)
        case IPv4Header.protocolTCP: tcpInput(m, h, st)
        case IPv4Header.protocolICMP: icmpInput(m, h, st)
        default:
            sendICMPError(type: ICMPHeader.destinationUnreachable, code: ICMPHeader.codeProtocolUnreachable, about: m, h, st)
            drop(m, .dropUnsupported, st)
        }
    }

    /// The next hop for `dst`.
    func nextHop(_ dst: IPv4Address) -> IPv4Address {
        if dst == .broadcast || dst.sameNetwork(as: configuration.address, prefix: configuration.prefixLength) { return dst }
        return configuration.gateway ?? dst
    }

    /// IPv4 output of a transport segment (`m` starts at the transport header), cut into
    /// fragments when it does not fit the MTU.
    func ipOutput(_ m: Mbuf, proto: UInt8, source: IPv4Address, destination: IPv4Address, _ st: NetCPU) {
        let payload = m.packetLength
        guard payload + IPv4Header.minimumSize <= 65535 else { return drop(m, .dropTooBig, st) }
        st.ipID &+= 1
        let id = st.ipID
        if payload + IPv4Header.minimumSize <= mtu || m.flags.contains(.segmentationOffload) {
            guard let p = m.prepend(IPv4Header.minimumSize) else { return drop(m, .dropNoBuffers, st) }
            IPv4Header(totalLength: payload + IPv4Header.minimumSize, proto: proto, source: source,
                       destination: destination, identification: id, ttl: configuration.ttl).write(to: p)
            counters.add(.ipv4Sent, cpu: st.id)
            return etherOutput(m, nextHop: nextHop(destination), st)
        }
        m.flags.remove(.checksumPartial)
        let chunk = (mtu - IPv4Header.minimumSize) & ~7
        var offset = 0
        let hop = nextHop(destination)
        while offset < payload {
            let n = min(chunk, payload - offset)
            guard let f = pool.allocate(), let body = f.append(n) else {
                counters.add(.dropNoBuffers, cpu: st.id)
                break
            }
            _ = m.copy(from: offset, count: n, into: body)
            let more = offset + n < payload
            guard let p = f.prepend(IPv4Header.minimumSize) else { drop(f, .dropNoBuffers, st); break }
            IPv4Header(totalLength: n + IPv4Header.minimumSize, proto: proto, source: source, destination: destination,
                       identification: id, flagsAndOffset: UInt16(offset / 8) | (more ? IPv4Header.moreFragments : 0),
                       ttl: configuration.ttl).write(to: p)
            counters.add(.fragmentsSent, cpu: st.id)
            counters.add(.ipv4Sent, cpu: st.id)
            etherOutput(f, nextHop: hop, st)
            offset += n
        }
        m.free()
    }
}
