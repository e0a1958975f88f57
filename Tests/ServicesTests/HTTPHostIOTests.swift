import Foundation
import Glibc
import Testing
@testable import Services
import VFS

/// Issue 18: the common HTTP path over a HostFS root stays on its CPU, like nginx's
/// `open_file_cache`: a file the open-file cache holds is read and sent without a trip to the
/// host-I/O pool, and a name the namecache knows to be missing is answered 404 without one.
/// Each test counts the trips of its own pool.
@Suite(.serialized) struct HTTPHostIOTests {
    static func makeRoot() -> String {
        let root = makeTempDir("hostio")
        mkdir(root + "/sub", 0o755)
        _ = FileManager.default.createFile(atPath: root + "/a.txt", contents: Data("hello a\n".utf8))
        _ = FileManager.default.createFile(atPath: root + "/sub/b.bin", contents: Data((0..<6000).map { UInt8($0 & 0xff) }))
        return root
    }

    /// A server with the hot cache off whose open-file cache trusts entries for a minute (so
    /// no revalidation falls inside the test), on its own host-I/O pool.
    static func server(_ root: String, pool: HostIOPool) throws -> TestServer {
        try TestServer(cpus: 1, hostRoot: root, hostIO: pool) {
            $0.hotCacheEnabled = false
            $0.cacheValidity = .seconds(60)
        }
    }

    /// Before: every repeated request read its body through the pool (`pread` off the CPU), one
    /// trip per request. Now the page-cache read happens on the CPU (`RWF_NOWAIT`).
    @Test func cachedFilesAreServedWithoutThePool() async throws {
        let root = Self.makeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let pool = HostIOPool(threads: 1)
        defer { pool.shutdown() }
        let s = try Self.server(root, pool: pool)
        let port = s.port
        let body = Array((0..<6000).map { UInt8($0 & 0xff) })
        try await blocking { () throws in
            let c = try RawClient(port: port)
            for t in ["/a.txt", "/sub/b.bin"] {
                c.send("GET \(t) HTTP/1.1\r\nHost: a\r\n\r\n")
                #expect(c.response()?.status == 200)
            }
        }
        let before = pool.statistics.submitted
        #expect(before > 0, "the first requests open their files on the pool")
        try await blocking { () throws in
            let c = try RawClient(port: port)
            for _ in 0..<10 {
                c.send("GET /a.txt HTTP/1.1\r\nHost: a\r\n\r\nGET /sub/b.bin HTTP/1.1\r\nHost: a\r\n\r\n")
                #expect(c.response()?.text == "hello a\n")
                #expect(c.response()?.body == body)
                c.send("GET /sub/b.bin HTTP/1.1\r\nHost: a\r\nRange: bytes=5990-\r\n\r\n")
                let r = c.response()
                #expect(r?.status == 206 && r?.body == Array(body[5990...]))
            }
        }
        let trips = pool.statistics.submitted - before
        #expect(trips == 0, "\(trips) trips to the host-I/O pool for 30 cached requests")
        #expect(s.server.core.openFiles[0].hits >= 30)
        // The pool's calls, depth and latency are on the statistics page and in stat's data.
        let stats = s.server.statistics()
        #expect(stats.hostIO?.submitted == pool.statistics.submitted)
        let page = StatsPage.render(stats)
        #expect(page.contains("Host I/O pool (1 threads") && page.contains("queue depth now 0"))
        try await s.shutdown()
    }

    /// Before: every request for a missing name opened it on the pool. Now a name under a
    /// directory the namecache knows is missing, or a missing name asked for again, is
    /// answered from the negative entry; and once the file appears (inotify), it is served.
    @Test func missingNamesAreAnsweredFromNegativeEntries() async throws {
        let root = Self.makeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let pool = HostIOPool(threads: 1)
        defer { pool.shutdown() }
        let s = try Self.server(root, pool: pool)
        let port = s.port
        try await blocking { () throws in
            let c = try RawClient(port: port)
            for t in ["/missing/0.txt", "/late.txt"] {
                c.send("GET \(t) HTTP/1.1\r\nHost: a\r\n\r\n")
                #expect(c.response()?.status == 404)
            }
        }
        let before = pool.statistics.submitted
        try await blocking { () throws in
            let c = try RawClient(port: port)
            for k in 1...20 {
                c.send("GET /missing/\(k).txt HTTP/1.1\r\nHost: a\r\n\r\nHEAD /late.txt HTTP/1.1\r\nHost: a\r\n\r\n")
                #expect(c.response()?.status == 404)
                #expect(c.response(head: true)?.status == 404)
            }
        }
        let trips = pool.statistics.submitted - before
        #expect(trips == 0, "\(trips) trips to the host-I/O pool for 40 known-missing names")

        // The negative entry must not outlive the file's creation.
        _ = FileManager.default.createFile(atPath: root + "/late.txt", contents: Data("late\n".utf8))
        let served = try await blocking { () throws -> Bool in
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline {
                let c = try RawClient(port: port)
                c.send("GET /late.txt HTTP/1.1\r\nHost: a\r\n\r\n")
                if let r = c.response(), r.status == 200 { return r.text == "late\n" }
                usleep(20_000)
            }
            return false
        }
        #expect(served, "a file created after its 404 is served")
        try await s.shutdown()
    }

    /// Known-missing names are answered from the request's bytes when the target is plain;
    /// that answer must never hide a statistics document (not a file) whose name has a
    /// negative entry, nor differ from the decoding path's answer for the same name.
    @Test func cachedMissingAnswersLeaveStatisticsAndEncodedTargetsAlone() async throws {
        let root = Self.makeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let pool = HostIOPool(threads: 1)
        defer { pool.shutdown() }
        let s = try Self.server(root, pool: pool)
        let port = s.port
        try await blocking { () throws in
            let c = try RawClient(port: port)
            // Negative entries for "metrics" and "_health", made by names under them.
            for t in ["/metrics/x", "/_health/y", "/gone/a.txt"] {
                c.send("GET \(t) HTTP/1.1\r\nHost: a\r\n\r\n")
                #expect(c.response()?.status == 404, "\(t)")
            }
            for t in ["/metrics", "/_health"] {
                c.send("GET \(t) HTTP/1.1\r\nHost: a\r\n\r\n")
                #expect(c.response()?.status == 200, "\(t) is a statistics document, not a missing file")
            }
            // The same missing name, plain and percent-encoded: one answer, same body.
            c.send("GET /gone/b.txt HTTP/1.1\r\nHost: a\r\n\r\n")
            let plain = c.response()
            c.send("GET /%67one/b.txt HTTP/1.1\r\nHost: a\r\n\r\n")
            let encoded = c.response()
            #expect(plain?.status == 404 && encoded?.status == 404)
            #expect(plain?.text == encoded?.text)
            // The connection stays usable after the answers.
            c.send("GET /gone/c.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            #expect(c.response()?.status == 404)
        }
        try await s.shutdown()
    }

    /// The open-file cache never asks the host on the CPU: an entry past its validity whose
    /// path the namecache cannot vouch for comes back `.stale` (the caller checks it off the
    /// CPU); once checked it is a hit; a changed file is dropped. Before, the cache called
    /// `stat` right there, which walks to the host when the namecache misses.
    @Test func staleOpenFileEntriesAreCheckedOffTheCPU() throws {
        let root = Self.makeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let vfs = VirtualFileSystem(rootFileSystem: try HostFS(hostPath: root), hostIO: HostIOPool(threads: 1))
        defer { vfs.hostIO.shutdown() }
        let p = vfs.makeProcess()
        let fd = open(root + "/a.txt", O_RDONLY)
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        let attrs = try p.stat("/a.txt")  // the host's view; it also leaves the attributes cached
        let cache = OpenFileCache(budget: 4, validity: .zero)
        let key = Array("/a.txt".utf8)
        _ = key.withUnsafeBytes { cache.insert(key: $0, path: "/a.txt", hostFD: fd, attrs: attrs, etag: "\"e\"", contentType: "text/plain") }
        func look() -> String {
            switch key.withUnsafeBytes({ cache.lookup($0, process: p) }) {
            case .hit: "hit"
            case .stale: "stale"
            case .miss: "miss"
            }
        }
        #expect(look() == "hit", "cached attributes vouch for the path")

        // A fresh namespace over the same directory has nothing cached: stale, not a host call.
        let cold = VirtualFileSystem(rootFileSystem: try HostFS(hostPath: root), hostIO: HostIOPool(threads: 1))
        defer { cold.hostIO.shutdown() }
        let q = cold.makeProcess()
        let cache2 = OpenFileCache(budget: 4, validity: .zero)
        _ = key.withUnsafeBytes { cache2.insert(key: $0, path: "/a.txt", hostFD: fd, attrs: attrs, etag: "\"e\"", contentType: "text/plain") }
        guard case .stale(let e) = key.withUnsafeBytes({ cache2.lookup($0, process: q) }) else {
            Issue.record("an entry the namecache cannot vouch for must come back stale")
            return
        }
        #expect(cache2.revalidate(e, with: try q.stat("/a.txt")))
        if case .hit = key.withUnsafeBytes({ cache2.lookup($0, process: q) }) {} else { Issue.record("checked entry is a hit") }

        // The file changes: the entry goes.
        let h = open(root + "/a.txt", O_WRONLY | O_APPEND)
        _ = write(h, "more\n", 5)
        close(h)
        var changed = false
        for _ in 0..<500 where !changed {
            switch key.withUnsafeBytes({ cache.lookup($0, process: p) }) {
            case .miss: changed = true
            case .stale(let e): changed = !cache.revalidate(e, with: try? p.stat("/a.txt"))
            case .hit: usleep(10_000)  // inotify has not told the namecache yet
            }
        }
        #expect(changed, "a changed file leaves the cache")
        #expect(cache.live == 0)
    }

    /// When the process runs out of descriptors the cache gives an eighth back (at least 16)
    /// and keeps to what is left, closing what it dropped. (Before, the budget was fixed at
    /// half the limit while each cached host file holds two descriptors, so a 10,000-file
    /// tree under a 20,000 limit starved every later open: 500s for plain misses.)
    /// Four keys whose slots fall in one group of the table all stay cached (the table is
    /// four-way set associative); a fifth replaces the least recently used of them.
    @Test func openFileCacheKeepsFourCollidingKeys() throws {
        let root = Self.makeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fd = open(root + "/a.txt", O_RDONLY)
        defer { close(fd) }
        let attrs = FileAttributes(type: .regular, mode: 0o644, uid: 0, gid: 0, nlink: 1, size: 8, device: 1, inode: 1,
                                   atime: .init(seconds: 0, nanoseconds: 0), mtime: .init(seconds: 0, nanoseconds: 0),
                                   ctime: .init(seconds: 0, nanoseconds: 0))
        let cache = OpenFileCache(budget: 1000, validity: .seconds(60))
        // Five keys of one group of four slots, the first three with the same first slot
        // pair (so a two-way table could not keep them all).
        var slotOf: [[UInt8]: Int] = [:]
        var byPair: [Int: [[UInt8]]] = [:]
        var group: [[UInt8]] = []
        for k in 0..<200_000 {
            let key = Array("/collide/\(k)".utf8)
            let s = key.withUnsafeBytes { cache.slot($0) }
            slotOf[key] = s
            byPair[s & ~1, default: []].append(key)
            if byPair[s & ~1]!.count == 3 { group = byPair[s & ~1]!; break }
        }
        try #require(group.count == 3)
        let g = slotOf[group[0]]! & ~3
        for k in 0..<400_000 where group.count < 5 {
            let key = Array("/collide/more/\(k)".utf8)
            if key.withUnsafeBytes({ cache.slot($0) }) & ~3 == g { group.append(key) }
        }
        try #require(group.count == 5)
        let process = VirtualFileSystem(rootFileSystem: MemFS()).makeProcess()
        for key in group.prefix(4) {
            let e = key.withUnsafeBytes { cache.insert(key: $0, path: "/a.txt", hostFD: fd, attrs: attrs, etag: "\"e\"", contentType: "text/plain") }
            #expect(e != nil)
        }
        for key in group.prefix(4) {
            guard case .hit = key.withUnsafeBytes({ cache.lookup($0, process: process) }) else {
                Issue.record("a key of a full group of four was evicted")
                continue
            }
        }
        // The first key is now the least recently used: the fifth replaces it.
        for key in group[1..<4] { _ = key.withUnsafeBytes { cache.lookup($0, process: process) } }
        _ = group[4].withUnsafeBytes { cache.insert(key: $0, path: "/a.txt", hostFD: fd, attrs: attrs, etag: "\"e\"", contentType: "text/plain") }
        if case .hit = group[0].withUnsafeBytes({ cache.lookup($0, process: process) }) { Issue.record("the least recently used key stayed") }
        for key in group[1...] {
            guard case .hit = key.withUnsafeBytes({ cache.lookup($0, process: process) }) else {
                Issue.record("a recently used key was evicted")
                continue
            }
        }
        #expect(cache.live == 4)
    }

    /// Keys are told apart by every byte whatever their length (inline up to 32 bytes,
    /// out of line beyond), and a key inserted again replaces its entry instead of taking
    /// a second way and a second descriptor (before, two requests for one target that both
    /// missed left two entries, and two descriptors, for it).
    @Test func openFileCacheTellsKeysApartAndKeepsOneEntryPerKey() throws {
        let root = Self.makeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fd = open(root + "/a.txt", O_RDONLY)
        defer { close(fd) }
        let attrs = FileAttributes(type: .regular, mode: 0o644, uid: 0, gid: 0, nlink: 1, size: 8, device: 1, inode: 1,
                                   atime: .init(seconds: 0, nanoseconds: 0), mtime: .init(seconds: 0, nanoseconds: 0),
                                   ctime: .init(seconds: 0, nanoseconds: 0))
        let cache = OpenFileCache(budget: 1000, validity: .seconds(60))
        let process = VirtualFileSystem(rootFileSystem: MemFS()).makeProcess()
        var keys: [String] = []
        for n in [1, 2, 15, 16, 31, 32, 33, 64, 200] {
            let stem = String(repeating: "x", count: n - 1)
            keys.append("/" + String(stem.dropFirst(0)))
            keys.append("/" + String(stem.dropLast(stem.isEmpty ? 0 : 1)) + (stem.isEmpty ? "" : "y"))
        }
        keys = Array(Set(keys)).sorted()
        for k in keys {
            let e = Array(k.utf8).withUnsafeBytes {
                cache.insert(key: $0, path: k, hostFD: fd, attrs: attrs, etag: "\"e\"", contentType: "text/plain")
            }
            #expect(e?.key == Array(k.utf8))
        }
        #expect(cache.live == keys.count)
        for k in keys {
            guard case .hit(let e) = Array(k.utf8).withUnsafeBytes({ cache.lookup($0, process: process) }) else {
                Issue.record("\(k.count)-byte key missed")
                continue
            }
            #expect(e.path == k, "a \(k.count)-byte key found another key's entry")
        }
        // A prefix or an extension of a cached key is another key.
        for k in ["/", "/xx", String(repeating: "x", count: 40)] where !keys.contains(k) {
            if case .hit = Array(k.utf8).withUnsafeBytes({ cache.lookup($0, process: process) }) { Issue.record("\(k) hit") }
        }
        // The same key again: one entry, the new one.
        let again = Array(keys[0].utf8).withUnsafeBytes {
            cache.insert(key: $0, path: "/again", hostFD: fd, attrs: attrs, etag: "\"e\"", contentType: "text/plain")
        }
        #expect(again != nil)
        #expect(cache.live == keys.count, "a key inserted twice holds two entries")
        guard case .hit(let e) = Array(keys[0].utf8).withUnsafeBytes({ cache.lookup($0, process: process) }) else {
            Issue.record("the replaced key missed")
            return
        }
        #expect(e.path == "/again")
    }

    @Test func openFileCacheShedsWhenDescriptorsRunOut() throws {
        let root = Self.makeRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fd = open(root + "/a.txt", O_RDONLY)
        defer { close(fd) }
        let attrs = FileAttributes(type: .regular, mode: 0o644, uid: 0, gid: 0, nlink: 1, size: 8, device: 1, inode: 1,
                                   atime: .init(seconds: 0, nanoseconds: 0), mtime: .init(seconds: 0, nanoseconds: 0),
                                   ctime: .init(seconds: 0, nanoseconds: 0))
        // Only descriptors of this file count: suites running in parallel open their own.
        let file = URL(fileURLWithPath: root + "/a.txt").resolvingSymlinksInPath().path
        let countOpen = { () -> Int in
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
            return fds.filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0)) == file }.count
        }
        let cache = OpenFileCache(budget: 200, validity: .seconds(60))
        for k in 0..<200 {
            let key = Array("/f\(k)".utf8)
            _ = key.withUnsafeBytes { cache.insert(key: $0, path: "/a.txt", hostFD: fd, attrs: attrs, etag: "\"e\"", contentType: "text/plain") }
        }
        let full = cache.live
        #expect(full > 150)
        let before = countOpen()
        let dropped = cache.shed()
        #expect(dropped == max(16, full / 8))
        #expect(cache.live == full - dropped && cache.budget == cache.live)
        #expect(before - countOpen() >= dropped - 2, "dropped entries close their descriptors")
        // The lowered budget holds: new names replace old ones instead of adding descriptors.
        for k in 200..<400 {
            let key = Array("/f\(k)".utf8)
            _ = key.withUnsafeBytes { cache.insert(key: $0, path: "/a.txt", hostFD: fd, attrs: attrs, etag: "\"e\"", contentType: "text/plain") }
            #expect(cache.live <= full - dropped)
        }
    }
}
