import CLibellula
import Synchronization

/// How a token is held.
public enum TokenMode: Sendable, Equatable {
    case exclusive
    case shared
}

/// One entry of a thread's token stack.
struct HeldToken {
    let token: Token
    let mode: TokenMode
    /// A nested acquisition of a token the thread already held: it owns no physical hold.
    let nested: Bool
}

/// An LWKT token (DragonFly's `lwkt_token`): a soft lock that is held only while its holder
/// runs. Whenever an LWKT thread's job suspends, for any reason (an LWKT wait, an actor
/// call, `Task.sleep`, a continuation), the CPU's run loop sees the job return without
/// completing and releases every token the thread holds; before the thread's next job runs
/// it takes them all back, all or nothing (DragonFly's `lwkt_relalltokens` and
/// `lwkt_getalltokens` in `lwkt_switch`). If one is contended the thread's job goes back to
/// the end of the run queue: the thread waits, the CPU runs others. So tokens never
/// deadlock, whatever order they are taken in; the price, as in DragonFly, is that state a
/// token protects may change across any suspension.
///
/// Exclusive holds nest; shared holds run concurrently, and a waiting exclusive request
/// keeps new single-token shared holders out. Tokens must be released in reverse order.
/// Only LWKT threads may take tokens: a task that is not one has no token stack for the
/// scheduler to release, and taking a token there stops the process with a clear message.
public final class Token: @unchecked Sendable, CustomStringConvertible {
    static let exclusiveBit = 1
    static let requestBit = 2
    static let sharedUnit = 4

    /// A name for reports.
    public let name: String
    let word = Atomic<Int>(0)
    let owner = Atomic<UInt>(0)
    let acquisitionCount = Atomic<Int>(0)
    let contentionCount = Atomic<Int>(0)
    let holdNanos = Atomic<Int>(0)
    var exclusiveSince: UInt64 = 0

    public init(name: String) { self.name = name }

    public var description: String { "Token(\(name))" }

    /// How many times it was acquired (nested holds included).
    public var acquisitions: Int { acquisitionCount.load(ordering: .relaxed) }
    /// How many acquisitions found it held by someone else.
    public var contentions: Int { contentionCount.load(ordering: .relaxed) }
    /// The total time it was held exclusively, in nanoseconds.
    public var heldNanos: Int { holdNanos.load(ordering: .relaxed) }
    /// Whether anyone holds it now.
    public var isHeld: Bool { word.load(ordering: .relaxed) & ~Token.requestBit != 0 }

    /// The identity of the caller as a holder: its LWKT thread, else its task.
    static func holderKey() -> UInt {
        if let t = LWKTThread.currentThread { return UInt(bitPattern: ObjectIdentifier(t)) }
        return withUnsafeCurrentTask { ut in ut.map { unsafeBitCast($0, to: UInt.self) } ?? 1 }
    }

    /// The calling LWKT thread, or a stop with a clear message: a token taken by a task
    /// that is not an LWKT thread could stay held across its suspensions and deadlock.
    static func requireThread(_ what: String) -> LWKTThread {
        guard let t = LWKTThread.currentThread else {
            preconditionFailure("Token.\(what) called from a task that is not an LWKT thread: only LWKT threads have a token stack (spawn one with LWKTThread.spawn or LWKTSystem.run)")
        }
        return t
    }

    /// Pushes a hold on `thread`'s stack.
    func push(_ mode: TokenMode, nested: Bool, on thread: LWKTThread) {
        thread.tokens.append(HeldToken(token: self, mode: mode, nested: nested))
        if !nested { thread.stats[LWKTThread.physicalTokens] &+= 1 }
    }

    /// Takes the token, waiting while it is contended: a brief spin, then the thread
    /// parks (its job suspends, so its other tokens are released meanwhile) and retries.
    /// Call it only from an LWKT thread.
    public func acquire(_ mode: TokenMode = .exclusive) async {
        let thread = Token.requireThread("acquire")
        // Running where the run loop does not know the thread (inside an actor pinned to
        // another CPU) its released tokens were not taken back: take them first.
        if thread.stats[LWKTThread.tokensReleased] != 0 { await Token.reacquireAll(of: thread) }
        let key = UInt(bitPattern: ObjectIdentifier(thread))
        acquisitionCount.add(1, ordering: .relaxed)
        if owner.load(ordering: .acquiring) == key, word.load(ordering: .relaxed) & Token.exclusiveBit != 0 {
            push(mode, nested: true, on: thread)
            return
        }
        let holdsOthers = !thread.tokens.isEmpty
        if !tryTake(mode, key: key, holdsOthers: holdsOthers, request: false) {
            contentionCount.add(1, ordering: .relaxed)
            if let cpu = CPU.current { cpu.counters.add(.tokenContended) }
            await takeSlow(mode, key: key, thread: thread)
        }
        push(mode, nested: false, on: thread)
    }

    /// Takes the token if that is possible without waiting. Call it only from an LWKT
    /// thread.
    public func tryAcquire(_ mode: TokenMode = .exclusive) -> Bool {
        let thread = Token.requireThread("tryAcquire")
        if thread.stats[LWKTThread.tokensReleased] != 0 && !Token.tryReacquireAll(of: thread) { return false }
        let key = UInt(bitPattern: ObjectIdentifier(thread))
        if owner.load(ordering: .acquiring) == key, word.load(ordering: .relaxed) & Token.exclusiveBit != 0 {
            acquisitionCount.add(1, ordering: .relaxed)
            push(mode, nested: true, on: thread)
            return true
        }
        let holdsOthers = !thread.tokens.isEmpty
        guard tryTake(mode, key: key, holdsOthers: holdsOthers, request: false) else { return false }
        acquisitionCount.add(1, ordering: .relaxed)
        push(mode, nested: false, on: thread)
        return true
    }

    /// Releases the innermost hold. Throws if this token is not the caller's innermost one.
    public func release() throws {
        if let thread = LWKTThread.currentThread {
            guard let top = thread.tokens.last, top.token === self else {
                throw LWKTError.tokenMisuse("\(name) released out of order or not held")
            }
            thread.tokens.removeLast()
            if !top.nested {
                thread.stats[LWKTThread.physicalTokens] &-= 1
                // While released (the thread runs where the run loop does not know it),
                // the hold is not physical: nothing to drop.
                if thread.stats[LWKTThread.tokensReleased] == 0 { drop(top.mode) }
                if thread.stats[LWKTThread.physicalTokens] == 0 { thread.stats[LWKTThread.tokensReleased] = 0 }
            }
        } else {
            let w = word.load(ordering: .relaxed)
            if w & Token.exclusiveBit != 0 {
                guard owner.load(ordering: .relaxed) == Token.holderKey() else {
                    throw LWKTError.tokenMisuse("\(name) released by a task that does not hold it")
                }
                drop(.exclusive)
            } else if w >= Token.sharedUnit {
                drop(.shared)
            } else {
                throw LWKTError.tokenMisuse("\(name) released but not held")
            }
        }
    }

    /// Runs `body` holding the token.
    public func withToken<R>(_ mode: TokenMode = .exclusive, _ body: () async throws -> R) async rethrows -> R {
        await acquire(mode)
        defer { try? release() }
        return try await body()
    }

    // MARK: Mechanics

    func tryTake(_ mode: TokenMode, key: UInt, holdsOthers: Bool, request: Bool) -> Bool {
        switch mode {
        case .exclusive:
            var w = word.load(ordering: .relaxed)
            while true {
                if w & ~Token.requestBit == 0 {
                    let (ok, seen) = word.compareExchange(expected: w, desired: Token.exclusiveBit,
                                                          ordering: .acquiringAndReleasing)
                    if ok {
                        owner.store(key, ordering: .releasing)
                        exclusiveSince = lb_now_ns()
                        return true
                    }
                    w = seen
                    continue
                }
                if request && w & Token.requestBit == 0 {
                    word.bitwiseOr(Token.requestBit, ordering: .relaxed)
                }
                return false
            }
        case .shared:
            let w = word.load(ordering: .relaxed)
            if w & Token.exclusiveBit != 0 { return false }
            if w & Token.requestBit != 0 && !holdsOthers { return false }
            let old = word.add(Token.sharedUnit, ordering: .acquiringAndReleasing).oldValue
            if old & Token.exclusiveBit != 0 {
                word.subtract(Token.sharedUnit, ordering: .releasing)
                return false
            }
            return true
        }
    }

    /// Waits for a contended token: spin a little, then park the thread (never the CPU).
    /// Parking suspends the thread's job, so the run loop releases the tokens it already
    /// holds (as DragonFly's switch does) and takes them all back before it runs again:
    /// two threads taking A→B and B→A cannot deadlock.
    func takeSlow(_ mode: TokenMode, key: UInt, thread: LWKTThread) async {
        var tries = 0
        while !tryTake(mode, key: key, holdsOthers: !thread.tokens.isEmpty, request: true) {
            tries &+= 1
            if tries < 64 {
                lb_cpu_relax()
                if tries & 15 == 0 { CPU.processPending() }
                continue
            }
            await LWKT.park()
        }
    }

    func drop(_ mode: TokenMode) {
        switch mode {
        case .exclusive:
            let held = lb_now_ns() &- exclusiveSince
            holdNanos.add(Int(held), ordering: .relaxed)
            owner.store(0, ordering: .relaxed)
            word.bitwiseAnd(~(Token.exclusiveBit | Token.requestBit), ordering: .releasing)
        case .shared:
            word.subtract(Token.sharedUnit, ordering: .releasing)
        }
    }

    /// Releases every token `thread` holds, keeping its stack (DragonFly's
    /// `lwkt_relalltokens`). Returns whether it released any; releasing twice is a no-op.
    /// Called by the run loop when the thread's job suspends, and by LWKT waits.
    @discardableResult
    static func releaseAll(of thread: LWKTThread) -> Bool {
        let st = thread.stats
        if st[LWKTThread.physicalTokens] == 0 || st[LWKTThread.tokensReleased] != 0 { return false }
        for h in thread.tokens.reversed() where !h.nested { h.token.drop(h.mode) }
        st[LWKTThread.tokensReleased] = 1
        return true
    }

    /// For a wait: releases the tokens of the LWKT thread running the caller, and returns
    /// the thread if it held any (to take them back after the wait). In a thread's own task
    /// it reads the run loop's record of the running thread, so a thread holding no tokens
    /// (the common case) pays no task-local lookup.
    @inline(__always)
    static func releaseAllForWait() -> LWKTThread? {
        if let l = CPU.currentLocal, let st = l.pointee.runningThreadStats {
            if st[LWKTThread.physicalTokens] == 0 { return nil }
            if let address = UnsafeRawPointer(bitPattern: Int(st[LWKTThread.threadAddress])) {
                let t = Unmanaged<LWKTThread>.fromOpaque(address).takeUnretainedValue()
                return releaseAll(of: t) ? t : nil
            }
        }
        guard let t = LWKTThread.currentThread else { return nil }
        return releaseAll(of: t) ? t : nil
    }

    /// Takes back every token on `thread`'s stack, outermost first, all or nothing
    /// (DragonFly's `lwkt_getalltokens`). Returns false, holding none of them, if one is
    /// contended. A no-op when nothing was released.
    static func tryReacquireAll(of thread: LWKTThread) -> Bool {
        let st = thread.stats
        if st[LWKTThread.tokensReleased] == 0 { return true }
        let key = UInt(bitPattern: ObjectIdentifier(thread))
        var taken = 0
        var holdsOthers = false
        for h in thread.tokens where !h.nested {
            if !h.token.tryTake(h.mode, key: key, holdsOthers: holdsOthers, request: true) {
                var undone = 0
                for g in thread.tokens where !g.nested {
                    if undone == taken { break }
                    undone += 1
                    g.token.drop(g.mode)
                }
                return false
            }
            taken += 1
            holdsOthers = true
        }
        st[LWKTThread.tokensReleased] = 0
        return true
    }

    /// ``tryReacquireAll(of:)`` until it succeeds, parking the thread between tries. Used
    /// where a thread resumes without the run loop having seen it (after a migration).
    static func reacquireAll(of thread: LWKTThread) async {
        var spins = 0
        while !tryReacquireAll(of: thread) {
            spins &+= 1
            if spins < 64 { lb_cpu_relax() } else { await LWKT.park() }
        }
    }

    /// The run loop's side: before running a job of the thread whose words are at
    /// `stats`, take its released tokens back. False: contended, do not run it yet.
    @usableFromInline
    static func schedulerReacquire(_ stats: UnsafeMutablePointer<Int64>) -> Bool {
        guard let raw = UnsafeMutableRawPointer(bitPattern: Int(stats[LWKTThread.threadAddress])) else { return true }
        return Unmanaged<LWKTThread>.fromOpaque(raw)._withUnsafeGuaranteedRef { tryReacquireAll(of: $0) }
    }

    /// The run loop's side: the thread's job returned without completing (it suspended),
    /// so its tokens are released until it runs again.
    @usableFromInline
    static func schedulerRelease(_ stats: UnsafeMutablePointer<Int64>) {
        guard let raw = UnsafeMutableRawPointer(bitPattern: Int(stats[LWKTThread.threadAddress])) else { return }
        Unmanaged<LWKTThread>.fromOpaque(raw)._withUnsafeGuaranteedRef { _ = releaseAll(of: $0) }
    }

    /// The tokens the calling LWKT thread holds, innermost last.
    public static var heldByCurrentThread: [Token] {
        LWKTThread.currentThread?.tokens.map(\.token) ?? []
    }
}

extension LWKT {
    /// Puts the caller at the tail of its band even if nothing else is ready, so that the
    /// CPU's loop makes a full pass (timers, descriptors) before it runs again.
    static func park() async {
        guard let l = CPU.currentLocal else {
            await Task.yield()
            return
        }
        await withUnsafeContinuation { (c: UnsafeContinuation<Void, Never>) in
            l.pointee.yielders.append(c)
        }
    }
}
