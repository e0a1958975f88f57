/// One cached item: a view of a slab chunk holding a fixed header, then the key, then the
/// value. The chunk belongs to the shard (CPU) that owns the key and is only touched on it.
///
/// Header layout (72 bytes, 8-aligned): hash-chain next, LRU prev, LRU next, CAS id, key
/// hash, expiry (absolute Unix seconds, 0 = never), last access (Unix seconds), client
/// flags, value length, key length, item flags, bytes charged to the memory limit.
struct Item: Equatable {
    let raw: UnsafeMutableRawPointer

    static let headerSize = 72

    @inline(__always) init(_ raw: UnsafeMutableRawPointer) { self.raw = raw }

    @inline(__always) static func totalSize(keyLength: Int, valueLength: Int) -> Int {
        headerSize &+ keyLength &+ valueLength
    }

    @inline(__always) var hashNext: UnsafeMutableRawPointer? {
        get { raw.load(as: UnsafeMutableRawPointer?.self) }
        nonmutating set { raw.storeBytes(of: newValue, as: UnsafeMutableRawPointer?.self) }
    }
    @inline(__always) var prev: UnsafeMutableRawPointer? {
        get { raw.load(fromByteOffset: 8, as: UnsafeMutableRawPointer?.self) }
        nonmutating set { raw.storeBytes(of: newValue, toByteOffset: 8, as: UnsafeMutableRawPointer?.self) }
    }
    @inline(__always) var next: UnsafeMutableRawPointer? {
        get { raw.load(fromByteOffset: 16, as: UnsafeMutableRawPointer?.self) }
        nonmutating set { raw.storeBytes(of: newValue, toByteOffset: 16, as: UnsafeMutableRawPointer?.self) }
    }
    @inline(__always) var cas: UInt64 {
        get { raw.load(fromByteOffset: 24, as: UInt64.self) }
        nonmutating set { raw.storeBytes(of: newValue, toByteOffset: 24, as: UInt64.self) }
    }
    @inline(__always) var hash: UInt64 {
        get { raw.load(fromByteOffset: 32, as: UInt64.self) }
        nonmutating set { raw.storeBytes(of: newValue, toByteOffset: 32, as: UInt64.self) }
    }
    @inline(__always) var expiry: Int64 {
        get { raw.load(fromByteOffset: 40, as: Int64.self) }
        nonmutating set { raw.storeBytes(of: newValue, toByteOffset: 40, as: Int64.self) }
    }
    @inline(__always) var lastAccess: Int64 {
        get { raw.load(fromByteOffset: 48, as: Int64.self) }
        nonmutating set { raw.storeBytes(of: newValue, toByteOffset: 48, as: Int64.self) }
    }
    @inline(__always) var flags: UInt32 {
        get { raw.load(fromByteOffset: 56, as: UInt32.self) }
        nonmutating set { raw.storeBytes(of: newValue, toByteOffset: 56, as: UInt32.self) }
    }
    @inline(__always) var valueLength: Int {
        get { Int(raw.load(fromByteOffset: 60, as: UInt32.self)) }
        nonmutating set { raw.storeBytes(of: UInt32(truncatingIfNeeded: newValue), toByteOffset: 60, as: UInt32.self) }
    }
    @inline(__always) var keyLength: Int {
        get { Int(raw.load(fromByteOffset: 64, as: UInt16.self)) }
        nonmutating set { raw.storeBytes(of: UInt16(truncatingIfNeeded: newValue), toByteOffset: 64, as: UInt16.self) }
    }
    /// Bit 0: fetched since stored. Bit 1: stale (meta invalidation). Bit 2: a win token
    /// was sent (meta `W`). Bit 3: the key is binary (stored with the meta `b` flag).
    @inline(__always) var itemFlags: UInt16 {
        get { raw.load(fromByteOffset: 66, as: UInt16.self) }
        nonmutating set { raw.storeBytes(of: newValue, toByteOffset: 66, as: UInt16.self) }
    }
    @inline(__always) var charged: Int {
        get { Int(raw.load(fromByteOffset: 68, as: UInt32.self)) }
        nonmutating set { raw.storeBytes(of: UInt32(truncatingIfNeeded: newValue), toByteOffset: 68, as: UInt32.self) }
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
