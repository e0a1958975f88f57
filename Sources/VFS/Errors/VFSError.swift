import Glibc

/// An error from a VFS operation, named after the Linux `errno` value it stands for.
///
/// The raw value is the Linux errno number, so results can be compared one to one with
/// the host kernel.
public enum VFSError: Int32, Error, Sendable, CustomStringConvertible {
    case perm = 1          // EPERM
    case noent = 2         // ENOENT
    case io = 5            // EIO
    case badf = 9          // EBADF
    case again = 11        // EAGAIN
    case nomem = 12        // ENOMEM
    case acces = 13        // EACCES
    case busy = 16         // EBUSY
    case exist = 17        // EEXIST
    case xdev = 18         // EXDEV
    case notdir = 20       // ENOTDIR
    case isdir = 21        // EISDIR
    case inval = 22        // EINVAL
    case mfile = 24        // EMFILE
    case fbig = 27         // EFBIG
    case nospc = 28        // ENOSPC
    case spipe = 29        // ESPIPE
    case rofs = 30         // EROFS
    case mlink = 31        // EMLINK
    case range = 34        // ERANGE
    case nametoolong = 36  // ENAMETOOLONG
    case nodata = 61       // ENODATA (no such extended attribute)
    case notempty = 39     // ENOTEMPTY
    case loop = 40         // ELOOP
    case notsup = 95       // EOPNOTSUPP
    case stale = 116       // ESTALE
    case other = 9999      // any host errno without a case of its own

    /// The error for a host `errno` value.
    public init(errno code: Int32) {
        self = VFSError(rawValue: code) ?? .other
    }

    /// The error for the calling thread's current host `errno`.
    public static var current: VFSError { VFSError(errno: Glibc.errno) }

    public var description: String {
        switch self {
        case .perm: "EPERM"
        case .noent: "ENOENT"
        case .io: "EIO"
        case .badf: "EBADF"
        case .again: "EAGAIN"
        case .nomem: "ENOMEM"
        case .acces: "EACCES"
        case .busy: "EBUSY"
        case .exist: "EEXIST"
        case .xdev: "EXDEV"
        case .notdir: "ENOTDIR"
        case .isdir: "EISDIR"
        case .inval: "EINVAL"
        case .mfile: "EMFILE"
        case .fbig: "EFBIG"
        case .nospc: "ENOSPC"
        case .spipe: "ESPIPE"
        case .rofs: "EROFS"
        case .mlink: "EMLINK"
        case .range: "ERANGE"
        case .nametoolong: "ENAMETOOLONG"
        case .nodata: "ENODATA"
        case .notsup: "EOPNOTSUPP"
        case .notempty: "ENOTEMPTY"
        case .loop: "ELOOP"
        case .stale: "ESTALE"
        case .other: "EOTHER"
        }
    }
}
