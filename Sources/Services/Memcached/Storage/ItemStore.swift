import Slab
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `stats detail on|off`, shared by the service and its CPUs' stores.
final class DetailSwitch: Sendable {
    let on = Atomic<Bool>(false)
}

/// How a store command treats an existing item.
enum StoreMode: UInt8 {
    case set, add, replace, append, prepend, cas
}

/// What a store did.
enum StoreResult {
    case stored, notStored, exists, notFound, tooLarge, outOfMemory
}

/// One CPU's share of the cache: a chained hash table of slab items, an LRU list, a byte
/// budget and counters. Only the owning CPU calls it; there is no lock anywhere.
final class ItemStore: @unchecked Sendable {
    let cpuID: Int
    let cpuCount: Int
    let slab: SlabAllocator
    let slabType: MallocType
    /// The byte budget of this shard (the memory limit divided among CPUs).
    let limit: Int
    let maxItemSize: Int
    /// The hot mutable state (table, LRU ends, CAS counter, counters), behind a pointer:
    /// Swift checks exclusive access to a class's stored `var`s at run time on every
    /// access it cannot prove safe (`swift_beginAccess`, about 5 % of a pipelined GET's
    /// CPU time when they were stored properties), and never checks a pointer's pointee.
    struct HotState {
        var buckets: UnsafeMutablePointer<UnsafeMutableRawPointer?>
        var mask: Int
        var head: UnsafeMutableRawPointer? = nil
        var tail: UnsafeMutableRawPointer? = nil
        var casCounter: UInt64 = 0
        var pendingFlush: Int64 = 0
        var counters = ShardCounters()
    }
    private let hot: UnsafeMutablePointer<HotState>

    var buckets: UnsafeMutablePointer<UnsafeMutableRawPointer?> {
        @inline(__always) get { hot.pointee.buckets }
        @inline(__always) set { hot.pointee.buckets = newValue }
    }
    var mask: Int {
        @inline(__always) get { hot.pointee.mask }
        @inline(__always) set { hot.pointee.mask = newValue }
    }
    var head: UnsafeMutableRawPointer? {
        @inline(__always) get { hot.pointee.head }
        @inline(__always) set { hot.pointee.head = newValue }
    }
    var tail: UnsafeMutableRawPointer? {
        @inline(__always) get { hot.pointee.tail }
        @inline(__always) set { hot.pointee.tail = newValue }
    }
    var casCounter: UInt64 {
        @inline(__always) get { hot.pointee.casCounter }
        @inline(__always) set { hot.pointee.casCounter = newValue }
    }
    /// Unix second at which a delayed `flush_all` takes effect, or 0.
    var pendingFlush: Int64 {
        @inline(__always) get { hot.pointee.pendingFlush }
        @inline(__always) set { hot.pointee.pendingFlush = newValue }
    }
    var counters: ShardCounters {
        @inline(__always) get { hot.pointee.counters }
        @inline(__always) _modify { yield &hot.pointee.counters }
        @inline(__always) set { hot.pointee.counters = newValue }
    }
    /// Items and charged bytes per slab size class (the last slot: directly mapped items).
    /// Items, charged bytes and evictions per memcached slab class (``MemcachedSlabClasses``).
    /// Kept in one table behind a pointer (items, then bytes, then evictions, `classCount`
    /// slots each): every store and removal updates two of them, and as arrays in stored
    /// properties each update paid an exclusivity check and a uniqueness check.
    private let classTable: UnsafeMutablePointer<Int>
    let classCount = MemcachedSlabClasses.sizes.count
    var classItems: [Int] { Array(UnsafeBufferPointer(start: classTable, count: classCount)) }
    var classBytes: [Int] { Array(UnsafeBufferPointer(start: classTable + classCount, count: classCount)) }
    var classEvictions: [Int] { Array(UnsafeBufferPointer(start: classTable + 2 * classCount, count: classCount)) }
    /// Open connections of this CPU (`stats conns`), by connection id.
    var connections: [Int: ConnectionSlot] = [:]
    /// `stats detail` counters of the keys this CPU owns, by prefix.
    var prefixes: [String: PrefixCounters] = [:]
    /// Whether `stats detail on` is in force (shared by every CPU of the service).
    let detail: DetailSwitch

    init(cpuID: Int, cpuCount: Int, slab: SlabAllocator, type: MallocType, limit: Int, maxItemSize: Int,
         detail: DetailSwitch = DetailSwitch()) {
        self.detail = detail
        self.cpuID = cpuID
        self.cpuCount = cpuCount
        self.slab = slab
        self.slabType = type
        self.limit = limit
        self.maxItemSize = maxItemSize
        let n = 1 << 12
        let table = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: n)
        table.initialize(repeating: nil, count: n)
        hot = .allocate(capacity: 1)
        hot.initialize(to: HotState(buckets: table, mask: n - 1))
        classTable = .allocate(capacity: 3 * MemcachedSlabClasses.sizes.count)
        classTable.initialize(repeating: 0, count: 3 * MemcachedSlabClasses.sizes.count)
    }

    deinit {
        var p = head
        while let r = p { let it = Item(r); p = it.next; slab.free(r, type: slabType) }
        buckets.deallocate()
        classTable.deallocate()
        hot.deinitialize(count: 1)
        hot.deallocate()
    }

    /// Counts a get (and whether it hit), set or delete for the key's prefix (the text
    /// before memcached's `:` delimiter; keys without one are not counted).
    func recordPrefix(_ key: UnsafeRawPointer, _ n: Int, get: Bool = false, hit: Bool = false, set: Bool = false, delete: Bool = false) {
        guard let colon = memchr(key, 0x3A, n) else { return }
        let prefix = String(decoding: UnsafeRawBufferPointer(start: key, count: UnsafeRawPointer(colon) - key), as: UTF8.self)
        var c = prefixes[prefix, default: PrefixCounters()]
        if get { c.gets += 1; if hit { c.hits += 1 } }
        if set { c.sets += 1 }
        if delete { c.deletes += 1 }
        prefixes[prefix] = c
    }

    // MARK: - Charging

    // The memory limit and `bytes` count what memcached counts: `bytes` is the sum of
    // memcached's item sizes (header, CAS, key, flags, value and CRLF), and the limit is
    // charged memcached's slab chunk for each item (so the same values fill the same -m).

    @inline(__always) static func sizeClass(of it: Item) -> Int {
        MemcachedSlabClasses.index(forSize: it.memcachedSize)
    }

    @inline(__always) func nextCAS() -> UInt64 {
        casCounter &+= 1
        return casCounter &* UInt64(cpuCount) &+ UInt64(cpuID) &+ 1
    }

    // MARK: - Lookup

    /// Runs a pending delayed flush whose time has come.
    @inline(__always) func tick(_ now: Int64) {
        if _slowPath(pendingFlush != 0) && now >= pendingFlush {
            pendingFlush = 0
            flushNow()
        }
    }

    /// Finds a live item; an expired one found on the way is unlinked and freed.
    @inline(__always)
    func find(_ key: UnsafeRawPointer, _ n: Int, hash: UInt64, now: Int64) -> Item? {
        tick(now)
        var p = buckets[Int(truncatingIfNeeded: hash) & mask]
        while let r = p {
            let it = Item(r)
            if it.hash == hash && it.keyEquals(key, n) {
                let e = it.expiry
                if _slowPath(e != 0 && e <= now) {
                    if !it.fetched { counters.expiredUnfetched += 1 }
                    counters.reclaimed += 1
                    remove(it)
                    return nil
                }
                return it
            }
            p = it.hashNext
        }
        return nil
    }

    /// Moves an item to the front of the LRU list and records the access.
    @inline(__always) func bump(_ it: Item, now: Int64) {
        it.lastAccess = now
        it.fetched = true
        if head == it.raw { return }
        unlinkLRU(it)
        linkLRUHead(it)
    }

    @inline(__always) func unlinkLRU(_ it: Item) {
        if let p = it.prev { Item(p).next = it.next } else { head = it.next }
        if let n = it.next { Item(n).prev = it.prev } else { tail = it.prev }
        it.prev = nil
        it.next = nil
    }

    @inline(__always) func linkLRUHead(_ it: Item) {
        it.prev = nil
        it.next = head
        if let h = head { Item(h).prev = it.raw } else { tail = it.raw }
        head = it.raw
    }

    // MARK: - Insert and remove

    /// Unlinks an item from the table and the LRU list and frees it.
    func remove(_ it: Item) {
        let b = Int(truncatingIfNeeded: it.hash) & mask
        var link = buckets + b
        while let r = link.pointee {
            if r == it.raw { link.pointee = it.hashNext; break }
            link = UnsafeMutablePointer(mutating: Item(r).header.pointer(to: \.hashNext).unsafelyUnwrapped)
        }
        unlinkLRU(it)
        counters.currItems -= 1
        counters.bytes -= it.memcachedSize
        counters.chargedBytes -= it.charged
        let c = ItemStore.sizeClass(of: it)
        classTable[c] -= 1
        classTable[classCount &+ c] -= it.charged
        slab.free(it.raw, type: slabType)
    }

    /// Allocates an unlinked item, evicting from the LRU tail to stay within the budget.
    func allocate(keyLength: Int, valueLength: Int, flags: UInt32) -> Item? {
        let size = Item.totalSize(keyLength: keyLength, valueLength: valueLength)
        let charge = MemcachedSlabClasses.charge(forSize: MemcachedCommandParser.itemSize(keyLength: keyLength, valueLength: valueLength, flags: flags))
        if charge > limit { return nil }
        while counters.chargedBytes + charge > limit, let t = tail {
            let victim = Item(t)
            if !victim.fetched { counters.evictedUnfetched += 1 }
            let e = victim.expiry
            if e != 0 && e <= Int64(victim.lastAccess) { counters.reclaimed += 1 } else {
                counters.evictions += 1
                classTable[2 &* classCount &+ ItemStore.sizeClass(of: victim)] += 1
            }
            remove(victim)
        }
        guard let raw = slab.allocate(size, type: slabType, flags: .mayReturnNil) else { return nil }
        let it = Item.bind(raw)
        it.hashNext = nil
        it.prev = nil
        it.next = nil
        it.keyLength = keyLength
        it.valueLength = valueLength
        it.charged = charge
        it.itemFlags = 0
        return it
    }

    /// Frees an item that was allocated but never linked.
    func discard(_ it: Item) { slab.free(it.raw, type: slabType) }

    /// Links a new item, replacing `old` (already found) if given.
    func link(_ it: Item, replacing old: Item?, now: Int64) {
        if let old { remove(old) }
        it.cas = nextCAS()
        it.lastAccess = now
        let b = Int(truncatingIfNeeded: it.hash) & mask
        it.hashNext = buckets[b]
        buckets[b] = it.raw
        linkLRUHead(it)
        counters.currItems += 1
        counters.totalItems += 1
        counters.bytes += it.memcachedSize
        counters.chargedBytes += it.charged
        let c = ItemStore.sizeClass(of: it)
        classTable[c] += 1
        classTable[classCount &+ c] += it.charged
        if counters.currItems > (mask + 1) + (mask + 1) / 2 { grow() }
    }

    func grow() {
        let n = (mask + 1) * 2
        let nb = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: n)
        nb.initialize(repeating: nil, count: n)
        for i in 0...mask {
            var p = buckets[i]
            while let r = p {
                let it = Item(r)
                p = it.hashNext
                let b = Int(truncatingIfNeeded: it.hash) & (n - 1)
                it.hashNext = nb[b]
                nb[b] = r
            }
        }
        buckets.deallocate()
        buckets = nb
        mask = n - 1
    }

    /// Drops every item (`flush_all` without delay, or a delayed one coming due).
    func flushNow() {
        while let t = tail { remove(Item(t)) }
    }

    // MARK: - Commands

    /// Stores a value according to `mode`. `casIn` is checked in `.cas` mode (and in any
    /// mode when non-zero, as the meta commands do). Returns the result and the new CAS.
    func store(mode: StoreMode, key: UnsafeRawPointer, keyLength: Int, hash: UInt64,
               flags: UInt32, expiry: Int64, value: UnsafeRawPointer, valueLength: Int,
               casIn: UInt64, now: Int64, binaryKey: Bool = false, allowStale: Bool = false) -> (StoreResult, UInt64) {
        counters.cmdSet += 1
        let old = find(key, keyLength, hash: hash, now: now)
        // meta `I` with an older CAS: replace the value but keep it stale (memcached's
        // set_stale), with the old TTL and win-token state.
        var storeStale = false
        var keepTokenSent = false
        switch mode {
        case .add: if old != nil { if let old { bump(old, now: now) }; return (.notStored, 0) }
        case .replace, .append, .prepend: if old == nil { return (.notStored, 0) }
        case .cas:
            guard let old else { counters.casMisses += 1; return (.notFound, 0) }
            if old.cas != casIn {
                guard allowStale && casIn != 0 && casIn < old.cas else { counters.casBadval += 1; return (.exists, 0) }
                storeStale = true
                keepTokenSent = old.tokenSent
            }
            counters.casHits += 1
        case .set: break
        }
        if mode != .cas && casIn != 0 {
            guard let old else { return (.notFound, 0) }
            if old.cas != casIn { return (.exists, 0) }
        }
        var total = valueLength
        if mode == .append || mode == .prepend, let old { total += old.valueLength }
        if MemcachedCommandParser.itemSize(keyLength: keyLength, valueLength: total, flags: old?.flags ?? flags) > maxItemSize {
            // memcached cannot allocate the joined item and answers NOT_STORED.
            return (mode == .append || mode == .prepend ? .notStored : .tooLarge, 0)
        }
        // Keep the old item out of eviction's way while allocating the new one.
        if let old { unlinkLRU(old); linkLRUHead(old) }
        let newFlags = (mode == .append || mode == .prepend) ? (old?.flags ?? flags) : flags
        guard let it = allocate(keyLength: keyLength, valueLength: total, flags: newFlags) else {
            counters.outOfMemory += 1
            return (.outOfMemory, 0)
        }
        // Eviction may have removed `old` (only if it reached the tail); look it up again.
        let current = old == nil ? nil : findRaw(key, keyLength, hash: hash)
        if (mode == .append || mode == .prepend) && current == nil {
            discard(it)
            return (.notStored, 0)
        }
        it.hash = hash
        it.key.copyMemory(from: key, byteCount: keyLength)
        if mode == .append, let current {
            it.value.copyMemory(from: current.value, byteCount: current.valueLength)
            (it.value + current.valueLength).copyMemory(from: value, byteCount: valueLength)
            it.flags = current.flags
            it.expiry = current.expiry
        } else if mode == .prepend, let current {
            it.value.copyMemory(from: value, byteCount: valueLength)
            (it.value + valueLength).copyMemory(from: current.value, byteCount: current.valueLength)
            it.flags = current.flags
            it.expiry = current.expiry
        } else {
            it.value.copyMemory(from: value, byteCount: valueLength)
            it.flags = flags
            it.expiry = storeStale ? (current?.expiry ?? expiry) : expiry
        }
        it.binaryKey = binaryKey
        if storeStale { it.stale = true; it.tokenSent = keepTokenSent }
        link(it, replacing: current, now: now)
        return (.stored, it.cas)
    }

    /// A lookup that ignores expiry (used after allocation, where the item was live).
    func findRaw(_ key: UnsafeRawPointer, _ n: Int, hash: UInt64) -> Item? {
        var p = buckets[Int(truncatingIfNeeded: hash) & mask]
        while let r = p {
            let it = Item(r)
            if it.hash == hash && it.keyEquals(key, n) { return it }
            p = it.hashNext
        }
        return nil
    }

    /// What an incr/decr did.
    enum DeltaResult { case notFound, nonNumeric, value(UInt64, UInt64), outOfMemory, exists }

    /// memcached's incr/decr: the value must be a decimal number of at most 20 digits;
    /// incr wraps at 2^64, decr stops at 0. A result no longer than the old value is
    /// written in place, padded with spaces (as memcached does).
    func delta(key: UnsafeRawPointer, keyLength: Int, hash: UInt64, incr: Bool, by amount: UInt64,
               casIn: UInt64 = 0, now: Int64) -> DeltaResult {
        guard let it = find(key, keyLength, hash: hash, now: now) else {
            if incr { counters.incrMisses += 1 } else { counters.decrMisses += 1 }
            return .notFound
        }
        if casIn != 0 && it.cas != casIn { return .exists }
        guard it.valueLength > 0, let cur = parseStoredNumber(UnsafeRawBufferPointer(start: it.value, count: it.valueLength)) else {
            return .nonNumeric
        }
        let v: UInt64
        if incr { v = cur &+ amount; counters.incrHits += 1 } else { v = cur < amount ? 0 : cur - amount; counters.decrHits += 1 }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        let len = withUnsafeMutableBytes(of: &digits) { buf -> Int in formatUInt64(v, into: buf.baseAddress.unsafelyUnwrapped) }
        bump(it, now: now)
        if len <= it.valueLength {
            withUnsafeBytes(of: &digits) { buf in it.value.copyMemory(from: buf.baseAddress.unsafelyUnwrapped, byteCount: len) }
            if len < it.valueLength { (it.value + len).initializeMemory(as: UInt8.self, repeating: 0x20, count: it.valueLength - len) }
            it.cas = nextCAS()
            return .value(v, it.cas)
        }
        guard let n = allocate(keyLength: keyLength, valueLength: len, flags: it.flags) else { counters.outOfMemory += 1; return .outOfMemory }
        guard let current = findRaw(key, keyLength, hash: hash) else { discard(n); return .notFound }
        n.hash = hash
        n.key.copyMemory(from: key, byteCount: keyLength)
        withUnsafeBytes(of: &digits) { buf in n.value.copyMemory(from: buf.baseAddress.unsafelyUnwrapped, byteCount: len) }
        n.flags = current.flags
        n.expiry = current.expiry
        n.fetched = true
        link(n, replacing: current, now: now)
        return .value(v, n.cas)
    }

    /// Deletes a key (with a CAS check when `casIn` is non-zero).
    func delete(key: UnsafeRawPointer, keyLength: Int, hash: UInt64, casIn: UInt64 = 0, now: Int64) -> StoreResult {
        guard let it = find(key, keyLength, hash: hash, now: now) else {
            counters.deleteMisses += 1
            return .notFound
        }
        if casIn != 0 && it.cas != casIn { return .exists }
        counters.deleteHits += 1
        remove(it)
        return .stored
    }

    /// Changes an item's expiry.
    func touch(key: UnsafeRawPointer, keyLength: Int, hash: UInt64, expiry: Int64, now: Int64) -> Item? {
        counters.cmdTouch += 1
        guard let it = find(key, keyLength, hash: hash, now: now) else {
            counters.touchMisses += 1
            return nil
        }
        counters.touchHits += 1
        it.expiry = expiry
        bump(it, now: now)
        return it
    }

    /// `flush_all [delay]` on this shard.
    func flush(delay: Int64, now: Int64) {
        counters.cmdFlush += 1
        if delay <= 0 { pendingFlush = 0; flushNow() } else { pendingFlush = now + delay }
    }
}

/// Parses a decimal `UInt64` (no sign); with `allowTrailingSpace`, trailing spaces (left
/// by an in-place decr) are ignored. Returns nil on anything else or on overflow.
@inline(__always)
func parseUInt64(_ b: UnsafeRawBufferPointer, allowTrailingSpace: Bool = false) -> UInt64? {
    var v: UInt64 = 0
    var i = 0
    let n = b.count
    if n == 0 { return nil }
    while i < n {
        let c = b[i]
        if c >= 0x30 && c <= 0x39 {
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(c - 0x30))
            if o1 || o2 { return nil }
            v = a
            i += 1
        } else { break }
    }
    if i == 0 { return nil }
    if i < n {
        guard allowTrailingSpace else { return nil }
        while i < n { if b[i] != 0x20 { return nil }; i += 1 }
    }
    return v
}

/// memcached's reading of a stored value for incr/decr (`strtoull` then its checks):
/// leading white space and a sign are allowed, the number must be followed by white space
/// or the end of the value, and a negative number is refused only when it looks negative
/// as a signed 64-bit value.
func parseStoredNumber(_ b: UnsafeRawBufferPointer) -> UInt64? {
    @inline(__always) func isSpace(_ c: UInt8) -> Bool { c == 0x20 || (c >= 0x09 && c <= 0x0D) }
    let n = b.count
    var i = 0
    while i < n && isSpace(b[i]) { i += 1 }
    var negative = false
    if i < n && (b[i] == 0x2B || b[i] == 0x2D) { negative = b[i] == 0x2D; i += 1 }
    let digitsStart = i
    var v: UInt64 = 0
    while i < n, b[i] >= 0x30 && b[i] <= 0x39 {
        let (m, o1) = v.multipliedReportingOverflow(by: 10)
        let (a, o2) = m.addingReportingOverflow(UInt64(b[i] - 0x30))
        if o1 || o2 { return nil }
        v = a
        i += 1
    }
    // strtoull's end pointer: after the digits, or the very start when there were none.
    let endIndex = i == digitsStart ? 0 : i
    // The stored value is followed by CR LF in memcached, which counts as white space.
    guard endIndex == n || isSpace(b[endIndex]) else { return nil }
    if i == digitsStart { return 0 }
    if negative { v = 0 &- v }
    if Int64(bitPattern: v) < 0 && negative { return nil }
    return v
}

/// Writes `v` in decimal at `p` (at most 20 bytes) and returns the length.
@inline(__always)
func formatUInt64(_ v: UInt64, into p: UnsafeMutableRawPointer) -> Int {
    if v == 0 { p.storeBytes(of: 0x30, as: UInt8.self); return 1 }
    var tmp = v
    var n = 0
    var x = v
    while x > 0 { n += 1; x /= 10 }
    var i = n
    while tmp > 0 {
        i -= 1
        p.storeBytes(of: UInt8(0x30 + tmp % 10), toByteOffset: i, as: UInt8.self)
        tmp /= 10
    }
    return n
}
