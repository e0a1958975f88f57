import Synchronization

/// The in-band header of every 128 KiB zone, at one of 16 coloured offsets in the zone's
/// first 4 KiB (``ZoneLayout/header(of:)``).
///
/// Three cache lines, by who touches them (offsets from the header's start):
/// - line 0 (bytes 0–63): fixed while the zone is live (identity, geometry, owner). Remote
///   freers read it on every free, so the owner never writes it after
///   ``Arena/initializeZone(_:sizeClass:zeroed:)``: it stays shared in every cache.
/// - line 1 (bytes 64–127): the owner's mutable state (free list, counts, list links),
///   written on every local allocation and free, read by no other thread.
/// - the remote line at ``ZoneLayout/remoteOffset``: the remote-free list head and the
///   mailbox link, which other threads touch with atomics.
struct ZoneHeader {
    // --- line 0: read-only while live ---
    /// The value `lb_current_cpu()` has on the owner's thread, so a free can tell "mine"
    /// with one compare; ``ZoneLayout/noOwnerKey`` for the shared pool, handle-driven
    /// arenas and parked zones (set when parking, so a match also means "live").
    var ownerKey: UInt
    /// The owning arena.
    var arena: UnsafeMutableRawPointer
    var chunkSize: Int
    var capacity: Int
    var base: UnsafeMutableRawPointer
    /// The end of the chunk area.
    var bumpEnd: UnsafeMutableRawPointer
    var magic: UInt32
    var classIndex: Int32
    var ownerIndex: Int32
    /// The never-used region is known to be zero-filled (set when the zone is made).
    var bumpZeroed: Bool
    var pad0: (UInt8, UInt8, UInt8) = (0, 0, 0)
    // --- line 1: the owner's mutable state ---
    /// Head of the local free list (owner only); a chunk's first word links to the next.
    var localFree: UnsafeMutableRawPointer?
    /// Chunks the owner can hand out without looking at the remote list.
    var freeCount: Int
    /// Next never-used chunk.
    var bump: UnsafeMutableRawPointer
    /// Links on the owner's class list or free-zone list.
    var next: UnsafeMutablePointer<ZoneHeader>?
    var prev: UnsafeMutablePointer<ZoneHeader>?
    /// On its class list (it then has `freeCount > 0`).
    var listed: Bool
    /// A remote freer consumed the "armed" mark and is notifying (or has notified) the
    /// owner; the zone must stay alive until that notification is handled.
    var notifyPending: Bool
}

/// Fixed geometry of zones.
enum ZoneLayout {
    /// Zone size, and the alignment of every zone.
    static let zoneSize = 128 * 1024
    static let zoneMask: UInt = ~UInt(zoneSize - 1)
    /// Magic of a live zone ("slab") and of a zone parked on a free-zone list.
    static let liveMagic: UInt32 = 0x736c_6162
    static let parkedMagic: UInt32 = 0x736c_6166
    /// The owner key of zones no thread owns: never a globaldata address (they are
    /// aligned) nor 0 (what `lb_current_cpu()` returns off a CPU).
    static let noOwnerKey: UInt = 1
    /// Where the owner's mutable line starts (the read-only line 0 ends).
    static let ownerLineOffset = 64
    /// The cache line other threads write: remote-free head, then mailbox link.
    static let remoteOffset = 128
    static let mailboxLinkOffset = 136
    /// Debug-mode allocation bitmap (one bit per chunk).
    static let bitmapOffset = 192
    static let bitmapBytes = 2048
    /// Low bit of the remote head: "the owner took this zone off its list and wants to
    /// hear about the next remote free".
    static let armed: UInt = 1

    /// Header colouring (Bonwick's slab colours): zones start on 128 KiB boundaries, so
    /// headers all at offset 0 would fall into the same few L1 and L2 cache sets and evict
    /// each other as soon as a CPU uses more classes than the cache has ways. A zone's
    /// header sits instead at `colourStride × colour`, the colour taken from the zone
    /// number's low bits, inside a reserved area before the first chunk.
    static let colourCount: UInt = 16
    static let colourStride: UInt = 256
    /// The bytes before the first chunk that hold the header at any colour (and, in debug
    /// mode, its bitmap).
    static let headerArea = 4096
    static let debugHeaderArea = 8192

    /// Offset of the first chunk of a class's zone.
    @inline(__always)
    static func baseOffset(chunkSize: Int, debug: Bool) -> Int {
        let headerEnd = debug ? debugHeaderArea : headerArea
        let align = min(chunkSize & -chunkSize, 4096 * 4)
        return (headerEnd + align - 1) & ~(align - 1)
    }

    /// The header of the zone holding `p`: the zone's base plus its colour's offset.
    @inline(__always)
    static func header(of p: UnsafeRawPointer) -> UnsafeMutablePointer<ZoneHeader> {
        let base = UInt(bitPattern: p) & zoneMask
        let colour = (base >> 17) & (colourCount - 1)
        return UnsafeMutablePointer(bitPattern: base | colour &* colourStride).unsafelyUnwrapped
    }

    /// The first byte of the zone whose header is `z`.
    @inline(__always)
    static func zoneBase(_ z: UnsafeMutablePointer<ZoneHeader>) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bitPattern: UInt(bitPattern: z) & zoneMask).unsafelyUnwrapped
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
