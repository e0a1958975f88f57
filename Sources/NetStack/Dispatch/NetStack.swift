import CLibellula
import LWKT
import Slab
import Synchronization

/// A TCP/IP host on an LWKT system: one interface, one protocol thread and one receive
/// thread per CPU, and per-CPU protocol state.
///
/// A packet belongs to the CPU its symmetric Toeplitz hash names (the 4-tuple for TCP and
/// UDP, the address pair for fragments, ICMP and the rest; ARP belongs to CPU 0). A CPU
/// that reads a packet it does not own forwards it to the owner through the crossbar,
/// batched per receive pass. Sockets hand their output to the owner CPU the same way.
public final class NetStack: @unchecked Sendable {
    public let system: LWKTSystem
    public let pool: MbufPool
    public let configuration: NetStackConfiguration
    public let counters: NetCounters
    public let interface: any NetworkInterface
    /// The hash that chooses owner CPUs.
    public let hasher = ToeplitzHash.symmetric
    let cpus: [NetCPU]
    let cpuCount: Int
    let macAddress: MACAddress
    let mtu: Int
    let offloadChecksum: Bool
    /// The device cuts TCP segments (TSO/GSO through the virtio-net header).
    let offloadSegmentation: Bool
    let subnetBroadcast: IPv4Address
    let arpLifetimeNs: UInt64
    let arpRetryNs: UInt64
    let reassemblyTimeoutNs: UInt64
    /// ``TCPConfiguration/holdSmallWrites``.
    let tcpHoldSmallWrites: Bool
    private let threads = Mutex<[LWKTThread]>([])
    /// This stack's section in the system's snapshots (while started).
    private let statSection = Mutex<StatSectionRegistration?>(nil)
    private let stopped = Atomic<Bool>(false)
    let boundPorts = Mutex<Set<UInt16>>([])
    let echoReplies = Mutex<[UInt32: Int]>([:])
    /// Listening TCP ports and how many CPU replicas of each are open.
    let tcpPorts = Mutex<[UInt16: Int]>([:])
    /// The secret behind ISNs and SYN cookies.
    let tcpSecrets: TCPSecrets

    var opaque: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    /// Creates a stack over `interface` (which must have one queue per CPU of `system`).
    public init(system: LWKTSystem, allocator: SlabAllocator, interface: any NetworkInterface,
                configuration: NetStackConfiguration) throws {
        self.system = system
        self.configuration = configuration
        self.interface = interface
        cpuCount = system.cpuCount
        pool = MbufPool(allocator: allocator, limitBytes: configuration.mbufLimitBytes)
        counters = NetCounters(cpuCount: cpuCount)
        cpus = (0..<cpuCount).map { NetCPU(id: $0, configuration: configuration) }
        macAddress = interface.macAddress
        mtu = interface.mtu
        offloadChecksum = interface.offloads.contains(.checksum)
        offloadSegmentation = interface.offloads.contains(.segmentation) && interface.offloads.contains(.checksum)
        subnetBroadcast = configuration.subnetBroadcast
        arpLifetimeNs = configuration.arpLifetime.ns
        arpRetryNs = configuration.arpRetryInterval.ns
        reassemblyTimeoutNs = configuration.reassemblyTimeout.ns
        tcpHoldSmallWrites = configuration.tcp.holdSmallWrites
        tcpSecrets = TCPSecrets(configuration.tcp.secret)
        guard interface.queueCount >= cpuCount else { throw NetError.queueMismatch(interface.queueCount, cpuCount) }
        for st in cpus { st.heldOutput.context = opaque }
        try interface.attach(to: self)
    }

    /// The CPU that owns a flow hash.
    @inlinable public func owner(hash: UInt32) -> Int { ToeplitzHash.cpu(for: hash, cpus: system.cpuCount) }

    /// The CPU that owns the UDP or TCP flow between two endpoints (either direction).
    public func owner(_ a: IPv4Endpoint, _ b: IPv4Endpoint) -> Int {
        owner(hash: hasher.hash(a.address, b.address, a.port, b.port))
    }

    /// The CPU that owns ICMP and fragments between two addresses.
    public func owner(_ a: IPv4Address, _ b: IPv4Address) -> Int { owner(hash: hasher.hash(a, b)) }

    // MARK: - Life cycle

    /// Starts the protocol and receive threads on every CPU and announces the address
    /// with a gratuitous ARP.
    public func start() throws {
        var list: [LWKTThread] = []
        for i in 0..<cpuCount {
            let cpu = try system.cpu(i)
            list.append(LWKTThread.spawn(on: cpu, priority: .softInterrupt, name: "netisr\(i)") { [self] in
                await self.protocolThread(i)
            })
            list.append(LWKTThread.spawn(on: cpu, priority: .interrupt, name: "netrx\(i)") { [self] in
                await self.receiveThread(i)
            })
        }
        list.append(LWKTThread.spawn(on: try system.cpu(0), priority: .softInterrupt, name: "netgarp") { [self] in
            self.cpus[0].now = lb_now_ns()
            self.sendARP(operation: ARPPacket.request, targetMAC: .zero, targetIP: self.configuration.address,
                         destination: .broadcast, on: self.cpus[0])
        })
        threads.withLock { $0 = list }
        let counters = counters
        let registration = system.registerStatSection(statSectionName) { counters.perCPU() }
        statSection.withLock { $0 = registration }
    }

    /// The name of this stack's counter section in `LWKTSnapshot.sections` (and so in
    /// `/_stats`): `net` and the stack's address.
    public var statSectionName: String { "net \(configuration.address)" }

    /// Stops the threads, frees every packet the stack still holds and closes the interface.
    public func stop() async throws {
        stopped.store(true, ordering: .releasing)
        if let r = statSection.withLock({ r in defer { r = nil }; return r }) { system.unregisterStatSection(r) }
        let list = threads.withLock { l in defer { l = [] }; return l }
        for t in list { t.cancel() }
        for t in list { await t.join() }
        if system.isRunning {
            try system.crossbar.sync(cpus: Array(0..<cpuCount)) { [self] id in
                self.interface.detach(queue: id)
                self.cleanUp(self.cpus[id])
            }
        }
        interface.close()
    }

    /// Frees what a CPU holds (runs on that CPU).
    func cleanUp(_ st: NetCPU) {
        while let m = st.dequeue() { m.free() }
        st.arp.removeAllHeld { $0.free() }
        st.reassembly.removeAll()
        tcpCleanUp(st)
    }

    var isStopped: Bool { stopped.load(ordering: .relaxed) }

    // MARK: - Threads

    func protocolThread(_ i: Int) async {
        let st = cpus[i]
        let crossbar = system.crossbar
        while !Task.isCancelled {
            st.now = lb_now_ns()
            crossbar.batch {
                var n = 0
                tcpBeginBatch(st)
                while n < 256, let m = st.dequeue() {
                    n += 1
                    if m.kind == .frame || m.kind == .ipv4 { counters.add(.forwardedIn, cpu: i) }
                    process(m, st)
                }
                tcpEndBatch(st)
            }
            st.tcp.reap()
            if st.now >= st.nextSlowTick { slowTick(st) }
            if st.now >= st.tcp.nextTimer {
                crossbar.batch { tcpTimers(st) }
            }
            if st.backlogHead == nil, st.tcp.deferred.isEmpty {
                st.sleeping = true
                // Sleep until the next TCP timer (bounded, so timers armed by socket calls on
                // this CPU while it sleeps are at most 5 ms late).
                var wait: UInt64 = 20_000_000
                if !st.tcp.connections.isEmpty { wait = 5_000_000 }
                let now = lb_now_ns()
                if st.tcp.nextTimer != .max { wait = min(wait, st.tcp.nextTimer > now ? max(st.tcp.nextTimer - now, 200_000) : 200_000) }
                let r = try? await LWKT.tsleep(on: st.channel, timeout: .nanoseconds(Int64(wait)), until: { st.backlogHead != nil || !st.tcp.deferred.isEmpty })
                st.sleeping = false
                if r == nil { return }
            }
        }
    }

    func receiveThread(_ i: Int) async {
        let st = cpus[i]
        let crossbar = system.crossbar
        let iface = interface
        while !Task.isCancelled {
            st.now = lb_now_ns()
            let n = crossbar.batch {
                tcpBeginBatch(st)
                let n = iface.poll(queue: i, max: 64) { m in self.input(m, st) }
                tcpEndBatch(st)
                return n
            }
            if n == 0 {
                do { try await iface.waitForInput(queue: i) } catch { return }
            } else {
                await LWKT.yield()
            }
        }
    }

    /// Periodic work: reassembly and hold timeouts, ARP retries, the ICMP error budget.
    func slowTick(_ st: NetCPU) {
        st.nextSlowTick = st.now &+ 10_000_000
        let n = st.reassembly.expire(before: st.now &- min(st.now, reassemblyTimeoutNs))
        if n > 0 { counters.add(.dropReassemblyTimeout, cpu: st.id, n) }
        let holdLife = arpRetryNs &* UInt64(configuration.arpMaxRequests) &+ 500_000_000
        st.arp.expireHeld(before: st.now &- min(st.now, holdLife)) { m in drop(m, .dropARPUnresolved, st) }
        if !st.asked.isEmpty {
            let retry = arpRetryNs
            st.asked = st.asked.filter { st.now &- $0.value < retry }
        }
        if st.now >= st.icmpBudgetReset {
            st.icmpErrorsLeft = configuration.icmpErrorsPerSecond
            st.icmpBudgetReset = st.now &+ 1_000_000_000
        }
        if st.id == 0 { arpRetry(st) }
    }

    // MARK: - Input and dispatch

    /// A frame read on `st`'s CPU: processed here when this CPU owns it, otherwise
    /// forwarded to the owner.
    @inline(__always)
    func input(_ m: Mbuf, _ st: NetCPU) {
        counters.add(.framesReceived, cpu: st.id)
        m.kind = .frame
        let target = classify(m)
        if target < 0 || target == st.id {
            process(m, st)
        } else {
            forward(m, to: target, from: st)
        }
    }

    /// Hands `m` to CPU `target`'s backlog.
    @inline(__always)
    func forward(_ m: Mbuf, to target: Int, from st: NetCPU) {
        counters.add(.forwarded, cpu: st.id)
        send(m, to: target)
    }

    /// Sends a packet or control message to CPU `target`'s protocol thread.
    @inline(__always)
    func send(_ m: Mbuf, to target: Int) {
        m.stack = opaque
        system.crossbar.send(to: target, netBacklogIPI, m.opaque, target)
    }

    /// Called on the owner CPU by the backlog IPI.
    @inline(__always)
    func accept(_ m: Mbuf, on target: Int) {
        if isStopped { m.free(); return }
        let st = cpus[target]
        st.enqueue(m)
        if st.sleeping {
            st.sleeping = false
            LWKT.wakeup(st.channel, in: system)
        }
    }

    /// Which CPU owns a received frame, recording its hash; -1 when it cannot be told (the
    /// frame is then processed where it is, and rejected there).
    @inline(__always)
    func classify(_ m: Mbuf) -> Int {
        let p = UnsafeRawPointer(m.data)
        let n = m.length
        guard n >= EthernetHeader.size else { return -1 }
        let type = NetworkBytes.u16(p, 12)
        if type == EthernetHeader.typeARP { return 0 }
        guard type == EthernetHeader.typeIPv4, n >= EthernetHeader.size + 20 else { return -1 }
        let ip = p + EthernetHeader.size
        let vihl = NetworkBytes.u8(ip, 0)
        let hl = Int(vihl & 0xf) * 4
        guard vihl >> 4 == 4, hl >= 20, n >= EthernetHeader.size + hl else { return -1 }
        let src = IPv4Address(NetworkBytes.u32(ip, 12)), dst = IPv4Address(NetworkBytes.u32(ip, 16))
        let proto = NetworkBytes.u8(ip, 9)
        let fragment = NetworkBytes.u16(ip, 6) & 0x3fff != 0
        let h: UInt32
        if !fragment, proto == IPv4Header.protocolUDP || proto == IPv4Header.protocolTCP,
           n >= EthernetHeader.size + hl + 4 {
            h = hasher.hash(src, dst, NetworkBytes.u16(ip, hl), NetworkBytes.u16(ip, hl + 2))
        } else {
            h = hasher.hash(src, dst)
        }
        m.hash = h
        m.flags.insert(.hashValid)
        return owner(hash: h)
    }

    /// Processes a packet on its owner CPU.
    func process(_ m: Mbuf, _ st: NetCPU) {
        switch m.kind {
        case .frame:
            counters.add(.processed, cpu: st.id)
            etherInput(m, st)
        case .ipv4:
            counters.add(.processed, cpu: st.id)
            switch IPv4Header.parse(m.data, count: m.length) {
            case .success(let h): deliver(m, h, st)
            case .failure: drop(m, .dropBadIPHeader, st)
            }
        case .udpOutput:
            udpOutput(m, st)
        case .ipOutput:
            let (dst, proto, _, _) = m.words
            ipOutput(m, proto: UInt8(truncatingIfNeeded: proto), source: configuration.address,
                     destination: IPv4Address(dst), st)
        case .arpUpdate:
            let (ip, hi, lo, _) = m.words
            m.free()
            arpApply(IPv4Address(ip), MACAddress(UInt64(hi) << 32 | UInt64(lo)), st)
        case .arpResolve:
            let (ip, requester, _, _) = m.words
            m.free()
            arpResolve(IPv4Address(ip), for: Int(requester), st)
        }
    }

    /// Counts a drop and frees the packet.
    @inline(__always)
    func drop(_ m: Mbuf, _ reason: NetCounter, _ st: NetCPU) {
        counters.add(reason, cpu: st.id)
        m.free()
    }

    /// Sends a frame on this CPU's queue.
    @inline(__always)
    func transmit(_ m: Mbuf, _ st: NetCPU) {
        counters.add(.framesSent, cpu: st.id)
        if !interface.transmit(m, queue: st.id) { counters.add(.dropInterface, cpu: st.id) }
    }

    /// The owner-CPU context of the current thread, when it runs on one of this stack's CPUs.
    func currentState() -> NetCPU? {
        guard let c = CPU.current, c.system === system else { return nil }
        return cpus[c.id]
    }

    // MARK: - Testing hooks

    /// Feeds a frame to the stack as if CPU `cpu`'s queue had read it (call on that CPU).
    public func inject(frame: Mbuf, cpu: Int) {
        let st = cpus[cpu]
        st.now = lb_now_ns()
        system.crossbar.batch { input(frame, st) }
    }

    /// Incomplete datagrams held for reassembly on `cpu` (read it on that CPU).
    public func reassemblyCount(cpu: Int) -> Int { cpus[cpu].reassembly.count }
}

/// The backlog IPI: `arg` is the packet, `arg2` the target CPU.
let netBacklogIPI: IPIFunction = { arg, target in
    guard let arg else { return }
    let m = Mbuf(opaque: arg)
    guard let s = m.stack else { m.free(); return }
    Unmanaged<NetStack>.fromOpaque(s).takeUnretainedValue().accept(m, on: target)
}
