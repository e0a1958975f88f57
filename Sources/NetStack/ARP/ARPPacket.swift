/// An ARP packet for IPv4 over Ethernet (RFC 826).
public struct ARPPacket: Equatable, Sendable {
    public static let size = 28
    public static let request: UInt16 = 1
    public static let reply: UInt16 = 2

    public var operation: UInt16
    public var senderMAC: MACAddress
    public var senderIP: IPv4Address
    public var targetMAC: MACAddress
    public var targetIP: IPv4Address

    public init(operation: UInt16, senderMAC: MACAddress, senderIP: IPv4Address, targetMAC: MACAddress, targetIP: IPv4Address) {
        self.operation = operation; self.senderMAC = senderMAC; self.senderIP = senderIP
        self.targetMAC = targetMAC; self.targetIP = targetIP
    }

    /// Parses an ARP body; nil unless it is Ethernet/IPv4 with a known operation.
    public static func parse(_ p: UnsafeRawPointer, count: Int) -> ARPPacket? {
        guard count >= size, NetworkBytes.u16(p, 0) == 1, NetworkBytes.u16(p, 2) == 0x0800,
              NetworkBytes.u8(p, 4) == 6, NetworkBytes.u8(p, 5) == 4 else { return nil }
        let op = NetworkBytes.u16(p, 6)
        guard op == request || op == reply else { return nil }
        return ARPPacket(operation: op, senderMAC: .load(p, 8), senderIP: IPv4Address(NetworkBytes.u32(p, 14)),
                         targetMAC: .load(p, 18), targetIP: IPv4Address(NetworkBytes.u32(p, 24)))
    }

    /// Writes the 28 bytes at `p`.
    public func write(to p: UnsafeMutableRawPointer) {
        NetworkBytes.put16(p, 0, 1); NetworkBytes.put16(p, 2, 0x0800)
        NetworkBytes.put8(p, 4, 6); NetworkBytes.put8(p, 5, 4)
        NetworkBytes.put16(p, 6, operation)
        senderMAC.store(p, 8); NetworkBytes.put32(p, 14, senderIP.value)
        targetMAC.store(p, 18); NetworkBytes.put32(p, 24, targetIP.value)
    }
}
