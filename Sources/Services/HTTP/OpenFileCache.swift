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
/// does the caller check the entry on the host-I/O pool.
///
/// The table is four-way set associative (a key may sit in any of the four slots of its set;
/// the least recently used of the four is replaced). A set is one 64-byte cache line of
/// (hash, entry) pairs, so a lookup reads that line, then only the entry whose 64-bit hash
/// matches, whose first cache line holds the key (inline up to 32 bytes), the validity stamp
/// and the use counter: with 10,000 files requested at random, a hit touches two cold cache
/// lines before the entry's payload instead of five (the table, the entry, its key array,
/// the entry's third line, ...). Validity is judged on the coarse monotonic clock.
/// Used only by its CPU's threads, without locks; an evicted entry's descriptor is closed
/// when the last request using it lets go.
final class OpenFileCache: @unchecked Sendable {
    /// An open file. The fields a hit reads come first (the key, when it is at most
    /// ``inlineKeyBytes`` long, is stored inline there), so that a hit touches the entry's
    /// first cache lines and no other allocation before it answers.
    final class Entry {
        /// The key's bytes, zero-padded, when it fits (``inlineKeyBytes``).
        let inlineKey: (UInt64, UInt64, UInt64, UInt64)
        var validatedAt: UInt64
        /// The cache's use counter at the last hit (the least recently used way is evicted).
        var lastUsed: UInt64 = 0
        let keyCount: Int32
        /// The key's hash (where the entry sits in the table).
        let hash: UInt64
        /// The cache's own duplicate of the host descriptor (closed on eviction).
        let hostFD: Int32
        /// The ETag and Last-Modified fields, rendered once when the entry is made; a file
        /// that changed loses its entry, so they are rendered again only then.
        let validators: FileValidators
        let contentType: String
        let attrs: FileAttributes
        let path: String
        /// The key when it is longer than ``inlineKeyBytes`` (empty otherwise).
        let longKey: [UInt8]

        init(key: UnsafeRawBufferPointer, path: String, hostFD: Int32, attrs: FileAttributes, etag: String, contentType: String, now: UInt64) {
            inlineKey = key.count <= OpenFileCache.inlineKeyBytes ? OpenFileCache.padded(key) : (0, 0, 0, 0)
            longKey = key.count <= OpenFileCache.inlineKeyBytes ? [] : Array(key)
            keyCount = Int32(key.count)
            hash = OpenFileCache.hash(key)
            self.path = path
            self.hostFD = hostFD
            self.attrs = attrs
            validators = FileValidators(etag: etag, mtime: attrs.mtime.seconds)
            self.contentType = contentType
            validatedAt = now
        }

        /// The key's bytes (a copy; for tests and eviction bookkeeping, not the hit path).
        var key: [UInt8] {
            if !longKey.isEmpty { return longKey }
            return withUnsafeBytes(of: inlineKey) { Array($0.prefix(Int(keyCount))) }
        }

        deinit { Glibc.close(hostFD) }
    }

    /// One way of a set: the key's full hash next to the entry, so a probe compares hashes
    /// in the set's one cache line and follows only the entry whose hash matches.
    struct Slot {
        var hash: UInt64
        var entry: Unmanaged<Entry>?
    }

    static let maxKey = 256
    /// Keys up to this many bytes (request targets like `/many/12/34.bin`) are stored inline
    /// in the entry and compared as four words.
    static let inlineKeyBytes = 32
    let slots: Int
    /// The most entries (open descriptors) kept at once; lowered by ``shed()`` when the
    /// process runs out of descriptors.
    private(set) var budget: Int
    /// Entries (descriptors) held now.
    private(set) var live = 0
    /// Nanoseconds an entry is trusted before it is checked again (0: on every hit).
    let validity: UInt64
    /// `slots` ways, 64-byte aligned: a set of four is one cache line. Each entry in it is
    /// held retained (+1) by the table.
    private let table: UnsafeMutablePointer<Slot>
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
        let raw = UnsafeMutableRawPointer.allocate(byteCount: n * MemoryLayout<Slot>.stride, alignment: 64)
        table = raw.bindMemory(to: Slot.self, capacity: n)
        table.initialize(repeating: Slot(hash: 0, entry: nil), count: n)
        let (s, a) = validity.components
        self.validity = s < 0 ? 0 : UInt64(s) &* 1_000_000_000 &+ UInt64(max(0, a / 1_000_000_000))
    }

    deinit {
        for i in 0..<slots { table[i].entry?.release() }
        table.deinitialize(count: slots)
        UnsafeMutableRawPointer(table).deallocate()
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

    /// The 64-bit FNV-1a hash of a key.
    @inline(__always)
    static func hash(_ key: UnsafeRawBufferPointer) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    /// The key's first slot (its set is the four slots `first & ~3 ... first | 3`).
    @inline(__always)
    func slot(_ key: UnsafeRawBufferPointer) -> Int { slot(hash: Self.hash(key)) }

    @inline(__always)
    func slot(hash h: UInt64) -> Int { Int(truncatingIfNeeded: h ^ (h >> 29)) & (slots - 1) }

    /// A key of at most ``inlineKeyBytes`` bytes as four zero-padded words.
    @inline(__always)
    static func padded(_ key: UnsafeRawBufferPointer) -> (UInt64, UInt64, UInt64, UInt64) {
        var w: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        guard let src = key.baseAddress, key.count > 0 else { return w }
        withUnsafeMutableBytes(of: &w) { $0.baseAddress!.copyMemory(from: src, byteCount: min(key.count, inlineKeyBytes)) }
        return w
    }

    /// Whether `e` is the entry of `key` (`words`: the key padded, when it is short).
    @inline(__always)
    private static func holds(_ e: Entry, _ key: UnsafeRawBufferPointer, _ words: (UInt64, UInt64, UInt64, UInt64)) -> Bool {
        guard Int(e.keyCount) == key.count else { return false }
        if key.count <= inlineKeyBytes {
            let k = e.inlineKey
            return k.0 == words.0 && k.1 == words.1 && k.2 == words.2 && k.3 == words.3
        }
        return e.longKey.withUnsafeBytes { memcmp($0.baseAddress!, key.baseAddress!, key.count) == 0 }
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
        guard key.count <= Self.maxKey, key.count > 0 else { return .miss }
        let h = Self.hash(key)
        let first = slot(hash: h)
        let words = key.count <= Self.inlineKeyBytes ? Self.padded(key) : (0, 0, 0, 0)
        var found: Unmanaged<Entry>?
        for way in 0..<4 {
            let s = table[first ^ way]
            if s.hash == h, let u = s.entry, u._withUnsafeGuaranteedRef({ Self.holds($0, key, words) }) {
                found = u
                break
            }
        }
        guard let u = found else {
            misses += 1
            return .miss
        }
        let e = u.takeUnretainedValue()
        if validity == 0 {
            switch check(e, process: process) {
            case .valid: break
            case .unknown: return .stale(e)
            case .changed: return .miss
            }
        } else {
            let now = MonotonicClock.coarseNow()
            if now &- e.validatedAt >= validity {
                switch check(e, process: process) {
                case .valid: e.validatedAt = now
                case .unknown: return .stale(e)
                case .changed: return .miss
                }
            }
        }
        use(e)
        return .hit(e)
    }

    private enum Check { case valid, unknown, changed }

    /// Checks `e` against the namecache's cached attributes of its path: `.valid` when they
    /// still describe the file, `.unknown` when the namecache cannot answer, `.changed` (and
    /// the entry is dropped) when the file changed or went.
    @inline(never)
    private func check(_ e: Entry, process: VFSProcess) -> Check {
        let current: FileAttributes?
        do { current = try process.cachedStat(e.path) } catch {
            remove(e)
            misses += 1
            return .changed
        }
        guard let a = current else { return .unknown }
        guard Self.same(a, e.attrs) else {
            remove(e)
            misses += 1
            return .changed
        }
        return .valid
    }

    /// Finishes the check of a stale entry with `attrs`, its path's attributes now (nil:
    /// the path no longer resolves); returns whether the entry may be used.
    func revalidate(_ e: Entry, with attrs: FileAttributes?) -> Bool {
        guard let a = attrs, Self.same(a, e.attrs) else {
            remove(e)
            misses += 1
            return false
        }
        e.validatedAt = validity == 0 ? 0 : MonotonicClock.coarseNow()
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

    /// Empties way `i` (the table's reference goes; the descriptor closes when the last
    /// request using the entry lets go).
    private func clear(_ i: Int) {
        guard let u = table[i].entry else { return }
        table[i] = Slot(hash: 0, entry: nil)
        live -= 1
        u.release()
    }

    /// Drops `e` from the table if it is still there.
    private func remove(_ e: Entry) {
        let first = slot(hash: e.hash)
        for way in 0..<4 where table[first ^ way].entry?.toOpaque() == Unmanaged.passUnretained(e).toOpaque() {
            clear(first ^ way)
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
            if table[i].entry != nil {
                clear(i)
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
        guard key.count <= Self.maxKey, key.count > 0 else { return nil }
        let h = Self.hash(key)
        let first = slot(hash: h)
        let words = key.count <= Self.inlineKeyBytes ? Self.padded(key) : (0, 0, 0, 0)
        // The key's own way if it is there already (replaced), else the first free way of
        // its set, and the least recently used taken one.
        var same = -1, free = -1, oldest = -1
        var oldestUse = UInt64.max
        for way in 0..<4 {
            let j = first ^ way
            if let u = table[j].entry {
                let e = u.takeUnretainedValue()
                if table[j].hash == h && Self.holds(e, key, words) { same = j }
                if e.lastUsed < oldestUse { oldest = j; oldestUse = e.lastUsed }
            } else if free < 0 {
                free = j
            }
        }
        // A free slot takes a new descriptor only within the budget; a full one swaps.
        var i = same >= 0 ? same : free
        if i < 0 || (same < 0 && live >= budget) {
            guard oldest >= 0 else { return nil }
            i = oldest
        }
        let dup = fcntl(hostFD, F_DUPFD_CLOEXEC, 0)
        guard dup >= 0 else { return nil }
        let e = Entry(key: key, path: path, hostFD: dup, attrs: attrs, etag: etag, contentType: contentType,
                      now: validity == 0 ? 0 : MonotonicClock.coarseNow())
        clear(i)
        uses &+= 1
        e.lastUsed = uses
        table[i] = Slot(hash: h, entry: Unmanaged.passRetained(e))
        live += 1
        return e
    }
}
