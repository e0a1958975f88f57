import Glibc

/// Nanoseconds of `CLOCK_MONOTONIC`, for deadlines.
enum MonotonicClock {
    @inline(__always)
    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// `CLOCK_MONOTONIC_COARSE`: the kernel's last tick (a few milliseconds behind
    /// ``now()`` at most), read without the time-stamp counter. For checks measured in
    /// seconds (cache validity, request timeouts); never for latency samples.
    @inline(__always)
    static func coarseNow() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    @inline(__always)
    static func deadline(after d: Duration) -> UInt64 {
        let (s, a) = d.components
        let ns = max(0, s) &* 1_000_000_000 &+ max(0, a / 1_000_000_000)
        return now() &+ UInt64(ns)
    }
}
