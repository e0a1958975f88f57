import CLibellula
import LWKT

/// A Linux TAP device with one queue per CPU (`IFF_MULTI_QUEUE`), optionally with
/// `IFF_VNET_HDR` and the kernel's checksum and segmentation offloads. Each CPU reads and
/// transmits only on its own queue's descriptor; frames larger than a standard mbuf
/// (GSO) land in a 64 KiB cluster chained behind it.
public final class TAPInterface: NetworkInterface, @unchecked Sendable {
    public let name: String
    public let macAddress: MACAddress
    public let mtu: Int
    public let queueCount: Int
    public private(set) var offloads: InterfaceOffloads = []
    /// Whether frames carry a virtio-net header.
    public let vnetHeader: Bool
    private var fds: [Int32]
    private var pool: MbufPool?
    /// Per queue: a cluster waiting to take the tail of a large frame.
    private var spares: [Mbuf?]
    /// Whether the kernel steers frames to queues by the stack's hash (set up before the
    /// stack starts; see `TAPFlowSteering.swift`).
    public private(set) var flowSteering: TAPFlowSteering = .off

    /// Opens (creating if needed) TAP device `name` with `queues` queues.
    ///
    /// - Throws: ``NetError/permissionDenied(_:)`` when the process lacks CAP_NET_ADMIN,
    ///   ``NetError/system(_:_:)`` for other failures.
    public init(name: String, queues: Int, vnetHeader: Bool = true, offload: Bool = true,
                macAddress: MACAddress? = nil, mtu: Int = 1500) throws {
        self.name = name
        queueCount = queues
        self.vnetHeader = vnetHeader
        self.mtu = mtu
        var h: UInt32 = 2166136261
        for b in name.utf8 { h = (h ^ UInt32(b)) &* 16777619 }
        self.macAddress = macAddress ?? .local(seed: h)
        spares = Array(repeating: nil, count: queues)
        fds = []
        guard !name.isEmpty, name.utf8.count <= 15, !name.contains("/"), queues >= 1 else {
            throw NetError.system("TAP device name '\(name)' is invalid (1 to 15 bytes, no '/') or no queues asked for", 22)
        }
        for _ in 0..<queues {
            let fd = lb_tap_open_queue(name, queues > 1 ? 1 : 0, vnetHeader ? 1 : 0)
            if fd < 0 {
                for f in fds { _ = lb_close(f) }
                let e = -fd
                if e == 1 || e == 13 {
                    throw NetError.permissionDenied("cannot create TAP device \(name): operation not permitted; "
                        + "it needs CAP_NET_ADMIN (run as root, or grant the binary cap_net_admin)")
                }
                if e == 2 || e == 19 {
                    throw NetError.system("open /dev/net/tun (the kernel has no TUN/TAP support here)", e)
                }
                throw NetError.system("TUNSETIFF \(name)", e)
            }
            fds.append(fd)
        }
        if vnetHeader, offload, let fd = fds.first {
            if lb_tap_set_offload(fd, 1, 1) == 0 {
                offloads = [.checksum, .segmentation]
            } else if lb_tap_set_offload(fd, 1, 0) == 0 {
                offloads = [.checksum]
            }
        }
    }

    deinit { close() }

    public func attach(to stack: NetStack) throws { pool = stack.pool }

    public func poll(queue: Int, max: Int, _ body: (Mbuf) -> Void) -> Int {
        guard let pool, queue < fds.count else { return 0 }
        let fd = fds[queue]
        var count = 0
        while count < max {
            guard let m = pool.allocate(headroom: 64) else { break }
            if vnetHeader, spares[queue] == nil { spares[queue] = pool.allocateCluster(headroom: 0) }
            let spare = vnetHeader ? spares[queue] : nil
            let first = m.tailroom
            let n = Int(lb_readv2(fd, m.data, first, spare?.data, spare?.tailroom ?? 0))
            if n <= 0 { m.free(); break }
            if n > first, let s = spare {
                m.length = first
                s.length = n - first
                m.next = s
                spares[queue] = nil
            } else {
                m.length = n
            }
            if vnetHeader {
                guard let v = VirtioNetHeader.parse(m.data, count: m.length) else { m.free(); continue }
                m.trimFront(VirtioNetHeader.size)
                if v.flags & VirtioNetHeader.needsChecksum != 0 { m.flags.insert(.checksumPartial) }
                if v.flags & VirtioNetHeader.dataValid != 0 { m.flags.insert(.checksumVerified) }
                if v.gsoType != VirtioNetHeader.gsoNone { m.flags.insert(.segmentationOffload) }
            }
            count += 1
            body(m)
        }
        return count
    }

    nonisolated(nonsending) public func waitForInput(queue: Int) async throws {
        guard queue < fds.count else { try await LWKT.sleep(for: .milliseconds(100)); return }
        _ = try await LWKT.wait(for: .readable, on: fds[queue])
    }

    public func transmit(_ frame: Mbuf, queue: Int) -> Bool {
        defer { frame.free() }
        guard queue < fds.count else { return false }
        if vnetHeader {
            var v = VirtioNetHeader()
            let (w0, w1, w2, w3) = frame.words
            if frame.flags.contains(.checksumPartial) {
                v.flags = VirtioNetHeader.needsChecksum
                v.checksumStart = UInt16(truncatingIfNeeded: w0)
                v.checksumOffset = UInt16(truncatingIfNeeded: w1)
            }
            if frame.flags.contains(.segmentationOffload) {
                v.gsoType = VirtioNetHeader.gsoTCPv4
                v.segmentSize = UInt16(truncatingIfNeeded: w2)
                v.headerLength = UInt16(truncatingIfNeeded: w3)
            }
            guard let p = frame.prepend(VirtioNetHeader.size) else { return false }
            v.write(to: p)
        }
        return withUnsafeTemporaryAllocation(of: UnsafeMutableRawPointer?.self, capacity: 16) { bases in
            withUnsafeTemporaryAllocation(of: Int.self, capacity: 16) { lens in
                var k = 0
                var m: Mbuf? = frame
                while let c = m, k < 16 { bases[k] = c.data; lens[k] = c.length; k += 1; m = c.next }
                let n = lb_writev(fds[queue], bases.baseAddress!, lens.baseAddress!, Int32(k))
                return n >= 0
            }
        }
    }

    func setFlowSteering(_ s: TAPFlowSteering) { flowSteering = s }

    /// Queue `q`'s descriptor while open.
    func queueDescriptor(_ q: Int) -> Int32? { q < fds.count ? fds[q] : nil }

    public func detach(queue: Int) {
        guard queue < fds.count else { return }
        try? LWKT.unregister(fd: fds[queue])
        spares[queue]?.free()
        spares[queue] = nil
    }

    public func close() {
        // A persistent TAP would keep the program after we go.
        if flowSteering.isActive, let f = fds.first { _ = lb_tap_set_steering_ebpf(f, -1) }
        flowSteering = .off
        for f in fds { _ = lb_close(f) }
        fds = []
    }
}
