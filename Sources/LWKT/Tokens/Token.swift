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

/// An LWKT token: a soft lock that is held only while its holder runs. When an LWKT thread
/// waits in an LWKT primitive (`tsleep`, `LWKT.sleep`, `LWKT.yield`, descriptor waits,
/// message waits) every token it holds is released, and all are taken back before it
/// resumes — so tokens never deadlock, whatever order they are taken in. The price, as in
/// DragonFly, is that state a token protects may change across such a wait.
///
/// Exclusive holds nest; shared holds run concurrently, and a waiting exclusive request
/// keeps new single-token shared holders out. Tokens must be released in reverse order.
/// Waiting for a contended token spins briefly and then yields the CPU.
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

    /// Takes the token, waiting (spinning, then yielding the CPU) while it is contended.
    public func acquire(_ mode: TokenMode = .exclusive) async {
        let key = Token.holderKey()
        let thread = LWKTThread.currentThread
        acquisitionCount.add(1, ordering: .relaxed)
        if mode == .exclusive, owner.load(ordering: .acquiring) == key,
           word.load(ordering: .relaxed) & Token.exclusiveBit != 0 {
            thread?.tokens.append(HeldToken(token: self, mode: mode, nested: true))
            return
        }
        if mode == .shared, owner.load(ordering: .acquiring) == key,
           word.load(ordering: .relaxed) & Token.exclusiveBit != 0 {
            thread?.tokens.append(HeldToken(token: self, mode: mode, nested: true))
            return
        }
        let holdsOthers = !(thread?.tokens.isEmpty ?? true)
        if !tryTake(mode, key: key, holdsOthers: holdsOthers, request: false) {
            contentionCount.add(1, ordering: .relaxed)
            if let cpu = CPU.current { cpu.counters.add(.tokenContended) }
            await takeSlow(mode, key: key, holdsOthers: holdsOthers)
        }
        thread?.tokens.append(HeldToken(token: self, mode: mode, nested: false))
    }

    /// Takes the token if that is possible without waiting.
    public func tryAcquire(_ mode: TokenMode = .exclusive) -> Bool {
        let key = Token.holderKey()
        let thread = LWKTThread.currentThread
        if owner.load(ordering: .acquiring) == key, word.load(ordering: .relaxed) & Token.exclusiveBit != 0 {
            acquisitionCount.add(1, ordering: .relaxed)
            thread?.tokens.append(HeldToken(token: self, mode: mode, nested: true))
            return true
        }
        let holdsOthers = !(thread?.tokens.isEmpty ?? true)
        guard tryTake(mode, key: key, holdsOthers: holdsOthers, request: false) else { return false }
        acquisitionCount.add(1, ordering: .relaxed)
        thread?.tokens.append(HeldToken(token: self, mode: mode, nested: false))
        return true
    }

    /// Releases the innermost hold. Throws if this token is not the caller's innermost one.
    public func release() throws {
        if let thread = LWKTThread.currentThread {
            guard let top = thread.tokens.last, top.token === self else {
                throw LWKTError.tokenMisuse("\(name) released out of order or not held")
            }
            thread.tokens.removeLast()
            if !top.nested { drop(top.mode) }
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

    /// Waits for a contended token: spin a little, then give the CPU away. Before giving
    /// it away the thread drops every token it holds (as DragonFly's switch does) and takes
    /// them all back afterwards, so two threads taking A→B and B→A cannot deadlock.
    func takeSlow(_ mode: TokenMode, key: UInt, holdsOthers: Bool) async {
        var tries = 0
        let thread = LWKTThread.currentThread
        while !tryTake(mode, key: key, holdsOthers: holdsOthers, request: true) {
            tries &+= 1
            if tries < 64 {
                lb_cpu_relax()
                if tries & 15 == 0 { CPU.processPending() }
                continue
            }
            let dropped = thread.map { Token.releaseAll(of: $0) } ?? false
            await LWKT.park()
            if dropped, let thread { await Token.reacquireAll(of: thread) }
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

    /// Releases every token `thread` holds, keeping its stack. Returns whether it held any.
    static func releaseAll(of thread: LWKTThread) -> Bool {
        if thread.tokens.isEmpty { return false }
        for h in thread.tokens.reversed() where !h.nested { h.token.drop(h.mode) }
        return true
    }

    /// Takes back every token on `thread`'s stack, outermost first, all or nothing (DragonFly's
    /// `lwkt_getalltokens`): if one is contended, those already taken are dropped again and
    /// the thread gives the CPU away before it retries.
    static func reacquireAll(of thread: LWKTThread) async {
        let key = UInt(bitPattern: ObjectIdentifier(thread))
        let physical = thread.tokens.filter { !$0.nested }
        if physical.isEmpty { return }
        var spins = 0
        while true {
            var taken = 0
            var holdsOthers = false
            for h in physical {
                if !h.token.tryTake(h.mode, key: key, holdsOthers: holdsOthers, request: true) { break }
                taken += 1
                holdsOthers = true
            }
            if taken == physical.count { return }
            for h in physical[0..<taken].reversed() { h.token.drop(h.mode) }
            spins &+= 1
            if spins < 64 {
                lb_cpu_relax()
            } else {
                await LWKT.park()
            }
        }
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
