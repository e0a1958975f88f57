import Foundation
import LibellulaTestSupport
import Glibc
import Testing
@testable import VFS

/// Issue 11, item 1: a FIFO (or socket or device) under a HostFS root must never make an open
/// or a read wait for a peer. The VFS refuses to open one unless asked (`EOPNOTSUPP`), and
/// `libellula serve --root` answers 403 for it, as nginx does, while it keeps serving.
@Suite(.serialized) struct FIFOTests {
    /// Runs `body` on a thread of its own and waits at most `seconds` for it. On a timeout
    /// `unblock` runs (so the stuck thread can finish) and the result is nil.
    func bounded<T: Sendable>(seconds: Double, unblock: @escaping @Sendable () -> Void,
                              _ body: @escaping @Sendable () -> T) -> T? {
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox<T>()
        Thread.detachNewThread {
            box.set(body())
            done.signal()
        }
        if done.wait(timeout: .now() + seconds) == .timedOut {
            unblock()
            _ = done.wait(timeout: .now() + 10)
            return nil
        }
        return box.get()
    }

    @Test func hostFIFOIsRefusedWithoutBlocking() throws {
        let dir = makeTempDir("fifo-vfs")
        defer { removeTree(dir) }
        #expect(mkfifo(dir + "/fifo", 0o644) == 0)
        let vfs = VirtualFileSystem(rootFileSystem: MemFS())
        let p = vfs.makeProcess()
        try p.mkdir("/host")
        try vfs.mount(try HostFS(hostPath: dir), at: "/host", by: p)
        // Opening the FIFO's write side (non-blocking, so only once a reader waits) frees a
        // reader stuck in open; it is how a regression ends instead of hanging the suite.
        let unblock: @Sendable () -> Void = {
            for _ in 0..<100 {
                let fd = Glibc.open(dir + "/fifo", O_WRONLY | O_NONBLOCK)
                if fd >= 0 { Glibc.close(fd); return }
                usleep(10_000)
            }
        }
        let plain = bounded(seconds: 5, unblock: unblock) { errno { try p.open("/host/fifo") } }
        #expect(plain == .some(.notsup), "a plain open of a FIFO must fail at once with EOPNOTSUPP")
        #expect(try p.stat("/host/fifo").type == .other)
        // Asked for, it opens non-blocking: the open returns at once and a read with no
        // writer reports end of file instead of waiting.
        let asked = bounded(seconds: 5, unblock: unblock) { () -> String in
            do {
                let fd = try p.open("/host/fifo", .nonBlocking)
                defer { try? p.close(fd) }
                return "read \(try p.read(fd, count: 16).count)"
            } catch { return "\(error)" }
        }
        #expect(asked == "read 0")
    }

    @Test func serveAnswers403ForFIFOAndKeepsServing() async throws {
        let binary = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/libellula").path
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            print("skipping: \(binary) not built")
            return
        }
        let dir = makeTempDir("fifo-serve")
        defer { removeTree(dir) }
        #expect(mkfifo(dir + "/fifo", 0o644) == 0)
        for i in 0..<4 { try "file \(i)\n".write(toFile: dir + "/f\(i).txt", atomically: false, encoding: .utf8) }

        // posix_spawn (LibellulaTestSupport), not Foundation's Process; killed when dropped.
        let server = try Subprocess(binary, ["serve", "--root", dir, "--cpus", "2", "--http", "127.0.0.1:0", "--no-memcached"],
                                    output: .stderrOnly)
        var log = ""
        var port: UInt16?
        for _ in 0..<200 where port == nil {
            guard let d = server.readAvailable(timeout: 30) else { break }
            log += d
            if let r = log.range(of: "on http://127.0.0.1:"), let end = log[r.upperBound...].firstIndex(of: "/") {
                port = UInt16(log[r.upperBound..<end])
            }
        }
        guard let port else {
            Issue.record("no address in the log: \(log)")
            return
        }
        // The FIFO: 403, quickly (a stuck request times out after 5 s and counts as a failure).
        #expect(httpStatus(port: port, path: "/fifo") == 403)
        // Every later request on fresh connections (spread over both CPUs) is answered.
        var answered = 0
        for i in 0..<12 where httpStatus(port: port, path: "/f\(i % 4).txt") == 200 { answered += 1 }
        #expect(answered == 12)
        // The FIFO again while a file request follows on another connection.
        #expect(httpStatus(port: port, path: "/fifo") == 403)
        #expect(httpStatus(port: port, path: "/f0.txt") == 200)
        kill(server.processIdentifier, SIGTERM)
        var exited = false
        for _ in 0..<200 {
            if !server.isRunning { exited = true; break }
            usleep(50_000)
        }
        #expect(exited, "serve did not exit within 10 s of SIGTERM")
    }
}

/// One value handed from a worker thread to the waiting one.
final class ResultBox<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T?
    func set(_ v: T) { lock.lock(); value = v; lock.unlock() }
    func get() -> T? { lock.lock(); defer { lock.unlock() }; return value }
}

/// GETs `path` from 127.0.0.1:`port` on a fresh connection and returns the status code, or nil
/// when nothing complete arrives within `timeout` seconds.
func httpStatus(port: UInt16, path: String, timeout: Int = 5) -> Int? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { Glibc.close(fd) }
    var tv = timeval(tv_sec: timeout, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let ok = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard ok == 0 else { return nil }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".utf8)
    guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return nil }
    var text = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 4096)
    while text.count < 1 << 16 {
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        text += buf[0..<n]
        if text.count >= 12, text.starts(with: Array("HTTP/1.1 ".utf8)), text.contains(UInt8(ascii: "\n")) { break }
    }
    guard text.count >= 12, text.starts(with: Array("HTTP/1.1 ".utf8)) else { return nil }
    return Int(String(decoding: text[9..<12], as: UTF8.self))
}
