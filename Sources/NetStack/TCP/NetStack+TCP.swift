import LWKT

// TCP in NetStack, in brief (the rules of the TCP folder).
//
// - Wire layer: `TCPHeader`, `TCPOptions`, `TCPFlags` parse and emit bytes only.
// - Ownership: a connection belongs to the CPU its 4-tuple hashes to (symmetric Toeplitz,
//   so both directions land there). Its PCB (`TCPControlBlock`) lives in that CPU's
//   `TCPTable`, is created, processed, timed and freed there, and is touched by socket
//   calls only from LWKT threads on that CPU; nothing about a connection is shared or
//   reference-counted across CPUs. `tcpProcess` asserts the CPU in debug builds.
// - Listening ports are replicated: one `TCPListener` per CPU in each CPU's wildcard
//   table; a SYN is answered by the CPU that owns its flow and `accept()` there returns
//   the connection. Active opens pick a source port whose hash names the calling CPU.
// - Input: `NetStack+TCPInput.swift` (RFC 9293 §3.10.7 with RFC 5961 and RFC 7323 checks);
//   output: `NetStack+TCPOutput.swift`; timers: `NetStack+TCPTimers.swift`, run by the
//   protocol thread when the CPU's earliest deadline passes.
// - Batches: the receive and protocol threads run input in batches; a segment that needs
//   no immediate answer defers its connection's output to the batch's end (one ACK for
//   the batch's in-order segments, data sent once for its ACKs). Input reaches a PCB
//   unretained (`TCPTable.lookup`); a PCB that leaves the table stays on the CPU's
//   `detached` list until the batch ends, so it cannot be freed under its own input.
// - Memory: segments are slab mbufs; each established connection has a send and a
//   receive ring charged to its CPU's limit; out-of-order segments are bounded in count.

/// The TCP control paths of a stack: listening on every CPU, active opens, and the
/// listening-port registry (shared, but only touched by these calls, never per segment).
extension NetStack {
    /// Opens a listening socket on `port` (0: an ephemeral one) with one replica per CPU;
    /// returns the replicas, index = CPU.
    public func listen(port: UInt16, backlog: Int = 128) throws(TCPError) -> [TCPListener] {
        let chosen: UInt16 = try tcpPorts.withLock { (used: inout [UInt16: Int]) throws(TCPError) -> UInt16 in
            var p = port
            if p == 0 {
                var candidate = UInt16.random(in: 32768...60999)
                for _ in 0..<28232 {
                    if used[candidate] == nil { p = candidate; break }
                    candidate = candidate == 60999 ? 32768 : candidate + 1
                }
                guard p != 0 else { throw .addressNotAvailable }
            }
            guard used[p] == nil else { throw .addressInUse }
            used[p] = cpuCount
            return p
        }
        let address = IPv4Endpoint(configuration.address, chosen)
        let listeners = (0..<cpuCount).map { TCPListener(stack: self, cpu: $0, address: address, backlog: backlog) }
        do {
            try system.crossbar.sync(cpus: Array(0..<cpuCount)) { [self] id in
                self.cpus[id].tcp.listeners[chosen] = listeners[id]
            }
        } catch {
            _ = tcpPorts.withLock { $0.removeValue(forKey: chosen) }
            throw .invalidArgument("the system is not running")
        }
        return listeners
    }

    /// One replica of `port` closed; the port is free once all have.
    func tcpListenerClosed(port: UInt16) {
        tcpPorts.withLock { used in
            if let n = used[port] { if n <= 1 { used[port] = nil } else { used[port] = n - 1 } }
        }
    }

    /// Active open on CPU `st` (RFC 9293 §3.10.1): picks a source port whose 4-tuple
    /// hashes to this CPU, makes the PCB here and sends the SYN.
    func tcpOpen(to remote: IPv4Endpoint, _ st: NetCPU) throws(TCPError) -> TCPControlBlock {
        guard remote.port != 0, remote.address != .any, !remote.address.isMulticast else {
            throw .invalidArgument("bad destination \(remote)")
        }
        let local = configuration.address
        var port = UInt16.random(in: 32768...60999)
        var key: TCPFlowKey? = nil
        for _ in 0..<28232 {
            if owner(IPv4Endpoint(local, port), remote) == st.id {
                let k = TCPFlowKey(local: local, localPort: port, remote: remote.address, remotePort: remote.port)
                if st.tcp.connections[k] == nil, st.tcp.listeners[port] == nil { key = k; break }
            }
            port = port == 60999 ? 32768 : port + 1
        }
        guard let key else { throw .addressNotAvailable }
        guard let tp = tcpMakeConnection(key, st) else { throw .noBuffers }
        let iss = tcpSecrets.initialSequence(key, nowNs: st.now)
        tp.iss = iss
        tp.sndUna = iss; tp.sndNxt = iss; tp.sndMax = iss; tp.sndBase = iss &+ 1; tp.recover = iss
        tp.wantScale = configuration.tcp.windowScaling
        if !tp.wantScale { tp.rcvScale = 0 }
        tcpInsert(tp, st)
        tp.setState(.synSent)
        tcpOutput(tp, st)
        return tp
    }

    /// TCP connections of CPU `cpu` (read it on that CPU, or when the stack is idle).
    public func tcpConnectionCount(cpu: Int) -> Int { cpus[cpu].tcp.connections.count }

    /// Buffer bytes held by CPU `cpu`'s connections.
    public func tcpBufferBytes(cpu: Int) -> Int { cpus[cpu].tcp.bufferBytes }

    /// Frees every connection of a CPU (stack shutdown; runs on that CPU).
    func tcpCleanUp(_ st: NetCPU) {
        for tp in Array(st.tcp.connections.values) {
            tp.orphaned = true
            tcpDetach(tp, st)
        }
        for tp in st.tcp.deferred { tp.outputDeferred = false }
        st.tcp.deferred.removeAll()
        for tp in st.tcp.held { tp.outputHeld = false }
        st.tcp.held.removeAll()
        st.heldOutput.disarm()
        for l in st.tcp.listeners.values { l.pending.removeAll() }
        st.tcp.listeners.removeAll()
        st.tcp.timers.removeAll()
        st.tcp.nextTimer = .max
        st.tcp.reap()
    }
}

extension NetStack {
    /// A line per connection of CPU `cpu` with its sequence state and timers (diagnostics;
    /// call on that CPU).
    public func tcpDescribe(cpu: Int) -> String {
        let now = lb_now_ns_swift()
        func t(_ d: UInt64) -> String { d == 0 ? "-" : "\(Int64(bitPattern: d &- now) / 1_000_000)ms" }
        return cpus[cpu].tcp.connections.values.map { tp in
            "\(tp.key.localPort)->\(tp.key.remotePort) \(tp.state) una \(tp.sndUna) nxt \(tp.sndNxt) max \(tp.sndMax) base \(tp.sndBase) "
                + "wnd \(tp.sndWnd) cwnd \(tp.cc.cwnd) ssthresh \(tp.cc.ssthresh) sbuf \(tp.sendBuffer.count) rcvnxt \(tp.rcvNxt) "
                + "rbuf \(tp.receiveBuffer.count)/\(tp.receiveBuffer.capacity) ooo \(tp.reassembly.count) rec \(tp.inRecovery) "
                + "recover \(tp.recover) dup \(tp.dupAcks) backoff \(tp.backoff) rto \(t(tp.retransmitTimer)) persist \(t(tp.persistTimer)) "
                + "delack \(t(tp.delayedACKTimer)) fin \(tp.finQueued)/\(tp.finSent)/\(tp.finAcked)/\(tp.finReceived) next \(t(cpus[cpu].tcp.nextTimer))"
        }.joined(separator: "\n")
    }
}
