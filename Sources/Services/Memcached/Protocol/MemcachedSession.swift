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
    let parser: MemcachedCommandParser

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
        parser = MemcachedCommandParser(maxItemSize: service.maxValueSize)
        keys = .allocate(capacity: 64)
        requests = Array(repeating: nil, count: service.stores.count)
    }

    deinit {
        free(input)
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
            switch parser.parse(input + rpos, count: avail, now: now) {
            case .incomplete(let need):
                needTotal = need
                return true
            case .error(let reply, let consumed, let close):
                out.append(reply)
                consume(consumed)
                if close { return false }
            case .command(let command, let consumed):
                let keepOpen = await execute(command, now: now)
                consume(consumed)
                if !keepOpen { return false }
            }
        }
    }

    /// Drops `n` bytes of input; what has not arrived yet is discarded as it comes.
    @inline(__always) func consume(_ n: Int) {
        let k = min(n, wpos - rpos)
        rpos += k
        swallow = n - k
    }

    /// Runs one parsed command. Returns false for `quit`.
    func execute(_ command: MemcachedCommand, now: Int64) async -> Bool {
        switch command {
        case .key(var op):
            await run(&op)
        case .retrieve(let op, let keys):
            await retrieve(op, keys: keys)
        case .flushAll(let delay, let noreply):
            await flushAll(delay: delay, noreply: noreply, now: now)
        case .stats(let args):
            await stats(args, now: now)
        case .version:
            out.append("VERSION ")
            out.append(string: MemcachedService.version)
            out.appendCRLF()
        case .verbosity(let noreply):
            if !noreply { out.append("OK\r\n") }
        case .noop:
            out.append("MN\r\n")
        case .quit:
            return false
        }
        return true
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

    func retrieve(_ template: KeyOp, keys text: UnsafeRawBufferPointer) async {
        // Collect every key of the line (there may be more than the token table holds).
        keyCount = 0
        var mixed = false
        let base = UnsafeMutableRawPointer(mutating: text.baseAddress.unsafelyUnwrapped)
        let end = text.count
        var i = 0
        while i < end {
            while i < end && base.load(fromByteOffset: i, as: UInt8.self) == 0x20 { i += 1 }
            if i >= end { break }
            let s = i
            while i < end && base.load(fromByteOffset: i, as: UInt8.self) != 0x20 { i += 1 }
            let n = i - s
            if keyCount == keyCapacity {
                let nk = UnsafeMutablePointer<KeyRef>.allocate(capacity: keyCapacity * 2)
                nk.moveInitialize(from: keys, count: keyCount)
                keys.deallocate()
                keys = nk
                keyCapacity *= 2
            }
            let h = keyHash(base + s, n)
            let o = service.owner(h)
            if o != cpu { mixed = true }
            (keys + keyCount).initialize(to: KeyRef(start: base + s, length: n, hash: h, owner: o))
            keyCount += 1
        }
        var op = template
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

    // MARK: - Whole-cache commands

    func flushAll(delay: Int64, noreply: Bool, now: Int64) async {
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

    func stats(_ args: UnsafeRawBufferPointer, now: Int64) async {
        let words = String(decoding: args, as: UTF8.self).split(separator: " ").map(String.init)
        let sub = words.first ?? ""
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
