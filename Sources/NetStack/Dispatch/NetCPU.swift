import LWKT

/// One CPU's share of a stack: its protocol state (ARP cache, reassembly queues, UDP port
/// table) and the backlog of packets other CPUs forwarded to it. Only that CPU touches it.
final class NetCPU: @unchecked Sendable {
    let id: Int
    var arp: ARPCache
    var reassembly: IPv4Reassembly
    /// CPU 0 only: addresses being resolved.
    var resolver = ARPResolver()
    /// Bound UDP ports, replicated on every CPU.
    var udpTable: [UInt16: UDPSocket] = [:]
    /// TCP connections and listener replicas of this CPU.
    let tcp: TCPTable
    /// Addresses this CPU already asked CPU 0 to resolve, and when.
    var asked: [UInt32: UInt64] = [:]
    /// Packets forwarded to this CPU, in arrival order.
    var backlogHead: Mbuf?
    var backlogTail: Mbuf?
    /// Whether the protocol thread is (about to be) asleep.
    var sleeping = false
    /// The time of the current batch.
    var now: UInt64 = 0
    var nextSlowTick: UInt64 = 0
    var ipID: UInt16
    /// The last ARP entry used (most traffic goes to one next hop).
    var lastHop = IPv4Address.any
    var lastHopMAC = MACAddress.zero
    var lastHopExpires: UInt64 = 0
    var icmpErrorsLeft = 0
    var icmpBudgetReset: UInt64 = 0
    /// Runs this CPU's held TCP output when the job that wrote it gives up the CPU (its
    /// context, the stack, is set by the stack once it exists).
    let heldOutput = ParkFlush(NetStack.flushHeldOutput)

    init(id: Int, configuration c: NetStackConfiguration) {
        self.id = id
        tcp = TCPTable(cpu: id)
        arp = ARPCache(limit: c.arpCacheLimit, holdLimit: c.arpHoldLimit)
        reassembly = IPv4Reassembly(limit: c.reassemblyLimit, fragmentLimit: c.fragmentsPerDatagram)
        ipID = UInt16(truncatingIfNeeded: id &* 7919)
    }

    deinit { heldOutput.deallocate() }

    var channel: WaitChannel { WaitChannel(self) }

    @inline(__always)
    func enqueue(_ m: Mbuf) {
        m.nextPacket = nil
        if let t = backlogTail { t.nextPacket = m } else { backlogHead = m }
        backlogTail = m
    }

    @inline(__always)
    func dequeue() -> Mbuf? {
        guard let m = backlogHead else { return nil }
        backlogHead = m.nextPacket
        if backlogHead == nil { backlogTail = nil }
        m.nextPacket = nil
        return m
    }
}
