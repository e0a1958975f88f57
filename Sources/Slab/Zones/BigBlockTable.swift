#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Side table of allocations too big for a zone: each is mapped on its own and found
/// again at free time by its address.
final class BigBlockTable: @unchecked Sendable {
    struct Block {
        var bytes: Int
        var typeIndex: Int
    }

    private let blocks = Mutex([UInt: Block]())
    let mmapCalls = Atomic<Int>(0)
    let munmapCalls = Atomic<Int>(0)
    let liveBytes = Atomic<Int>(0)
    let liveBlocks = Atomic<Int>(0)

    static let pageSize: Int = {
        let p = sysconf(Int32(_SC_PAGESIZE))
        return p > 0 ? p : 4096
    }()

    /// Maps `bytes` (rounded up to whole pages); the memory reads as zeros.
    func allocate(bytes: Int, typeIndex: Int) -> (pointer: UnsafeMutableRawPointer, bytes: Int)? {
        let page = Self.pageSize
        let (sum, overflow) = bytes.addingReportingOverflow(page - 1)
        guard !overflow else { return nil }
        let rounded = sum & ~(page - 1)
        #if canImport(Glibc)
        let flags = MAP_PRIVATE | MAP_ANONYMOUS
        #else
        let flags = MAP_PRIVATE | MAP_ANON
        #endif
        mmapCalls.add(1, ordering: .relaxed)
        guard let p = mmap(nil, rounded, PROT_READ | PROT_WRITE, flags, -1, 0), p != MAP_FAILED else {
            return nil
        }
        blocks.withLock { $0[UInt(bitPattern: p)] = Block(bytes: rounded, typeIndex: typeIndex) }
        liveBytes.add(rounded, ordering: .relaxed)
        liveBlocks.add(1, ordering: .relaxed)
        return (p, rounded)
    }

    /// The block starting at `p`, if one is live.
    func lookup(_ p: UnsafeRawPointer) -> Block? {
        blocks.withLock { $0[UInt(bitPattern: p)] }
    }

    /// Unmaps the block starting at `p`; returns it, or nil when no such block is live.
    func free(_ p: UnsafeMutableRawPointer) -> Block? {
        guard let block = blocks.withLock({ $0.removeValue(forKey: UInt(bitPattern: p)) }) else { return nil }
        munmap(p, block.bytes)
        munmapCalls.add(1, ordering: .relaxed)
        liveBytes.subtract(block.bytes, ordering: .relaxed)
        liveBlocks.subtract(1, ordering: .relaxed)
        return block
    }
}
