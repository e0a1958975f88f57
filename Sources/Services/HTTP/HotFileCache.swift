import Glibc
import VFS

/// One CPU's cache of small files' complete responses, keyed by the raw request target, in
/// the spirit of nginx's `open_file_cache`: a hit answers a plain GET or HEAD with one
/// copy and no allocation, no path decoding and no VFS call. An entry is revalidated with
/// the namecache's cached attributes (``VFSProcess/cachedStat(_:)``, never a host call) when
/// it is older than ``validity`` (zero: on every hit), and dropped when they are not cached: the file must still
/// be a regular file with the same inode, size, modification time *and* change time. The
/// change time is set by the kernel on every write, rename or `utimes`, so a same-size
/// rewrite that puts the old modification time back is still seen. Like nginx's
/// `open_file_cache_valid`, changes show up within ``validity``. Used only by its CPU's
/// threads, without locks.
final class HotFileCache: @unchecked Sendable {
    /// A cached answer.
    final class Entry {
        let key: [UInt8]
        let path: String
        /// Header fields after Date (Content-Type … Accept-Ranges), CRLF-terminated.
        let fields: [UInt8]
        let body: [UInt8]
        let inode: UInt64, size: Int64, mtime: Timespec, ctime: Timespec
        var validatedAt: UInt64

        init(key: [UInt8], path: String, fields: [UInt8], body: [UInt8], attrs: FileAttributes, now: UInt64) {
            self.key = key
            self.path = path
            self.fields = fields
            self.body = body
            inode = attrs.inode
            size = attrs.size
            mtime = attrs.mtime
            ctime = attrs.ctime
            validatedAt = now
        }
    }

    static let slots = 256
    static let maxFileSize: Int64 = 8192
    static let maxKey = 256
    /// Nanoseconds an entry is trusted before it is checked against the file system again
    /// (0: checked on every hit).
    let validity: UInt64

    /// A cache whose entries are trusted for `validity` (zero or less: checked on every hit).
    init(validity: Duration) {
        let (s, a) = validity.components
        self.validity = s < 0 ? 0 : UInt64(s) &* 1_000_000_000 &+ UInt64(max(0, a / 1_000_000_000))
    }

    private var table: [Entry?] = Array(repeating: nil, count: HotFileCache.slots)
    private(set) var hits = 0
    private(set) var misses = 0

    @inline(__always)
    static func hash(_ key: UnsafeRawBufferPointer) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return Int(truncatingIfNeeded: h ^ (h >> 29)) & (slots - 1)
    }

    /// The entry for `key`, revalidated through `process` if it is stale; nil on a miss.
    func lookup(_ key: UnsafeRawBufferPointer, process: VFSProcess) -> Entry? {
        guard key.count <= Self.maxKey, let e = table[Self.hash(key)], e.key.count == key.count,
              e.key.withUnsafeBytes({ memcmp($0.baseAddress!, key.baseAddress!, key.count) == 0 }) else {
            misses += 1
            return nil
        }
        let now = validity == 0 ? 0 : MonotonicClock.now()
        if validity == 0 || now &- e.validatedAt >= validity {
            // The namecache alone answers (no host call on the CPU); when it cannot, the entry
            // goes and the request takes the slow way, which checks the file off the CPU.
            guard let a = try? process.cachedStat(e.path), a.type == .regular, a.inode == e.inode, a.size == e.size,
                  a.mtime == e.mtime, a.ctime == e.ctime else {
                table[Self.hash(key)] = nil
                misses += 1
                return nil
            }
            e.validatedAt = now
        }
        hits += 1
        return e
    }

    /// Remembers a file's answer (only small regular files and short targets).
    func insert(key: UnsafeRawBufferPointer, path: String, fields: [UInt8], body: [UInt8], attrs: FileAttributes) {
        guard key.count <= Self.maxKey, attrs.size <= Self.maxFileSize, Int64(body.count) == attrs.size else { return }
        table[Self.hash(key)] = Entry(key: Array(key), path: path, fields: fields, body: body, attrs: attrs,
                                      now: MonotonicClock.now())
    }
}
