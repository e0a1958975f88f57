#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Tunables of a ``SlabAllocator``.
public struct SlabConfiguration: Sendable {
    /// Environment variable that turns debug mode on when set to anything but `0` or empty.
    public static let debugEnvironmentVariable = "LIBELLULA_SLAB_DEBUG"

    /// Wholly free zones a CPU keeps before it gives any back to the OS (DragonFly: 32).
    public var freeZoneThreshold: Int = 32

    /// Virtual address space reserved for zones (mapped once, no memory committed until
    /// touched). Zone allocation fails once it is used up.
    public var zoneRegionBytes: Int = 16 << 30

    /// Debug mode: poison freed chunks and abort with a report on a double free, a free of
    /// a pointer that was never handed out, or a write after free. Defaults to the
    /// ``debugEnvironmentVariable``.
    public var debug: Bool = SlabConfiguration.debugFromEnvironment()

    /// Creates the default configuration.
    public init() {}

    /// Creates a configuration, overriding the given tunables.
    public init(freeZoneThreshold: Int = 32, zoneRegionBytes: Int = 16 << 30, debug: Bool? = nil) {
        self.freeZoneThreshold = max(0, freeZoneThreshold)
        self.zoneRegionBytes = zoneRegionBytes
        self.debug = debug ?? Self.debugFromEnvironment()
    }

    /// Whether ``debugEnvironmentVariable`` asks for debug mode.
    public static func debugFromEnvironment() -> Bool {
        guard let value = getenv(debugEnvironmentVariable) else { return false }
        let s = String(cString: value)
        return !(s.isEmpty || s == "0")
    }
}

/// Options of one allocation, after DragonFly's `M_*` flags.
public struct SlabFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Return zero-filled memory (`M_ZERO`).
    public static let zero = SlabFlags(rawValue: 1 << 0)
    /// Return `nil` instead of aborting when the type's limit is reached or no memory can
    /// be had (`M_NULLOK`).
    public static let mayReturnNil = SlabFlags(rawValue: 1 << 1)
    /// In the `async` allocation call, sleep until frees bring the type back under its
    /// limit instead of failing (`M_WAITOK`). The synchronous call treats it as
    /// ``mayReturnNil``.
    public static let waitUntilFreed = SlabFlags(rawValue: 1 << 2)
}
