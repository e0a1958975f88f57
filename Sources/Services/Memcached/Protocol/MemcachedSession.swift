import LWKT
#if canImport(Glibc)
import Glibc
#endif

/// One client connection: read into the input buffer, parse with
/// ``MemcachedCommandParser``, hand key operations to the ``ShardRouter``, write the
/// output once per batch of input. Parsing, routing and statistics live elsewhere.
///
/// Rules: used only by its own LWKT thread on the CPU that accepted the connection. The
/// input buffer moves (compaction, growth) only between reads, when no parsed command
/// points into it.
final class MemcachedSession {
    let service: MemcachedService
    let cpu: Int
    let store: ItemStore
    let out: IOBuffer
    let router: ShardRouter
    let parser: MemcachedCommandParser
    /// The peer, for `stats conns`.
    let peer: String
    let id: Int

    /// Unread input in `readIndex..<writeIndex`; parsed commands point into it.
    let input: IOBuffer
    /// The per-command counters and the time of the last read, behind a pointer (no
    /// run-time exclusivity checks; the store's `stats conns` entry points at `lastCommand`).
    private let progress = UnsafeMutablePointer<Progress>.allocate(capacity: 1)
    struct Progress {
        var needTotal = 0
        var swallow = 0
        var lastCommand: Int64 = 0
    }
    /// Bytes from `rpos` the current command needs before it can run (0: a line).
    var needTotal: Int {
        @inline(__always) get { progress.pointee.needTotal }
        @inline(__always) set { progress.pointee.needTotal = newValue }
    }
    /// Bytes of a refused data block still to discard.
    var swallow: Int {
        @inline(__always) get { progress.pointee.swallow }
        @inline(__always) set { progress.pointee.swallow = newValue }
    }

    init(service: MemcachedService, cpu: Int, peer: String = "unknown") {
        self.service = service
        self.cpu = cpu
        self.store = service.stores[cpu]
        self.peer = peer
        id = service.nextConnectionID()
        input = IOBuffer(capacity: 16 * 1024, allocator: service.slab, type: service.bufferType)
        out = IOBuffer(capacity: 16 * 1024, allocator: service.slab, type: service.bufferType)
        parser = MemcachedCommandParser(maxItemSize: service.maxValueSize)
        router = ShardRouter(service: service, cpu: cpu, out: out)
        progress.initialize(to: Progress())
    }

    deinit { progress.deallocate() }

    /// Where the time of the last command lives (for the store's ``ConnectionSlot``).
    private var progressLastCommand: UnsafePointer<Int64> {
        UnsafePointer(progress.pointer(to: \.lastCommand).unsafelyUnwrapped)
    }

    // MARK: - The connection loop

    /// Serves the connection until the peer closes, sends `quit`, fails, or the thread is
    /// cancelled.
    nonisolated(nonsending) func serve<T: MemcachedTransport>(_ t: inout T) async {
        // Registered once; each read updates `lastCommand` through the pointer, so no
        // dictionary is modified per request (a modify of a dictionary entry allocated the
        // accessor coroutines' frames: three mallocs a read).
        progress.pointee.lastCommand = Int64(time(nil))
        store.connections[id] = ConnectionSlot(peer: peer, lastCommand: progressLastCommand)
        defer { store.connections[id] = nil }
        while true {
            // Room for the rest of the command being received (or at least one byte).
            let want = max(needTotal - input.readableBytes, 1)
            if input.writableBytes < want || input.writableBytes == 0 {
                guard input.reserve(max(want, 4096)) else { return }
            }
            let n: Int
            do {
                n = try await t.read(into: input.writable)
            } catch { return }
            if n == 0 { return }
            input.didWrite(n)
            store.counters.bytesRead += n
            let now = Int64(time(nil))
            progress.pointee.lastCommand = now
            let started = MonotonicClock.now()
            let keepOpen = await processInput(now: now)
            service.system.latencies.memcachedCommand.recordSince(started, cpu: cpu)
            // A reply that could not be held whole is not sent cut: the connection closes.
            if out.failed { return }
            if out.count > 0 {
                do { try await t.write(UnsafeRawBufferPointer(start: out.base, count: out.count)) } catch { return }
                store.counters.bytesWritten += out.count
                out.count = 0
                out.trim()
            }
            if !keepOpen { return }
            if input.readableBytes == 0 { input.clear(); input.trim() }
        }
    }

    /// Runs every complete command in the input, a window at a time. Returns false when
    /// the connection must close (after its output is written).
    ///
    /// Key commands, multi-gets and literal replies run synchronously (``runNow(_:)``):
    /// every `await` of an async function costs a task-executor check in the Swift runtime
    /// (a mutex in `swift_task_switch`), so the loop awaits only to flush a window that
    /// holds remote operations and for the few commands that must wait (`flush_all`,
    /// `stats`).
    nonisolated(nonsending) func processInput(now: Int64) async -> Bool {
        while true {
            if swallow > 0 {
                let k = min(swallow, input.readableBytes)
                input.readIndex += k
                swallow -= k
                if swallow > 0 { break }
            }
            let avail = input.readableBytes
            if avail == 0 { needTotal = 0; break }
            switch parser.parse(input.baseAddress + input.readIndex, count: avail, now: now) {
            case .incomplete(let need):
                needTotal = need
                if router.staging { await router.flush() }
                return true
            case .error(let reply, let consumed, let close):
                router.literal(reply)
                consume(consumed)
                if close { if router.staging { await router.flush() }; return false }
            case .command(let command, let consumed):
                if runNow(command) {
                    consume(consumed)
                } else {
                    let keepOpen = await execute(command, now: now)
                    consume(consumed)
                    if !keepOpen { if router.staging { await router.flush() }; return false }
                }
            }
            if router.isFull { await router.flush() }
        }
        needTotal = 0
        if router.staging { await router.flush() }
        return true
    }

    /// Drops `n` bytes of input; what has not arrived yet is discarded as it comes. (The
    /// indexes only move forward here: parsed commands of the window still point in.)
    @inline(__always) func consume(_ n: Int) {
        let k = min(n, input.readableBytes)
        input.readIndex += k
        swallow = n - k
    }

    /// Runs (or queues) a command that needs no waiting: key operations, multi-gets and
    /// literal replies. Returns false, doing nothing, for the others (``execute(_:now:)``).
    @inline(__always) func runNow(_ command: MemcachedCommand) -> Bool {
        switch command {
        case .key(let op):
            router.submit(op)
        case .retrieve(let template, let text):
            // Every key of the line, in order; keys owned elsewhere ride in the window's
            // one message per owner, like a pipeline.
            let base = text.baseAddress.unsafelyUnwrapped
            let end = text.count
            var op = template
            var i = 0
            while i < end {
                while i < end && base.load(fromByteOffset: i, as: UInt8.self) == 0x20 { i += 1 }
                if i >= end { break }
                let s = i
                while i < end && base.load(fromByteOffset: i, as: UInt8.self) != 0x20 { i += 1 }
                op.key = base + s
                op.keyLength = i - s
                op.hash = keyHash(base + s, i - s)
                router.submit(op)
            }
            router.literal("END\r\n")
        case .noop:
            router.literal("MN\r\n")
        case .version:
            router.literal("VERSION 1.6.18-libellula\r\n")
        case .verbosity(let noreply):
            if !noreply { router.literal("OK\r\n") }
        case .flushAll, .stats, .quit:
            return false
        }
        return true
    }

    /// Runs one parsed command, waiting where it must (a whole-cache command flushes the
    /// window first). Returns false for `quit`.
    nonisolated(nonsending) func execute(_ command: MemcachedCommand, now: Int64) async -> Bool {
        switch command {
        case .flushAll(let delay, let noreply):
            await router.flush()
            await router.flushAll(delay: delay, now: now)
            if !noreply { out.append("OK\r\n") }
        case .stats(let args):
            await router.flush()
            await stats(String(decoding: args, as: UTF8.self).split(separator: " ").map(String.init), now: now)
        case .quit:
            return false
        default:
            _ = runNow(command)
        }
        return true
    }

    /// `stats` and its sub-commands: gathered from every CPU, written by
    /// ``MemcachedStatsWriter``.
    nonisolated(nonsending) func stats(_ words: [String], now: Int64) async {
        let writer = MemcachedStatsWriter(service: service, out: out)
        switch words.first ?? "" {
        case "":
            writer.general(await router.gather(now: now), now: now)
        case "cpus", "percpu":
            writer.perCPU(await router.gather(now: now))
        case "slabs":
            writer.classes(await router.gather(now: now), items: false)
        case "items":
            writer.classes(await router.gather(now: now), items: true)
        case "settings":
            writer.settings()
        case "conns":
            writer.connections(await router.gather(now: now), now: now)
        case "reset":
            guard words.count == 1 else { out.append("ERROR\r\n"); return }
            await router.resetStats()
            out.append("RESET\r\n")
        case "detail":
            switch words.count == 2 ? words[1] : "" {
            case "on": service.detail.on.store(true, ordering: .relaxed); out.append("OK\r\n")
            case "off": service.detail.on.store(false, ordering: .relaxed); out.append("OK\r\n")
            case "dump": writer.detailDump(await router.gather(now: now))
            default: out.append("CLIENT_ERROR usage: stats detail on|off|dump\r\n")
            }
        default:
            out.append("ERROR\r\n")
        }
    }
}

/// What `stats conns` reports of one connection (a snapshot taken on the connection's CPU).
struct ConnectionInfo {
    var peer: String
    var lastCommand: Int64
}

/// A connection as its CPU's store lists it for `stats conns`: the peer, and where the
/// session keeps the time of its last command (valid while the entry is listed; the session
/// removes it before it ends). Read only on the connection's CPU.
struct ConnectionSlot {
    let peer: String
    let lastCommand: UnsafePointer<Int64>

    /// The entry as `stats conns` reports it.
    var snapshot: ConnectionInfo { ConnectionInfo(peer: peer, lastCommand: lastCommand.pointee) }
}
