import Foundation
import Glibc
import Testing
@testable import Services
import VFS

/// Issue 18: the 304 path answers from validators rendered once per open-file cache entry,
/// compares If-None-Match on the request bytes, and renders Date once a second.
@Suite(.serialized) struct HTTPValidatorTests {
    static func hits(_ list: String, _ etag: String = "\"abc\"") -> Bool {
        Array(list.utf8).withUnsafeBytes { l in Array(etag.utf8).withUnsafeBytes { e in FileValidators.noneMatchHits(l, etag: e) } }
    }

    /// RFC 9110 §13.1.2 (weak comparison) and §8.8.3 (entity-tag syntax).
    @Test func ifNoneMatchListsAndWeakTags() {
        #expect(Self.hits("\"abc\""))
        #expect(Self.hits("W/\"abc\""), "weak comparison ignores W/")
        #expect(!Self.hits("w/\"abc\""), "the W/ prefix is case-sensitive")
        #expect(Self.hits("\"x\", W/\"abc\""))
        #expect(Self.hits("\"x\",\t\"y\" ,\"abc\""), "optional whitespace around elements")
        #expect(Self.hits(", ,\"abc\",,"), "empty list elements are skipped")
        #expect(Self.hits("\"a,b\", \"abc\""), "a comma inside a quoted tag belongs to the tag")
        #expect(!Self.hits("\"q,\"abc\""), "a tag is not split at a comma: this list is malformed")
        #expect(!Self.hits("\"ab\""))
        #expect(!Self.hits("\"abcd\""))
        #expect(!Self.hits("abc"), "an unquoted tag is no tag")
        #expect(!Self.hits("\"abc"), "unterminated")
        #expect(!Self.hits("\"abc\" junk"), "garbage after a tag")
        #expect(!Self.hits("\"abc\", junk"), "a malformed list matches nothing")
        #expect(!Self.hits("W/"))
        #expect(!Self.hits(""))
        #expect(!Self.hits(" , "))
        #expect(Self.hits("*"))
        #expect(Self.hits(" * "))
        #expect(!Self.hits("*x"))
        // The String form used by the rest of the server agrees.
        typealias H = HTTPConnectionHandler<HostConnection>
        #expect(H.matches(" W/\"abc\" , \"z\"", "\"abc\""))
        #expect(!H.matches("\"q,\"abc\"", "\"abc\""))
    }

    /// The validators are rendered exactly as the per-request code rendered them.
    @Test func validatorsRenderTheFields() {
        let v = FileValidators(etag: "\"1-2-3\"", mtime: 784_111_777)
        #expect(String(decoding: v.fields, as: UTF8.self) == "ETag: \"1-2-3\"\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n")
        #expect(v.withETag { Array($0) } == Array("\"1-2-3\"".utf8))
        let list = Array("\"0\", W/\"1-2-3\"".utf8)
        #expect(list.withUnsafeBytes { v.noneMatchHits($0) })
    }

    /// Every hit on an open-file cache entry hands out the same rendered bytes (the same
    /// storage, not a new rendering); a new entry for a changed file renders new ones.
    @Test func cachedValidatorsAreReused() throws {
        let root = makeTempDir("validators")
        defer { try? FileManager.default.removeItem(atPath: root) }
        _ = FileManager.default.createFile(atPath: root + "/a.txt", contents: Data("hello\n".utf8))
        let vfs = VirtualFileSystem(rootFileSystem: try HostFS(hostPath: root), hostIO: HostIOPool(threads: 1))
        defer { vfs.hostIO.shutdown() }
        let p = vfs.makeProcess()
        let fd = open(root + "/a.txt", O_RDONLY)
        defer { close(fd) }
        let attrs = try p.stat("/a.txt")
        let cache = OpenFileCache(budget: 4, validity: .zero)
        let key = Array("/a.txt".utf8)
        let etag = FileValidators.etag(attrs)
        _ = key.withUnsafeBytes { cache.insert(key: $0, path: "/a.txt", hostFD: fd, attrs: attrs, etag: etag, contentType: "text/plain") }
        var storage: [UnsafeRawPointer] = []
        for _ in 0..<3 {
            guard case .hit(let e) = key.withUnsafeBytes({ cache.lookup($0, process: p) }) else {
                Issue.record("the entry should be a hit")
                return
            }
            e.validators.fields.withUnsafeBytes { storage.append($0.baseAddress!) }
            #expect(e.validators.fields == FileValidators(attrs).fields)
        }
        #expect(Set(storage).count == 1, "every hit must reuse the entry's rendered validators")

        // A changed file has other attributes: its validators differ (a new entry renders them).
        var later = attrs
        later.size += 1
        #expect(FileValidators(later).fields != FileValidators(attrs).fields)
    }

    /// The Date value is rendered once per second, whatever the number of responses.
    @Test func dateRenderedOncePerSecond() {
        let cache = HTTPDateCache()
        var out = [UInt8](repeating: 0, count: 29)
        for _ in 0..<1000 { out.withUnsafeMutableBytes { cache.write(784_111_777, into: $0.baseAddress!) } }
        #expect(cache.renders == 1)
        #expect(String(decoding: out, as: UTF8.self) == "Sun, 06 Nov 1994 08:49:37 GMT")
        out.withUnsafeMutableBytes { cache.write(784_111_778, into: $0.baseAddress!) }
        #expect(cache.renders == 2)
        #expect(String(decoding: out, as: UTF8.self) == "Sun, 06 Nov 1994 08:49:38 GMT")
    }

    /// End to end: lists and weak tags give 304 with the same validators as the 200, on
    /// both hot-cache settings, and a non-matching list gives the full 200.
    @Test(arguments: [true, false]) func notModifiedFromTheCache(_ hotCache: Bool) async throws {
        let root = makeTempDir("validators-e2e")
        defer { try? FileManager.default.removeItem(atPath: root) }
        _ = FileManager.default.createFile(atPath: root + "/a.txt", contents: Data("hello a\n".utf8))
        let s = try TestServer(cpus: 1, hostRoot: root, configure: { $0.hotCacheEnabled = hotCache })
        let port = s.port
        try await blocking {
            let full = try HardeningTests.get(port, "/a.txt")
            let etag = try #require(full?.headers["etag"])
            let modified = try #require(full?.headers["last-modified"])
            #expect(full?.status == 200 && full?.text == "hello a\n")
            for _ in 0..<2 {  // the second round is answered from the open-file cache entry
                for list in [etag, "W/\(etag)", "\"nope\", W/\(etag)", "\"x,y\",\t\(etag) ", "*"] {
                    let r = try HardeningTests.get(port, "/a.txt", "If-None-Match: \(list)\r\n")
                    #expect(r?.status == 304, "\(list)")
                    #expect(r?.headers["etag"] == etag && r?.headers["last-modified"] == modified)
                    #expect(r?.headers["date"]?.utf8.count == 29)
                    #expect(r?.body.isEmpty == true)
                }
                for list in ["\"nope\"", "w/\(etag)", "\"q,\(etag)"] {
                    let r = try HardeningTests.get(port, "/a.txt", "If-None-Match: \(list)\r\n")
                    #expect(r?.status == 200 && r?.text == "hello a\n", "\(list)")
                    #expect(r?.headers["etag"] == etag)
                }
                // If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
                let both = try HardeningTests.get(port, "/a.txt", "If-None-Match: \"nope\"\r\nIf-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n")
                #expect(both?.status == 200)
            }
        }
        try await s.shutdown()
    }
}
