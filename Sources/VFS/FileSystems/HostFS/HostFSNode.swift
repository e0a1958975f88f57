import Glibc
import Synchronization

/// A node of `HostFS`: the host's identity of an object (device and inode) and how to reach it.
///
/// Descriptors (rules of this file):
/// 1. A directory holds an `O_PATH` descriptor on itself for its whole life (`fd`): names are
///    resolved relative to it, so a directory moved on the host keeps working and nothing
///    can climb out of the root through `..` or a symbolic link.
/// 2. Any other node (regular file, symbolic link, FIFO, socket, device) holds no descriptor.
///    It remembers its *place*: the directory node it is in and its name there. An
///    operation reaches it with `openat(place.directory.fd, name, O_NOFOLLOW)` (or
///    `fstatat(..., AT_SYMLINK_NOFOLLOW)`) and checks that the object found has the node's
///    device, inode and type; if not, the node's name now belongs to another object (or none) and
///    the operation fails with `ESTALE`, so a node never acts on an object that is not its
///    own. A name is one component (no `/`, never `.` or `..`), so the lookup cannot leave
///    the directory. With this rule a cached name costs no descriptor, and the descriptors
///    HostFS holds are O(directories) (plus open files, which have their own).
/// 3. The place changes only when the VFS moves the node (`HostFS.moved`, after a successful
///    rename or exchange); it is read and written under `placeLock`. Directories a node
///    has been in stay retained for the node's life (the attribute cache's stamp word may
///    still point into one of them).
/// 4. Before HostFS removes a non-directory's name (unlink, or a rename over it), or gives it a second name
///    (link: the VFS then attaches the same node to both names), it *pins* the node: it
///    opens and checks an `O_PATH` descriptor (`pinned`), which the node keeps until it is
///    freed and uses before its place. So a record still held (a FUSE inode, an open
///    handle) can still be asked for its attributes, as the kernel allows for an open but
///    unlinked file, and a node with two names keeps working whichever of them goes.
///
/// A directory node also carries the generation word its inotify watch advances
/// (`HostFSWatcher`): 0 while unwatched.
///
/// Attribute cache: `stat` results are kept with the generation of the directory the node
/// is in (its parent, or for a moved non-directory its current place), whose watch reports
/// changes of its entries' attributes, sizes and times. The copy is valid while that word
/// holds `attributeStamp`; it is written under a sequence counter (odd while a writer is
/// inside), so lock-free readers detect a torn copy and fall back. HostFS's own changes
/// clear the stamp at once. Access times are not watched (inotify's `IN_ACCESS` fires on
/// every read), so a cached `atime` may lag.
final class HostFSNode: FSNode, @unchecked Sendable {
    /// Where a non-directory node is (rule 2).
    struct Place {
        var directory: HostFSNode
        var name: [UInt8]
        /// Directories the node was in before (rule 3).
        var former: [HostFSNode] = []
    }

    let type: FileType
    /// A directory's `O_PATH` descriptor (rule 1); -1 for every other type (rule 2).
    let fd: Int32
    let hostDevice: UInt64
    let hostInode: UInt64
    /// Advanced on every host change in this directory; 0 when unwatched.
    let generation: UnsafeMutablePointer<Atomic<UInt64>>
    /// The inotify watch (-1 for none); written under the watcher's lock.
    var watchDescriptor: Int32 = -1
    private let watcher: HostFSWatcher?
    /// The directory this node was found in (kept alive: its generation word stamps the
    /// attribute cache); nil for the root, whose own word stamps its attributes.
    let parent: HostFSNode?
    /// A non-directory's place (rule 2); nil for directories. Guarded by `placeLock`.
    private var place: Place?
    private let placeLock = NamespaceLock()
    /// An `O_PATH` descriptor kept after the node's name was removed (rule 4); -1 if none.
    private let pinned = Atomic<Int32>(-1)
    /// The word that stamps the attribute cache (see `word`).
    private let stampWord: Atomic<UnsafeMutablePointer<Atomic<UInt64>>>
    private let cachedAttributes: UnsafeMutablePointer<FileAttributes>
    /// `st_blocks` read with `cachedAttributes` (-1: not known), under the same sequence counter.
    private let cachedBlocks: UnsafeMutablePointer<Int64>
    private let attributeSequence = Atomic<UInt64>(0)
    private let attributeStamp = Atomic<UInt64>(0)

    /// A directory node (`fd` is its `O_PATH` descriptor, owned by the node from now on).
    init(directoryFD fd: Int32, st: stat, watcher: HostFSWatcher?, parent: HostFSNode?) {
        self.fd = fd
        self.parent = parent
        self.place = nil
        self.type = HostFS.fileType(st.st_mode)
        assert(type == .directory, "HostFSNode rule 1: only directories hold a descriptor")
        let words = Self.allocateWords(st)
        cachedAttributes = words.0
        cachedBlocks = words.1
        generation = words.2
        self.hostDevice = UInt64(st.st_dev)
        self.hostInode = UInt64(st.st_ino)
        stampWord = Atomic(parent?.generation ?? generation)
        self.watcher = watcher
        self.watcher?.watch(self)
    }

    /// A non-directory node named `name` in `directory` (rule 2: no descriptor).
    init(name: [UInt8], in directory: HostFSNode, st: stat) {
        self.fd = -1
        self.parent = directory
        self.place = Place(directory: directory, name: name)
        self.type = HostFS.fileType(st.st_mode)
        assert(type != .directory, "HostFSNode rule 2: a directory needs its descriptor")
        let words = Self.allocateWords(st)
        cachedAttributes = words.0
        cachedBlocks = words.1
        generation = words.2
        self.hostDevice = UInt64(st.st_dev)
        self.hostInode = UInt64(st.st_ino)
        stampWord = Atomic(directory.generation)
        self.watcher = nil
    }

    private static func allocateWords(_ st: stat) -> (UnsafeMutablePointer<FileAttributes>, UnsafeMutablePointer<Int64>,
                                                       UnsafeMutablePointer<Atomic<UInt64>>) {
        let attributes = UnsafeMutablePointer<FileAttributes>.allocate(capacity: 1)
        attributes.initialize(to: HostFS.attributes(st, device: 0))
        let blocks = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
        blocks.initialize(to: -1)
        let generation = UnsafeMutablePointer<Atomic<UInt64>>.allocate(capacity: 1)
        generation.initialize(to: Atomic(0))
        return (attributes, blocks, generation)
    }

    /// Whether `st` describes this node's host object: the same device, inode and type (a
    /// freed inode number can be reused at once, by an object of any type; the type at least
    /// tells a symbolic link put in a file's place from the file, as `revalidate` does).
    @inline(__always)
    func isSameObject(_ st: stat) -> Bool {
        UInt64(st.st_ino) == hostInode && UInt64(st.st_dev) == hostDevice && HostFS.fileType(st.st_mode) == type
    }

    /// The directory node and name of a non-directory (rule 2); nil for a directory.
    var currentPlace: (directory: HostFSNode, name: [UInt8])? {
        placeLock.withLock { () -> (HostFSNode, [UInt8])? in
            guard let p = place else { return nil }
            return (p.directory, p.name)
        }
    }

    /// The directory whose generation stamps the attributes now, for HostFS's own changes.
    var currentDirectory: HostFSNode? { currentPlace?.directory ?? parent }

    /// Records that the VFS moved this non-directory to `name` in `directory` (rule 3).
    func move(to name: [UInt8], in directory: HostFSNode) {
        placeLock.withLock { () in
            guard var p = place else { return }
            if p.directory !== directory {
                p.former.append(p.directory)
                p.directory = directory
                stampWord.store(directory.generation, ordering: .releasing)
            }
            p.name = name
            place = p
        }
        forgetAttributes()
    }

    /// The descriptor kept after unlink (rule 4), or -1.
    var pinnedDescriptor: Int32 { pinned.load(ordering: .acquiring) }

    /// Keeps `fd` (a checked `O_PATH` descriptor on this node's object) for the node's life
    /// (rule 4); closes it instead if the node is already pinned.
    func pin(_ fd: Int32) {
        if !pinned.compareExchange(expected: -1, desired: fd, ordering: .acquiringAndReleasing).exchanged {
            Glibc.close(fd)
        }
    }

    /// `/proc/self/fd/N` of a directory's descriptor, which addresses the directory itself.
    var procPath: String { HostFSNode.procPath(fd) }

    /// `/proc/self/fd/N`, which reopens or addresses the object a descriptor refers to.
    static func procPath(_ fd: Int32) -> String { "/proc/self/fd/\(fd)" }

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

    /// The cached attributes if nothing has changed since they were read (lock-free).
    @inline(__always)
    func currentAttributes() -> FileAttributes? { currentAttributesAndBlocks()?.0 }

    /// The cached attributes and `st_blocks` (-1 when not known), if nothing has changed
    /// since they were read (lock-free).
    @inline(__always)
    func currentAttributesAndBlocks() -> (FileAttributes, Int64)? {
        let stamp = attributeStamp.load(ordering: .acquiring)
        guard stamp != 0, word.pointee.load(ordering: .acquiring) == stamp else { return nil }
        let before = attributeSequence.load(ordering: .acquiring)
        guard before & 1 == 0 else { return nil }
        let copy = cachedAttributes.pointee
        let blocks = cachedBlocks.pointee
        atomicMemoryFence(ordering: .acquiring)
        guard attributeSequence.load(ordering: .relaxed) == before,
              attributeStamp.load(ordering: .relaxed) == stamp else { return nil }
        return (copy, blocks)
    }

    /// The word that stamps the attribute cache: the generation of the directory the node
    /// is in (its parent; for a moved non-directory, its current place), whose watch reports
    /// changes to its entries; for the root (no parent), its own, whose watch
    /// reports changes to the directory itself (`IN_ATTRIB`) and to its entries.
    @inline(__always)
    private var word: UnsafeMutablePointer<Atomic<UInt64>> { stampWord.load(ordering: .acquiring) }

    /// The stamping word's value now (0: attributes cannot be cached).
    var parentGeneration: UInt64 { word.pointee.load(ordering: .acquiring) }

    /// Keeps `attributes`, read from the host when the parent's generation was `stamp`.
    func remember(_ attributes: FileAttributes, blocks: Int64 = -1, stamp: UInt64) {
        guard stamp != 0 else { return }
        let s = attributeSequence.load(ordering: .relaxed)
        guard s & 1 == 0,
              attributeSequence.compareExchange(expected: s, desired: s &+ 1, ordering: .acquiring).exchanged else { return }
        attributeStamp.store(0, ordering: .relaxed)
        atomicMemoryFence(ordering: .releasing)
        cachedAttributes.pointee = attributes
        cachedBlocks.pointee = blocks
        attributeSequence.store(s &+ 2, ordering: .releasing)
        attributeStamp.store(stamp, ordering: .releasing)
    }

    /// Drops the cached attributes (HostFS changed the object itself).
    func forgetAttributes() { attributeStamp.store(0, ordering: .releasing) }

    deinit {
        cachedAttributes.deinitialize(count: 1)
        cachedAttributes.deallocate()
        cachedBlocks.deinitialize(count: 1)
        cachedBlocks.deallocate()
        watcher?.forget(self)
        if fd >= 0 { Glibc.close(fd) }
        let p = pinned.load(ordering: .acquiring)
        if p >= 0 { Glibc.close(p) }
        generation.deinitialize(count: 1)
        generation.deallocate()
    }
}

// Linux constants that Swift's Glibc module hides behind _GNU_SOURCE.
let O_PATH: Int32 = 0o10000000
let AT_EMPTY_PATH: Int32 = 0x1000
let UTIME_OMIT: Int = (1 << 30) - 2
