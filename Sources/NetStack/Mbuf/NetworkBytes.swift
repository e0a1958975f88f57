/// Big-endian loads and stores at unaligned offsets, for header fields.
public enum NetworkBytes {
    @inlinable @inline(__always)
    public static func u16(_ p: UnsafeRawPointer, _ o: Int) -> UInt16 {
        UInt16(p.load(fromByteOffset: o, as: UInt8.self)) << 8 | UInt16(p.load(fromByteOffset: o + 1, as: UInt8.self))
    }
    @inlinable @inline(__always)
    public static func u32(_ p: UnsafeRawPointer, _ o: Int) -> UInt32 {
        UInt32(u16(p, o)) << 16 | UInt32(u16(p, o + 2))
    }
    @inlinable @inline(__always)
    public static func put16(_ p: UnsafeMutableRawPointer, _ o: Int, _ v: UInt16) {
        p.storeBytes(of: UInt8(v >> 8), toByteOffset: o, as: UInt8.self)
        p.storeBytes(of: UInt8(truncatingIfNeeded: v), toByteOffset: o + 1, as: UInt8.self)
    }
    @inlinable @inline(__always)
    public static func put32(_ p: UnsafeMutableRawPointer, _ o: Int, _ v: UInt32) {
        put16(p, o, UInt16(v >> 16))
        put16(p, o + 2, UInt16(truncatingIfNeeded: v))
    }
    @inlinable @inline(__always)
    public static func u8(_ p: UnsafeRawPointer, _ o: Int) -> UInt8 { p.load(fromByteOffset: o, as: UInt8.self) }
    @inlinable @inline(__always)
    public static func put8(_ p: UnsafeMutableRawPointer, _ o: Int, _ v: UInt8) {
        p.storeBytes(of: v, toByteOffset: o, as: UInt8.self)
    }
}

import CLibellula

/// The monotonic clock in nanoseconds.
@inline(__always) func lb_now_ns_swift() -> UInt64 { lb_now_ns() }

#if canImport(Glibc)
import Glibc
#endif

/// CLOCK_MONOTONIC_COARSE in nanoseconds: the kernel's last tick (a few milliseconds of
/// resolution, never ahead of ``lb_now_ns_swift()``), much cheaper than a precise read;
/// for socket calls that only need `now` for TCP's coarse timers.
@inline(__always) func lb_now_coarse_ns() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}
