/// The fixed header at the start of every item's slab chunk (72 bytes, 8-aligned).
struct ItemHeader {
    /// Next item in the same hash bucket.
    var hashNext: UnsafeMutableRawPointer?
    /// LRU neighbours (towards the head, towards the tail).
    var prev: UnsafeMutableRawPointer?
    var next: UnsafeMutableRawPointer?
    var cas: UInt64
    /// The key hash (its high half names the owner CPU).
    var hash: UInt64
    /// Absolute Unix seconds; 0 = never.
    var expiry: Int64
    /// Unix seconds of the last access.
    var lastAccess: Int64
    /// The client's flags.
    var flags: UInt32
    var valueLength: UInt32
    var keyLength: UInt16
    /// Bit 0: fetched since stored. Bit 1: stale (meta invalidation). Bit 2: a win token
    /// was sent (meta `W`). Bit 3: the key is binary (stored with the meta `b` flag).
    var itemFlags: UInt16
    /// Bytes charged to the memory limit.
    var charged: UInt32
}

/// One cached item: a view of a slab chunk holding an ``ItemHeader``, then the key, then
/// the value. The chunk belongs to the shard (CPU) that owns the key and is only touched on
/// it.
struct Item: Equatable {
    let raw: UnsafeMutableRawPointer

    static let headerSize = MemoryLayout<ItemHeader>.stride

    @inline(__always) init(_ raw: UnsafeMutableRawPointer) { self.raw = raw }

    /// Binds a fresh chunk's first bytes to ``ItemHeader`` (once, when allocated).
    @inline(__always) static func bind(_ raw: UnsafeMutableRawPointer) -> Item {
        raw.bindMemory(to: ItemHeader.self, capacity: 1)
        return Item(raw)
    }

    @inline(__always) static func totalSize(keyLength: Int, valueLength: Int) -> Int {
        headerSize &+ keyLength &+ valueLength
    }

    @inline(__always) var header: UnsafeMutablePointer<ItemHeader> { raw.assumingMemoryBound(to: ItemHeader.self) }

    @inline(__always) var hashNext: UnsafeMutableRawPointer? {
        get { header.pointee.hashNext }
        nonmutating set { header.pointee.hashNext = newValue }
    }
    @inline(__always) var prev: UnsafeMutableRawPointer? {
        get { header.pointee.prev }
        nonmutating set { header.pointee.prev = newValue }
    }
    @inline(__always) var next: UnsafeMutableRawPointer? {
        get { header.pointee.next }
        nonmutating set { header.pointee.next = newValue }
    }
    @inline(__always) var cas: UInt64 {
        get { header.pointee.cas }
        nonmutating set { header.pointee.cas = newValue }
    }
    @inline(__always) var hash: UInt64 {
        get { header.pointee.hash }
        nonmutating set { header.pointee.hash = newValue }
    }
    @inline(__always) var expiry: Int64 {
        get { header.pointee.expiry }
        nonmutating set { header.pointee.expiry = newValue }
    }
    @inline(__always) var lastAccess: Int64 {
        get { header.pointee.lastAccess }
        nonmutating set { header.pointee.lastAccess = newValue }
    }
    @inline(__always) var flags: UInt32 {
        get { header.pointee.flags }
        nonmutating set { header.pointee.flags = newValue }
    }
    @inline(__always) var valueLength: Int {
        get { Int(header.pointee.valueLength) }
        nonmutating set { header.pointee.valueLength = UInt32(truncatingIfNeeded: newValue) }
    }
    @inline(__always) var keyLength: Int {
        get { Int(header.pointee.keyLength) }
        nonmutating set { header.pointee.keyLength = UInt16(truncatingIfNeeded: newValue) }
    }
    @inline(__always) var itemFlags: UInt16 {
        get { header.pointee.itemFlags }
        nonmutating set { header.pointee.itemFlags = newValue }
    }
    @inline(__always) var charged: Int {
        get { Int(header.pointee.charged) }
        nonmutating set { header.pointee.charged = UInt32(truncatingIfNeeded: newValue) }
    }
    @inline(__always) var key: UnsafeMutableRawPointer { raw + Item.headerSize }
    @inline(__always) var value: UnsafeMutableRawPointer { raw + (Item.headerSize &+ keyLength) }

    @inline(__always) var fetched: Bool {
        get { itemFlags & 1 != 0 }
        nonmutating set { itemFlags = newValue ? itemFlags | 1 : itemFlags & ~1 }
    }

    /// The item's size as memcached counts it (`bytes`, `-I`, `me`).
    @inline(__always) var memcachedSize: Int {
        MemcachedCommandParser.itemSize(keyLength: keyLength, valueLength: valueLength, flags: flags)
    }

    @inline(__always) var stale: Bool {
        get { itemFlags & 2 != 0 }
        nonmutating set { itemFlags = newValue ? itemFlags | 2 : itemFlags & ~2 }
    }

    @inline(__always) var tokenSent: Bool {
        get { itemFlags & 4 != 0 }
        nonmutating set { itemFlags = newValue ? itemFlags | 4 : itemFlags & ~4 }
    }

    @inline(__always) var binaryKey: Bool {
        get { itemFlags & 8 != 0 }
        nonmutating set { itemFlags = newValue ? itemFlags | 8 : itemFlags & ~8 }
    }

    @inline(__always) func keyEquals(_ k: UnsafeRawPointer, _ n: Int) -> Bool {
        keyLength == n && memcmpBytes(key, k, n)
    }
}

@inline(__always)
func memcmpBytes(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) -> Bool {
    var i = 0
    while i &+ 8 <= n {
        if a.loadUnaligned(fromByteOffset: i, as: UInt64.self) != b.loadUnaligned(fromByteOffset: i, as: UInt64.self) { return false }
        i &+= 8
    }
    while i < n {
        if a.load(fromByteOffset: i, as: UInt8.self) != b.load(fromByteOffset: i, as: UInt8.self) { return false }
        i &+= 1
    }
    return true
}

/// The key hash: 8 bytes at a time, multiply-mix. The high half names the owner CPU, the
/// low bits the bucket.
@inline(__always)
func keyHash(_ p: UnsafeRawPointer, _ n: Int) -> UInt64 {
    var h: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(truncatingIfNeeded: n)
    var i = 0
    while i &+ 8 <= n {
        h = (h ^ p.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0xBF58_476D_1CE4_E5B9
        h ^= h >> 31
        i &+= 8
    }
    var tail: UInt64 = 0
    var shift: UInt64 = 0
    while i < n {
        tail |= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) << shift
        shift &+= 8
        i &+= 1
    }
    h = (h ^ tail) &* 0x94D0_49BB_1331_11EB
    h ^= h >> 29
    h = h &* 0xBF58_476D_1CE4_E5B9
    h ^= h >> 32
    return h
}
