/// The chunk-size classes of the slab, laid out as DragonFly's `zoneindex` does.
///
/// Requests are rounded up to a step that doubles with each power-of-two band: 8 bytes
/// below 128, 16 below 256, 32 below 512, and so on up to 1 KiB steps below 16 KiB.
/// That gives 72 classes, numbered 0 (8 bytes) to 71 (16 KiB).
public enum SizeClass {
    /// Number of size classes.
    public static let count = 72

    /// Requests of this many bytes or more are mapped directly instead of coming from a zone.
    public static let zoneLimit = 16 * 1024

    /// Whether a request of `size` bytes bypasses the zones and is mapped on its own:
    /// `size >= zoneLimit`, or (as in DragonFly) a whole number of pages above two pages.
    @inlinable @inline(__always)
    public static func mapsDirectly(_ size: Int) -> Bool {
        size >= zoneLimit || (size & 4095 == 0 && size > 8192)
    }

    /// The class index and rounded chunk size for a request of `size` bytes
    /// (`1 ..< zoneLimit`).
    @inlinable @inline(__always)
    public static func index(forSize size: Int) -> (index: Int, chunkSize: Int) {
        if size < 128 {
            let rounded = (size &+ 7) & ~7
            return ((rounded >> 3) &- 1, rounded)
        }
        // band b: size in [2^b, 2^(b+1)), rounded to 2^(b-3); index = r/step + 8(b-7) + 7.
        let band = Int.bitWidth &- 1 &- size.leadingZeroBitCount
        let shift = band &- 3
        let mask = (1 &<< shift) &- 1
        let rounded = (size &+ mask) & ~mask
        return ((rounded >> shift) &+ 8 &* (band &- 7) &+ 7, rounded)
    }

    /// The chunk size of class `index` (`0 ..< count`).
    @inlinable
    public static func chunkSize(ofClass index: Int) -> Int {
        if index < 16 { return (index &+ 1) &* 8 }
        let band = (index &- 16) / 8 &+ 7
        return (index &- 8 &* (band &- 7) &- 7) &<< (band &- 3)
    }

    /// The alignment every chunk of class `index` has: its size when that is a power of
    /// two, otherwise the largest power of two dividing it (at least the class's step).
    @inlinable
    public static func alignment(ofClass index: Int) -> Int {
        let size = chunkSize(ofClass: index)
        return size & -size
    }
}
