import CFUSE
import Glibc
import LWKT
import Synchronization
import VFS

/// One CPU's FUSE channel: a `/dev/fuse` descriptor (the session's or a clone), its request
/// and reply buffers and its counters.
///
/// Rules: only the owning CPU's LWKT thread touches the descriptor and the buffers. The
/// descriptor is non-blocking and waited on with `LWKT.wait`, so an idle channel parks its
/// thread instead of blocking the CPU. A request is served to the end before the next read;
/// the reply goes back on this descriptor, as the kernel requires.
final class FUSEChannel: @unchecked Sendable {
    unowned let server: FUSEServer
    let cpu: Int
    let fd: Int32
    let counters: FUSEChannelCounters
    let input: UnsafeMutableRawPointer
    let output: UnsafeMutableRawPointer
    private let stopping = Atomic<Bool>(false)

    static let headerSize = MemoryLayout<fuse_in_header>.size
    static let outHeaderSize = MemoryLayout<fuse_out_header>.size

    init(server: FUSEServer, cpu: Int, fd: Int32) {
        self.server = server
        self.cpu = cpu
        self.fd = fd
        counters = FUSEChannelCounters(latency: server.system.latencies.fuseRequest, cpu: cpu)
        input = .allocate(byteCount: FUSEServer.bufferSize, alignment: 4096)
        output = .allocate(byteCount: FUSEServer.bufferSize, alignment: 4096)
    }

    deinit {
        input.deallocate()
        output.deallocate()
    }

    func requestStop() { stopping.store(true, ordering: .relaxed) }

    /// The channel's loop: read, serve, reply, until the connection ends or the server stops.
    func run() async {
        defer { try? LWKT.unregister(fd: fd) }
        while !stopping.load(ordering: .relaxed) {
            let n = Glibc.read(fd, input, FUSEServer.bufferSize)
            if n < 0 {
                let e = errno
                if e == EAGAIN {
                    counters.add(.waits)
                    do { _ = try await LWKT.wait(for: .readable, on: fd) } catch { return }
                    continue
                }
                if e == EINTR || e == ENOENT { continue }  // ENOENT: the request was interrupted
                return  // ENODEV: unmounted; anything else: the connection is unusable
            }
            if n < Self.headerSize { continue }
            serve(length: n)
            if server.destroyed.load(ordering: .relaxed) { return }
        }
    }

    /// The payload area of the reply buffer.
    @inline(__always) var payload: UnsafeMutableRawPointer { output + Self.outHeaderSize }

    @inline(__always)
    func reply(_ unique: UInt64, size: Int) {
        writeReply(fd: fd, buffer: output, unique: unique, error: 0, payload: size)
        counters.finish(error: false)
    }

    @inline(__always)
    func fail(_ unique: UInt64, _ errnoValue: Int32) {
        writeReply(fd: fd, buffer: output, unique: unique, error: -errnoValue, payload: 0)
        counters.finish(error: true)
    }

    private func serve(length: Int) {
        let h = input.load(as: fuse_in_header.self)
        counters.begin(opcode: h.opcode)
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
            let size = try server.handle(h, arg: arg, argLength: argLength, channel: self)
            if size == FUSEServer.replyLater { return }
            if size >= 0 { reply(h.unique, size: size) } else { fail(h.unique, Int32(-size)) }
        } catch {
            fail(h.unique, error == .other ? EIO : error.rawValue)
        }
    }
}
