import Synchronization

/// The state block of a message. It lives behind a raw pointer so that the hot path never
/// pays a dynamic exclusivity check; the flags word is atomic because a reply may land on
/// another CPU than the one that waits.
@usableFromInline
struct MessageState: ~Copyable {
    @usableFromInline let flags: Atomic<UInt32>
    @usableFromInline var error: Int32 = 0
    /// The port the message was last put to (not retained: ports outlive their traffic).
    @usableFromInline var target: Unmanaged<Port>? = nil
    /// The reply port (retained).
    @usableFromInline var replyPort: Unmanaged<Port>? = nil
    /// The queue link.
    var next: Unmanaged<Message>? = nil
    /// The task suspended in `waitMsg`, published by setting `waiting`.
    var waiter: UnsafeContinuation<Void, Never>? = nil

    init(flags: UInt32) { self.flags = Atomic(flags) }
}

/// A request that travels to a ``Port`` and comes back as a reply (DragonFly's `lwkt_msg`).
///
/// A message starts ``MessageFlags/done``: its originator owns it. ``LWKT/sendMsg(_:to:)``
/// and ``LWKT/doMsg(_:to:)`` hand it to the target; ``LWKT/replyMsg(_:error:)`` hands it back.
/// Only the current owner may touch it. Subclass it to carry a payload (or use
/// ``PayloadMessage``) and reuse one message for many requests: the steady state then
/// allocates nothing.
open class Message: @unchecked Sendable {
    @usableFromInline let state: UnsafeMutablePointer<MessageState>

    /// Creates a done message.
    /// - Parameters:
    ///   - replyPort: where replies to ``LWKT/sendMsg(_:to:)`` go. ``LWKT/doMsg(_:to:)``
    ///     works without one.
    ///   - options: ``MessageFlags/dropable`` and/or ``MessageFlags/abortable``; other bits
    ///     are ignored.
    public init(replyPort: Port? = nil, options: MessageFlags = []) {
        let opts = options.intersection([.dropable, .abortable]).rawValue
        state = .allocate(capacity: 1)
        state.initialize(to: MessageState(flags: MessageFlags.done.rawValue | opts))
        state.pointee.replyPort = replyPort.map { Unmanaged.passRetained($0) }
    }

    deinit {
        state.pointee.replyPort?.release()
        state.deinitialize(count: 1)
        state.deallocate()
    }

    /// The current flags (a snapshot; only the owner's view is stable).
    public var flags: MessageFlags {
        MessageFlags(rawValue: state.pointee.flags.load(ordering: .acquiring))
    }

    /// Whether the message is done (owned by its originator).
    @inlinable public var isDone: Bool {
        state.pointee.flags.load(ordering: .acquiring) & MessageFlags.done.rawValue != 0
    }

    /// The error (status) of the last completed request.
    @inlinable public var error: Int32 { state.pointee.error }

    /// The port replies go to. Change it only while the message is done.
    public var replyPort: Port? {
        get { state.pointee.replyPort?.takeUnretainedValue() }
        set {
            let old = state.pointee.replyPort
            state.pointee.replyPort = newValue.map { Unmanaged.passRetained($0) }
            old?.release()
        }
    }

    /// The port the message was last put to.
    public var targetPort: Port? { state.pointee.target?.takeUnretainedValue() }

    /// Sets or clears ``MessageFlags/dropable`` and ``MessageFlags/abortable``; only while done.
    public func setOptions(_ options: MessageFlags) {
        let keep = ~(MessageFlags.dropable.rawValue | MessageFlags.abortable.rawValue)
        let add = options.intersection([.dropable, .abortable]).rawValue
        let f = state.pointee.flags.load(ordering: .relaxed)
        state.pointee.flags.store((f & keep) | add, ordering: .releasing)
    }

    /// The abort hook of an abortable message (DragonFly's `ms_abortfn`), called at most
    /// once per request by ``LWKT/abortMsg(_:)`` while the request is in flight. It
    /// usually asks the target to finish early; the target still replies. The default does
    /// nothing.
    open func abortRequested() {}
}

/// A message carrying a value of type `Payload`.
public final class PayloadMessage<Payload>: Message, @unchecked Sendable {
    /// The request or reply data; touch it only while you own the message.
    public var payload: Payload

    /// Creates a done message carrying `payload`.
    public init(_ payload: Payload, replyPort: Port? = nil, options: MessageFlags = []) {
        self.payload = payload
        super.init(replyPort: replyPort, options: options)
    }
}
