import CLibellula
import Synchronization

/// The agent of a function or serializer port: it handles one message and returns its
/// status, or ``MessageStatus/async`` when it keeps the message and replies later.
public typealias PortHandler = @Sendable (Message) -> Int32

/// What a reply-only port does with each reply, after the message is marked done.
public typealias ReplyHandler = @Sendable (Message) -> Void

/// ``Port`` under a name that does not collide with Foundation's `Port`.
public typealias LWKTPort = Port

/// State of a thread port that only its owning CPU touches.
struct ThreadPortState {
    var queue = MessageQueue()
    var waiter: UnsafeContinuation<Void, Never>? = nil
}

/// State of spin and serializer ports, under the port's lock.
struct SharedPortState: @unchecked Sendable {
    var queue = MessageQueue()
    var waiters: [UnsafeContinuation<Void, Never>] = []
    var busy = false
}

/// A message port (DragonFly's `lwkt_port`): the target of requests and the destination of
/// replies. Putting a message calls the port's agent directly, in the caller's context; the
/// agent completes it there (the synchronous fast path) or keeps it and reports
/// ``MessageStatus/async``. A port must outlive the messages sent to it.
public final class Port: @unchecked Sendable, CustomStringConvertible {
    /// The kinds of port.
    public enum Kind: Sendable, Equatable {
        /// Owned by one CPU (and the LWKT thread that serves it there). Puts from other CPUs
        /// travel through the crossbar; only the owner gets from it or waits on it.
        case thread
        /// Any thread on any CPU may put, get and wait; a short lock guards the queue.
        case spin
        /// Runs its handler on one message at a time, in arrival order, in the context of
        /// whichever caller finds it idle (or on its CPU, if pinned).
        case serializer
        /// Runs its handler on each message in the caller's context (or on its CPU, if pinned).
        case function
        /// Accepts only replies; requests put to it fail with ``MessageStatus/invalid``.
        case replyOnly
    }

    /// The kind of port.
    public let kind: Kind
    /// A readable name.
    public let name: String
    /// The owning CPU of a thread port, or the CPU a function or serializer port is pinned
    /// to; `nil` for ports usable anywhere.
    public let cpu: CPU?
    let handler: PortHandler?
    /// The function port's handler (a no-op for other kinds), called without unwrapping.
    @usableFromInline let agent: PortHandler
    /// Whether this is a function port (checked on the fast path without loading `kind`).
    @usableFromInline let isFunction: Bool
    /// The owner-state pointer of the CPU the port is pinned to, compared with the caller's
    /// without touching the `CPU` object.
    @usableFromInline let pinnedLocal: UnsafeMutableRawPointer?
    let replyHandler: ReplyHandler?
    let local: UnsafeMutablePointer<ThreadPortState>
    let shared: Mutex<SharedPortState>
    @usableFromInline let counters: PortCounters
    #if DEBUG
    /// Messages on their way to this port through the crossbar (debug builds only; a
    /// release put touches no count shared by CPUs).
    let inFlight = Atomic<Int>(0)
    #endif

    init(kind: Kind, name: String, cpu: CPU?, handler: PortHandler?, replyHandler: ReplyHandler?) {
        self.kind = kind
        self.name = name
        self.cpu = cpu
        self.handler = handler
        self.agent = handler ?? { _ in MessageStatus.invalid }
        self.isFunction = kind == .function
        self.pinnedLocal = cpu.map { UnsafeMutableRawPointer($0.local) }
        self.replyHandler = replyHandler
        local = .allocate(capacity: 1)
        local.initialize(to: ThreadPortState())
        shared = Mutex(SharedPortState())
        counters = PortCounters()
    }

    deinit {
        #if DEBUG
        let pending = inFlight.load(ordering: .sequentiallyConsistent)
        precondition(pending == 0, "\(self) destroyed with \(pending) message(s) in flight to it; a port must outlive its messages")
        #endif
        local.pointee.queue.removeAll()
        local.deinitialize(count: 1)
        local.deallocate()
        shared.withLock { $0.queue.removeAll() }
        counters.deallocate()
    }

    /// A thread port owned by `cpu`: only code running there (normally one LWKT thread)
    /// may get from it or wait on it.
    public static func thread(on cpu: CPU, name: String = "thread-port") -> Port {
        Port(kind: .thread, name: name, cpu: cpu, handler: nil, replyHandler: nil)
    }

    /// A thread port owned by the calling CPU.
    public static func forCurrentCPU(name: String = "thread-port") throws -> Port {
        thread(on: try LWKT.currentCPU("Port.forCurrentCPU"), name: name)
    }

    /// A spin port: any thread on any CPU may put to it, get from it and wait on it.
    public static func spin(name: String = "spin-port") -> Port {
        Port(kind: .spin, name: name, cpu: nil, handler: nil, replyHandler: nil)
    }

    /// A serializer port: `handler` sees one message at a time, in the order they arrived.
    /// Pinned to `cpu`, puts from other CPUs travel through the crossbar and the handler
    /// always runs there.
    public static func serializer(name: String = "serializer-port", on cpu: CPU? = nil,
                                  _ handler: @escaping PortHandler) -> Port {
        Port(kind: .serializer, name: name, cpu: cpu, handler: handler, replyHandler: nil)
    }

    /// A function port: `handler` runs on each message in the caller's context. Pinned to
    /// `cpu`, puts from other CPUs travel through the crossbar and complete asynchronously.
    public static func function(name: String = "function-port", on cpu: CPU? = nil,
                                _ handler: @escaping PortHandler) -> Port {
        Port(kind: .function, name: name, cpu: cpu, handler: handler, replyHandler: nil)
    }

    /// A reply-only port: replies are marked done and passed to `onReply`, if given.
    public static func replyOnly(name: String = "reply-port", onReply: ReplyHandler? = nil) -> Port {
        Port(kind: .replyOnly, name: name, cpu: nil, handler: nil, replyHandler: onReply)
    }

    public var description: String { "Port(\(name), \(kind))" }

    /// The port's counters.
    public var statistics: PortStatistics {
        PortStatistics(name: name,
                       puts: counters.total(.puts) &+ counters.total(.sync) &+ counters.total(.fastAsync),
                       synchronousCompletions: counters.total(.sync) &+ counters.total(.syncSlow),
                       queued: counters.total(.queued), replies: counters.total(.replies),
                       aborts: counters.total(.aborts))
    }

    /// How many messages wait on the port's queue (a snapshot; exact for the owner).
    public var queuedCount: Int {
        switch kind {
        case .thread: return local.pointee.queue.count
        case .spin, .serializer: return shared.withLock { $0.queue.count }
        case .function, .replyOnly: return 0
        }
    }

    // MARK: - Agent

    /// Calls the port's agent on `msg` (DragonFly's `mp_putport`). Returns the status of a
    /// synchronous completion, or ``MessageStatus/async`` when the port kept the message.
    @inlinable @inline(__always)
    func put(_ msg: Message) -> Int32 {
        msg.state.pointee.target = Unmanaged.passUnretained(self)
        let here = lb_current_cpu()
        let row = counters.row(here)
        if isFunction, pinnedLocal == nil || pinnedLocal == here {
            let r = agent(msg)
            // One counter per put: `puts` is summed from these two and the slow path's.
            PortCounters.bump(row, r != MessageStatus.async ? .sync : .fastAsync, counters)
            return r
        }
        PortCounters.bump(row, .puts, counters)
        return putSlow(msg)
    }

    @usableFromInline
    func putSlow(_ msg: Message) -> Int32 {
        switch kind {
        case .function:
            guard let cpu, !cpu.isCurrent else { return putFunctionHere(msg) }
            sendRemote(cpu, runHandlerIPI, msg)
            return MessageStatus.async
        case .thread:
            guard let cpu else { return MessageStatus.invalid }
            if cpu.isCurrent {
                CPU.critical { enqueueLocal(msg) }
            } else {
                sendRemote(cpu, threadPutIPI, msg)
            }
            return MessageStatus.async
        case .spin:
            enqueueShared(msg, reply: false)
            return MessageStatus.async
        case .serializer:
            if let cpu, !cpu.isCurrent {
                sendRemote(cpu, runHandlerIPI, msg)
                return MessageStatus.async
            }
            let r = serialize(msg)
            if r != MessageStatus.async { counters.add(.syncSlow) }
            return r
        case .replyOnly:
            return MessageStatus.invalid
        }
    }

    /// Runs a function port's handler in the caller's context (the fast path's fallback).
    func putFunctionHere(_ msg: Message) -> Int32 {
        guard let handler else { return MessageStatus.invalid }
        let r = handler(msg)
        if r != MessageStatus.async { counters.add(.syncSlow) }
        return r
    }

    /// Passes `msg` to `cpu` through the crossbar, with a reference to the message only:
    /// the port is passed unretained (ports outlive their messages, as in DragonFly), so a
    /// remote put touches no reference count that all CPUs share. Debug builds count the
    /// messages in flight and trap if the port is destroyed before they arrive.
    func sendRemote(_ cpu: CPU, _ fn: IPIFunction, _ msg: Message) {
        let m = Unmanaged.passRetained(msg).toOpaque()
        let p = Int(bitPattern: Unmanaged.passUnretained(self).toOpaque())
        #if DEBUG
        inFlight.add(1, ordering: .relaxed)
        #endif
        cpu.sendIPI(fn, m, p)
    }

    /// Ends the in-flight count of a message that arrived through the crossbar, once the
    /// port is done with it.
    @inline(__always)
    func remoteDone() {
        #if DEBUG
        inFlight.subtract(1, ordering: .releasing)
        #endif
    }

    /// Runs a serializer's handler on `msg` if the port is idle, then on whatever queued up
    /// meanwhile (replying to those); otherwise queues `msg` for the running caller.
    func serialize(_ msg: Message) -> Int32 {
        let run: Bool = shared.withLock { s in
            if s.busy {
                s.queue.push(msg)
                msg.state.pointee.flags.bitwiseOr(MessageFlags.queued.rawValue, ordering: .acquiringAndReleasing)
                return false
            }
            s.busy = true
            return true
        }
        guard run, let handler else {
            counters.add(.queued)
            return MessageStatus.async
        }
        let r = handler(msg)
        while true {
            let next: Message? = shared.withLock { s in
                if let m = s.queue.pop() {
                    m.state.pointee.flags.bitwiseAnd(~MessageFlags.queued.rawValue, ordering: .acquiringAndReleasing)
                    return m
                }
                s.busy = false
                return nil
            }
            guard let next else { break }
            let st = handler(next)
            if st != MessageStatus.async { LWKT.replyMsg(next, error: st) }
        }
        return r
    }

    /// Queues `msg` on a thread port; runs on the owning CPU inside a critical section.
    func enqueueLocal(_ msg: Message) {
        CPU.assertInCritical("thread port enqueue")
        cpu?.assertCurrent("thread port enqueue")
        local.pointee.queue.push(msg)
        msg.state.pointee.flags.bitwiseOr(MessageFlags.queued.rawValue, ordering: .acquiringAndReleasing)
        counters.add(.queued)
        if let w = local.pointee.waiter {
            local.pointee.waiter = nil
            w.resume()
        }
    }

    /// Queues `msg` on a spin port; a reply is marked done under the lock.
    func enqueueShared(_ msg: Message, reply: Bool) {
        var woken: [UnsafeContinuation<Void, Never>] = []
        let msgWaiter: UnsafeContinuation<Void, Never>? = shared.withLock { s in
            s.queue.push(msg)
            var bits = MessageFlags.queued.rawValue
            if reply { bits |= MessageFlags.done.rawValue | MessageFlags.reply.rawValue }
            let old = msg.state.pointee.flags.bitwiseOr(bits, ordering: .acquiringAndReleasing).oldValue
            if !s.waiters.isEmpty { swap(&woken, &s.waiters) }
            return reply ? Port.takeWaiter(msg, old: old) : nil
        }
        counters.add(.queued)
        msgWaiter?.resume()
        for w in woken { w.resume() }
    }

    /// Takes the continuation of a `waitMsg` on `msg` if `old` (the flags before `done` was
    /// set) says one was published.
    static func takeWaiter(_ msg: Message, old: UInt32) -> UnsafeContinuation<Void, Never>? {
        guard old & MessageFlags.waiting.rawValue != 0 else { return nil }
        let s = msg.state
        let c = s.pointee.waiter
        s.pointee.waiter = nil
        s.pointee.flags.bitwiseAnd(~MessageFlags.waiting.rawValue, ordering: .releasing)
        return c
    }

    /// Marks `msg` done and replied and wakes its waiter, if any.
    static func complete(_ msg: Message) {
        let bits = MessageFlags.done.rawValue | MessageFlags.reply.rawValue
        let old = msg.state.pointee.flags.bitwiseOr(bits, ordering: .acquiringAndReleasing).oldValue
        takeWaiter(msg, old: old)?.resume()
    }

    /// Delivers a reply to this port (DragonFly's `mp_replyport`).
    func deliverReply(_ msg: Message) {
        counters.add(.replies)
        let sync = msg.state.pointee.flags.load(ordering: .acquiring) & MessageFlags.sync.rawValue != 0
        if sync {
            // The originator waits on the message itself: signal it, never queue it.
            Port.complete(msg)
            return
        }
        switch kind {
        case .thread:
            guard let cpu else { Port.complete(msg); return }
            if cpu.isCurrent {
                CPU.critical {
                    local.pointee.queue.push(msg)
                    msg.state.pointee.flags.bitwiseOr(MessageFlags.queued.rawValue, ordering: .acquiringAndReleasing)
                    counters.add(.queued)
                    Port.complete(msg)
                    if let w = local.pointee.waiter {
                        local.pointee.waiter = nil
                        w.resume()
                    }
                }
            } else {
                sendRemote(cpu, replyIPI, msg)
            }
        case .spin:
            enqueueShared(msg, reply: true)
        case .replyOnly:
            Port.complete(msg)
            replyHandler?(msg)
        case .function, .serializer:
            Port.complete(msg)
        }
    }

    /// Pops the next message; thread ports only on their CPU.
    func dequeue() throws(PortError) -> Message? {
        switch kind {
        case .thread:
            guard cpu?.isCurrent == true else { throw .notOwner }
            return CPU.critical {
                let m = local.pointee.queue.pop()
                m?.state.pointee.flags.bitwiseAnd(~MessageFlags.queued.rawValue, ordering: .acquiringAndReleasing)
                return m
            }
        case .spin:
            return shared.withLock { s in
                let m = s.queue.pop()
                m?.state.pointee.flags.bitwiseAnd(~MessageFlags.queued.rawValue, ordering: .acquiringAndReleasing)
                return m
            }
        case .serializer, .function, .replyOnly:
            throw .unsupported
        }
    }

    /// Unlinks `msg` from the queue if it is on it; thread ports only on their CPU.
    func unlink(_ msg: Message, unlessReplied: Bool) -> Bool {
        let reply = MessageFlags.reply.rawValue
        let queued = MessageFlags.queued.rawValue
        func take(_ q: inout MessageQueue) -> Bool {
            let f = msg.state.pointee.flags.load(ordering: .acquiring)
            guard f & queued != 0, !(unlessReplied && f & reply != 0) else { return false }
            guard q.remove(msg) else { return false }
            msg.state.pointee.flags.bitwiseAnd(~queued, ordering: .acquiringAndReleasing)
            return true
        }
        switch kind {
        case .thread: return CPU.critical { take(&local.pointee.queue) }
        case .spin: return shared.withLock { take(&$0.queue) }
        default: return false
        }
    }

    /// Suspends until this port's queue may hold a message (spurious returns allowed).
    /// Returns `false` at once if another task already waits on this thread port.
    func waitForMessage() async -> Bool {
        switch kind {
        case .thread:
            var busy = false
            await withUnsafeContinuation { (c: UnsafeContinuation<Void, Never>) in
                let ready = CPU.critical { () -> Bool in
                    if !local.pointee.queue.isEmpty { return true }
                    if local.pointee.waiter != nil {
                        busy = true
                        return true
                    }
                    local.pointee.waiter = c
                    return false
                }
                if ready { c.resume() }
            }
            return !busy
        case .spin:
            await withUnsafeContinuation { (c: UnsafeContinuation<Void, Never>) in
                let ready = shared.withLock { s -> Bool in
                    if !s.queue.isEmpty { return true }
                    s.waiters.append(c)
                    return false
                }
                if ready { c.resume() }
            }
            return true
        default:
            return true
        }
    }
}

// The IPIs below borrow the port (`_withUnsafeGuaranteedRef`): the receiving CPU does
// not touch the port's reference count either.

/// Runs a function or serializer port's handler on the port's CPU.
let runHandlerIPI: IPIFunction = { arg, arg2 in
    guard let arg, let pp = UnsafeMutableRawPointer(bitPattern: arg2) else { return }
    let msg = Unmanaged<Message>.fromOpaque(arg).takeRetainedValue()
    Unmanaged<Port>.fromOpaque(pp)._withUnsafeGuaranteedRef { port in
        let r: Int32
        if port.kind == .serializer {
            r = port.serialize(msg)
        } else if let h = port.handler {
            r = h(msg)
        } else {
            r = MessageStatus.invalid
        }
        if r != MessageStatus.async { LWKT.replyMsg(msg, error: r) }
        port.remoteDone()
    }
}

/// Queues a message on a thread port, on the port's CPU.
let threadPutIPI: IPIFunction = { arg, arg2 in
    guard let arg, let pp = UnsafeMutableRawPointer(bitPattern: arg2) else { return }
    let msg = Unmanaged<Message>.fromOpaque(arg).takeRetainedValue()
    Unmanaged<Port>.fromOpaque(pp)._withUnsafeGuaranteedRef { port in
        port.enqueueLocal(msg)
        port.remoteDone()
    }
}

/// Delivers a reply to a thread port, on the port's CPU.
let replyIPI: IPIFunction = { arg, arg2 in
    guard let arg, let pp = UnsafeMutableRawPointer(bitPattern: arg2) else { return }
    let msg = Unmanaged<Message>.fromOpaque(arg).takeRetainedValue()
    Unmanaged<Port>.fromOpaque(pp)._withUnsafeGuaranteedRef { port in
        port.deliverReply(msg)
        port.remoteDone()
    }
}
