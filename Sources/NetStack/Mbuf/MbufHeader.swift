/// The control block at the front of every mbuf's slab chunk. Only the CPU that holds the
/// mbuf touches it; ownership moves with the pointer (through a queue or an IPI argument).
@usableFromInline
struct MbufHeader {
    /// Next buffer of the same packet (DragonFly's `m_next`).
    @usableFromInline var next: UnsafeMutablePointer<MbufHeader>?
    /// Next packet in a queue (`m_nextpkt`).
    @usableFromInline var nextPacket: UnsafeMutablePointer<MbufHeader>?
    /// The pool the chunk came from (unretained; the pool outlives its mbufs).
    @usableFromInline var pool: UnsafeMutableRawPointer
    /// Start of the data area.
    @usableFromInline var storage: UnsafeMutableRawPointer
    /// Size of the data area.
    @usableFromInline var capacity: Int32
    /// Offset of the first valid byte inside the data area.
    @usableFromInline var offset: Int32
    /// Valid bytes in this buffer.
    @usableFromInline var length: Int32
    /// Bits of ``Mbuf/Flags``.
    @usableFromInline var flags: UInt16
    /// What the packet is on its way to (``Mbuf/Kind``), for packets handed between CPUs.
    @usableFromInline var kind: UInt8
    /// The interface it arrived on (index in the stack), or 0xff.
    @usableFromInline var interface: UInt8
    /// The flow hash, valid when ``Mbuf/Flags/hashValid`` is set.
    @usableFromInline var hash: UInt32
    /// Free-form words for hand-offs between CPUs (addresses and ports of an outgoing
    /// datagram, the offset of the IP header of a reassembled one, ...).
    @usableFromInline var word0: UInt32
    @usableFromInline var word1: UInt32
    @usableFromInline var word2: UInt32
    @usableFromInline var word3: UInt32
    /// Opaque owner of the packet on a hand-off (for example the sending socket).
    @usableFromInline var context: UnsafeMutableRawPointer?
    /// The stack the packet belongs to, for hand-offs between CPUs (unretained).
    @usableFromInline var stack: UnsafeMutableRawPointer?
    /// The CPU whose cluster cache the chunk may return to (clusters only), or -1.
    @usableFromInline var home: Int32
}

/// Bytes reserved for the header at the front of each chunk (cache-line aligned).
@usableFromInline let mbufHeaderBytes = 128
