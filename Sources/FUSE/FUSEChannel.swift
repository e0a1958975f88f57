import CFUSE
import Glibc
import LWKT
import Synchronization
import VFS

/// A request's buffers: the request as read and the reply being built.
final class FUSERequestBuffers: @unchecked Sendable {
    let input: UnsafeMutableRawPointer
    let output: UnsafeMutableRawPointer
    /// The request's length as read.
    var length = 0

    init() {
        input = .allocate(byteCount: FUSEServer.bufferSize, alignment: 4096)
        output = .allocate(byteCount: FUSEServer.bufferSize, alignment: 4096)
    }

    deinit {
        input.deallocate()
        output.deallocate()
    }

    /// The payload area of the reply buffer.
    @inline(__always) var payload: UnsafeMutableRawPointer { output + FUSEChannel.outHeaderSize }
}

/// One CPU's FUSE channel: a `/dev/fuse` descriptor (the session's or a clone), its request
/// and reply buffers and its counters.
///
/// Rules: only the owning CPU's LWKT threads touch the descriptor, the buffers and the
/// queue (they run one at a time on that CPU, so plain memory suffices). The descriptor is
/// non-blocking and waited on with `LWKT.wait`, so an idle channel parks its thread instead
/// of blocking the CPU. The channel's reader thread reads a request and serves it itself —
/// unless the mount's file systems can block (HostFS) and the request is one that asks the
/// host (`goesToWorker`): then it queues the request for one of the channel's worker
/// threads and reads the next one, so a request parked on the host-I/O pool or on a held
/// record lock never holds up the others. Requests in flight are bounded by the buffer
/// sets (`FUSEChannel.bufferSets`, made only when requests overlap); with none free the
/// reader parks until a worker returns one. A reply goes back on this descriptor, as the
/// kernel requires; the kernel matches replies to requests by their unique id, in any order.
final class FUSEChannel: @unchecked Sendable {
    unowned let server: FUSEServer
    let cpu: Int
    let fd: Int32
    let counters: FUSEChannelCounters
    private let stopping = Atomic<Bool>(false)
    /// Buffer sets not in use.
    private var free: [FUSERequestBuffers] = []
    /// Buffer sets made so far (made on demand, up to `maxBufferSets`: ~2 MiB each).
    private var made = 1
    private let maxBufferSets: Int
    /// Requests read and waiting for a worker.
    private var queue: [FUSERequestBuffers] = []
    /// Whether the reader waits for a buffer set.
    private var readerWaits = false

    static let headerSize = MemoryLayout<fuse_in_header>.size
    static let outHeaderSize = MemoryLayout<fuse_out_header>.size
    /// Buffer sets per channel where requests go to workers: requests in flight per CPU.
    static let bufferSets = 4
    /// Worker threads per channel where requests go to workers.
    var workerCount: Int { server.vfs.mayBlock ? Self.bufferSets - 1 : 0 }

    init(server: FUSEServer, cpu: Int, fd: Int32) {
        self.server = server
        self.cpu = cpu
        self.fd = fd
        counters = FUSEChannelCounters(latency: server.system.latencies.fuseRequest, cpu: cpu)
        maxBufferSets = server.vfs.mayBlock ? Self.bufferSets : 1
        free.append(FUSERequestBuffers())
    }

    func requestStop() { stopping.store(true, ordering: .relaxed) }

    private var readerChannel: WaitChannel { WaitChannel(self) }
    private var workerChannel: WaitChannel { WaitChannel(counters) }

    /// The reader's loop: read, serve or queue, until the connection ends or the server stops.
    func run() async {
        defer {
            try? LWKT.unregister(fd: fd)
            stopping.store(true, ordering: .relaxed)
            LWKT.wakeup(workerChannel)
        }
        while !stopping.load(ordering: .relaxed) {
            if free.isEmpty && made < maxBufferSets {
                free.append(FUSERequestBuffers())
                made += 1
            }
            guard let buf = free.popLast() else {
                readerWaits = true
                do { _ = try await LWKT.tsleep(on: readerChannel, until: { !self.free.isEmpty }) } catch { return }
                readerWaits = false
                continue
            }
            let n = Glibc.read(fd, buf.input, FUSEServer.bufferSize)
            if n < 0 {
                free.append(buf)
                let e = errno
                if e == EAGAIN {
                    counters.add(.waits)
                    do { _ = try await LWKT.wait(for: .readable, on: fd) } catch { return }
                    continue
                }
                if e == EINTR || e == ENOENT { continue }  // ENOENT: the request was interrupted
                return  // ENODEV: unmounted; anything else: the connection is unusable
            }
            if n < Self.headerSize { free.append(buf); continue }
            buf.length = n
            let opcode = buf.input.load(fromByteOffset: 4, as: UInt32.self)
            if workerCount > 0 && Self.goesToWorker(opcode) {
                queue.append(buf)
                LWKT.wakeupOne(workerChannel)
                continue
            }
            await serve(buf)
            free.append(buf)
            if server.destroyed.load(ordering: .relaxed) { return }
        }
    }

    /// A worker's loop: serve queued requests until the channel stops.
    func work() async {
        while true {
            guard let buf = queue.first else {
                if stopping.load(ordering: .relaxed) { return }
                do {
                    _ = try await LWKT.tsleep(on: workerChannel, until: { !self.queue.isEmpty || self.stopping.load(ordering: .relaxed) })
                } catch { return }
                continue
            }
            queue.removeFirst()
            await serve(buf)
            free.append(buf)
            if readerWaits { LWKT.wakeup(readerChannel) }
        }
    }

    /// Requests that usually ask the host on a mount whose calls can block; the others
    /// (lookups and attributes, mostly cached; forgets) are answered by the reader.
    static func goesToWorker(_ opcode: UInt32) -> Bool {
        switch opcode {
        case FUSE_READ.rawValue, FUSE_WRITE.rawValue, FUSE_CREATE.rawValue, FUSE_MKNOD.rawValue, FUSE_MKDIR.rawValue,
             FUSE_UNLINK.rawValue, FUSE_RMDIR.rawValue, FUSE_RENAME.rawValue, FUSE_RENAME2.rawValue, FUSE_LINK.rawValue,
             FUSE_SYMLINK.rawValue, FUSE_SETATTR.rawValue, FUSE_OPEN.rawValue, FUSE_OPENDIR.rawValue,
             FUSE_READDIR.rawValue, FUSE_READDIRPLUS.rawValue, FUSE_STATFS.rawValue, FUSE_RELEASE.rawValue,
             FUSE_RELEASEDIR.rawValue:
            return true
        default:
            return false
        }
    }

    @inline(__always)
    func reply(_ unique: UInt64, size: Int, _ buf: FUSERequestBuffers) {
        writeReply(fd: fd, buffer: buf.output, unique: unique, error: 0, payload: size)
    }

    @inline(__always)
    func fail(_ unique: UInt64, _ errnoValue: Int32, _ buf: FUSERequestBuffers) {
        counters.add(.errors)
        writeReply(fd: fd, buffer: buf.output, unique: unique, error: -errnoValue, payload: 0)
    }

    private func serve(_ buf: FUSERequestBuffers) async {
        let length = buf.length
        let input = buf.input
        let h = input.load(as: fuse_in_header.self)
        let started = counters.begin(opcode: h.opcode)
        let arg = UnsafeRawPointer(input + Self.headerSize)
        let argLength = min(Int(h.len), length) - Self.headerSize
        // Messages without a reply.
        switch h.opcode {
        case FUSE_FORGET.rawValue:
            counters.add(.forgets)
            if argLength >= 8 { server.nodes.forget(h.nodeid, count: arg.loadUnaligned(as: UInt64.self)) }
            return
        case FUSE_BATCH_FORGET.rawValue:
            counters.add(.forgets)
            guard argLength >= 8 else { return }
            let count = Int(arg.loadUnaligned(as: UInt32.self))
            var p = arg + 8
            for _ in 0..<min(count, (argLength - 8) / 16) {
                server.nodes.forget(p.loadUnaligned(as: UInt64.self), count: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                p += 16
            }
            return
        case FUSE_INTERRUPT.rawValue:
            return
        default:
            break
        }
        do {
            let size = try await server.handle(h, arg: arg, argLength: argLength, channel: self, out: buf.payload)
            if size == FUSEServer.replyLater { return }
            if size >= 0 { reply(h.unique, size: size, buf) } else { fail(h.unique, Int32(-size), buf) }
            counters.finish(opcode: h.opcode, since: started, error: size < 0)
        } catch {
            fail(h.unique, error == .other ? EIO : error.rawValue, buf)
            counters.finish(opcode: h.opcode, since: started, error: true)
        }
    }
}
