import LWKT

/// What a device can do for the stack.
public struct InterfaceOffloads: OptionSet, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// The device completes transport checksums on transmit and vouches for them on receive.
    public static let checksum = InterfaceOffloads(rawValue: 1)
    /// The device cuts large TCP segments (TSO/GSO) and may deliver large ones.
    public static let segmentation = InterfaceOffloads(rawValue: 2)
}

/// A network device with one receive and one transmit queue per CPU.
///
/// The stack calls ``poll(queue:max:_:)`` and ``transmit(_:queue:)`` only from CPU
/// `queue`'s threads, so a queue needs no locking against itself.
public protocol NetworkInterface: AnyObject, Sendable {
    /// A name for reports.
    var name: String { get }
    /// The hardware address.
    var macAddress: MACAddress { get }
    /// Largest IP packet the link carries.
    var mtu: Int { get }
    /// Number of queues (one per CPU of the stack).
    var queueCount: Int { get }
    /// Offloads in effect.
    var offloads: InterfaceOffloads { get }

    /// Called once when a stack takes the device.
    func attach(to stack: NetStack) throws

    /// Hands up to `max` received frames of `queue` to `body` without waiting; returns how
    /// many. The receiver owns each frame.
    func poll(queue: Int, max: Int, _ body: (Mbuf) -> Void) -> Int

    /// Waits until `queue` may have frames (or a short while has passed).
    nonisolated(nonsending) func waitForInput(queue: Int) async throws

    /// Sends `frame` (an Ethernet frame) on `queue`; takes ownership. Returns false when the
    /// device dropped it.
    @discardableResult
    func transmit(_ frame: Mbuf, queue: Int) -> Bool

    /// Called on CPU `queue` when the stack stops, before ``close()``.
    func detach(queue: Int)

    /// Releases the device's resources.
    func close()
}

extension NetworkInterface {
    public func detach(queue: Int) {}
}
