extension NetStack {
    /// Ethernet input: checks the destination and hands the payload to ARP or IPv4.
    func etherInput(_ m: Mbuf, _ st: NetCPU) {
        guard let eth = EthernetHeader.parse(m.data, count: m.length) else { return drop(m, .dropTruncated, st) }
        guard eth.destination == macAddress || eth.destination.isBroadcast else { return drop(m, .dropNotForUs, st) }
        m.trimFront(EthernetHeader.size)
        switch eth.etherType {
        case EthernetHeader.typeIPv4: ipInput(m, st)
        case EthernetHeader.typeARP: arpInput(m, st)
        default: drop(m, .dropUnsupported, st)
        }
    }

    /// Ethernet output of an IPv4 packet to `nextHop`: resolves its hardware address (or
    /// holds the packet while CPU 0 asks), prepends the header and transmits.
    func etherOutput(_ m: Mbuf, nextHop: IPv4Address, _ st: NetCPU) {
        let mac: MACAddress
        if nextHop == st.lastHop, st.now < st.lastHopExpires {
            mac = st.lastHopMAC
        } else if nextHop == .broadcast || nextHop == subnetBroadcast {
            mac = .broadcast
        } else if let known = st.arp.lookup(nextHop, now: st.now) {
            mac = known
            st.lastHop = nextHop
            st.lastHopMAC = known
            st.lastHopExpires = st.arp.expiry(nextHop)
        } else {
            if let evicted = st.arp.hold(m, for: nextHop, now: st.now) { drop(evicted, .dropARPUnresolved, st) }
            requestResolution(nextHop, st)
            return
        }
        etherSend(m, to: mac, type: EthernetHeader.typeIPv4, st)
    }

    /// Prepends an Ethernet header and transmits.
    func etherSend(_ m: Mbuf, to mac: MACAddress, type: UInt16, _ st: NetCPU) {
        guard let p = m.prepend(EthernetHeader.size) else { return drop(m, .dropNoBuffers, st) }
        EthernetHeader(destination: mac, source: macAddress, etherType: type).write(to: p)
        if m.flags.contains(.checksumPartial) {
            // Where the device finishes the checksum, counted from the frame's start.
            m.words.0 &+= UInt32(EthernetHeader.size)
        }
        transmit(m, st)
    }
}
