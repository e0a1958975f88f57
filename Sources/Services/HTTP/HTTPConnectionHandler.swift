import Glibc
import LWKT
import Slab
import VFS

/// Serves one connection on the CPU that accepted it: reads requests into a slab buffer,
/// answers pipelined requests in order, batching their responses in a second slab buffer
/// that also carries file data, and closes on errors, timeouts and `Connection: close`.
///
/// Confined to the one LWKT thread that serves its connection (it is never shared, and
/// work it hands to the host-I/O pool runs while that thread waits for it), hence
/// `@unchecked Sendable`: its methods are `nonisolated(nonsending)`, so the per-request path
/// runs on the connection's CPU without an executor switch per call, and the few methods
/// that leave the CPU (opens and reads on the host-I/O pool) may take `self` along.
final class HTTPConnectionHandler<C: StreamConnection>: @unchecked Sendable {
    let conn: C
    let core: HTTPServerCore
    let counters: HTTPCounters
    let process: VFSProcess
    let cache: HotFileCache
    let openFiles: OpenFileCache
    /// This CPU's rendered Date value.
    let date: HTTPDateCache
    let input: IOBuffer
    let output: IOBuffer
    /// Bytes held in the input and output buffers (their write indexes).
    var inCount: Int {
        get { input.writeIndex }
        set { input.writeIndex = newValue }
    }
    var outCount: Int {
        get { output.writeIndex }
        set { output.writeIndex = newValue }
    }
    /// Body bytes of the current request still to be discarded.
    var bodyRemaining = 0
    /// The bytes the request being answered was parsed from (the head's offsets point into
    /// them); valid until the next read into the input buffer.
    var request = UnsafeRawBufferPointer(start: nil, count: 0)
    /// When the first byte of the request being received arrived (0: between requests), on
    /// the coarse monotonic clock (the request timeout is counted in seconds).
    var requestStart: UInt64 = 0

    init?(conn: C, core: HTTPServerCore) {
        guard let i = IOBuffer(slabCapacity: core.inputCapacity, maxCapacity: core.inputCapacity, allocator: core.slab, type: core.bufferType),
              let o = IOBuffer(slabCapacity: core.outputCapacity, maxCapacity: core.outputCapacity, allocator: core.slab, type: core.bufferType)
        else { return nil }
        self.conn = conn
        self.core = core
        counters = core.counters[conn.cpuID]
        process = core.processes[conn.cpuID]
        cache = core.caches[conn.cpuID]
        openFiles = core.openFiles[conn.cpuID]
        date = core.dates[conn.cpuID]
        input = i
        output = o
    }

    var config: HTTPServerConfiguration { core.configuration }

    // MARK: The connection loop

    /// Runs the connection to its end and closes it.
    func run() async {
        do {
            let linger = try await serve()
            await conn.close(linger: linger ? config.closeLinger : .zero)
        } catch {
            if error == .timedOut { HTTPCounters.add(counters.timeouts) }
            await conn.close(linger: .zero)
        }
    }

    /// Serves requests until the connection should close; returns whether to linger.
    private nonisolated(nonsending) func serve() async throws(SocketError) -> Bool {
        let limits = config.limits
        while true {
            var consumed = 0
            parsing: while true {
                if bodyRemaining > 0 {
                    let drop = min(bodyRemaining, inCount - consumed)
                    consumed += drop
                    bodyRemaining -= drop
                    if bodyRemaining > 0 { break parsing }
                }
                let pending = UnsafeRawBufferPointer(start: input.baseAddress + consumed, count: inCount - consumed)
                switch HTTPParser.parse(pending, limits: limits) {
                case .incomplete:
                    break parsing
                case .failure(let status):
                    HTTPCounters.add(counters.requests)
                    try await sendError(status, head: nil, keepAlive: false)
                    try await flush()
                    return true
                case .complete(var head, let length):
                    let target = UnsafeRawBufferPointer(start: pending.baseAddress! + head.targetOffset, count: head.targetLength)
                    consumed += length
                    request = pending
                    requestStart = 0
                    HTTPCounters.add(counters.requests)
                    let started = MonotonicClock.now()
                    let keep = try await respond(&head, target: target)
                    core.system.latencies.httpService.recordSince(started, cpu: conn.cpuID)
                    if !keep {
                        try await flush()
                        return true
                    }
                    if outCount > core.outputCapacity / 2 { try await flush() }
                }
            }
            // Keep the unparsed tail at the front of the input buffer.
            if consumed > 0 {
                let rest = inCount - consumed
                if rest > 0 { memmove(input.baseAddress, input.baseAddress + consumed, rest) }
                inCount = rest
            }
            try await flush()
            if inCount == core.inputCapacity {
                try await sendError(.headerFieldsTooLarge, head: nil, keepAlive: false)
                try await flush()
                return true
            }
            // Between requests the idle timeout applies; once a request has started, the
            // whole of it must arrive within the request timeout (so a client trickling one
            // byte at a time cannot hold the connection forever).
            var timeout = config.idleTimeout
            if inCount > 0 || bodyRemaining > 0 {
                let now = MonotonicClock.coarseNow()
                if requestStart == 0 { requestStart = now }
                let (s, a) = config.requestTimeout.components
                let limit = UInt64(max(0, s)) &* 1_000_000_000 &+ UInt64(max(0, a / 1_000_000_000))
                let used = now &- requestStart
                if used >= limit { return try await timedOut() }
                timeout = .nanoseconds(Int64(limit - used))
            }
            let n: Int
            do {
                n = try await conn.read(into: UnsafeMutableRawBufferPointer(start: input.baseAddress + inCount,
                                                                             count: core.inputCapacity - inCount),
                                        timeout: timeout)
            } catch .timedOut {
                if inCount > 0 || bodyRemaining > 0 { return try await timedOut() }
                HTTPCounters.add(counters.timeouts)
                return false
            }
            if n == 0 { return false }
            if inCount == 0 && requestStart == 0 { requestStart = MonotonicClock.coarseNow() }
            inCount += n
        }
    }

    /// A request did not arrive in time: answer 408 if the socket still takes it, and close.
    private nonisolated(nonsending) func timedOut() async throws(SocketError) -> Bool {
        HTTPCounters.add(counters.timeouts)
        try await sendError(.requestTimeout, head: nil, keepAlive: false)
        try await flush()
        return false
    }

    /// Answers one parsed request; returns whether the connection stays open.
    private nonisolated(nonsending) func respond(_ head: inout HTTPRequestHead, target: UnsafeRawBufferPointer) async throws(SocketError) -> Bool {
        var keep = head.keepAlive
        let cacheable = config.hotCacheEnabled && head.method != .other && head.isPlain
        if cacheable, let hit = cache.lookup(target, process: process) {
            try await reserve(hit.fields.count + hit.body.count + 512)
            beginHead(.ok)
            append(hit.fields)
            endHead(keepAlive: keep, head: head)
            if head.method == .get { append(hit.body) }
            return keep
        }
        let openable = config.openFileCacheEnabled && head.method != .other && head.contentLength == 0 && !head.hasTransferEncoding
        if openable {
            var found: OpenFileCache.Entry?
            switch openFiles.lookup(target, process: process) {
            case .hit(let e): found = e
            case .stale(let e):
                // The namecache could not vouch for the path: check it through the parking
                // API (one trip to the host-I/O pool for a host file).
                let now = try? await process.parking.stat(e.path)
                if openFiles.revalidate(e, with: now) { found = e }
            case .miss: break
            }
            if let e = found {
                return try await serveRegular(e.attrs, validators: e.validators, contentType: e.contentType, body: .host(e.hostFD), path: e.path,
                                              head: head, keepAlive: keep, cacheKey: cacheable ? target : nil)
            }
        }
        // A plain target whose name the namecache knows to be missing (a storm of random
        // missing names) is answered from the request's bytes: no String, no decoded copy.
        if openable, let status = cachedMissingStatus(target) {
            bodyRemaining = 0
            try await sendError(status, head: head, keepAlive: keep)
            return keep
        }
        head.target = String(decoding: target, as: UTF8.self)
        if head.method == .other {
            // We do not read bodies of other methods: close after answering if one follows.
            if head.contentLength > 0 || head.hasTransferEncoding { keep = false }
            try await sendError(.methodNotAllowed, head: head, keepAlive: keep)
            return keep
        }
        if head.hasTransferEncoding {
            try await sendError(.badRequest, head: head, keepAlive: false)
            return false
        }
        if head.contentLength > config.limits.maxBody {
            try await sendError(.contentTooLarge, head: head, keepAlive: false)
            return false
        }
        bodyRemaining = head.contentLength
        let decoded: RequestPath.Decoded
        switch RequestPath.decode(head.target) {
        case .success(let d): decoded = d
        case .failure(let status):
            try await sendError(status, head: head, keepAlive: keep && status != .badRequest)
            return keep && status != .badRequest
        }
        if config.statisticsEnabled, let document = StatisticsDocument(path: decoded.path) {
            return try await serveStatistics(document, head: head, keepAlive: keep)
        }
        return try await serveFile(decoded, head: head, keepAlive: keep, cacheKey: cacheable ? target : nil,
                                   openFileKey: openable ? target : nil)
    }

    /// The error status for `target` when it is plain (``RequestPath/isPlain(_:)``, so it is
    /// its own decoded path), not a statistics document, and the namecache alone says it
    /// cannot be opened: the answer `serveFile` would give, found without allocating.
    private func cachedMissingStatus(_ target: UnsafeRawBufferPointer) -> HTTPStatus? {
        guard RequestPath.isPlain(target) else { return nil }
        if config.statisticsEnabled && StatisticsDocument.isDocument(target) { return nil }
        do {
            _ = try process.cachedStat(bytes: target.assumingMemoryBound(to: UInt8.self))
            return nil
        } catch {
            return Self.status(for: error)
        }
    }

    // MARK: Output

    /// Writes the buffered output to the socket.
    nonisolated(nonsending) func flush() async throws(SocketError) {
        // A response part that did not fit was refused, not cut: never send the rest.
        if output.failed { throw .closed }
        guard outCount > 0 else { return }
        let n = outCount
        outCount = 0
        try await conn.write(UnsafeRawBufferPointer(start: output.baseAddress, count: n), timeout: config.writeTimeout)
        HTTPCounters.add(counters.bytesSent, n)
    }

    /// Makes room for `n` bytes (at most the buffer's capacity) in the output buffer.
    @inline(__always)
    nonisolated(nonsending) func reserve(_ n: Int) async throws(SocketError) {
        if outCount + n > core.outputCapacity { try await flush() }
    }

    // Appends are whole or refused (and the connection then closes at the next flush);
    // callers make room first with `reserve`.
    @inline(__always)
    func append(_ s: StaticString) { output.append(s) }

    /// (Disfavoured, so that a literal argument takes the `StaticString` overload: a plain
    /// copy of constant bytes, where the `String` one retains and releases the string.)
    @_disfavoredOverload
    func append(_ s: String) { output.append(string: s) }

    func append(_ bytes: [UInt8]) { output.append(bytes) }

    func append(_ v: Int) { output.append(signed: Int64(v)) }

    /// Appends body bytes, flushing as often as needed.
    nonisolated(nonsending) func appendBody(_ bytes: [UInt8]) async throws(SocketError) {
        var off = 0
        while off < bytes.count {
            if outCount == core.outputCapacity { try await flush() }
            let c = min(bytes.count - off, core.outputCapacity - outCount)
            bytes.withUnsafeBytes { b in (output.baseAddress + outCount).copyMemory(from: b.baseAddress! + off, byteCount: c) }
            outCount += c
            off += c
        }
    }

    /// Status line, Server, Date; the caller adds its fields, then ``endHead(keepAlive:head:)``.
    func beginHead(_ status: HTTPStatus) {
        counters.count(status)
        append(status.statusLine)
        append("Server: libellula\r\nDate: ")
        if outCount + 29 <= core.outputCapacity {
            date.write(Int64(time(nil)), into: output.baseAddress + outCount)
            outCount += 29
        }
        append("\r\n")
    }

    func endHead(keepAlive: Bool, head: HTTPRequestHead?) {
        if !keepAlive {
            append("Connection: close\r\n")
        } else if let head, head.minorVersion == 0 {
            append("Connection: keep-alive\r\n")
        }
        append("\r\n")
    }

    /// A complete error response with a short HTML body (none for HEAD).
    nonisolated(nonsending) func sendError(_ status: HTTPStatus, head: HTTPRequestHead?, keepAlive: Bool, contentRange size: Int64? = nil) async throws(SocketError) {
        try await reserve(1024)
        beginHead(status)
        let code = status.rawValue
        let bodyLength = 2 * (3 + 1 + status.reason.utf8CodeUnitCount) + 79
        append("Content-Type: text/html; charset=utf-8\r\nContent-Length: ")
        append(bodyLength)
        append("\r\n")
        if status == .methodNotAllowed { append("Allow: GET, HEAD\r\n") }
        if let size {
            append("Content-Range: bytes */")
            append(Int(size))
            append("\r\n")
        }
        endHead(keepAlive: keepAlive, head: head)
        if head?.method != .head {
            // 79 bytes of markup around the two "NNN Reason" strings.
            append("<!doctype html><html><head><title>")
            append(code); append(" "); append(status.reason)
            append("</title></head><body><h1>")
            append(code); append(" "); append(status.reason)
            append("</h1></body></html>\n")
        }
    }
}
