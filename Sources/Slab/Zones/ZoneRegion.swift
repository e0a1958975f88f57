#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The address range zones are carved from: one large `mmap` reservation (no memory is
/// committed until touched), cut into 128 KiB slots aligned to their size.
///
/// Slots given back to the OS are `madvise(MADV_DONTNEED)`-ed, which drops their pages
/// and makes them read back as zeros, and are reused before new address space.
/// A pointer belongs to a zone exactly when it lies in this range, which is how a free
/// tells a zone chunk from a directly mapped big block with one compare.
final class ZoneRegion: @unchecked Sendable {
    let mapping: UnsafeMutableRawPointer
    let mappingBytes: Int
    /// First zone-aligned address, and the bytes usable from it.
    let base: UInt
    let size: Int

    private struct State {
        var nextSlot = 0
        var releasedSlots: [UInt] = []
    }
    private let state = Mutex(State())

    // OS-call and zone counters, read by statistics.
    let mmapCalls = Atomic<Int>(0)
    let munmapCalls = Atomic<Int>(0)
    let madviseCalls = Atomic<Int>(0)
    let zonesCarved = Atomic<Int>(0)
    let zonesReleased = Atomic<Int>(0)

    /// Reserves `requestedBytes` (halving on failure, down to 64 zones).
    init?(requestedBytes: Int) {
        var bytes = max(requestedBytes, 64 * ZoneLayout.zoneSize)
        let zoneSize = ZoneLayout.zoneSize
        while true {
            let total = bytes + zoneSize
            #if canImport(Glibc)
            let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
            #else
            let flags = MAP_PRIVATE | MAP_ANON
            #endif
            let p = mmap(nil, total, PROT_READ | PROT_WRITE, flags, -1, 0)
            if let p, p != MAP_FAILED {
                mapping = p
                mappingBytes = total
                let raw = UInt(bitPattern: p)
                base = (raw + UInt(zoneSize - 1)) & ZoneLayout.zoneMask
                size = bytes
                mmapCalls.store(1, ordering: .relaxed)
                return
            }
            if bytes <= 64 * zoneSize { return nil }
            bytes /= 2
        }
    }

    deinit {
        munmap(mapping, mappingBytes)
    }

    /// Whether `p` lies in the zone range.
    @inline(__always)
    func contains(_ p: UnsafeRawPointer) -> Bool {
        UInt(bitPattern: p) &- base < UInt(size)
    }

    /// A zone slot and whether it is known to read as zeros, or nil when the range is
    /// used up.
    func obtain() -> (zone: UnsafeMutableRawPointer, zeroed: Bool)? {
        let found: (UInt, Bool)? = state.withLock { s in
            if let reused = s.releasedSlots.popLast() { return (reused, Self.releaseZeroes) }
            let offset = s.nextSlot * ZoneLayout.zoneSize
            guard offset + ZoneLayout.zoneSize <= size else { return nil }
            s.nextSlot += 1
            return (base + UInt(offset), true)
        }
        guard let (addr, zeroed) = found, let zone = UnsafeMutableRawPointer(bitPattern: addr) else { return nil }
        zonesCarved.add(1, ordering: .relaxed)
        return (zone, zeroed)
    }

    #if canImport(Glibc)
    static let releaseZeroes = true   // MADV_DONTNEED on private anonymous memory
    #else
    static let releaseZeroes = false
    #endif

    /// Gives a zone's pages back to the OS and keeps its address for reuse.
    func release(_ zone: UnsafeMutableRawPointer) {
        #if canImport(Glibc)
        _ = madvise(zone, ZoneLayout.zoneSize, Int32(MADV_DONTNEED))
        #else
        _ = madvise(zone, ZoneLayout.zoneSize, MADV_FREE)
        #endif
        madviseCalls.add(1, ordering: .relaxed)
        zonesReleased.add(1, ordering: .relaxed)
        let addr = UInt(bitPattern: zone)
        state.withLock { $0.releasedSlots.append(addr) }
    }
}
