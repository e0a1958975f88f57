import Synchronization

/// The part of a namecache record that a cached lookup reads, kept in plain memory (no
/// reference counting) so that a lookup is pure pointer chasing: it neither retains nor
/// releases anything, and writes nothing shared. Each `NCRecord` owns one; the namecache
/// rewrites it (`NCRecord.syncHot`) inside the write section of every change, and frees it
/// with the record, which by then no reader can reach.
struct NCHot {
    var hashNext: UnsafeMutablePointer<NCHot>?
    var hash: UInt64
    var parent: UnsafeMutablePointer<NCHot>?
    var name: UnsafeMutablePointer<UInt8>
    var nameLength: Int
    var id: UInt64
    var flags: UInt32
    var state: NCRecord.State
    var nodeType: FileType
    /// The record's mount revalidates names (the lock-free walk leaves such records alone).
    var revalidates: Bool
    /// Root of the file system mounted on this record, if any.
    var mountedRoot: UnsafeMutablePointer<NCHot>?
    var device: UInt64
    /// The node, unretained, when it is a `MemFSNode` (whose attributes can be read lock-free).
    var memNode: UnsafeMutableRawPointer?
    /// The node, unretained, when it is a `HostFSNode` (whose cached attributes can be read lock-free).
    var hostNode: UnsafeMutableRawPointer?
    /// For a record of a mount that revalidates: its directory's validity word and the value
    /// it held when the name was last checked (0: never). The record is current while the
    /// word still holds `validStamp`.
    var validity: UnsafeMutablePointer<Atomic<UInt64>>?
    var validStamp: UInt64
    /// The owning `NCRecord`, unretained.
    var owner: UnsafeMutableRawPointer?
}

/// The hash table's header, in plain memory so lookups reach it without reference counting.
struct NCTable {
    var buckets: UnsafeMutablePointer<UnsafeMutablePointer<NCHot>?>
    var mask: Int
}
