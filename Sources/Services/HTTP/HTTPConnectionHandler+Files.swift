import CLibellula
import Foundation
import Glibc
import VFS

/// Files and directories through the VFS: validators, conditional and range requests,
/// index pages, and the statistics pages.
extension HTTPConnectionHandler {
    /// The status a VFS error becomes.
    static func status(for error: VFSError) -> HTTPStatus {
        switch error {
        case .noent, .notdir: .notFound
        // EOPNOTSUPP: a FIFO, socket or device, which the VFS refuses to open (403, like nginx).
        case .acces, .perm, .loop, .notsup: .forbidden
        case .nametoolong: .uriTooLong
        default: .internalServerError
        }
    }

    nonisolated(nonsending) func serveFile(_ decoded: RequestPath.Decoded, head: HTTPRequestHead, keepAlive: Bool,
                   cacheKey: UnsafeRawBufferPointer?, openFileKey: UnsafeRawBufferPointer? = nil) async throws(SocketError) -> Bool {
        // A name the namecache knows to be missing (a negative entry on the path, kept valid
        // by HostFS's inotify watch) is answered here, without leaving the CPU.
        do { _ = try process.cachedStat(decoded.path) } catch {
            try await sendError(Self.status(for: error), head: head, keepAlive: keepAlive)
            return keepAlive
        }
        // Otherwise open and fstat (one trip to the host-I/O pool for a host file).
        let fd: Int32
        let attrs: FileAttributes
        do {
            (fd, attrs) = try await openForServing(decoded.path)
        } catch .mfile {
            // Out of descriptors: the open-file cache gives some back, and the open is tried
            // once more (a request is never failed for what the cache holds).
            openFiles.shed()
            do { (fd, attrs) = try await openForServing(decoded.path) } catch {
                try await sendError(Self.status(for: error), head: head, keepAlive: keepAlive)
                return keepAlive
            }
        } catch {
            try await sendError(Self.status(for: error), head: head, keepAlive: keepAlive)
            return keepAlive
        }
        var open = true
        defer { if open { try? process.close(fd) } }
        switch attrs.type {
        case .directory:
            try? process.close(fd)
            open = false
            return try await serveDirectory(decoded, head: head, keepAlive: keepAlive, cacheKey: cacheKey)
        case .regular:
            // `/file/` or `/file/.`: a directory was asked for (nginx: 404, as open(2)
            // fails with ENOTDIR).
            if decoded.trailingSlash {
                try await sendError(.notFound, head: head, keepAlive: keepAlive)
                return keepAlive
            }
        default:
            try await sendError(.forbidden, head: head, keepAlive: keepAlive)
            return keepAlive
        }
        // A host file is kept open for the next requests of the same target (the
        // counterpart of nginx's open_file_cache), and this one is answered from there.
        if let key = openFileKey, let host = process.hostDescriptor(fd),
           let entry = openFiles.insert(key: key, path: decoded.path, hostFD: host, attrs: attrs, etag: FileValidators.etag(attrs),
                                        contentType: MIMETypes.type(forPath: decoded.path)) {
            try? process.close(fd)
            open = false
            return try await serveRegular(entry.attrs, validators: entry.validators, contentType: entry.contentType, body: .host(entry.hostFD),
                                          path: entry.path, head: head, keepAlive: keepAlive, cacheKey: cacheKey)
        }
        return try await serveRegular(attrs, validators: FileValidators(attrs), contentType: MIMETypes.type(forPath: decoded.path),
                                      body: .vfs(fd), path: decoded.path, head: head, keepAlive: keepAlive, cacheKey: cacheKey)
    }

    /// Opens `path` and reads its attributes through the VFS's parking API: on HostFS the
    /// attempt on the CPU gives up at the host `open` (before anything changed), and the
    /// whole body runs once on the host-I/O pool; on MemFS it finishes on the CPU, a contended
    /// record lock parking this thread instead of stopping the CPU. Nothing in the body can
    /// wait after the descriptor exists except on the pool (where waiting is harmless), which
    /// keeps the parking API's rule that an attempt may be repeated. An fstat failure becomes
    /// EIO, a 500.
    func openForServing(_ path: String) async throws(VFSError) -> (Int32, FileAttributes) {
        try await process.parking.perform { () throws(VFSError) -> (Int32, FileAttributes) in
            let fd = try process.open(path)
            guard let a = try? process.fstat(fd) else {
                try? process.close(fd)
                throw VFSError.io
            }
            if process.hostDescriptor(fd) != nil {
                // A host file (so this runs on the pool): leave the path's attributes in the
                // namecache, so the open-file cache's later checks of this entry are answered
                // on the CPU.
                _ = try? process.stat(path)
            }
            return (fd, a)
        }
    }

    /// Where a regular file's bytes come from: a VFS descriptor of this request, or a host
    /// descriptor kept by the open-file cache (read with `pread`, so requests that share it
    /// never disturb each other's offset).
    enum FileBody {
        case vfs(Int32)
        case host(Int32)
    }

    /// The host descriptor behind `body`, if it has one.
    func hostDescriptor(_ body: FileBody) -> Int32? {
        switch body {
        case .host(let fd): fd
        case .vfs(let fd): process.hostDescriptor(fd)
        }
    }

    /// Reads up to `count` bytes at `offset` of `body` to `p`; 0 at end of file. May block:
    /// call it off the CPU.
    func read(_ body: FileBody, into p: UnsafeMutableRawPointer, count: Int, at offset: Int64) throws(VFSError) -> Int {
        switch body {
        case .host(let fd):
            let n = Glibc.pread(fd, p, count, off_t(offset))
            if n < 0 { throw VFSError.current }
            return n
        case .vfs(let fd):
            _ = try process.seek(fd, offset, from: .set)
            return try process.read(fd, into: UnsafeMutableRawBufferPointer(start: p, count: count))
        }
    }

    /// Reads like ``read(_:into:count:at:)`` without ever blocking the CPU: a host file's
    /// bytes that are in the page cache are copied right here (`preadv2` with `RWF_NOWAIT`,
    /// which refuses with `EAGAIN` instead of waiting for the disk), and a refusal goes to the
    /// host-I/O pool; any other file is read through the VFS's parking API.
    nonisolated(nonsending) func readBody(_ body: FileBody, into p: UnsafeMutableRawPointer, count: Int, at offset: Int64) async throws(VFSError) -> Int {
        if let fd = hostDescriptor(body) {
            let n = lb_pread_nowait(fd, p, count, offset)
            if n >= 0 { return n }
            let e = Int32(-n)
            if e != EAGAIN && e != EOPNOTSUPP && e != EINTR { throw VFSError(errno: e) }
        }
        // The destination travels as an address: it is this thread's output buffer, which
        // stays put while the thread waits for the read.
        return try await readBodyOffCPU(body, into: UInt(bitPattern: p), count: count, at: offset)
    }

    /// The part of ``readBody(_:into:count:at:)`` that leaves the CPU: a host file's bytes
    /// that are not in the page cache (on the host-I/O pool), any other file's through the
    /// parking API.
    func readBodyOffCPU(_ body: FileBody, into address: UInt, count: Int, at offset: Int64) async throws(VFSError) -> Int {
        guard let p = UnsafeMutableRawPointer(bitPattern: address) else { return 0 }
        if let fd = hostDescriptor(body) {
            return try await process.offCPU {
                let n = Glibc.pread(fd, p, count, off_t(offset))
                if n < 0 { throw VFSError.current }
                return n
            }
        }
        // Seek and read may run twice (an attempt that met a held lock): both are repeatable.
        return try await process.parking.perform { () throws(VFSError) in try read(body, into: p, count: count, at: offset) }
    }

    /// Answers for a regular file: validators, conditional and range requests, the head,
    /// and the body (by sendfile when it is larger than the output buffer and the socket
    /// and file allow).
    nonisolated(nonsending) func serveRegular(_ attrs: FileAttributes, validators: FileValidators, contentType: String, body: FileBody, path: String,
                      head: HTTPRequestHead, keepAlive: Bool, cacheKey: UnsafeRawBufferPointer?) async throws(SocketError) -> Bool {
        let size = attrs.size
        let mtime = attrs.mtime.seconds

        // Conditional requests (RFC 9110 §13): If-None-Match wins over If-Modified-Since.
        var notModified = false
        if head.hasIfNoneMatch {
            // Compared where it was received, against the rendered ETag: no copy, no String.
            let end = head.ifNoneMatchOffset + head.ifNoneMatchLength
            notModified = end <= request.count
                && validators.noneMatchHits(UnsafeRawBufferPointer(rebasing: request[head.ifNoneMatchOffset..<end]))
        } else if let ims = head.ifModifiedSince, let since = HTTPDate.parse(ims) {
            notModified = mtime <= since
        }
        if notModified {
            // Pre-rendered pieces only: status line, Server, this second's Date, the
            // validators.
            try await reserve(1024)
            beginHead(.notModified)
            append(validators.fields)
            endHead(keepAlive: keepAlive, head: head)
            return keepAlive
        }

        // Single byte ranges.
        var start: Int64 = 0, length = size
        var partial = false
        if let r = head.range, Self.ifRangeHolds(head.ifRange, validators: validators, mtime: mtime) {
            switch Self.parseRange(r, size: size) {
            case .ignore: break
            case .unsatisfiable:
                try await sendError(.rangeNotSatisfiable, head: head, keepAlive: keepAlive, contentRange: size)
                return keepAlive
            case .range(let a, let b):
                start = a
                length = b - a + 1
                partial = true
            }
        }

        // A small file for the hot-file cache is read once, straight into the output
        // buffer, and the cache entry is copied from there.
        let caching = cacheKey != nil && !partial && head.method == .get && size <= HotFileCache.maxFileSize
        try await reserve(1024 + (caching ? Int(size) : 0))
        let headStart = outCount
        beginHead(partial ? .partialContent : .ok)
        let fieldsStart = outCount
        append("Content-Type: "); append(contentType)
        append("\r\nContent-Length: "); append(Int(length)); append("\r\n")
        append(validators.fields)
        append("Accept-Ranges: bytes\r\n")
        let fieldsEnd = outCount
        if partial {
            append("Content-Range: bytes "); append(Int(start)); append("-"); append(Int(start + length - 1))
            append("/"); append(Int(size)); append("\r\n")
        }
        endHead(keepAlive: keepAlive, head: head)
        if caching, let key = cacheKey {
            let bodyStart = outCount
            var got = 0
            while got < Int(size) {
                let n: Int
                do {
                    n = try await readBody(body, into: output.baseAddress + bodyStart + got, count: Int(size) - got, at: Int64(got))
                } catch {
                    outCount = headStart  // nothing of this response is out yet: answer 500 instead
                    try await sendError(.internalServerError, head: head, keepAlive: false)
                    return false
                }
                if n <= 0 { break }
                got += n
            }
            if got < Int(size) {
                // The file shrank between fstat and read: take the response back and close.
                outCount = headStart
                try await sendError(.internalServerError, head: head, keepAlive: false)
                return false
            }
            outCount = bodyStart + got
            cache.insert(key: key, path: path,
                         fields: Array(UnsafeRawBufferPointer(start: output.baseAddress + fieldsStart, count: fieldsEnd - fieldsStart)),
                         body: Array(UnsafeRawBufferPointer(start: output.baseAddress + bodyStart, count: got)), attrs: attrs)
            return keepAlive
        }
        if head.method == .head || length == 0 { return keepAlive }

        // A body larger than the output buffer, from a host file on a host socket, goes from
        // the page cache to the socket by sendfile(2), never through user space.
        let host = hostDescriptor(body)
        if length > Int64(core.outputCapacity), let host, let sender = conn as? any FileSendingConnection {
            // The buffered output (this response's head, and any earlier pipelined answers)
            // goes in front of the file's bytes, in the same packets.
            if output.failed { throw .closed }
            let head = outCount
            outCount = 0
            try await sender.sendFile(host, offset: start, count: length,
                                      head: UnsafeRawBufferPointer(start: output.baseAddress, count: head), timeout: config.writeTimeout)
            HTTPCounters.add(counters.bytesSent, head + Int(length))
            return keepAlive
        }

        // The body moves from the file system straight into the slab output buffer.
        var remaining = length
        var offset = start
        while remaining > 0 {
            if outCount == core.outputCapacity { try await flush() }
            let room = min(Int64(core.outputCapacity - outCount), remaining)
            let n: Int
            do {
                n = try await readBody(body, into: output.baseAddress + outCount, count: Int(room), at: offset)
            } catch {
                return false  // the head is out: the only honest thing left is to close
            }
            if n <= 0 { return false }  // the file shrank under us
            outCount += n
            offset += Int64(n)
            remaining -= Int64(n)
        }
        return keepAlive
    }

    /// A strong validator from inode, size and modification time.
    static func etag(_ a: FileAttributes) -> String { FileValidators.etag(a) }

    /// Whether an If-None-Match list names `etag` (weak comparison) or is `*`; see
    /// ``FileValidators/noneMatchHits(_:etag:)``.
    static func matches(_ list: String, _ etag: String) -> Bool {
        var list = list, etag = etag
        return list.withUTF8 { l in etag.withUTF8 { e in FileValidators.noneMatchHits(UnsafeRawBufferPointer(l), etag: UnsafeRawBufferPointer(e)) } }
    }

    static func ifRangeHolds(_ ifRange: String?, validators: FileValidators, mtime: Int64) -> Bool {
        guard let v = ifRange else { return true }
        if v.hasPrefix("\"") { return validators.withETag { e in v.utf8.elementsEqual(e) } }
        if let d = HTTPDate.parse(v) { return d == mtime }
        return false
    }
    enum RangeRequest: Equatable {
        case ignore, unsatisfiable
        case range(Int64, Int64)
    }

    /// Parses a Range field for a representation of `size` bytes. Syntax it does not
    /// understand, and several ranges, are ignored (a full 200 is always allowed).
    static func parseRange(_ field: String, size: Int64) -> RangeRequest {
        let f = field.trimmingCharacters(in: .whitespaces)
        guard f.count > 6, f.prefix(6).lowercased() == "bytes=" else { return .ignore }
        let spec = f.dropFirst(6).trimmingCharacters(in: .whitespaces)
        if spec.contains(",") { return .ignore }
        guard let dash = spec.firstIndex(of: "-") else { return .ignore }
        let a = spec[..<dash], b = spec[spec.index(after: dash)...]
        // Digits only; a value beyond Int64 saturates (it is clamped to the size below).
        func number(_ s: Substring) -> Int64? {
            guard !s.isEmpty else { return nil }
            var v: Int64 = 0
            for c in s.utf8 {
                guard c >= 48 && c <= 57 else { return nil }
                let (m, o1) = v.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(Int64(c - 48))
                v = o1 || o2 ? Int64.max : a
            }
            return v
        }
        if a.isEmpty {
            guard let n = number(b) else { return .ignore }
            if n == 0 || size == 0 { return .unsatisfiable }
            return .range(max(0, size - n), size - 1)
        }
        guard let first = number(a) else { return .ignore }
        var last = size - 1
        if !b.isEmpty {
            guard let l = number(b) else { return .ignore }
            if l < first { return .ignore }
            last = min(l, size - 1)
        }
        if first >= size { return .unsatisfiable }
        return .range(first, last)
    }

    // MARK: Directories

    nonisolated(nonsending) func serveDirectory(_ decoded: RequestPath.Decoded, head: HTTPRequestHead, keepAlive: Bool,
                        cacheKey: UnsafeRawBufferPointer?) async throws(SocketError) -> Bool {
        if !decoded.trailingSlash {
            try await reserve(decoded.path.utf8.count * 3 + 1024)
            beginHead(.movedPermanently)
            append("Location: "); append(Self.percentEncode(decoded.path)); append("/\r\nContent-Length: 0\r\n")
            endHead(keepAlive: keepAlive, head: head)
            return keepAlive
        }
        let dir = decoded.path == "/" ? "/" : decoded.path + "/"
        if let t = try? await process.parking.lookup(dir + "index.html"), t == .regular {
            return try await serveFile(.init(path: dir + "index.html", trailingSlash: false), head: head, keepAlive: keepAlive,
                                       cacheKey: cacheKey)
        }
        let entries: [DirectoryEntry]
        do { entries = try await process.parking.listDirectory(decoded.path) } catch {
            try await sendError(Self.status(for: error), head: head, keepAlive: keepAlive)
            return keepAlive
        }
        var html = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Index of \(Self.escape(dir))</title>"
        html += "<style>body{font-family:sans-serif;margin:2em}td{padding:0 1em}</style></head><body>"
        html += "<h1>Index of \(Self.escape(dir))</h1><table>"
        if dir != "/" { html += "<tr><td><a href=\"../\">../</a></td></tr>" }
        for e in entries.sorted(by: { $0.name < $1.name }) where e.name != "." && e.name != ".." {
            let slash = e.type == .directory ? "/" : ""
            html += "<tr><td><a href=\"\(Self.percentEncode(e.name))\(slash)\">\(Self.escape(e.name))\(slash)</a></td></tr>"
        }
        html += "</table><p><a href=\"/_stats\">live statistics</a></p></body></html>\n"
        let body = Array(html.utf8)
        try await reserve(1024)
        beginHead(.ok)
        append("Content-Type: text/html; charset=utf-8\r\nContent-Length: "); append(body.count); append("\r\n")
        endHead(keepAlive: keepAlive, head: head)
        if head.method != .head { try await appendBody(body) }
        return keepAlive
    }

    static func escape(_ s: String) -> String {
        var o = ""
        for c in s {
            switch c {
            case "&": o += "&amp;"
            case "<": o += "&lt;"
            case ">": o += "&gt;"
            case "\"": o += "&quot;"
            case "'": o += "&#39;"
            default: o.append(c)
            }
        }
        return o
    }

    /// Percent-encodes everything but unreserved characters and `/`.
    static func percentEncode(_ s: String) -> String {
        var o = ""
        for b in s.utf8 {
            switch b {
            case 48...57, 65...90, 97...122, 45, 46, 95, 126, 47: o.append(Character(Unicode.Scalar(b)))
            default: o += "%" + String(b >> 4, radix: 16, uppercase: true) + String(b & 15, radix: 16, uppercase: true)
            }
        }
        return o
    }

    // MARK: Statistics

    nonisolated(nonsending) func serveStatistics(_ document: StatisticsDocument, head: HTTPRequestHead, keepAlive: Bool) async throws(SocketError) -> Bool {
        guard let source = core.statistics else {
            try await sendError(.notFound, head: head, keepAlive: keepAlive)
            return keepAlive
        }
        let system = core.system
        let rendered = core.statisticsPages.body(document, cpu: conn.cpuID) {
            document == .health ? StatsPage.health(system) : StatsPage.document(document, source(), latencies: system.latencies, series: core.sampler.samples)
        }
        guard let body = rendered else {
            try await sendError(.internalServerError, head: head, keepAlive: keepAlive)
            return keepAlive
        }
        try await reserve(1024)
        beginHead(.ok)
        append(document.contentType)
        append("Cache-Control: no-store\r\nContent-Length: "); append(body.count); append("\r\n")
        endHead(keepAlive: keepAlive, head: head)
        if head.method != .head { try await appendBody(body) }
        return keepAlive
    }
}
