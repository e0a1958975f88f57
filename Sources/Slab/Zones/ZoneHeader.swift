import Synchronization

/// The in-band header at the start of every 128 KiB zone.
///
/// Every field belongs to the owning arena (CPU) except the remote line at
/// ``ZoneLayout/remoteOffset``: the remote-free list head and the mailbox link, which
/// other threads touch with atomics.
struct ZoneHeader {
    /// Head of the local free list (owner only); a chunk's first word links to the next.
    var localFree: UnsafeMutableRawPointer?
    /// Chunks the owner can hand out without looking at the remote list.
    var freeCount: Int
    /// Next never-used chunk, and the end of the never-used region.
    var bump: UnsafeMutableRawPointer
    var bumpEnd: UnsafeMutableRawPointer
    var chunkSize: Int
    /// Links on the owner's class list or free-zone list.
    var next: UnsafeMutablePointer<ZoneHeader>?
    var prev: UnsafeMutablePointer<ZoneHeader>?
    /// The owning arena.
    var arena: UnsafeMutableRawPointer
    // --- second cache line: colder fields ---
    /// The value `lb_current_cpu()` has on the owner's thread (0 for the shared pool), so
    /// a free can tell "mine" with one compare.
    var ownerKey: UInt
    var capacity: Int
    var base: UnsafeMutableRawPointer
    var magic: UInt32
    var classIndex: Int32
    var ownerIndex: Int32
    /// On its class list (it then has `freeCount > 0`).
    var listed: Bool
    /// A remote freer consumed the "armed" mark and is notifying (or has notified) the
    /// owner; the zone must stay alive until that notification is handled.
    var notifyPending: Bool
    /// The never-used region is known to be zero-filled.
    var bumpZeroed: Bool
}

/// Fixed geometry of zones.
enum ZoneLayout {
    /// Zone size, and the alignment of every zone.
    static let zoneSize = 128 * 1024
    static let zoneMask: UInt = ~UInt(zoneSize - 1)
    /// Magic of a live zone ("slab") and of a zone parked on a free-zone list.
    static let liveMagic: UInt32 = 0x736c_6162
    static let parkedMagic: UInt32 = 0x736c_6166
    /// The cache line other threads write: remote-free head, then mailbox link.
    static let remoteOffset = 128
    static let mailboxLinkOffset = 136
    /// Debug-mode allocation bitmap (one bit per chunk).
    static let bitmapOffset = 192
    static let bitmapBytes = 2048
    /// Low bit of the remote head: "the owner took this zone off its list and wants to
    /// hear about the next remote free".
    static let armed: UInt = 1

    /// Offset of the first chunk of a class's zone.
    @inline(__always)
    static func baseOffset(chunkSize: Int, debug: Bool) -> Int {
        let headerEnd = debug ? bitmapOffset + bitmapBytes : bitmapOffset
        let align = min(chunkSize & -chunkSize, 4096 * 4)
        return (headerEnd + align - 1) & ~(align - 1)
    }

    @inline(__always)
    static func header(of p: UnsafeRawPointer) -> UnsafeMutablePointer<ZoneHeader> {
        UnsafeMutablePointer(bitPattern: UInt(bitPattern: p) & zoneMask).unsafelyUnwrapped
    }

    @inline(__always)
    static func remoteHead(_ z: UnsafeMutablePointer<ZoneHeader>) -> UnsafeMutablePointer<Atomic<UInt>> {
        UnsafeMutableRawPointer(z).advanced(by: remoteOffset).assumingMemoryBound(to: Atomic<UInt>.self)
    }

    @inline(__always)
    static func mailboxLink(_ z: UnsafeMutablePointer<ZoneHeader>) -> UnsafeMutablePointer<UInt> {
        UnsafeMutableRawPointer(z).advanced(by: mailboxLinkOffset).assumingMemoryBound(to: UInt.self)
    }

    @inline(__always)
    static func bitmap(_ z: UnsafeMutablePointer<ZoneHeader>) -> UnsafeMutablePointer<Atomic<UInt64>> {
        UnsafeMutableRawPointer(z).advanced(by: bitmapOffset).assumingMemoryBound(to: Atomic<UInt64>.self)
    }
}
