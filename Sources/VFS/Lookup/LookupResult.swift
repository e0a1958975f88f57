/// What a path lookup found.
struct LookupResult {
    /// How the path ended.
    enum LastKind: Equatable { case normal, dot, dotdot, root }

    /// The final record: positive, or negative when the lookup allowed a missing last name.
    /// For `.dot`, `.dotdot` and `.root` it is the directory the path names.
    var record: NCRecord
    /// The directory the last name was looked up in (`nil` unless `kind == .normal`).
    var directory: NCRecord?
    var kind: LastKind
    /// The path ended with one or more slashes.
    var trailingSlash: Bool
}

/// Path and symlink limits, as on Linux.
public enum PathLimits {
    /// Longest component, in bytes.
    public static let nameMax = 255
    /// Longest path, in bytes, counting the terminating NUL as Linux does.
    public static let pathMax = 4096
    /// Symlinks followed in one lookup before ELOOP.
    public static let maxSymlinks = 40
}
