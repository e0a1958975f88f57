import Glibc
import Synchronization

/// A file system mounted in the namespace. Its root record hangs below the record it covers
/// (`covered`), so `..` from the root of a mounted file system climbs to the covered
/// record's parent.
public final class Mount: @unchecked Sendable {
    /// The mounted file system.
    public let fileSystem: any FileSystem
    /// `st_dev` of every node of this mount.
    public let deviceID: UInt64
    /// Whether cached names must be checked with the file system before use.
    let revalidates: Bool
    /// The root record of the mounted file system (set right after creation).
    var root: NCRecord!
    /// The record this mount covers; `nil` for the root mount.
    var covered: NCRecord?
    /// Holds on records of this mount (open files, working directories, roots).
    let holds = Atomic<Int>(0)
    /// Serialises renames on this file system, so that two renames cannot together make a
    /// cycle. A sleep lock, as record locks are: it is held across the host's rename.
    let renameLock = RecordLock()
    /// A strict HostFS (`HostFS.strict`): path operations settle its events first.
    let strictHost: HostFS?
    /// Set when the mount has been taken out of the namespace.
    var unmounted = false

    init(fileSystem: any FileSystem) {
        self.fileSystem = fileSystem
        self.deviceID = fileSystem.deviceID
        self.revalidates = fileSystem.changesBehindCache
        if let h = fileSystem as? HostFS, h.strict { strictHost = h } else { strictHost = nil }
    }
}
