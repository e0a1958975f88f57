import Glibc

/// A node of `HostFS`: an `O_PATH` descriptor on the host object, with the host's identity of it.
final class HostFSNode: FSNode, @unchecked Sendable {
    let type: FileType
    let fd: Int32
    let hostDevice: UInt64
    let hostInode: UInt64

    init(fd: Int32, st: stat) {
        self.fd = fd
        self.type = HostFS.fileType(st.st_mode)
        self.hostDevice = UInt64(st.st_dev)
        self.hostInode = UInt64(st.st_ino)
    }

    /// `/proc/self/fd/N`, which reopens or addresses the object itself.
    var procPath: String { "/proc/self/fd/\(fd)" }

    deinit { Glibc.close(fd) }
}

// Linux constants that Swift's Glibc module hides behind _GNU_SOURCE.
let O_PATH: Int32 = 0o10000000
let AT_EMPTY_PATH: Int32 = 0x1000
let UTIME_OMIT: Int = (1 << 30) - 2
