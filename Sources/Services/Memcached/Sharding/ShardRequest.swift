import LWKT

/// A request from a connection to the CPU that owns some keys, sent with `doMsg` to that
/// CPU's shard port. Each connection keeps one per CPU and reuses it for every request,
/// so the steady state allocates nothing.
final class ShardRequest: Message, @unchecked Sendable {
    enum Kind: UInt8 {
        /// Run `op`, appending the response to `target`.
        case single
        /// Run `op` (a get-family operation) for each key in `keys[keyIndexes]`, appending
        /// the responses to `scratch` and the end offset of each to `ends`.
        case multiGet
        /// Copy the shard's counters and per-class tables into this request.
        case stats
        /// `flush_all` with `op.expiry` as the delay.
        case flush
        /// Zero the shard's counters (`stats reset`).
        case resetStats
    }

    var kind: Kind = .single
    var op = KeyOp()
    /// The connection's output buffer (for `.single`).
    unowned(unsafe) var target: OutputBuffer
    let scratch = OutputBuffer(capacity: 4096)
    /// The connection's key table (for `.multiGet`): start, length, hash per key.
    var keys: UnsafeMutablePointer<KeyRef>? = nil
    var keyIndexes: UnsafeMutablePointer<Int32>
    var keyIndexCapacity = 64
    var keyIndexCount = 0
    var ends: UnsafeMutablePointer<Int>
    var cursor = 0
    var counters = ShardCounters()
    var classItems: [Int] = []
    var classBytes: [Int] = []
    var classEvictions: [Int] = []

    init(target: OutputBuffer) {
        self.target = target
        keyIndexes = .allocate(capacity: 64)
        ends = .allocate(capacity: 64)
        super.init()
    }

    deinit {
        keyIndexes.deallocate()
        ends.deallocate()
    }

    func addKeyIndex(_ i: Int) {
        if keyIndexCount == keyIndexCapacity {
            let c = keyIndexCapacity * 2
            let ni = UnsafeMutablePointer<Int32>.allocate(capacity: c)
            ni.update(from: keyIndexes, count: keyIndexCount)
            keyIndexes.deallocate()
            keyIndexes = ni
            let ne = UnsafeMutablePointer<Int>.allocate(capacity: c)
            ends.deallocate()
            ends = ne
            keyIndexCapacity = c
        }
        keyIndexes[keyIndexCount] = Int32(truncatingIfNeeded: i)
        keyIndexCount += 1
    }

    /// Runs the request against `store` on the owner CPU.
    func run(on store: ItemStore) {
        switch kind {
        case .single:
            CommandExecutor.execute(&op, store: store, out: target)
        case .multiGet:
            guard let keys else { return }
            scratch.count = 0
            for j in 0..<keyIndexCount {
                let k = keys[Int(keyIndexes[j])]
                op.key = UnsafeRawPointer(k.start)
                op.keyLength = k.length
                op.hash = k.hash
                CommandExecutor.execute(&op, store: store, out: scratch)
                ends[j] = scratch.count
            }
        case .stats:
            store.tick(op.now)
            counters = store.counters
            classItems = store.classItems
            classBytes = store.classBytes
            classEvictions = store.classEvictions
        case .flush:
            store.flush(delay: op.expiry, now: op.now)
        case .resetStats:
            let keep = store.counters
            store.counters = ShardCounters()
            store.counters.currItems = keep.currItems
            store.counters.bytes = keep.bytes
            store.counters.chargedBytes = keep.chargedBytes
            store.counters.currConnections = keep.currConnections
        }
    }
}

/// A key of a multi-key command: where it sits in the input buffer, and its hash.
struct KeyRef {
    var start: UnsafeMutableRawPointer
    var length: Int
    var hash: UInt64
    var owner: Int
}
