#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Debug-mode checks and the fatal report.
///
/// Freed chunks are filled with ``poisonWord`` (after the free-list link in the first
/// word); the fill is verified when the chunk is handed out again, so a write after free
/// is caught at the next allocation instead of corrupting memory silently.
enum SlabDebug {
    /// DragonFly's `WEIRD_ADDR`, repeated.
    static let poisonWord: UInt64 = 0xdead_c0de_dead_c0de

    /// Kinds of misuse the allocator reports.
    enum Failure: String {
        case doubleFree = "double free"
        case invalidFree = "free of a pointer the allocator never handed out"
        case writeAfterFree = "write after free"
        case limitExceeded = "malloc limit exceeded"
        case outOfMemory = "out of memory"
        case invalidSize = "invalid allocation size"
    }

    /// Prints a report to standard error and aborts the process.
    static func fail(_ failure: Failure, _ detail: String) -> Never {
        let text = "libellula slab: \(failure.rawValue): \(detail)\n"
        text.withCString { s in _ = write(2, s, strlen(s)) }
        abort()
    }

    static func hex(_ p: UnsafeRawPointer?) -> String {
        "0x" + String(UInt(bitPattern: p), radix: 16)
    }

    /// Fills a freed chunk after its link word.
    @inline(__always)
    static func poison(_ chunk: UnsafeMutableRawPointer, bytes: Int) {
        var off = 8
        while off + 8 <= bytes {
            chunk.storeBytes(of: poisonWord, toByteOffset: off, as: UInt64.self)
            off += 8
        }
    }

    /// The first offset after the link word that no longer holds the poison, if any.
    static func firstPoisonMismatch(_ chunk: UnsafeRawPointer, bytes: Int) -> Int? {
        var off = 8
        while off + 8 <= bytes {
            if chunk.load(fromByteOffset: off, as: UInt64.self) != poisonWord { return off }
            off += 8
        }
        return nil
    }
}
