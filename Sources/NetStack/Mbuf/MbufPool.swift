import CLibellula
import LWKT
import Slab
import Synchronization

/// Hands out mbufs from a slab allocator: standard buffers (a 2 KiB chunk, enough for an
/// Ethernet frame and its headroom) and 64 KiB clusters for segmentation offload and
/// reassembly. Allocation uses the calling CPU's arena; a free on another CPU goes back to
/// the owner through the slab's remote-free path.
///
/// Clusters are big enough that the slab maps each one directly (an `mmap` and page faults
/// per allocation, a `munmap` per free), so each CPU keeps a small cache of them (DragonFly
/// keeps its mbuf clusters in per-CPU object caches): a cluster freed on the CPU that
/// allocated it goes back to that CPU's cache, up to ``clusterCacheDepth``; any other free
/// goes to the slab. Only the owning CPU touches its cache, so it takes no lock.
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
        system = allocator.system
        cacheCPUs = allocator.system?.cpuCount ?? 0
        cache = .allocate(capacity: max(1, cacheCPUs * Self.clusterCacheDepth))
        cache.initialize(repeating: nil, count: max(1, cacheCPUs * Self.clusterCacheDepth))
        cached = .allocate(capacity: max(1, cacheCPUs * 8))
        cached.initialize(repeating: 0, count: max(1, cacheCPUs * 8))
        let serial = MbufPool.serial.wrappingAdd(1, ordering: .relaxed).oldValue
        standardType = allocator.makeType(name: "mbuf.\(serial)", limit: limitBytes)
        clusterType = allocator.makeType(name: "mbuf-cluster.\(serial)", limit: limitBytes)
        allocatorRef = .passUnretained(allocator)
        standardTypeRef = .passUnretained(standardType)
        clusterTypeRef = .passUnretained(clusterType)
    }

    private static let serial = Atomic<Int>(0)

    /// Clusters each CPU keeps for reuse (up to 4 MiB of 64 KiB clusters: a window of TSO segments in flight).
    public static let clusterCacheDepth = 64
    /// The system whose CPUs own the caches (nil: no caches).
    let system: LWKTSystem?
    /// The allocator and the two types, unretained (the properties above keep them alive):
    /// the per-packet paths pass them on without touching their reference counts.
    @usableFromInline let allocatorRef: Unmanaged<SlabAllocator>
    @usableFromInline let standardTypeRef: Unmanaged<MallocType>
    @usableFromInline let clusterTypeRef: Unmanaged<MallocType>
    let cacheCPUs: Int
    /// `clusterCacheDepth` chunk pointers per CPU; only that CPU touches its row.
    let cache: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    /// Clusters in each CPU's cache (one cache line per CPU; written by the owner, read by
    /// anyone through ``outstanding``).
    let cached: UnsafeMutablePointer<Int64>

    deinit {
        for cpu in 0..<cacheCPUs {
            let n = Int(lb_counter_load(cached + cpu * 8))
            for i in 0..<n {
                if let p = cache[cpu * Self.clusterCacheDepth + i] { allocator.free(p, type: clusterType) }
            }
        }
        cache.deallocate()
        cached.deallocate()
    }

    /// Mbufs handed out and not yet freed (clusters resting in a CPU cache do not count).
    /// (From the slab's statistics snapshot: a diagnostic, not for hot paths.)
    public var outstanding: Int {
        let held = allocator.statistics().types.filter { $0.name == standardType.name || $0.name == clusterType.name }
            .reduce(0) { $0 + $1.inUse }
        return held - (0..<cacheCPUs).reduce(0) { $0 + Int(lb_counter_load(cached + $1 * 8)) }
    }

    /// Clusters resting in CPU `cpu`'s cache (a diagnostic).
    public func cachedClusters(cpu: Int) -> Int {
        guard cpu >= 0, cpu < cacheCPUs else { return 0 }
        return Int(lb_counter_load(cached + cpu * 8))
    }

    /// The calling CPU's index when it has a cache, else -1.
    @inline(__always)
    func cacheIndex() -> Int {
        guard let system, let i = CPU.currentIndex(in: system), i < cacheCPUs else { return -1 }
        return i
    }

    /// A standard buffer with `headroom` bytes free in front, or nil when the pool is at its limit.
    @inlinable
    public func allocate(headroom: Int = MbufPool.defaultHeadroom) -> Mbuf? {
        make(chunk: Self.standardChunk, capacity: Self.standardCapacity, headroom: headroom, cluster: false, home: -1)
    }

    /// A 64 KiB cluster with `headroom` bytes free in front, or nil.
    public func allocateCluster(headroom: Int = MbufPool.defaultHeadroom) -> Mbuf? {
        let cpu = cacheIndex()
        if cpu >= 0 {
            let n = Int(lb_counter_load(cached + cpu * 8))
            if n > 0, let raw = cache[cpu * Self.clusterCacheDepth + n - 1] {
                cache[cpu * Self.clusterCacheDepth + n - 1] = nil
                lb_counter_add(cached + cpu * 8, -1)
                return initialize(raw, capacity: Self.clusterCapacity, headroom: headroom, cluster: true, home: cpu)
            }
        }
        return make(chunk: mbufHeaderBytes + Self.clusterCapacity, capacity: Self.clusterCapacity, headroom: headroom,
                    cluster: true, home: cpu)
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
    func make(chunk: Int, capacity: Int, headroom: Int, cluster: Bool, home: Int) -> Mbuf? {
        let raw = allocatorRef._withUnsafeGuaranteedRef { a in
            (cluster ? clusterTypeRef : standardTypeRef)._withUnsafeGuaranteedRef { t in
                a.allocate(chunk, type: t, flags: .mayReturnNil)
            }
        }
        guard let raw else { return nil }
        return initialize(raw, capacity: capacity, headroom: headroom, cluster: cluster, home: home)
    }

    @usableFromInline @inline(__always)
    func initialize(_ raw: UnsafeMutableRawPointer, capacity: Int, headroom: Int, cluster: Bool, home: Int) -> Mbuf {
        let h = raw.bindMemory(to: MbufHeader.self, capacity: 1)
        h.initialize(to: MbufHeader(
            next: nil, nextPacket: nil, pool: Unmanaged.passUnretained(self).toOpaque(),
            storage: raw + mbufHeaderBytes, capacity: Int32(capacity),
            offset: Int32(min(max(0, headroom), capacity)), length: 0,
            flags: cluster ? Mbuf.Flags.cluster.rawValue : 0, kind: 0, interface: 0xff, hash: 0,
            word0: 0, word1: 0, word2: 0, word3: 0, context: nil, stack: nil, home: Int32(home)))
        return Mbuf(h)
    }

    @usableFromInline
    func release(_ h: UnsafeMutablePointer<MbufHeader>) {
        let cluster = h.pointee.flags & Mbuf.Flags.cluster.rawValue != 0
        if cluster, h.pointee.home >= 0 {
            let cpu = Int(h.pointee.home)
            if cacheIndex() == cpu {
                let n = Int(lb_counter_load(cached + cpu * 8))
                if n < Self.clusterCacheDepth {
                    cache[cpu * Self.clusterCacheDepth + n] = UnsafeMutableRawPointer(h)
                    lb_counter_add(cached + cpu * 8, 1)
                    return
                }
            }
        }
        allocatorRef._withUnsafeGuaranteedRef { a in
            (cluster ? clusterTypeRef : standardTypeRef)._withUnsafeGuaranteedRef { t in
                a.free(UnsafeMutableRawPointer(h), type: t)
            }
        }
    }
}
