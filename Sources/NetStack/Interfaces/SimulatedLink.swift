import CLibellula
import LWKT
import Synchronization

/// An in-process Ethernet wire between two endpoints, each a ``NetworkInterface`` with
/// one queue per CPU. Each direction has a seeded fault injector (``LinkFaults``) — loss,
/// duplication, corruption, reordering, delay, jitter and a line rate — and counts what
/// it did, so a test can tell exactly what the wire lost.
public final class SimulatedLink: @unchecked Sendable {
    /// How a receiving endpoint picks the queue (CPU) a frame arrives on.
    public enum Steering: Sendable {
        /// The stack's own symmetric Toeplitz hash, as a NIC with a matching RSS key does:
        /// frames arrive on their owner CPU.
        case flowHash
        /// Frames are spread over the queues in turn: most arrive on the wrong CPU.
        case roundRobin
        /// Every frame arrives on one queue.
        case single(Int)
    }

    /// The two ends.
    public let a: Endpoint
    public let b: Endpoint

    /// Creates a link whose ends have `queues` queues each.
    ///
    /// `offloads` makes the wire behave like a Linux veth pair with its offloads on: a
    /// frame whose transport checksum is left partial crosses unchecked (memory does not
    /// corrupt it), and a TSO segment of up to 64 KB crosses whole, arriving coalesced as a
    /// receive offload would deliver it. Where the direction injects faults, the wire
    /// completes a partial checksum before judging the frame (so a corrupted frame is
    /// caught by the receiver), and a TSO segment is lost, delayed or corrupted as one frame.
    public init(queues: Int, mtu: Int = 1500, aToB: LinkFaults = .none, bToA: LinkFaults = .none,
                steering: Steering = .flowHash, offloads: InterfaceOffloads = []) {
        a = Endpoint(name: "sim-a", mac: .local(seed: 0xa0_0001), queues: queues, mtu: mtu, faults: aToB, steering: steering,
                     offloads: offloads)
        b = Endpoint(name: "sim-b", mac: .local(seed: 0xb0_0001), queues: queues, mtu: mtu, faults: bToA, steering: steering,
                     offloads: offloads)
        a.peer = b
        b.peer = a
        a.peerRef = .passUnretained(b)
        b.peerRef = .passUnretained(a)
    }

    /// What one direction of the wire did.
    public struct Statistics: Sendable, Equatable {
        /// Frames handed to the wire.
        public var sent = 0
        /// Frames the fault injector lost.
        public var lost = 0
        /// Frames dropped because the receiving queue was full.
        public var overflowed = 0
        /// Extra copies delivered.
        public var duplicated = 0
        /// Frames delivered with a flipped bit (copies included).
        public var corrupted = 0
        /// Frames delayed for reordering.
        public var reordered = 0
        /// Frames taken from the wire by the receiver.
        public var delivered = 0
    }

    /// One end of the wire.
    public final class Endpoint: NetworkInterface, @unchecked Sendable {
        public let name: String
        public let macAddress: MACAddress
        public let mtu: Int
        public let queueCount: Int
        public let offloads: InterfaceOffloads
        let steering: Steering
        unowned(unsafe) var peer: Endpoint! = nil
        /// The same, for the per-frame path (passed on without a retain; the link holds both ends).
        var peerRef: Unmanaged<Endpoint>? = nil
        /// Fault state of the direction leaving this end.
        let tx: Mutex<Injector>
        /// Arrival queues of this end.
        let rx: [ArrivalQueue]
        /// The queues again, unretained (`rx` keeps them alive): a frame's path reads its
        /// queue without touching reference counts.
        private let rxRefs: UnsafeMutablePointer<Unmanaged<ArrivalQueue>>
        var system: LWKTSystem? {
            didSet { systemRef = system.map { .passUnretained($0) } }
        }
        /// The system, unretained (``system`` keeps it alive), for the wakeup per arrival.
        private var systemRef: Unmanaged<LWKTSystem>? = nil
        var hasher = ToeplitzHash.symmetric
        let counterDelivered: UnsafeMutablePointer<Int64>
        private let roundRobin = Atomic<Int>(0)
        /// Whether the direction leaving this end injects no faults (then frames skip the
        /// injector and its lock).
        private let faultFree: Atomic<Bool>
        /// Frames injected on the fault-free path (``inject(_:)``, any thread).
        private let fastSent = Atomic<Int>(0)
        /// Frames the stack sent on the fault-free path, per queue (one cache line each,
        /// written only by that queue's CPU: a shared atomic here bounced between the CPUs
        /// on every frame).
        private let counterSent: UnsafeMutablePointer<Int64>

        init(name: String, mac: MACAddress, queues: Int, mtu: Int, faults: LinkFaults, steering: Steering,
             offloads: InterfaceOffloads) {
            self.name = name
            self.offloads = offloads
            macAddress = mac
            self.mtu = mtu
            queueCount = queues
            self.steering = steering
            tx = Mutex(Injector(faults: faults))
            faultFree = Atomic(faults.isNone)
            rx = (0..<queues).map { _ in ArrivalQueue(limit: faults.queueLimit) }
            rxRefs = .allocate(capacity: max(1, queues))
            for (i, q) in rx.enumerated() { (rxRefs + i).initialize(to: .passUnretained(q)) }
            system = nil
            counterDelivered = .allocate(capacity: queues * 8)
            counterDelivered.initialize(repeating: 0, count: queues * 8)
            counterSent = .allocate(capacity: queues * 8)
            counterSent.initialize(repeating: 0, count: queues * 8)
        }

        deinit {
            counterDelivered.deallocate()
            counterSent.deallocate()
            rxRefs.deallocate()
        }

        /// Statistics of the direction leaving this end.
        public var statistics: Statistics {
            var s = tx.withLock { $0.stats }
            s.sent += fastSent.load(ordering: .relaxed)
                + (0..<queueCount).reduce(0) { $0 + Int(lb_counter_load(counterSent + $1 * 8)) }
            s.delivered = (0..<queueCount).reduce(0) { $0 + Int(lb_counter_load(peer.counterDelivered + $1 * 8)) }
            return s
        }

        public func attach(to stack: NetStack) throws { system = stack.system }

        /// Changes the faults of the direction leaving this end.
        public func setFaults(_ f: LinkFaults) {
            tx.withLock { $0.faults = f; $0.random = SplitMix(seed: f.seed) }
            faultFree.store(f.isNone, ordering: .relaxed)
        }

        public func poll(queue: Int, max: Int, _ body: (Mbuf) -> Void) -> Int {
            rxRefs[queue]._withUnsafeGuaranteedRef { q in
                withUnsafeTemporaryAllocation(of: Mbuf?.self, capacity: max) { buf in
                    let n = q.state.withLock { s in s.take(upTo: max, into: buf) }
                    for i in 0..<n { if let m = buf[i] { body(m) } }
                    if n > 0 { lb_counter_add(counterDelivered + queue * 8, Int64(n)) }
                    return n
                }
            }
        }

        nonisolated(nonsending) public func waitForInput(queue: Int) async throws {
            let q = rx[queue]
            let next = q.state.withLock { s -> UInt64? in
                if s.readyNow() { return nil }
                s.sleeping = true
                return s.nextDue
            }
            guard let next else { return }
            let now = next == UInt64.max ? 0 : lb_now_ns()
            // Nothing delayed on the wire: sleep until a frame arrives, without an LWKT
            // timer. The first arrival after `sleeping` was set wakes the channel; if that
            // happened before this thread was queued, the interlock sees a frame due
            // earlier than planned and returns at once, so no arrival is missed.
            let wait: Duration? = next == UInt64.max ? nil : .nanoseconds(Int64(min(10_000_000, max(20_000, next &- now))))
            _ = try await LWKT.tsleep(on: WaitChannel(q), timeout: wait, until: {
                q.state.withLock { $0.readyNow() || $0.nextDue < next }
            })
            q.state.withLock { $0.sleeping = false }
        }

        public func transmit(_ frame: Mbuf, queue: Int) -> Bool {
            transmit(frame, queue: queue, injected: false)
        }

        func transmit(_ frame: Mbuf, queue: Int, injected: Bool) -> Bool {
            if faultFree.load(ordering: .relaxed), let peerRef {
                if injected {
                    fastSent.add(1, ordering: .relaxed)
                } else {
                    lb_counter_add(counterSent + min(max(0, queue), queueCount - 1) * 8, 1)
                }
                let ok = peerRef._withUnsafeGuaranteedRef { p in p.arrive(frame, queue: p.steer(frame, from: queue), at: 0) }
                if !ok { tx.withLock { $0.stats.overflowed += 1 } }
                return true
            }
            let target = peer.steer(frame, from: queue)
            let now = lb_now_ns()
            var copy: Mbuf? = nil
            if frame.flags.contains(.checksumPartial) { Self.completeChecksum(frame) }
            let verdict = tx.withLock { inj in inj.judge(frame, now: now) }
            switch verdict {
            case .lose:
                frame.free()
                return true
            case .deliver(let at, let duplicate, let corrupted):
                if duplicate { copy = frame.duplicate() }
                var ok = peer.arrive(frame, queue: target, at: at)
                if let c = copy {
                    // A copy of a corrupted frame is corrupted too; a clean copy may be hit on its own.
                    if corrupted || tx.withLock({ $0.maybeCorrupt(c) }) { tx.withLock { $0.stats.corrupted += 1 } }
                    if !peer.arrive(c, queue: target, at: at) { ok = false }
                }
                if !ok { tx.withLock { $0.stats.overflowed += 1 } }
                return true
            }
        }

        /// Finishes a transport checksum the stack left partial (what a device does before
        /// the frame goes on a wire that can corrupt it): `words.0` is where the summed
        /// bytes start in the frame, `words.1` where the checksum field lies past that start.
        static func completeChecksum(_ m: Mbuf) {
            let (start, field, _, _) = m.words
            let s = Int(start), f = s + Int(field)
            m.flags.remove([.checksumPartial, .segmentationOffload])
            guard m.next == nil, s < m.length, f + 2 <= m.length else { return }
            var c = InternetChecksum()
            c.add(UnsafeRawPointer(m.data + s), count: m.length - s)
            NetworkBytes.put16(m.data, f, c.value)
        }

        /// Raw access for benchmarks and tests: puts `frame` on the wire toward the peer.
        public func inject(_ frame: Mbuf) { _ = transmit(frame, queue: 0, injected: true) }

        /// Raw access: takes every frame waiting at this end (for an end no stack serves).
        public func drain(_ body: (Mbuf) -> Void) -> Int {
            var n = 0
            for q in 0..<queueCount { n += poll(queue: q, max: 1 << 20, body) }
            return n
        }

        func steer(_ m: Mbuf, from queue: Int) -> Int {
            switch steering {
            case .single(let q): return min(max(0, q), queueCount - 1)
            case .roundRobin: return roundRobin.wrappingAdd(1, ordering: .relaxed).oldValue % queueCount
            case .flowHash:
                let p = UnsafeRawPointer(m.data)
                let n = m.length
                guard n >= 34, NetworkBytes.u16(p, 12) == EthernetHeader.typeIPv4 else { return 0 }
                let ip = p + 14
                let hl = Int(NetworkBytes.u8(ip, 0) & 0xf) * 4
                let src = IPv4Address(NetworkBytes.u32(ip, 12)), dst = IPv4Address(NetworkBytes.u32(ip, 16))
                let proto = NetworkBytes.u8(ip, 9)
                let h: UInt32
                if NetworkBytes.u16(ip, 6) & 0x3fff == 0, proto == 17 || proto == 6, n >= 14 + hl + 4 {
                    h = hasher.hash(src, dst, NetworkBytes.u16(ip, hl), NetworkBytes.u16(ip, hl + 2))
                } else {
                    h = hasher.hash(src, dst)
                }
                return ToeplitzHash.cpu(for: h, cpus: queueCount)
            }
        }

        func arrive(_ m: Mbuf, queue: Int, at: UInt64) -> Bool {
            rxRefs[queue]._withUnsafeGuaranteedRef { q in
                let (ok, wake) = q.state.withLock { s in s.push(m, at: at) }
                if !ok { m.free(); return false }
                // One sleeper per queue (its CPU's receive thread): wake just it.
                if wake, let systemRef {
                    systemRef._withUnsafeGuaranteedRef { LWKT.wakeupOne(WaitChannel(q), in: $0) }
                }
                return true
            }
        }

        public func close() {
            for q in rx { q.state.withLock { s in s.removeAll() } }
        }
    }

    /// A receive queue: frames ordered by due time (a binary heap), bounded.
    final class ArrivalQueue: @unchecked Sendable {
        let state: Mutex<Heap>
        init(limit: Int) { state = Mutex(Heap(limit: limit)) }
    }

    struct Heap {
        /// Frames due at once, in order (the fault-free path).
        var fifo: [Mbuf?]
        var fifoHead = 0
        var fifoCount = 0
        /// Frames due later, ordered by due time.
        var items: [(at: UInt64, seq: UInt64, m: Mbuf)] = []
        var seq: UInt64 = 0
        var sleeping = false
        let limit: Int

        init(limit: Int) {
            self.limit = limit
            fifo = Array(repeating: nil, count: limit)
            items.reserveCapacity(min(limit, 1024))
        }

        var nextDue: UInt64 { fifoCount > 0 ? 0 : (items.first?.at ?? .max) }
        func ready(_ now: UInt64) -> Bool { fifoCount > 0 || (items.first?.at ?? .max) <= now }
        /// ``ready(_:)`` reading the clock only when a delayed frame is waiting.
        func readyNow() -> Bool { fifoCount > 0 || (!items.isEmpty && (items.first?.at ?? .max) <= lb_now_ns()) }

        static func less(_ x: (at: UInt64, seq: UInt64, m: Mbuf), _ y: (at: UInt64, seq: UInt64, m: Mbuf)) -> Bool {
            x.at < y.at || (x.at == y.at && x.seq < y.seq)
        }

        /// Adds a frame; returns whether it fit and whether a sleeper should be woken.
        mutating func push(_ m: Mbuf, at: UInt64) -> (Bool, Bool) {
            guard items.count + fifoCount < limit else { return (false, false) }
            if at == 0 {
                fifo[(fifoHead + fifoCount) % limit] = m
                fifoCount += 1
                let wake = sleeping
                if wake { sleeping = false }
                return (true, wake)
            }
            seq &+= 1
            items.append((at, seq, m))
            var i = items.count - 1
            while i > 0 {
                let p = (i - 1) / 2
                if Heap.less(items[i], items[p]) { items.swapAt(i, p); i = p } else { break }
            }
            let wake = sleeping
            if wake { sleeping = false }
            return (true, wake)
        }

        mutating func popMin() -> Mbuf {
            let top = items[0].m
            let last = items.removeLast()
            if !items.isEmpty {
                items[0] = last
                var i = 0
                while true {
                    let l = 2 * i + 1, r = l + 1
                    var s = i
                    if l < items.count, Heap.less(items[l], items[s]) { s = l }
                    if r < items.count, Heap.less(items[r], items[s]) { s = r }
                    if s == i { break }
                    items.swapAt(i, s)
                    i = s
                }
            }
            return top
        }

        mutating func take(upTo max: Int, into buf: UnsafeMutableBufferPointer<Mbuf?>) -> Int {
            var n = 0
            while n < max, fifoCount > 0 {
                buf[n] = fifo[fifoHead]
                fifo[fifoHead] = nil
                fifoHead = (fifoHead + 1) % limit
                fifoCount -= 1
                n += 1
            }
            guard n < max, !items.isEmpty else { return n }
            let now = lb_now_ns()
            while n < max, let f = items.first, f.at <= now {
                buf[n] = popMin()
                n += 1
            }
            return n
        }

        mutating func removeAll() {
            while fifoCount > 0 {
                fifo[fifoHead]?.free()
                fifo[fifoHead] = nil
                fifoHead = (fifoHead + 1) % limit
                fifoCount -= 1
            }
            for e in items { e.m.free() }
            items.removeAll()
        }
    }

    /// The seeded fault state of one direction.
    struct Injector {
        enum Verdict { case lose; case deliver(at: UInt64, duplicate: Bool, corrupted: Bool) }
        var faults: LinkFaults
        var random: SplitMix
        var stats = Statistics()
        var lineFree: UInt64 = 0

        init(faults: LinkFaults) {
            self.faults = faults
            random = SplitMix(seed: faults.seed)
        }

        mutating func chance(_ p: Double) -> Bool { p > 0 && random.unit() < p }

        mutating func judge(_ m: Mbuf, now: UInt64) -> Verdict {
            stats.sent += 1
            if chance(faults.loss) { stats.lost += 1; return .lose }
            var at = now
            if let bw = faults.bandwidth, bw > 0 {
                let bits = UInt64(m.packetLength + 24) * 8
                let start = max(now, lineFree)
                lineFree = start &+ bits &* 1_000_000_000 / UInt64(bw)
                at = lineFree
            }
            at &+= faults.delay.ns
            let j = faults.jitter.ns
            if j > 0 { at &+= random.next() % j }
            if chance(faults.reordering) { stats.reordered += 1; at &+= faults.reorderDelay.ns }
            let bad = maybeCorrupt(m)
            if bad { stats.corrupted += 1 }
            let dup = chance(faults.duplication)
            if dup { stats.duplicated += 1 }
            return .deliver(at: at, duplicate: dup, corrupted: bad)
        }

        mutating func maybeCorrupt(_ m: Mbuf) -> Bool {
            guard chance(faults.corruption), m.length > EthernetHeader.size else { return false }
            let span = UInt64(m.length - EthernetHeader.size)
            let off = EthernetHeader.size + Int(random.next() % span)
            let bit = UInt8(1) << UInt8(random.next() % 8)
            NetworkBytes.put8(m.data, off, NetworkBytes.u8(m.data, off) ^ bit)
            return true
        }
    }
}

/// SplitMix64: a small seeded generator.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
