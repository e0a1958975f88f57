import Glibc
import Synchronization

/// The type of a file-system object.
public enum FileType: UInt8, Sendable {
    case regular, directory, symlink, other
}

/// A node of a file system (an inode, in kernel terms). The VFS never looks inside one; it
/// only hands it back to the file system that made it.
public protocol FSNode: AnyObject, Sendable {
    /// The node's type; it never changes during the node's life.
    var type: FileType { get }
}

/// The attributes of a node, as `stat()` reports them.
public struct FileAttributes: Sendable, Equatable {
    public var type: FileType
    public var mode: UInt32          // permission bits only (07777)
    public var uid: UInt32
    public var gid: UInt32
    public var nlink: UInt32
    public var size: Int64
    public var device: UInt64
    public var inode: UInt64
    public var atime: Timespec
    public var mtime: Timespec
    public var ctime: Timespec

    public init(type: FileType, mode: UInt32, uid: UInt32, gid: UInt32, nlink: UInt32, size: Int64,
                device: UInt64, inode: UInt64, atime: Timespec, mtime: Timespec, ctime: Timespec) {
        self.type = type; self.mode = mode; self.uid = uid; self.gid = gid; self.nlink = nlink
        self.size = size; self.device = device; self.inode = inode
        self.atime = atime; self.mtime = mtime; self.ctime = ctime
    }
}

/// A point in time with nanoseconds, as in `struct timespec`.
public struct Timespec: Sendable, Equatable, Hashable {
    public var seconds: Int64
    public var nanoseconds: Int64
    public init(seconds: Int64, nanoseconds: Int64) { self.seconds = seconds; self.nanoseconds = nanoseconds }

    /// The current wall-clock time.
    public static func now() -> Timespec {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timespec(seconds: Int64(ts.tv_sec), nanoseconds: Int64(ts.tv_nsec))
    }
}

/// One entry of a directory listing.
public struct DirectoryEntry: Sendable, Equatable {
    public var name: String
    public var inode: UInt64
    public var type: FileType
    public init(name: String, inode: UInt64, type: FileType) { self.name = name; self.inode = inode; self.type = type }
}

/// Identity of the caller, passed to file systems that create objects.
public struct Credentials: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public var groups: [UInt32]
    public init(uid: UInt32, gid: UInt32, groups: [UInt32] = []) { self.uid = uid; self.gid = gid; self.groups = groups }
    /// The superuser.
    public static let root = Credentials(uid: 0, gid: 0)
    /// Whether `gid` is the primary group or one of the supplementary groups.
    public func isMember(of gid: UInt32) -> Bool { gid == self.gid || groups.contains(gid) }
}

/// A change of attributes (`chmod`, `chown`, `utimes`, `truncate`); `nil` fields stay as they are.
public struct AttributeChange: Sendable {
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var atime: Timespec?
    public var mtime: Timespec?
    public var size: Int64?
    public init(mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil,
                atime: Timespec? = nil, mtime: Timespec? = nil, size: Int64? = nil) {
        self.mode = mode; self.uid = uid; self.gid = gid; self.atime = atime; self.mtime = mtime; self.size = size
    }
}

/// An open file inside a file system: the data operations.
public protocol FSOpenFile: AnyObject, Sendable {
    /// Reads up to `buffer.count` bytes at `offset`; returns the count read (0 at end of file).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(VFSError) -> Int
    /// Writes `buffer` at `offset` (or at the end when `append`); returns the count written and the
    /// offset just past the written bytes.
    func write(_ buffer: UnsafeRawBufferPointer, at offset: Int64, append: Bool) throws(VFSError) -> (count: Int, end: Int64)
    /// The current attributes.
    func attributes() throws(VFSError) -> FileAttributes
    /// Sets the length of the file.
    func truncate(to length: Int64) throws(VFSError)
    /// Lists a directory, without `.` and `..`.
    func readDirectory() throws(VFSError) -> [DirectoryEntry]
    /// Releases what the file system holds for this open file.
    func close()
}

/// A file system that plugs into the VFS: it resolves a name in a directory and performs attribute and
/// data operations. The namecache and `nlookup` above it handle paths, `.`/`..`, symlinks, mount
/// points and permission checks; a file system never sees a path.
public protocol FileSystem: AnyObject, Sendable {
    /// The root directory.
    var rootNode: any FSNode { get }
    /// The device number reported in `st_dev`.
    var deviceID: UInt64 { get }
    /// Whether names may change behind the VFS's back (a host directory). Cached entries of such a file
    /// system are revalidated with `revalidate` before they are used.
    var changesBehindCache: Bool { get }

    /// Whether calls into this file system can wait in the host kernel (disk or network I/O,
    /// FIFOs). `VFSProcess.offCPU(_:)` sends such work to the host-I/O pool instead of running it
    /// on an LWKT CPU. Such a file system calls `enteringHost()` before each call that may
    /// wait, so that the parking API (`VFSProcess.parking`) moves the operation to the pool
    /// there and answers what needs no host call (a cached attribute) on the CPU.
    var callsMayBlock: Bool { get }

    /// For a file system that changes behind the cache: a word that moves whenever the names
    /// in `directory` may have changed on the host (0 while changes cannot be seen). A cached
    /// name checked when the word held `g` stays valid, without asking the file system,
    /// while the word still holds `g`. `nil`: names are checked on every use.
    func validityWord(for directory: any FSNode) -> UnsafeMutablePointer<Atomic<UInt64>>?

    /// Looks `name` up in `directory`: the node, or `nil` when the name does not exist.
    func resolve(_ name: [UInt8], in directory: any FSNode) throws(VFSError) -> (any FSNode)?
    /// Whether a cached answer for `name` in `directory` (`cached`, or `nil` for a negative entry) still holds.
    func revalidate(_ name: [UInt8], in directory: any FSNode, cached: (any FSNode)?) -> Bool
    /// The attributes of a node.
    func attributes(of node: any FSNode) throws(VFSError) -> FileAttributes
    /// Changes attributes of a node.
    func setAttributes(of node: any FSNode, _ change: AttributeChange) throws(VFSError)
    /// Creates a regular file.
    func create(_ name: [UInt8], in directory: any FSNode, mode: UInt32, credentials: Credentials) throws(VFSError) -> any FSNode
    /// Creates a directory.
    func makeDirectory(_ name: [UInt8], in directory: any FSNode, mode: UInt32, credentials: Credentials) throws(VFSError) -> any FSNode
    /// Creates a symbolic link holding `target`.
    func makeSymlink(_ name: [UInt8], in directory: any FSNode, target: [UInt8], credentials: Credentials) throws(VFSError) -> any FSNode
    /// Adds a name for an existing non-directory node.
    func link(_ node: any FSNode, as name: [UInt8], in directory: any FSNode) throws(VFSError)
    /// Removes the name of a non-directory node.
    func unlink(_ name: [UInt8], in directory: any FSNode, node: any FSNode) throws(VFSError)
    /// Removes an empty directory.
    func removeDirectory(_ name: [UInt8], in directory: any FSNode, node: any FSNode) throws(VFSError)
    /// Moves a name, replacing whatever the target name held (the VFS has checked types and emptiness).
    func rename(_ name: [UInt8], in directory: any FSNode, to newName: [UInt8], in newDirectory: any FSNode) throws(VFSError)
    /// The target of a symbolic link.
    func readSymlink(_ node: any FSNode) throws(VFSError) -> [UInt8]
    /// Opens a node for data operations. `name` and `directory` are where it was found.
    func open(_ node: any FSNode, name: [UInt8], in directory: (any FSNode)?, read: Bool, write: Bool) throws(VFSError) -> any FSOpenFile
}

extension FileSystem {
    /// Marks the point where a file system is about to make a host call that may wait. In a
    /// non-blocking attempt of the parking API on an LWKT CPU it throws (the attempt gives up,
    /// nothing having changed yet, and the operation runs again on the host-I/O pool);
    /// anywhere else it does nothing. Call it before the operation's first change.
    public func enteringHost() throws(VFSError) { try VFSAttempt.hostCall() }

    /// By default a file system works in memory and never waits.
    public var callsMayBlock: Bool { false }
    /// By default names are checked on every use (when the file system changes behind the cache).
    public func validityWord(for directory: any FSNode) -> UnsafeMutablePointer<Atomic<UInt64>>? { nil }
}
