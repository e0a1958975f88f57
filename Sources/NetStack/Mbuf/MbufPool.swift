import CLibellula
import LWKT
import Slab
import Synchronization

/// Hands out mbufs from a slab allocator: standard buffers (a 2 KiB chunk, enough for an
/// Ethernet frame and its headroom) and 64 KiB clusters for segmentation offload and
/// reassembly. Allocation uses the calling CPU's arena; a free on another CPU goes back to
/// the owner through the slab's remote-free path.
public final class MbufPool: @unchecked Sendable {
    /// The allocator the chunks come from.
    public let allocator: SlabAllocator
    /// The malloc type charged for standard buffers.
    public let standardType: MallocType
    /// The malloc type charged for clusters.
    public let clusterType: MallocType
    /// Bytes in a standard buffer's chunk.
    public static let standardChunk = 2048
    /// Data bytes of a standard buffer.
    public static let standardCapacity = standardChunk - mbufHeaderBytes
    /// Data bytes of a cluster.
    public static let clusterCapacity = 65536 + 256
    /// Default headroom: room for Ethernet, IPv4 and a transport header plus a virtio header.
    public static let defaultHeadroom = 96

    /// Creates a pool. `limitBytes` caps the memory all its mbufs may hold at once; past it
    /// allocations fail (and callers count a drop) instead of growing without bound.
    public init(allocator: SlabAllocator, limitBytes: Int = 256 << 20) {
        self.allocator = allocator
        let serial = MbufPool.serial.wrappingAdd(1, ordering: .relaxed).oldValue
        standardType = allocator.makeType(name: "mbuf.\(serial)", limit: limitBytes)
        clusterType = allocator.makeType(name: "mbuf-cluster.\(serial)", limit: limitBytes)
    }

    private static let serial = Atomic<Int>(0)

    /// Mbufs handed out and not yet freed.
    /// (From the slab's statistics snapshot: a diagnostic, not for hot paths.)
    public var outstanding: Int {
        allocator.statistics().types.filter { $0.name == standardType.name || $0.name == clusterType.name }
            .reduce(0) { $0 + $1.inUse }
    }

    /// A standard buffer with `headroom` bytes free in front, or nil when the pool is at its limit.
    @inlinable
    public func allocate(headroom: Int = MbufPool.defaultHeadroom) -> Mbuf? {
        make(chunk: Self.standardChunk, capacity: Self.standardCapacity, headroom: headroom, cluster: false)
    }

    /// A 64 KiB cluster with `headroom` bytes free in front, or nil.
    public func allocateCluster(headroom: Int = MbufPool.defaultHeadroom) -> Mbuf? {
        make(chunk: mbufHeaderBytes + Self.clusterCapacity, capacity: Self.clusterCapacity, headroom: headroom, cluster: true)
    }

    /// A buffer big enough for `bytes` data bytes plus `headroom`: standard or cluster.
    public func allocate(forBytes bytes: Int, headroom: Int = MbufPool.defaultHeadroom) -> Mbuf? {
        if bytes + headroom <= Self.standardCapacity { return allocate(headroom: headroom) }
        if bytes + headroom <= Self.clusterCapacity { return allocateCluster(headroom: headroom) }
        return nil
    }

    /// A packet holding a copy of `bytes` (a chain of standard buffers when it is long).
    public func packet(copying bytes: UnsafeRawBufferPointer, headroom: Int = MbufPool.defaultHeadroom) -> Mbuf? {
        guard let head = allocate(forBytes: bytes.count, headroom: headroom) else { return nil }
        _ = head.append(bytes: bytes)
        return head
    }

    @usableFromInline
    func make(chunk: Int, capacity: Int, headroom: Int, cluster: Bool) -> Mbuf? {
        guard let raw = allocator.allocate(chunk, type: cluster ? clusterType : standardType, flags: .mayReturnNil) else {
            return nil
        }
        let h = raw.bindMemory(to: MbufHeader.self, capacity: 1)
        h.initialize(to: MbufHeader(
            next: nil, nextPacket: nil, pool: Unmanaged.passUnretained(self).toOpaque(),
            storage: raw + mbufHeaderBytes, capacity: Int32(capacity),
            offset: Int32(min(max(0, headroom), capacity)), length: 0,
            flags: cluster ? Mbuf.Flags.cluster.rawValue : 0, kind: 0, interface: 0xff, hash: 0,
            word0: 0, word1: 0, word2: 0, word3: 0, context: nil, stack: nil))
        return Mbuf(h)
    }

    @usableFromInline
    func release(_ h: UnsafeMutablePointer<MbufHeader>) {
        let cluster = h.pointee.flags & Mbuf.Flags.cluster.rawValue != 0
        allocator.free(UnsafeMutableRawPointer(h), type: cluster ? clusterType : standardType)
    }
}
