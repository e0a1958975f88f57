import Foundation
import Glibc
import LibellulaTestSupport
import LWKT
@testable import Services

/// A blocking test client over a kernel socket to 127.0.0.1, with a receive timeout so a
/// hung server fails the test instead of hanging it.
final class TestClient {
    let fd: Int32

    /// `timeoutSeconds` bounds each read: generous by default, since on a loaded machine
    /// (CI on 2 cores) a reply can take seconds; only a hung server should reach it.
    init(port: UInt16, timeoutSeconds: Int = 30) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        setReceiveTimeout(seconds: timeoutSeconds)
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 { close(fd); throw TestError("connect failed: errno \(errno)") }
    }

    deinit { close(fd) }

    /// Bounds each later read to `seconds` (for a check that nothing arrives).
    func setReceiveTimeout(seconds: Int) {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    func send(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    func send(_ s: String) { send(Array(s.utf8)) }

    /// Reads until the received bytes end with `suffix` (or the timeout/EOF).
    func read(until suffix: String, count: Int = 1) -> String {
        let sfx = Array(suffix.utf8)
        var buf: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 65536, 0) }
            if n <= 0 { break }
            buf += chunk[0..<n]
            if buf.count >= sfx.count && Array(buf.suffix(sfx.count)) == sfx && occurrences(buf, sfx) >= count { break }
        }
        return String(decoding: buf, as: UTF8.self)
    }

    /// Sends `command` and a trailing `mn`, and returns everything before the `MN`.
    func roundTrip(_ command: String) -> String {
        send(command + "mn\r\n")
        let r = read(until: "MN\r\n")
        let u = Array(r.utf8)
        guard u.count >= 4, Array(u.suffix(4)) == Array("MN\r\n".utf8) else { return "<no MN; got \(r.debugDescription)>" }
        return String(decoding: u.dropLast(4), as: UTF8.self)
    }

    private func occurrences(_ hay: [UInt8], _ needle: [UInt8]) -> Int {
        guard hay.count >= needle.count else { return 0 }
        var n = 0
        var i = 0
        while i <= hay.count - needle.count {
            if Array(hay[i..<(i + needle.count)]) == needle { n += 1; i += needle.count } else { i += 1 }
        }
        return n
    }
}

struct TestError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Boots a system and a service on a free port, runs `body`, and tears both down.
func withService(cpus: Int = 2, memory: Int = 64 << 20,
                 _ body: (MemcachedService) async throws -> Void) async throws {
    let system = try LWKT.boot(cpus: cpus, configuration: LWKTConfiguration(pin: false, warnings: false))
    let service = try await MemcachedService.start(system: system, address: "127.0.0.1", port: 0, memoryLimit: memory)
    do {
        try await body(service)
    } catch {
        await service.stop()
        try await system.shutdown()
        throw error
    }
    await service.stop()
    try await system.shutdown()
}

/// Whether an executable is on PATH.
func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let p = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    for p in ["/usr/bin/\(name)", "/usr/sbin/\(name)"] where FileManager.default.isExecutableFile(atPath: p) { return p }
    return nil
}

/// Whether python3 can import `module`.
func pythonHas(_ module: String) -> Bool {
    guard let py = which("python3") else { return false }
    return (try? Subprocess.run(py, ["-c", "import \(module)"], output: .discarded, timeout: 60))?.status == 0
}

/// Runs a command to completion (bounded by `timeout` seconds) and returns status and
/// output. Output goes to a temporary file, so nothing blocks a cooperative thread.
func runProcess(_ path: String, _ args: [String], timeout: Double = 120) async throws -> (Int32, String) {
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("libellula-mc-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log")
    defer { try? FileManager.default.removeItem(at: file) }
    // posix_spawn (LibellulaTestSupport), not Foundation's Process.
    let p = try Subprocess(path, args, output: .file(file.path))
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
    if p.isRunning { p.terminate() }
    while p.isRunning { try? await Task.sleep(for: .milliseconds(5)) }
    let text = (try? String(contentsOf: file, encoding: .utf8)) ?? ""
    return (p.terminationStatus, text)
}

/// The repository's Scripts/memcached folder.
let memcachedScripts: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<4 { url.deleteLastPathComponent() }
    return url.appendingPathComponent("Scripts/memcached").path
}()

/// A TCP port on 127.0.0.1 that was free a moment ago.
func freePort() -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = 0
    sa.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return UInt16(bigEndian: sa.sin_port)
}
