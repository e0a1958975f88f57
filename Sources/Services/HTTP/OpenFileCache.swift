import Glibc
import VFS

/// One CPU's cache of open host files, the counterpart of nginx's `open_file_cache`: for a
/// request target it keeps the host descriptor of the regular file it named, its attributes
/// and its precomputed validators (ETag, Last-Modified) and content type, so a request for
/// it costs no path decoding, no lookup and no `open`/`fstat`/`close` — only a `pread` into
/// the output buffer, or `sendfile` for a large body. Conditional and range requests are
/// answered from the entry too.
///
/// Entries come only from files the VFS opened (so the jail and every path check already
/// applied) on a file system with host descriptors (HostFS). An entry is trusted for
/// `validity`; after that the path is looked up again through the VFS and the entry is kept
/// only if the file still has the same inode, size, modification and change time. That
/// check asks the namecache alone (HostFS keeps names and attributes valid with inotify), so
/// a hit costs no host call and never leaves the CPU; only when the namecache cannot answer
/// does the caller check the entry on the host-I/O pool. The table
/// is four-way set associative (a key may sit in any of the four slots of its group, its own
/// first; the least recently used of the four is replaced). Used only by its CPU's threads, without locks; an evicted
/// entry's descriptor is closed at once.
final class OpenFileCache: @unchecked Sendable {
    /// An open file.
    final class Entry {
        let key: [UInt8]
        let path: String
        /// The cache's own duplicate of the host descriptor (closed on eviction).
        let hostFD: Int32
        let attrs: FileAttributes
        /// The ETag and Last-Modified fields, rendered once when the entry is made; a file
        /// that changed loses its entry, so they are rendered again only then.
        let validators: FileValidators
        let contentType: String
        var validatedAt: UInt64
        /// The cache's use counter at the last hit (the older of two candidates is evicted).
        var lastUsed: UInt64 = 0

        init(key: [UInt8], path: String, hostFD: Int32, attrs: FileAttributes, etag: String, contentType: String, now: UInt64) {
            self.key = key
            self.path = path
            self.hostFD = hostFD
            self.attrs = attrs
            validators = FileValidators(etag: etag, mtime: attrs.mtime.seconds)
            self.contentType = contentType
            validatedAt = now
        }

        deinit { Glibc.close(hostFD) }
    }

    static let maxKey = 256
    let slots: Int
    /// The most entries (open descriptors) kept at once; lowered by ``shed()`` when the
    /// process runs out of descriptors.
    private(set) var budget: Int
    /// Entries (descriptors) held now.
    private(set) var live = 0
    /// Nanoseconds an entry is trusted before it is checked again (0: on every hit).
    let validity: UInt64
    private var table: [Entry?]
    private(set) var hits = 0
    private(set) var misses = 0
    private var uses: UInt64 = 0

    /// A cache of at most `budget` open files trusted for `validity`, in a table of at least
    /// four times as many slots (a power of two, at most 65,536) so that collisions rarely
    /// evict: with 4-way sets at a quarter full, about 0.01 % of keys find all four ways
    /// taken. (With 2-way sets, 10,000 files in 65,536 slots missed on about 1 % of
    /// requests, each an open on the host-I/O pool.)
    init(budget: Int, validity: Duration) {
        self.budget = max(1, budget)
        var n = 16
        while n < 4 * budget && n < 65536 { n *= 2 }
        self.slots = n
        table = Array(repeating: nil, count: n)
        let (s, a) = validity.components
        self.validity = s < 0 ? 0 : UInt64(s) &* 1_000_000_000 &+ UInt64(max(0, a / 1_000_000_000))
    }

    /// How many files each CPU's cache may keep open: three quarters of the descriptor limit
    /// for all CPUs together, at most 16,384. A cached HostFS file holds one descriptor, the
    /// cache's own (HostFS keeps descriptors for directories only, not for cached names), so
    /// a full cache leaves a quarter of the limit to connections, directories and opens in
    /// flight; ``shed()`` lowers the budget if the process still runs out.
    static func budgetPerCPU(cpus: Int) -> Int {
        var lim = rlimit()
        let limit = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) == 0 ? Int(clamping: lim.rlim_cur) : 1024
        return max(16, min(16384, limit * 3 / 4 / max(1, cpus)))
    }

    @inline(__always)
    func slot(_ key: UnsafeRawBufferPointer) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return Int(truncatingIfNeeded: h ^ (h >> 29)) & (slots - 1)
    }

    /// What a lookup found.
    enum Lookup {
        /// A valid entry.
        case hit(Entry)
        /// An entry past its validity whose path the namecache cannot answer for without the
        /// host: check it off the CPU (``revalidate(_:with:)``) before using it.
        case stale(Entry)
        case miss
    }

    /// The entry for `key`. A stale entry is checked against the namecache's cached
    /// attributes (no host call, nothing that blocks); when those are not cached the entry
    /// comes back `.stale` for the caller to check off the CPU.
    func lookup(_ key: UnsafeRawBufferPointer, process: VFSProcess) -> Lookup {
        guard key.count <= Self.maxKey else { return .miss }
        let first = slot(key)
        @inline(__always) func holds(_ i: Int) -> Bool {
            guard let e = table[i], e.key.count == key.count else { return false }
            return e.key.withUnsafeBytes { memcmp($0.baseAddress!, key.baseAddress!, key.count) == 0 }
        }
        var i = first
        if !holds(i) {
            i = first ^ 1
            if !holds(i) {
                i = first ^ 2
                if !holds(i) { i = first ^ 3 }
            }
        }
        guard i == first || holds(i), let e = table[i] else {
            misses += 1
            return .miss
        }
        let now = validity == 0 ? 0 : MonotonicClock.now()
        if validity == 0 || now &- e.validatedAt >= validity {
            let current: FileAttributes?
            do { current = try process.cachedStat(e.path) } catch { current = nil; remove(e); misses += 1; return .miss }
            guard let a = current else { return .stale(e) }
            guard Self.same(a, e.attrs) else {
                remove(e)
                misses += 1
                return .miss
            }
            e.validatedAt = now
        }
        use(e)
        return .hit(e)
    }

    /// Finishes the check of a stale entry with `attrs`, its path's attributes now (nil:
    /// the path no longer resolves); returns whether the entry may be used.
    func revalidate(_ e: Entry, with attrs: FileAttributes?) -> Bool {
        guard let a = attrs, Self.same(a, e.attrs) else {
            remove(e)
            misses += 1
            return false
        }
        e.validatedAt = validity == 0 ? 0 : MonotonicClock.now()
        use(e)
        return true
    }

    /// Whether `a` still describes the file an entry opened.
    static func same(_ a: FileAttributes, _ b: FileAttributes) -> Bool {
        a.type == .regular && a.inode == b.inode && a.size == b.size && a.mtime == b.mtime && a.ctime == b.ctime
    }

    private func use(_ e: Entry) {
        uses &+= 1
        e.lastUsed = uses
        hits += 1
    }

    /// Drops `e` from the table if it is still there (its descriptor closes when the last
    /// request using it lets go).
    private func remove(_ e: Entry) {
        let first = e.key.withUnsafeBytes { slot($0) }
        for way in 0..<4 where table[first ^ way] === e {
            table[first ^ way] = nil
            live -= 1
            return
        }
    }

    /// Gives descriptors back after the process ran out of them (`EMFILE`): drops an eighth
    /// of the entries (at least 16) and lowers the budget to what is left, so that the cache
    /// settles below the limit instead of starving every other open. The starting budget
    /// cannot know the real headroom (connections, directories, other users of the process's
    /// descriptors). Returns how many entries went.
    @discardableResult
    func shed() -> Int {
        let target = max(16, live / 8)
        var dropped = 0
        var i = shedCursor
        for _ in 0..<slots where dropped < target {
            if table[i] != nil {
                table[i] = nil
                live -= 1
                dropped += 1
            }
            i = (i + 1) & (slots - 1)
        }
        shedCursor = i
        budget = max(16, live)
        return dropped
    }

    private var shedCursor = 0

    /// Keeps a duplicate of `hostFD` (a regular file the VFS opened at `path`) for `key`,
    /// with its validators rendered from `etag` and `attrs`; returns the entry, or nil when
    /// the key is too long or no descriptor is left.
    func insert(key: UnsafeRawBufferPointer, path: String, hostFD: Int32, attrs: FileAttributes, etag: String,
                contentType: String) -> Entry? {
        guard key.count <= Self.maxKey else { return nil }
        let first = slot(key)
        // The first free way of the key's group, and the least recently used taken one.
        var free = -1, oldest = -1
        for way in 0..<4 {
            let j = first ^ way
            if let e = table[j] {
                if oldest < 0 || e.lastUsed < (table[oldest]?.lastUsed ?? .max) { oldest = j }
            } else if free < 0 {
                free = j
            }
        }
        // A free slot takes a new descriptor only within the budget; a full one swaps.
        var i = free
        if free < 0 || live >= budget {
            guard oldest >= 0 else { return nil }
            i = oldest
        }
        let dup = fcntl(hostFD, F_DUPFD_CLOEXEC, 0)
        guard dup >= 0 else { return nil }
        let e = Entry(key: Array(key), path: path, hostFD: dup, attrs: attrs, etag: etag, contentType: contentType,
                      now: MonotonicClock.now())
        if table[i] == nil { live += 1 }
        uses &+= 1
        e.lastUsed = uses
        table[i] = e
        return e
    }
}
