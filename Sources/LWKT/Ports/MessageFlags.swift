/// The state bits of a ``Message`` (DragonFly's `MSGF_*`). The originator owns a message
/// while ``done`` is set; between a send and its reply the target owns it.
public struct MessageFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Complete. Set on a fresh message, cleared by a send, set again by the reply.
    @inlinable public static var done: MessageFlags { MessageFlags(rawValue: 0x1) }
    /// A reply has started or arrived; stays set so a receiver can tell replies from requests.
    @inlinable public static var reply: MessageFlags { MessageFlags(rawValue: 0x2) }
    /// Sitting on some port's queue.
    @inlinable public static var queued: MessageFlags { MessageFlags(rawValue: 0x4) }
    /// The originator waits on this very message (``LWKT/doMsg(_:to:)``): the reply signals
    /// it instead of queueing it.
    @inlinable public static var sync: MessageFlags { MessageFlags(rawValue: 0x8) }
    /// Somebody is suspended in ``LWKT/waitMsg(_:)`` on this message.
    @inlinable public static var waiting: MessageFlags { MessageFlags(rawValue: 0x20) }
    /// ``LWKT/dropMsg(_:)`` may pull the message back off its target's queue.
    @inlinable public static var dropable: MessageFlags { MessageFlags(rawValue: 0x40) }
    /// ``LWKT/abortMsg(_:)`` may call the message's ``Message/abortRequested()``.
    @inlinable public static var abortable: MessageFlags { MessageFlags(rawValue: 0x80) }
    /// The abort hook has run for the current request (at most once per request).
    @inlinable public static var abortCalled: MessageFlags { MessageFlags(rawValue: 0x1000) }

    public var description: String {
        let names: [(MessageFlags, String)] = [(.done, "done"), (.reply, "reply"), (.queued, "queued"),
                                               (.sync, "sync"), (.waiting, "waiting"), (.dropable, "dropable"),
                                               (.abortable, "abortable"), (.abortCalled, "abortCalled")]
        return "[" + names.filter { contains($0.0) }.map(\.1).joined(separator: ",") + "]"
    }
}

/// Status codes a port's agent returns, in the errno style DragonFly uses.
public enum MessageStatus {
    /// The agent kept the message and will reply later (DragonFly's `EASYNC`).
    @inlinable public static var async: Int32 { 99 }
    /// Success.
    @inlinable public static var ok: Int32 { 0 }
    /// ``LWKT/dropMsg(_:)`` found nothing to drop.
    @inlinable public static var noEntry: Int32 { 2 }
    /// The port cannot take requests (a reply-only port).
    @inlinable public static var invalid: Int32 { 22 }
}

/// Misuse of the message API, reported instead of asserting.
public enum PortError: Error, Equatable, Sendable {
    /// The message is still owned by a target (not done, or queued).
    case messageInUse
    /// The message is not owned by a target (done, queued or replied), so it cannot be forwarded.
    case messageNotInFlight
    /// ``LWKT/sendMsg(_:to:)`` needs a reply port.
    case noReplyPort
    /// Only the owner of a thread port (on its CPU) may wait on it, get from it or drop from it.
    case notOwner
    /// The operation is not supported by this kind of port.
    case unsupported
    /// A dropable message must not be waited on, and only dropable messages can be dropped.
    case dropable
}
