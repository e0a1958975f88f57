extension NetStack {
    /// ARP input (always on CPU 0): learns senders we talk to, answers requests for our
    /// address, and sends the result to every CPU's cache.
    func arpInput(_ m: Mbuf, _ st: NetCPU) {
        counters.add(.arpReceived, cpu: st.id)
        guard let a = ARPPacket.parse(m.data, count: m.length) else { return drop(m, .dropBadARP, st) }
        guard !a.senderMAC.isMulticast, a.senderMAC != .zero, a.senderIP != configuration.address else {
            return drop(m, .dropBadARP, st)
        }
        let forUs = a.targetIP == configuration.address
        if a.senderIP != .any,
           forUs || st.resolver.pending[a.senderIP.value] != nil || st.arp.knows(a.senderIP) {
            learn(a.senderIP, a.senderMAC, st)
        }
        guard forUs, a.operation == ARPPacket.request else { m.free(); return }
        // Answer in place.
        m.reset(headroom: MbufPool.defaultHeadroom)
        guard let p = m.append(ARPPacket.size) else { return drop(m, .dropNoBuffers, st) }
        ARPPacket(operation: ARPPacket.reply, senderMAC: macAddress, senderIP: configuration.address,
                  targetMAC: a.senderMAC, targetIP: a.senderIP).write(to: p)
        counters.add(.arpRepliesSent, cpu: st.id)
        etherSend(m, to: a.senderMAC, type: EthernetHeader.typeARP, st)
    }

    /// Sends an ARP packet from CPU `st` (CPU 0).
    func sendARP(operation: UInt16, targetMAC: MACAddress, targetIP: IPv4Address, destination: MACAddress, on st: NetCPU) {
        guard let m = pool.allocate(), let p = m.append(ARPPacket.size) else {
            counters.add(.dropNoBuffers, cpu: st.id)
            return
        }
        ARPPacket(operation: operation, senderMAC: macAddress, senderIP: configuration.address,
                  targetMAC: targetMAC, targetIP: targetIP).write(to: p)
        if operation == ARPPacket.request { counters.add(.arpRequestsSent, cpu: st.id) }
        etherSend(m, to: destination, type: EthernetHeader.typeARP, st)
    }

    /// Records `ip` → `mac` on CPU 0 and tells every other CPU.
    func learn(_ ip: IPv4Address, _ mac: MACAddress, _ st: NetCPU) {
        st.resolver.pending[ip.value] = nil
        arpApply(ip, mac, st)
        for c in 0..<cpuCount where c != st.id { sendUpdate(ip, mac, to: c, st) }
    }

    func sendUpdate(_ ip: IPv4Address, _ mac: MACAddress, to cpu: Int, _ st: NetCPU) {
        guard let u = pool.allocate(headroom: 0) else { counters.add(.dropNoBuffers, cpu: st.id); return }
        u.kind = .arpUpdate
        u.words = (ip.value, UInt32(truncatingIfNeeded: mac.value >> 32), UInt32(truncatingIfNeeded: mac.value), 0)
        send(u, to: cpu)
    }

    /// Installs an entry in this CPU's cache and sends the packets held for it.
    func arpApply(_ ip: IPv4Address, _ mac: MACAddress, _ st: NetCPU) {
        _ = st.arp.set(ip, mac, expires: st.now &+ arpLifetimeNs, now: st.now)
        if st.lastHop == ip { st.lastHopExpires = 0 }
        st.asked[ip.value] = nil
        st.arp.release(ip) { m in etherSend(m, to: mac, type: EthernetHeader.typeIPv4, st) }
    }

    /// Asks CPU 0 for `ip`'s hardware address (at most once per retry interval per CPU).
    func requestResolution(_ ip: IPv4Address, _ st: NetCPU) {
        if st.id == 0 { return arpResolve(ip, for: 0, st) }
        if st.asked[ip.value] != nil { return }
        st.asked[ip.value] = st.now
        guard let r = pool.allocate(headroom: 0) else { counters.add(.dropNoBuffers, cpu: st.id); return }
        r.kind = .arpResolve
        r.words = (ip.value, UInt32(st.id), 0, 0)
        send(r, to: 0)
    }

    /// CPU 0: answers from its cache when it can, otherwise sends a request.
    func arpResolve(_ ip: IPv4Address, for requester: Int, _ st: NetCPU) {
        if let mac = st.arp.lookup(ip, now: st.now) {
            if requester != st.id && requester < cpuCount { sendUpdate(ip, mac, to: requester, st) }
            return
        }
        if st.resolver.pending[ip.value] != nil { return }
        guard st.resolver.pending.count < st.resolver.limit else { return }
        st.resolver.pending[ip.value] = .init(requests: 1, lastSent: st.now)
        sendARP(operation: ARPPacket.request, targetMAC: .zero, targetIP: ip, destination: .broadcast, on: st)
    }

    /// CPU 0: repeats unanswered requests, and gives up after the configured count.
    func arpRetry(_ st: NetCPU) {
        guard !st.resolver.pending.isEmpty else { return }
        let interval = arpRetryNs
        for (ip, p) in st.resolver.pending where st.now &- p.lastSent >= interval {
            if p.requests >= configuration.arpMaxRequests {
                st.resolver.pending[ip] = nil
            } else {
                st.resolver.pending[ip] = .init(requests: p.requests + 1, lastSent: st.now)
                sendARP(operation: ARPPacket.request, targetMAC: .zero, targetIP: IPv4Address(ip), destination: .broadcast, on: st)
            }
        }
    }
}
