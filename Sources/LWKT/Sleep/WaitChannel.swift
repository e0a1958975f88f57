/// The identity a thread sleeps on with `LWKT.tsleep(on:)` and that `LWKT.wakeup(_:)`
/// names (DragonFly's `wchan`): usually the address of the object whose state changes.
public struct WaitChannel: Hashable, Sendable, CustomStringConvertible {
    /// The non-zero identity value.
    public let rawValue: UInt

    /// The channel of an object (its identity, not its contents).
    public init(_ object: AnyObject) { rawValue = UInt(bitPattern: ObjectIdentifier(object)) }

    /// The channel of an address.
    public init(_ pointer: UnsafeRawPointer) { rawValue = UInt(bitPattern: pointer) }

    /// A channel from a raw value; `nil` for 0, which names no channel.
    public init?(rawValue: UInt) {
        guard rawValue != 0 else { return nil }
        self.rawValue = rawValue
    }

    public var description: String { "wchan:0x" + String(rawValue, radix: 16) }

    /// The sleep-queue slot of this channel in a table of `count` slots (a power of two).
    @inline(__always)
    func slot(_ count: Int) -> Int {
        let h = (rawValue ^ (rawValue >> 18)) &* 0x9E37_79B9_7F4A_7C15
        return Int(truncatingIfNeeded: h >> 20) & (count - 1)
    }
}

/// How a `tsleep` ended.
public enum SleepResult: Sendable, Equatable {
    /// A `wakeup` or `wakeupOne` on the channel ended it (or the interlock condition held).
    case woken
    /// The timeout expired first (DragonFly's `EWOULDBLOCK`).
    case timedOut
}

/// A thread sleeping on a channel, queued on its CPU's sleep queue.
/// Records are pooled per CPU and reused, so a `tsleep` without a timeout allocates
/// nothing; `generation` tells a late cancellation for an earlier use to do nothing.
final class SleepWaiter: @unchecked Sendable {
    var channel: UInt
    var continuation: UnsafeContinuation<SleepResult, any Error>?
    var timer: TimerNode?
    var queued = false
    var cancelled = false
    var generation = 0
    init(channel: UInt) { self.channel = channel }
}
