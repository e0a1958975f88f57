import CLibellula
import Synchronization

extension LWKT {
    /// The bits a new request clears: done, reply, sync, waiting, abortCalled.
    @inlinable static var sendClearBits: UInt32 { 0x1 | 0x2 | 0x8 | 0x20 | 0x1000 }

    /// Sends `msg` to `port` asynchronously (DragonFly's `lwkt_sendmsg`): the reply arrives on
    /// the message's reply port. If the port's agent completes the message at once, it is
    /// replied at once, so the caller always sees the completion on its reply port.
    ///
    /// - Throws: ``PortError/messageInUse`` if the message is not done or is queued,
    ///   ``PortError/noReplyPort`` if it has no reply port.
    @inlinable
    public static func sendMsg(_ msg: Message, to port: Port) throws(PortError) {
        let s = msg.state
        let f = s.pointee.flags.load(ordering: .acquiring)
        guard f & (MessageFlags.done.rawValue | MessageFlags.queued.rawValue) == MessageFlags.done.rawValue else {
            throw .messageInUse
        }
        guard s.pointee.replyPort != nil else { throw .noReplyPort }
        s.pointee.flags.store(f & ~sendClearBits, ordering: .releasing)
        let r = port.put(msg)
        if r != MessageStatus.async { replyMsg(msg, error: r) }
    }

    /// Sends `msg` to `port` and waits for the reply (DragonFly's `lwkt_domsg`); returns the
    /// message's error. When the agent completes the message in the caller's context this
    /// neither queues, nor allocates, nor suspends. Otherwise the caller waits as in
    /// ``waitMsg(_:)``, with its tokens released. The reply port is not needed.
    ///
    /// - Throws: ``PortError/messageInUse`` if the message is not done or is queued.
    @inlinable @inline(__always)
    nonisolated(nonsending) public static func doMsg(_ msg: Message, to port: Port) async throws(PortError) -> Int32 {
        if let r = try beginDoMsg(msg, to: port) { return r }
        return try await finishDoMsg(msg)
    }

    /// The asynchronous half of ``doMsg(_:to:)``: waits for the reply, timing the round
    /// trip for ``SystemLatencies``. Out of line, so the inlined synchronous path stays small.
    @usableFromInline
    nonisolated(nonsending) static func finishDoMsg(_ msg: Message) async throws(PortError) -> Int32 {
        let start = lb_now_ns()
        defer { SystemLatencies.recordDoMsg(since: start) }
        return try await waitMsg(msg)
    }

    /// Starts a synchronous request without waiting: returns the status when the agent
    /// completed it in the caller's context, or `nil` when it went asynchronous, in which
    /// case the caller must ``waitMsg(_:)`` on it. Callable from synchronous code.
    ///
    /// Always inlined: on the same-CPU synchronous path it is a flags check, two plain
    /// stores, the agent call and a per-CPU counter, with no atomic read-modify-write, no
    /// reference count and no existential.
    @inlinable @inline(__always)
    public static func beginDoMsg(_ msg: Message, to port: Port) throws(PortError) -> Int32? {
        let s = msg.state
        let f = s.pointee.flags.load(ordering: .acquiring)
        guard _fastPath(f & (MessageFlags.done.rawValue | MessageFlags.queued.rawValue) == MessageFlags.done.rawValue) else {
            try throwMessageInUse()
        }
        let base = f & ~sendClearBits
        s.pointee.flags.store(base | MessageFlags.sync.rawValue, ordering: .releasing)
        let r = port.put(msg)
        if r != MessageStatus.async {
            s.pointee.error = r
            s.pointee.flags.store(base | MessageFlags.sync.rawValue | MessageFlags.done.rawValue | MessageFlags.reply.rawValue,
                                  ordering: .releasing)
            return r
        }
        return nil
    }

    /// The error of a request on a message that is not done (kept out of line so the
    /// inlined fast paths carry no throw sequence).
    @usableFromInline @inline(never)
    static func throwMessageInUse() throws(PortError) -> Never { throw .messageInUse }

    /// Passes a message the caller received (and so owns as its target) on to `port`
    /// (DragonFly's `lwkt_forwardmsg`). If the new port completes it at once, it is replied.
    ///
    /// - Throws: ``PortError/messageNotInFlight`` if the message is done, queued or replied.
    public static func forwardMsg(_ msg: Message, to port: Port) throws(PortError) {
        let bad = MessageFlags.done.rawValue | MessageFlags.queued.rawValue | MessageFlags.reply.rawValue
        guard msg.state.pointee.flags.load(ordering: .acquiring) & bad == 0 else { throw .messageNotInFlight }
        let r = port.put(msg)
        if r != MessageStatus.async { replyMsg(msg, error: r) }
    }

    /// Replies to `msg` with `error` (DragonFly's `lwkt_replymsg`): a synchronous request
    /// wakes its waiter and is never queued; an asynchronous one goes to its reply port. A
    /// message with no reply port is just marked done.
    public static func replyMsg(_ msg: Message, error: Int32 = MessageStatus.ok) {
        msg.state.pointee.error = error
        if let rp = msg.state.pointee.replyPort {
            rp._withUnsafeGuaranteedRef { $0.deliverReply(msg) }
        } else {
            Port.complete(msg)
        }
    }

    /// Waits until `msg` is done and returns its error (DragonFly's `lwkt_waitmsg`). A reply
    /// queued on the reply port is taken off it. Tokens the caller holds are released while it
    /// waits and held again before it returns.
    ///
    /// - Throws: ``PortError/dropable`` for a dropable message, ``PortError/notOwner`` if the
    ///   reply port is a thread port owned by another CPU.
    nonisolated(nonsending) public static func waitMsg(_ msg: Message) async throws(PortError) -> Int32 {
        let s = msg.state
        let f = s.pointee.flags.load(ordering: .acquiring)
        if f & MessageFlags.dropable.rawValue != 0 { throw .dropable }
        let reply = s.pointee.replyPort?.takeUnretainedValue()
        if f & MessageFlags.sync.rawValue == 0, let reply, reply.kind == .thread, reply.cpu?.isCurrent != true {
            throw .notOwner
        }
        if f & MessageFlags.done.rawValue == 0 {
            let holder = Token.releaseAllForWait()
            // Inherits the caller's executor (no hop in and out around the suspension, each a
            // status-record lock for a task with an executor preference).
            await _unsafeInheritExecutor_withUnsafeContinuation { (c: UnsafeContinuation<Void, Never>) in
                s.pointee.waiter = c
                let old = s.pointee.flags.bitwiseOr(MessageFlags.waiting.rawValue, ordering: .acquiringAndReleasing).oldValue
                if old & MessageFlags.done.rawValue != 0 {
                    s.pointee.waiter = nil
                    s.pointee.flags.bitwiseAnd(~MessageFlags.waiting.rawValue, ordering: .releasing)
                    c.resume()
                }
            }
            if let holder { await Token.reacquireAll(of: holder) }
        }
        if s.pointee.flags.load(ordering: .acquiring) & MessageFlags.queued.rawValue != 0, let reply {
            _ = reply.unlink(msg, unlessReplied: false)
        }
        return s.pointee.error
    }

    /// Takes the next message off `port` without waiting (DragonFly's `lwkt_getport`): a
    /// request or a reply, told apart by ``MessageFlags/reply``. `nil` when it is empty.
    ///
    /// - Throws: ``PortError/notOwner`` for a thread port of another CPU,
    ///   ``PortError/unsupported`` for ports without a queue.
    public static func getPort(_ port: Port) throws(PortError) -> Message? {
        try port.dequeue()
    }

    /// Waits for the next message on `port` and takes it (DragonFly's `lwkt_waitport`). Tokens
    /// are released while waiting.
    ///
    /// - Throws: as ``getPort(_:)``; ``PortError/notOwner`` also when another task already
    ///   waits on the same thread port.
    nonisolated(nonsending) public static func waitPort(_ port: Port) async throws(PortError) -> Message {
        if let m = try port.dequeue() { return m }
        let held = LWKTThread.currentThread.map { Token.releaseAll(of: $0) } ?? false
        var got: Message? = nil
        var failure: PortError? = nil
        while true {
            guard await port.waitForMessage() else {
                failure = .notOwner
                break
            }
            do {
                got = try port.dequeue()
            } catch {
                failure = error
                break
            }
            if got != nil { break }
        }
        if held, let t = LWKTThread.currentThread { await Token.reacquireAll(of: t) }
        if let failure { throw failure }
        guard let got else { throw .unsupported }
        return got
    }

    /// Asks the target to abort an abortable message in flight (DragonFly's `lwkt_abortmsg`):
    /// calls its ``Message/abortRequested()`` at most once per request, and not once the
    /// message is done or replied. The message is still replied. Returns whether the hook ran.
    @discardableResult
    public static func abortMsg(_ msg: Message) -> Bool {
        let s = msg.state
        let f = s.pointee.flags.load(ordering: .acquiring)
        let final = MessageFlags.done.rawValue | MessageFlags.reply.rawValue
        guard f & MessageFlags.abortable.rawValue != 0, f & final == 0 else { return false }
        let old = s.pointee.flags.bitwiseOr(MessageFlags.abortCalled.rawValue, ordering: .acquiringAndReleasing).oldValue
        guard old & (final | MessageFlags.abortCalled.rawValue) == 0 else { return false }
        s.pointee.target?._withUnsafeGuaranteedRef { $0.counters.add(.aborts) }
        msg.abortRequested()
        return true
    }

    /// Pulls a dropable message back off its target port's queue (DragonFly's
    /// `lwkt_dropmsg`): if it is queued and not replied it is removed, marked done, and 0 is
    /// returned; otherwise ``MessageStatus/noEntry``. Thread and spin ports only; a thread
    /// port only on its CPU.
    ///
    /// - Throws: ``PortError/dropable`` if the message is not dropable,
    ///   ``PortError/notOwner`` or ``PortError/unsupported`` as for the port.
    public static func dropMsg(_ msg: Message) throws(PortError) -> Int32 {
        let s = msg.state
        guard s.pointee.flags.load(ordering: .acquiring) & MessageFlags.dropable.rawValue != 0 else { throw .dropable }
        guard let port = s.pointee.target?.takeUnretainedValue() else { return MessageStatus.noEntry }
        switch port.kind {
        case .thread:
            guard port.cpu?.isCurrent == true else { throw .notOwner }
        case .spin:
            break
        default:
            throw .unsupported
        }
        guard port.unlink(msg, unlessReplied: true) else { return MessageStatus.noEntry }
        s.pointee.flags.bitwiseOr(MessageFlags.done.rawValue, ordering: .acquiringAndReleasing)
        return MessageStatus.ok
    }
}
