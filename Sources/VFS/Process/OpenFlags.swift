/// Flags of `open`, with Linux's numeric values.
public struct OpenFlags: OptionSet, Sendable, Hashable {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// Read only (no bits set).
    public static let readOnly: OpenFlags = []
    public static let writeOnly = OpenFlags(rawValue: 0o1)
    public static let readWrite = OpenFlags(rawValue: 0o2)
    public static let create = OpenFlags(rawValue: 0o100)
    public static let exclusive = OpenFlags(rawValue: 0o200)
    public static let truncate = OpenFlags(rawValue: 0o1000)
    public static let append = OpenFlags(rawValue: 0o2000)
    /// Admits FIFOs, sockets and devices, which are then opened non-blocking (`O_NONBLOCK`).
    /// Without it, opening anything but a regular file or a directory fails with
    /// `EOPNOTSUPP` before the file system is asked, so an open can never wait for a peer.
    public static let nonBlocking = OpenFlags(rawValue: 0o4000)
    public static let directory = OpenFlags(rawValue: 0o200000)
    public static let noFollow = OpenFlags(rawValue: 0o400000)

    var accessMode: Int32 { rawValue & 3 }
    var readable: Bool { accessMode == 0 || accessMode == 2 }
    var writable: Bool { accessMode == 1 || accessMode == 2 }
}

/// Where `seek` counts from.
public enum SeekWhence: Sendable {
    case set, current, end
}
