import Glibc
import Synchronization

/// A node of `HostFS`: an `O_PATH` descriptor on the host object, with the host's identity of it.
/// A directory node also carries the generation word its inotify watch advances
/// (`HostFSWatcher`): 0 while unwatched.
final class HostFSNode: FSNode, @unchecked Sendable {
    let type: FileType
    let fd: Int32
    let hostDevice: UInt64
    let hostInode: UInt64
    /// Advanced on every host change in this directory; 0 when unwatched.
    let generation: UnsafeMutablePointer<Atomic<UInt64>>
    /// The inotify watch (-1 for none); written under the watcher's lock.
    var watchDescriptor: Int32 = -1
    private let watcher: HostFSWatcher?

    init(fd: Int32, st: stat, watcher: HostFSWatcher?) {
        self.fd = fd
        self.type = HostFS.fileType(st.st_mode)
        self.hostDevice = UInt64(st.st_dev)
        self.hostInode = UInt64(st.st_ino)
        generation = .allocate(capacity: 1)
        generation.initialize(to: Atomic(0))
        self.watcher = type == .directory ? watcher : nil
        self.watcher?.watch(self)
    }

    /// `/proc/self/fd/N`, which reopens or addresses the object itself.
    var procPath: String { "/proc/self/fd/\(fd)" }

    /// Marks a change: records stamped with the old generation are checked again.
    func advance() {
        var g = generation.pointee.load(ordering: .relaxed)
        while g != 0 {
            let next = g &+ 1 == 0 ? 1 : g &+ 1
            let (done, seen) = generation.pointee.compareExchange(expected: g, desired: next, ordering: .releasing)
            if done { return }
            g = seen
        }
    }

    deinit {
        watcher?.forget(self)
        Glibc.close(fd)
        generation.deinitialize(count: 1)
        generation.deallocate()
    }
}

// Linux constants that Swift's Glibc module hides behind _GNU_SOURCE.
let O_PATH: Int32 = 0o10000000
let AT_EMPTY_PATH: Int32 = 0x1000
let UTIME_OMIT: Int = (1 << 30) - 2
