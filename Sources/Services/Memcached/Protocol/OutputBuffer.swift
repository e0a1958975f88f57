#if canImport(Glibc)
import Glibc
#endif

/// A growable byte buffer for responses, reused for the life of a connection. While a
/// connection waits for a remote CPU, that CPU appends to it directly (the connection is
/// suspended, and the IPI rings order the hand-off both ways), so its memory comes from
/// `malloc`, which any thread may grow.
final class OutputBuffer: @unchecked Sendable {
    var base: UnsafeMutableRawPointer
    var count = 0
    var capacity: Int

    init(capacity: Int = 16 * 1024) {
        self.capacity = capacity
        base = malloc(capacity) ?? UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
    }

    deinit { free(base) }

    @inline(__always) func reserve(_ n: Int) {
        if _slowPath(count &+ n > capacity) { grow(count &+ n) }
    }

    @inline(never) func grow(_ need: Int) {
        var c = capacity * 2
        while c < need { c *= 2 }
        guard let p = realloc(base, c) else { return }
        base = p
        capacity = c
    }

    /// Shrinks a buffer that grew past `limit` back to its initial size (after a large value).
    func trim(limit: Int = 1 << 20) {
        if capacity > limit && count == 0, let p = realloc(base, 16 * 1024) {
            base = p
            capacity = 16 * 1024
        }
    }

    @inline(__always) func append(_ p: UnsafeRawPointer, _ n: Int) {
        reserve(n)
        (base + count).copyMemory(from: p, byteCount: n)
        count &+= n
    }

    @inline(__always) func append(_ s: StaticString) {
        append(s.utf8Start, s.utf8CodeUnitCount)
    }

    @inline(__always) func append(byte b: UInt8) {
        reserve(1)
        base.storeBytes(of: b, toByteOffset: count, as: UInt8.self)
        count &+= 1
    }

    @inline(__always) func append(decimal v: UInt64) {
        reserve(20)
        count &+= formatUInt64(v, into: base + count)
    }

    @inline(__always) func append(signed v: Int64) {
        if v < 0 { append(byte: 0x2D); append(decimal: UInt64(-(v + 1)) + 1) } else { append(decimal: UInt64(v)) }
    }

    @inline(__always) func appendCRLF() {
        reserve(2)
        base.storeBytes(of: 0x0A0D as UInt16, toByteOffset: count, as: UInt16.self)
        count &+= 2
    }

    /// Appends a Swift string (slow paths: stats, errors with details).
    func append(string: String) {
        var s = string
        s.withUTF8 { b in if let a = b.baseAddress { append(a, b.count) } }
    }
}
