import Glibc
import Synchronization

/// A node of `HostFS`: an `O_PATH` descriptor on the host object, with the host's identity of it.
/// A directory node also carries the generation word its inotify watch advances
/// (`HostFSWatcher`): 0 while unwatched.
///
/// Attribute cache: `stat` results are kept with the generation of the directory the node
/// was found in (`parent`), whose watch reports changes of its entries' attributes, sizes
/// and times. The copy is valid while that word holds `attributeStamp`; it is written under
/// a sequence counter (odd while a writer is inside), so lock-free readers detect a torn
/// copy and fall back. HostFS's own changes clear the stamp at once. Access times are not
/// watched (inotify's `IN_ACCESS` fires on every read), so a cached `atime` may lag.
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
    /// The directory this node was found in (kept alive: its generation word stamps the
    /// attribute cache); nil for the root, whose own word stamps its attributes.
    let parent: HostFSNode?
    private let cachedAttributes: UnsafeMutablePointer<FileAttributes>
    /// `st_blocks` read with `cachedAttributes` (-1: not known), under the same sequence counter.
    private let cachedBlocks: UnsafeMutablePointer<Int64>
    private let attributeSequence = Atomic<UInt64>(0)
    private let attributeStamp = Atomic<UInt64>(0)

    init(fd: Int32, st: stat, watcher: HostFSWatcher?, parent: HostFSNode?) {
        self.parent = parent
        cachedAttributes = .allocate(capacity: 1)
        cachedAttributes.initialize(to: HostFS.attributes(st, device: 0))
        cachedBlocks = .allocate(capacity: 1)
        cachedBlocks.initialize(to: -1)
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

    /// The word that stamps the attribute cache: the parent directory's generation, whose
    /// watch reports changes to its entries; for the root (no parent), its own, whose watch
    /// reports changes to the directory itself (`IN_ATTRIB`) and to its entries.
    @inline(__always)
    private var word: UnsafeMutablePointer<Atomic<UInt64>> { parent?.generation ?? generation }

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
        Glibc.close(fd)
        generation.deinitialize(count: 1)
        generation.deallocate()
    }
}

// Linux constants that Swift's Glibc module hides behind _GNU_SOURCE.
let O_PATH: Int32 = 0o10000000
let AT_EMPTY_PATH: Int32 = 0x1000
let UTIME_OMIT: Int = (1 << 30) - 2
