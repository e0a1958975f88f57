/// Why a FUSE mount could not be made, each with the fix.
public enum FUSEError: Error, CustomStringConvertible, Equatable {
    case deviceMissing
    case deviceNotPermitted(Int32)
    case fusermountMissing
    case mountPointMissing(String)
    case mountPointNotDirectory(String)
    case mountPointBusy(String)
    case mountFailed(String, Int32)
    case fusermountFailed(String)
    case handshakeFailed(String)
    case rootFailed(String)

    public var description: String {
        switch self {
        case .deviceMissing:
            return "/dev/fuse does not exist: load the kernel module (modprobe fuse); in a container, start it with --device /dev/fuse --cap-add SYS_ADMIN"
        case .deviceNotPermitted(let e):
            return "cannot open /dev/fuse (errno \(e)): run as root, or make /dev/fuse readable and writable for this user (fuse3 installs it mode 0666)"
        case .fusermountMissing:
            return "fusermount3 is not installed and this process is not root: install the fuse3 package (apt-get install fuse3) or run as root"
        case .mountPointMissing(let p):
            return "mount point \(p) does not exist: create it first (mkdir -p \(p))"
        case .mountPointNotDirectory(let p):
            return "mount point \(p) is not a directory"
        case .mountPointBusy(let p):
            return "mount point \(p) is busy (something is already mounted there): unmount it first with fusermount3 -u \(p) (or umount -l \(p))"
        case .mountFailed(let p, let e):
            return "mounting on \(p) failed (errno \(e))"
        case .fusermountFailed(let p):
            return "fusermount3 could not mount \(p) (its own message is above): check that you own \(p), that /dev/fuse is readable and writable for you (mode 0666), and for --allow-other that /etc/fuse.conf has user_allow_other; or run as root"
        case .handshakeFailed(let why):
            return "the kernel's FUSE handshake failed: \(why)"
        case .rootFailed(let why):
            return "the file system's root cannot be read: \(why)"
        }
    }
}
