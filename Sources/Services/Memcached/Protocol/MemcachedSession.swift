import LWKT
#if canImport(Glibc)
import Glibc
#endif

/// One client connection's protocol state: it parses commands in place in its input buffer,
/// runs each key operation on the key's owner CPU (here, or there by message), and collects
/// responses in a reused output buffer that it writes once per batch of input.
final class MemcachedSession {
    let service: MemcachedService
    let cpu: Int
    let store: ItemStore
    let cpuCount: Int
    let out = OutputBuffer()

    var input: UnsafeMutableRawPointer
    var inputCapacity = 16 * 1024
    var rpos = 0
    var wpos = 0
    /// Bytes from `rpos` the current command needs before it can run (0: a line).
    var needTotal = 0
    /// Bytes of a rejected value still to discard.
    var swallow = 0

    static let maxTokens = 24
    static let maxKeyLength = 250
    static let maxLine = 256 * 1024
    let tokStart: UnsafeMutablePointer<Int>
    let tokLen: UnsafeMutablePointer<Int>
    var ntok = 0

    var keys: UnsafeMutablePointer<KeyRef>
    var keyCapacity = 64
    var keyCount = 0

    var requests: [ShardRequest?]

    init(service: MemcachedService, cpu: Int) {
        self.service = service
        self.cpu = cpu
        self.store = service.stores[cpu]
        self.cpuCount = service.stores.count
        input = malloc(16 * 1024) ?? UnsafeMutableRawPointer.allocate(byteCount: 16 * 1024, alignment: 16)
        tokStart = .allocate(capacity: MemcachedSession.maxTokens)
        tokLen = .allocate(capacity: MemcachedSession.maxTokens)
        keys = .allocate(capacity: 64)
        requests = Array(repeating: nil, count: service.stores.count)
    }

    deinit {
        free(input)
        tokStart.deallocate()
        tokLen.deallocate()
        keys.deallocate()
    }

    @inline(__always) func request(_ o: Int) -> ShardRequest {
        if let r = requests[o] { r.target = out; return r }
        let r = ShardRequest(target: out)
        requests[o] = r
        return r
    }

    // MARK: - The connection loop

    /// Serves the connection until the peer closes, sends `quit`, fails, or the thread is
    /// cancelled.
    func serve<T: MemcachedTransport>(_ t: inout T) async {
        while true {
            if rpos == wpos { rpos = 0; wpos = 0 }
            let want = max(needTotal, wpos - rpos + 1)
            if inputCapacity - rpos < want || (wpos == inputCapacity && rpos > 0) {
                if rpos > 0 {
                    memmove(input, input + rpos, wpos - rpos)
                    wpos -= rpos
                    rpos = 0
                }
                if inputCapacity < want || wpos == inputCapacity {
                    var c = inputCapacity * 2
                    while c < want { c *= 2 }
                    guard let p = realloc(input, c) else { return }
                    input = p
                    inputCapacity = c
                }
            }
            let n: Int
            do {
                n = try await t.read(into: UnsafeMutableRawBufferPointer(start: input + wpos, count: inputCapacity - wpos))
            } catch { return }
            if n == 0 { return }
            wpos += n
            store.counters.bytesRead += n
            let keepOpen = await processInput(now: Int64(time(nil)))
            if out.count > 0 {
                do { try await t.write(UnsafeRawBufferPointer(start: out.base, count: out.count)) } catch { return }
                store.counters.bytesWritten += out.count
                out.count = 0
                out.trim()
            }
            if !keepOpen { return }
            if rpos == wpos && inputCapacity > 1 << 20, let p = realloc(input, 16 * 1024) {
                input = p
                inputCapacity = 16 * 1024
                rpos = 0
                wpos = 0
            }
        }
    }

    /// Runs every complete command in the input. Returns false when the connection must
    /// close (after its output is written).
    func processInput(now: Int64) async -> Bool {
        while true {
            if swallow > 0 {
                let k = min(swallow, wpos - rpos)
                rpos += k
                swallow -= k
                if swallow > 0 { needTotal = 0; return true }
            }
            let avail = wpos - rpos
            if avail == 0 { needTotal = 0; return true }
            guard let nlp = memchr(input + rpos, 0x0A, avail) else {
                if avail > MemcachedSession.maxLine {
                    out.append("CLIENT_ERROR line too long\r\n")
                    return false
                }
                needTotal = 0
                return true
            }
            let nl = nlp - input
            var end = nl
            if end > rpos && input.load(fromByteOffset: end - 1, as: UInt8.self) == 0x0D { end -= 1 }
            let next = nl + 1
            tokenize(rpos, end)
            if ntok == 0 {
                out.append("ERROR\r\n")
                rpos = next
                continue
            }
            let started = MonotonicClock.now()
            switch await dispatch(lineStart: rpos, lineEnd: end, next: next, now: now) {
            case .consumed(let to): rpos = to; service.system.latencies.memcachedCommand.recordSince(started, cpu: cpu)
            case .needMore(let total): needTotal = total; return true
            case .close: return false
            }
        }
    }

    enum Outcome { case consumed(Int), needMore(Int), close }

    // MARK: - Tokens

    func tokenize(_ start: Int, _ end: Int) {
        ntok = 0
        var i = start
        while i < end && ntok < MemcachedSession.maxTokens {
            while i < end && input.load(fromByteOffset: i, as: UInt8.self) == 0x20 { i += 1 }
            if i >= end { break }
            let s = i
            while i < end && input.load(fromByteOffset: i, as: UInt8.self) != 0x20 { i += 1 }
            tokStart[ntok] = s
            tokLen[ntok] = i - s
            ntok += 1
        }
    }

    @inline(__always) func tok(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: input + tokStart[i], count: tokLen[i])
    }

    @inline(__always) func tokIs(_ i: Int, _ s: StaticString) -> Bool {
        tokLen[i] == s.utf8CodeUnitCount && memcmpBytes(input + tokStart[i], s.utf8Start, tokLen[i])
    }

    func parseInt64(_ b: UnsafeRawBufferPointer) -> Int64? {
        guard b.count > 0 else { return nil }
        if b[0] == 0x2D {
            guard let v = parseUInt64(UnsafeRawBufferPointer(rebasing: b[1...])), v <= UInt64(Int64.max) else { return nil }
            return -Int64(v)
        }
        guard let v = parseUInt64(b), v <= UInt64(Int64.max) else { return nil }
        return Int64(v)
    }

    func parseExptime(_ i: Int) -> Int64? {
        guard let v = parseInt64(tok(i)), v >= Int64(Int32.min), v <= Int64(Int32.max) else { return nil }
        return v
    }

    // MARK: - Dispatch

    func dispatch(lineStart: Int, lineEnd: Int, next: Int, now: Int64) async -> Outcome {
        let c0 = input.load(fromByteOffset: tokStart[0], as: UInt8.self)
        switch c0 {
        case UInt8(ascii: "g"):
            if tokIs(0, "get") { return await retrieve(.get, keysFrom: 1, exptime: 0, lineEnd: lineEnd, next: next, now: now) }
            if tokIs(0, "gets") { return await retrieve(.gets, keysFrom: 1, exptime: 0, lineEnd: lineEnd, next: next, now: now) }
            if tokIs(0, "gat") || tokIs(0, "gats") {
                guard ntok >= 3 else { return error(next) }
                guard let e = parseExptime(1) else { return clientError("CLIENT_ERROR invalid exptime argument\r\n", next) }
                return await retrieve(tokIs(0, "gat") ? .gat : .gats, keysFrom: 2, exptime: absoluteExpiry(e, now: now),
                                      lineEnd: lineEnd, next: next, now: now)
            }
        case UInt8(ascii: "s"):
            if tokIs(0, "set") { return await update(.set, next: next, now: now) }
            if tokIs(0, "stats") { await stats(now: now); return .consumed(next) }
        case UInt8(ascii: "a"):
            if tokIs(0, "add") { return await update(.add, next: next, now: now) }
            if tokIs(0, "append") { return await update(.append, next: next, now: now) }
        case UInt8(ascii: "r"):
            if tokIs(0, "replace") { return await update(.replace, next: next, now: now) }
        case UInt8(ascii: "p"):
            if tokIs(0, "prepend") { return await update(.prepend, next: next, now: now) }
        case UInt8(ascii: "c"):
            if tokIs(0, "cas") { return await update(.cas, next: next, now: now) }
        case UInt8(ascii: "d"):
            if tokIs(0, "delete") { return await delete(next: next, now: now) }
            if tokIs(0, "decr") { return await arithmetic(incr: false, next: next, now: now) }
        case UInt8(ascii: "i"):
            if tokIs(0, "incr") { return await arithmetic(incr: true, next: next, now: now) }
        case UInt8(ascii: "t"):
            if tokIs(0, "touch") { return await touch(next: next, now: now) }
        case UInt8(ascii: "m"):
            if tokIs(0, "mg") { return await meta(.metaGet, lineEnd: lineEnd, next: next, now: now) }
            if tokIs(0, "ms") { return await meta(.metaSet, lineEnd: lineEnd, next: next, now: now) }
            if tokIs(0, "md") { return await meta(.metaDelete, lineEnd: lineEnd, next: next, now: now) }
            if tokIs(0, "ma") { return await meta(.metaArithmetic, lineEnd: lineEnd, next: next, now: now) }
            if tokIs(0, "mn") { out.append("MN\r\n"); return .consumed(next) }
        case UInt8(ascii: "f"):
            if tokIs(0, "flush_all") { return await flushAll(next: next, now: now) }
        case UInt8(ascii: "v"):
            if tokIs(0, "version") {
                out.append("VERSION ")
                out.append(string: MemcachedService.version)
                out.appendCRLF()
                return .consumed(next)
            }
            if tokIs(0, "verbosity") {
                guard ntok >= 2 && ntok <= 3 else { return error(next) }
                if !tokIs(ntok - 1, "noreply") { out.append("OK\r\n") }
                return .consumed(next)
            }
        case UInt8(ascii: "q"):
            if tokIs(0, "quit") { return .close }
        default: break
        }
        return error(next)
    }

    @inline(__always) func error(_ next: Int) -> Outcome {
        out.append("ERROR\r\n")
        return .consumed(next)
    }

    @inline(__always) func clientError(_ s: StaticString, _ next: Int) -> Outcome {
        out.append(s)
        return .consumed(next)
    }

    // MARK: - Routing

    /// Runs one key operation on its owner: here directly, or there by `doMsg`.
    @inline(__always)
    func run(_ op: inout KeyOp) async {
        let o = service.owner(op.hash)
        if o == cpu {
            store.counters.localRequests += 1
            CommandExecutor.execute(&op, store: store, out: out)
            return
        }
        store.counters.remoteSent += 1
        let r = request(o)
        r.kind = .single
        r.op = op
        _ = try? await LWKT.doMsg(r, to: service.ports[o])
    }

    // MARK: - Retrieval

    func retrieve(_ kind: OpKind, keysFrom first: Int, exptime: Int64, lineEnd: Int, next: Int, now: Int64) async -> Outcome {
        guard ntok > first else { return error(next) }
        // Collect every key of the line (there may be more than the token table holds).
        keyCount = 0
        var i = tokStart[first]
        var mixed = false
        while i < lineEnd {
            while i < lineEnd && input.load(fromByteOffset: i, as: UInt8.self) == 0x20 { i += 1 }
            if i >= lineEnd { break }
            let s = i
            while i < lineEnd && input.load(fromByteOffset: i, as: UInt8.self) != 0x20 { i += 1 }
            let n = i - s
            if n > MemcachedSession.maxKeyLength { return clientError("CLIENT_ERROR bad command line format\r\n", next) }
            if keyCount == keyCapacity {
                let nk = UnsafeMutablePointer<KeyRef>.allocate(capacity: keyCapacity * 2)
                nk.moveInitialize(from: keys, count: keyCount)
                keys.deallocate()
                keys = nk
                keyCapacity *= 2
            }
            let h = keyHash(input + s, n)
            let o = service.owner(h)
            if o != cpu { mixed = true }
            (keys + keyCount).initialize(to: KeyRef(start: input + s, length: n, hash: h, owner: o))
            keyCount += 1
        }
        var op = KeyOp()
        op.kind = kind
        op.expiry = exptime
        op.now = now
        if keyCount == 1 || !mixed {
            for k in 0..<keyCount {
                op.key = UnsafeRawPointer(keys[k].start)
                op.keyLength = keys[k].length
                op.hash = keys[k].hash
                await run(&op)
            }
        } else {
            await multiGet(&op)
        }
        out.append("END\r\n")
        return .consumed(next)
    }

    /// A get of keys owned by several CPUs: one message per remote owner carrying all its
    /// keys, all in flight at once; then the answers are put together in key order.
    func multiGet(_ op: inout KeyOp) async {
        for o in 0..<cpuCount where o != cpu { requests[o]?.keyIndexCount = 0 }
        for k in 0..<keyCount where keys[k].owner != cpu { request(keys[k].owner).addKeyIndex(k) }
        var waiting = 0
        for o in 0..<cpuCount where o != cpu {
            guard let r = requests[o], r.keyIndexCount > 0 else { continue }
            r.kind = .multiGet
            r.op = op
            r.keys = keys
            r.cursor = 0
            store.counters.remoteSent += 1
            if (try? LWKT.beginDoMsg(r, to: service.ports[o])) == nil { waiting += 1 }
        }
        if waiting > 0 {
            for o in 0..<cpuCount where o != cpu {
                guard let r = requests[o], r.keyIndexCount > 0, !r.isDone else { continue }
                _ = try? await LWKT.waitMsg(r)
            }
        }
        for k in 0..<keyCount {
            let o = keys[k].owner
            if o == cpu {
                op.key = UnsafeRawPointer(keys[k].start)
                op.keyLength = keys[k].length
                op.hash = keys[k].hash
                store.counters.localRequests += 1
                CommandExecutor.execute(&op, store: store, out: out)
            } else if let r = requests[o] {
                let from = r.cursor == 0 ? 0 : r.ends[r.cursor - 1]
                let to = r.ends[r.cursor]
                if to > from { out.append(r.scratch.base + from, to - from) }
                r.cursor += 1
            }
        }
        for o in 0..<cpuCount where o != cpu { requests[o]?.scratch.trim(limit: 256 * 1024) }
    }

    // MARK: - Storage

    func update(_ kind: OpKind, next: Int, now: Int64) async -> Outcome {
        let isCAS = kind == .cas
        let base = isCAS ? 6 : 5
        guard ntok == base || ntok == base + 1 else { return error(next) }
        let noreply = tokIs(ntok - 1, "noreply") && ntok == base + 1
        guard tokLen[1] <= MemcachedSession.maxKeyLength,
              let fl = parseUInt64(tok(2)),
              let ex = parseExptime(3),
              let vlen = parseInt64(tok(4)), vlen >= 0, vlen <= Int64(Int32.max) - 2
        else { return clientError("CLIENT_ERROR bad command line format\r\n", next) }
        var casValue: UInt64 = 0
        if isCAS {
            guard let c = parseUInt64(tok(5)) else { return clientError("CLIENT_ERROR bad command line format\r\n", next) }
            casValue = c
        }
        let n = Int(vlen)
        if n > service.maxValueSize {
            if !noreply { out.append("SERVER_ERROR object too large for cache\r\n") }
            swallow = n + 2
            return .consumed(next)
        }
        if wpos - next < n + 2 { return .needMore(next - rpos + n + 2) }
        let dataEnd = next + n
        if input.load(fromByteOffset: dataEnd, as: UInt8.self) != 0x0D || input.load(fromByteOffset: dataEnd + 1, as: UInt8.self) != 0x0A {
            out.append("CLIENT_ERROR bad data chunk\r\n")
            return .consumed(dataEnd + 2)
        }
        var op = KeyOp()
        op.kind = kind
        op.key = UnsafeRawPointer(input + tokStart[1])
        op.keyLength = tokLen[1]
        op.hash = keyHash(input + tokStart[1], tokLen[1])
        op.flags = UInt32(truncatingIfNeeded: fl)
        op.expiry = absoluteExpiry(ex, now: now)
        op.value = UnsafeRawPointer(input + next)
        op.valueLength = n
        op.cas = casValue
        op.noreply = noreply
        op.now = now
        await run(&op)
        return .consumed(dataEnd + 2)
    }

    // MARK: - Other key commands

    func keyOp(_ kind: OpKind, now: Int64) -> KeyOp {
        var op = KeyOp()
        op.kind = kind
        op.key = UnsafeRawPointer(input + tokStart[1])
        op.keyLength = tokLen[1]
        op.hash = keyHash(input + tokStart[1], tokLen[1])
        op.now = now
        return op
    }

    func delete(next: Int, now: Int64) async -> Outcome {
        guard ntok >= 2 && ntok <= 4 else { return error(next) }
        if ntok > 2 {
            let holdZero = tokIs(2, "0")
            let noreply = tokIs(ntok - 1, "noreply")
            let ok = (ntok == 3 && (holdZero || noreply)) || (ntok == 4 && holdZero && noreply)
            if !ok { return clientError("CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n", next) }
        }
        guard tokLen[1] <= MemcachedSession.maxKeyLength else { return clientError("CLIENT_ERROR bad command line format\r\n", next) }
        var op = keyOp(.delete, now: now)
        op.noreply = ntok > 2 && tokIs(ntok - 1, "noreply")
        await run(&op)
        return .consumed(next)
    }

    func arithmetic(incr: Bool, next: Int, now: Int64) async -> Outcome {
        guard ntok == 3 || ntok == 4 else { return error(next) }
        guard tokLen[1] <= MemcachedSession.maxKeyLength else { return clientError("CLIENT_ERROR bad command line format\r\n", next) }
        guard let d = parseUInt64(tok(2)) else { return clientError("CLIENT_ERROR invalid numeric delta argument\r\n", next) }
        var op = keyOp(incr ? .incr : .decr, now: now)
        op.delta = d
        op.noreply = ntok == 4 && tokIs(3, "noreply")
        await run(&op)
        return .consumed(next)
    }

    func touch(next: Int, now: Int64) async -> Outcome {
        guard ntok == 3 || ntok == 4 else { return error(next) }
        guard tokLen[1] <= MemcachedSession.maxKeyLength else { return clientError("CLIENT_ERROR bad command line format\r\n", next) }
        guard let e = parseExptime(2) else { return clientError("CLIENT_ERROR invalid exptime argument\r\n", next) }
        var op = keyOp(.touch, now: now)
        op.expiry = absoluteExpiry(e, now: now)
        op.noreply = ntok == 4 && tokIs(3, "noreply")
        await run(&op)
        return .consumed(next)
    }

    // MARK: - Meta commands

    func meta(_ kind: OpKind, lineEnd: Int, next: Int, now: Int64) async -> Outcome {
        guard ntok >= 2 else { return error(next) }
        guard tokLen[1] <= MemcachedSession.maxKeyLength else { return clientError("CLIENT_ERROR bad command line format\r\n", next) }
        var op = keyOp(kind, now: now)
        var firstFlag = 2
        var dataLength = 0
        if kind == .metaSet {
            guard ntok >= 3, let v = parseInt64(tok(2)), v >= 0, v <= Int64(Int32.max) - 2 else {
                return clientError("CLIENT_ERROR bad command line format\r\n", next)
            }
            dataLength = Int(v)
            firstFlag = 3
        }
        var m = MetaFlags()
        if ntok > firstFlag {
            m.text = UnsafeRawPointer(input + tokStart[firstFlag])
            m.textLength = lineEnd - tokStart[firstFlag]
        }
        // Parse the flags (scan the whole line: there may be more than the token table).
        var i = ntok > firstFlag ? tokStart[firstFlag] : lineEnd
        var badMode = false
        while i < lineEnd {
            while i < lineEnd && input.load(fromByteOffset: i, as: UInt8.self) == 0x20 { i += 1 }
            if i >= lineEnd { break }
            let s = i
            while i < lineEnd && input.load(fromByteOffset: i, as: UInt8.self) != 0x20 { i += 1 }
            let c = input.load(fromByteOffset: s, as: UInt8.self)
            let arg = UnsafeRawBufferPointer(start: input + s + 1, count: i - s - 1)
            let allowed: StaticString
            switch kind {
            case .metaGet: allowed = "bcfhklOqstuvENRT"
            case .metaSet: allowed = "bcCFIkOqsSTM"
            case .metaDelete: allowed = "bCIkOqTx"
            default: allowed = "bCNJDTMOqtckv"
            }
            var ok = false
            var j = 0
            while j < allowed.utf8CodeUnitCount { if allowed.utf8Start[j] == c { ok = true; break }; j += 1 }
            if !ok || c == UInt8(ascii: "b") || (kind == .metaSet && c == UInt8(ascii: "S")) {
                if kind == .metaSet { return clientError("CLIENT_ERROR bad command line format\r\n", next) }
                return clientError("CLIENT_ERROR invalid flag\r\n", next)
            }
            m.present |= MetaFlags.bit(c)
            switch c {
            case UInt8(ascii: "T"), UInt8(ascii: "N"):
                guard let v = parseInt64(arg) else { return clientError("CLIENT_ERROR bad token in command line format\r\n", next) }
                if c == UInt8(ascii: "T") { m.ttl = v } else { m.vivifyTTL = v }
            case UInt8(ascii: "C"), UInt8(ascii: "J"), UInt8(ascii: "D"):
                guard let v = parseUInt64(arg) else { return clientError("CLIENT_ERROR bad token in command line format\r\n", next) }
                if c == UInt8(ascii: "C") { m.cas = v } else if c == UInt8(ascii: "J") { m.initial = v } else { m.delta = v }
            case UInt8(ascii: "F"):
                guard let v = parseUInt64(arg), v <= UInt64(UInt32.max) else { return clientError("CLIENT_ERROR bad token in command line format\r\n", next) }
                m.clientFlags = UInt32(v)
            case UInt8(ascii: "M"):
                m.mode = arg.count == 1 ? arg[0] : 0
                let valid: StaticString = kind == .metaSet ? "EeAaPpRrSs" : "IiDd+-"
                var found = false
                var k = 0
                while k < valid.utf8CodeUnitCount { if valid.utf8Start[k] == m.mode { found = true; break }; k += 1 }
                if !found { badMode = true }
            default: break
            }
        }
        if kind == .metaSet {
            if dataLength > service.maxValueSize {
                out.append("SERVER_ERROR object too large for cache\r\n")
                swallow = dataLength + 2
                return .consumed(next)
            }
            if wpos - next < dataLength + 2 { return .needMore(next - rpos + dataLength + 2) }
            let dataEnd = next + dataLength
            if badMode {
                out.append("CLIENT_ERROR invalid mode for ms M token\r\n")
                return .consumed(dataEnd + 2)
            }
            if input.load(fromByteOffset: dataEnd, as: UInt8.self) != 0x0D || input.load(fromByteOffset: dataEnd + 1, as: UInt8.self) != 0x0A {
                out.append("CLIENT_ERROR bad data chunk\r\n")
                return .consumed(dataEnd + 2)
            }
            op.value = UnsafeRawPointer(input + next)
            op.valueLength = dataLength
            op.meta = m
            await run(&op)
            return .consumed(dataEnd + 2)
        }
        if badMode { return clientError("CLIENT_ERROR invalid mode for ma M token\r\n", next) }
        op.meta = m
        await run(&op)
        return .consumed(next)
    }

    // MARK: - Whole-cache commands

    func flushAll(next: Int, now: Int64) async -> Outcome {
        guard ntok <= 3 else { return error(next) }
        let noreply = ntok > 1 && tokIs(ntok - 1, "noreply")
        var delay: Int64 = 0
        if ntok - (noreply ? 1 : 0) == 2 {
            guard let e = parseExptime(1) else { return clientError("CLIENT_ERROR invalid exptime argument\r\n", next) }
            if e > 0 {
                let abs = absoluteExpiry(e, now: now)
                delay = max(0, abs - now)
            }
        }
        for o in 0..<cpuCount {
            if o == cpu {
                store.flush(delay: delay, now: now)
            } else {
                let r = request(o)
                r.kind = .flush
                r.op.expiry = delay
                r.op.now = now
                _ = try? await LWKT.doMsg(r, to: service.ports[o])
            }
        }
        if !noreply { out.append("OK\r\n") }
        return .consumed(next)
    }

    /// Collects every shard's counters and tables, each copied on its own CPU.
    func gather(now: Int64) async -> [ShardRequest] {
        var all: [ShardRequest] = []
        for o in 0..<cpuCount {
            let r = ShardRequest(target: out)
            r.kind = .stats
            r.op.now = now
            if o == cpu { r.run(on: store) } else { _ = try? await LWKT.doMsg(r, to: service.ports[o]) }
            all.append(r)
        }
        return all
    }

    func stats(now: Int64) async {
        let sub = ntok > 1 ? String(decoding: tok(1), as: UTF8.self) : ""
        switch sub {
        case "":
            let all = await gather(now: now)
            var t = ShardCounters()
            for r in all { t.add(r.counters) }
            var ru = rusage()
            getrusage(Int32(RUSAGE_SELF.rawValue), &ru)
            stat("pid", "\(getpid())")
            stat("uptime", "\(now - service.startTime)")
            stat("time", "\(now)")
            stat("version", MemcachedService.version)
            stat("pointer_size", "64")
            stat("rusage_user", "\(ru.ru_utime.tv_sec).\(String(format6(Int(ru.ru_utime.tv_usec))))")
            stat("rusage_system", "\(ru.ru_stime.tv_sec).\(String(format6(Int(ru.ru_stime.tv_usec))))")
            for (k, v) in t.pairs { stat(k, "\(v)") }
            stat("limit_maxbytes", "\(service.memoryLimit)")
            stat("threads", "\(cpuCount)")
            out.append("END\r\n")
        case "cpus", "percpu":
            let all = await gather(now: now)
            for (i, r) in all.enumerated() {
                for (k, v) in r.counters.pairs { stat("cpu\(i):\(k)", "\(v)") }
            }
            out.append("END\r\n")
        case "slabs", "items":
            let all = await gather(now: now)
            var items = [Int](repeating: 0, count: SizeClassCount.value + 1)
            var bytes = items
            var ev = items
            for r in all {
                for c in 0..<min(items.count, r.classItems.count) {
                    items[c] += r.classItems[c]; bytes[c] += r.classBytes[c]; ev[c] += r.classEvictions[c]
                }
            }
            var active = 0
            var total = 0
            for c in 0..<items.count where items[c] > 0 || ev[c] > 0 {
                active += 1
                total += bytes[c]
                let id = c + 1
                if sub == "items" {
                    stat("items:\(id):number", "\(items[c])")
                    stat("items:\(id):evicted", "\(ev[c])")
                } else {
                    let chunk = c < SizeClassCount.value ? SizeClassCount.chunkSize(c) : 0
                    stat("\(id):chunk_size", "\(chunk)")
                    stat("\(id):used_chunks", "\(items[c])")
                    stat("\(id):mem_requested", "\(bytes[c])")
                }
            }
            if sub == "slabs" {
                stat("active_slabs", "\(active)")
                stat("total_malloced", "\(total)")
            }
            out.append("END\r\n")
        case "settings":
            stat("maxbytes", "\(service.memoryLimit)")
            stat("tcpport", "\(service.port)")
            stat("num_threads", "\(cpuCount)")
            stat("item_size_max", "\(service.maxValueSize)")
            stat("evictions", "on")
            stat("cas_enabled", "yes")
            out.append("END\r\n")
        case "reset":
            for o in 0..<cpuCount {
                if o == cpu {
                    let r = request(o)
                    r.kind = .resetStats
                    r.run(on: store)
                } else {
                    let r = request(o)
                    r.kind = .resetStats
                    _ = try? await LWKT.doMsg(r, to: service.ports[o])
                }
            }
            out.append("RESET\r\n")
        case "detail":
            out.append("CLIENT_ERROR usage: stats detail on|off|dump\r\n")
        default:
            out.append("ERROR\r\n")
        }
    }

    func stat(_ name: String, _ value: String) {
        out.append(string: "STAT \(name) \(value)\r\n")
    }

    func format6(_ v: Int) -> String {
        let s = String(v)
        return String(repeating: "0", count: max(0, 6 - s.count)) + s
    }
}

import Slab

/// Slab size-class facts used by `stats slabs`.
enum SizeClassCount {
    static let value = SizeClass.count
    static func chunkSize(_ c: Int) -> Int { SizeClass.chunkSize(ofClass: c) }
}
