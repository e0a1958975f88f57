import Foundation
import Glibc
import LibellulaTestSupport
import LWKT
import Services
import Slab
import VFS

/// A server on 127.0.0.1 (port picked by the kernel) over a MemFS with the demo site, or
/// over a host directory.
final class TestServer: @unchecked Sendable {
    let system: LWKTSystem
    let slab: SlabAllocator
    let vfs: VirtualFileSystem
    let server: HTTPServer<HostSocketStack>
    var port: UInt16 { server.address.port }

    init(cpus: Int = 2, hostRoot: String? = nil, servedRoot: String = "/", hostIO: HostIOPool = .shared,
         configure: (inout HTTPServerConfiguration) -> Void = { _ in },
         populate: (VFSProcess) throws -> Void = { _ in }) throws {
        system = try LWKT.boot(cpus: cpus, configuration: LWKTConfiguration(idleSpin: .microseconds(20)))
        slab = SlabAllocator(system: system)
        if let hostRoot {
            vfs = VirtualFileSystem(rootFileSystem: try HostFS(hostPath: hostRoot), hostIO: hostIO)
        } else {
            vfs = VirtualFileSystem(rootFileSystem: MemFS())
            try DemoSite.install(in: vfs)
        }
        try populate(vfs.makeProcess())
        var config = HTTPServerConfiguration()
        config.address = .loopback(port: 0)
        configure(&config)
        server = try HTTPServer(system: system, stack: HostSocketStack(system: system), vfs: vfs, root: servedRoot,
                                slab: slab, configuration: config)
        try server.start()
    }

    @discardableResult
    func shutdown() async throws -> LWKTSystem.ShutdownReport {
        await server.stop()
        return try await system.shutdown()
    }
}

/// One response as a raw client saw it.
struct RawResponse {
    var status: Int
    var headers: [String: String]   // lowercased names
    var body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }
}

/// A blocking TCP client for requests no polite client would send. `receiveTimeout` bounds
/// each read (and send): generous by default, since on a loaded machine (CI on 2 cores) a
/// reply can take seconds; only a hung server should reach it.
final class RawClient {
    let fd: Int32
    var buffer: [UInt8] = []

    init(port: UInt16, receiveTimeout: Int = 30) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var tv = timeval(tv_sec: receiveTimeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr = in_addr(s_addr: UInt32(0x7f00_0001).bigEndian)
        let rc = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 { Glibc.close(fd); throw POSIXError(.ECONNREFUSED) }
    }

    deinit { Glibc.close(fd) }

    func send(_ s: String) { send(Array(s.utf8)) }

    func send(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    /// Reads more bytes; false at end of stream, error or timeout.
    func fill() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { return false }
        buffer.append(contentsOf: chunk[0..<n])
        return true
    }

    /// Reads one response (no body for HEAD, 304 and 1xx); nil if the stream ended first.
    func response(head: Bool = false) -> RawResponse? {
        for _ in 0..<10_000 {
            if let end = find([13, 10, 13, 10]) {
                let headText = String(decoding: buffer[0..<end], as: UTF8.self)
                var lines = headText.components(separatedBy: "\r\n")
                let statusLine = lines.removeFirst().split(separator: " ")
                guard statusLine.count >= 2, let status = Int(statusLine[1]) else { return nil }
                var headers: [String: String] = [:]
                for l in lines {
                    guard let c = l.firstIndex(of: ":") else { continue }
                    headers[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces)
                }
                let length = (head || status == 304) ? 0 : Int(headers["content-length"] ?? "0") ?? 0
                while buffer.count < end + 4 + length { if !fill() { return nil } }
                let body = Array(buffer[(end + 4)..<(end + 4 + length)])
                buffer.removeFirst(end + 4 + length)
                return RawResponse(status: status, headers: headers, body: body)
            }
            if !fill() { return nil }
        }
        return nil
    }

    /// Whether the server closed the connection (reads until end of stream or timeout).
    func closedByServer() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<1000 {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return true }
            if n < 0 { return errno == ECONNRESET }
        }
        return false
    }

    private func find(_ pattern: [UInt8]) -> Int? {
        guard buffer.count >= pattern.count else { return nil }
        for i in 0...(buffer.count - pattern.count) where buffer[i] == pattern[0] {
            if Array(buffer[i..<(i + pattern.count)]) == pattern { return i }
        }
        return nil
    }
}

/// Runs a program, returning its exit status and standard output (nil when it is missing).
func runTool(_ path: String, _ args: [String], timeout: TimeInterval = 60) -> (Int32, String)? {
    guard FileManager.default.isExecutableFile(atPath: path) else { return nil }
    // posix_spawn (LibellulaTestSupport), not Foundation's Process.
    guard let r = try? Subprocess.run(path, args, output: .stdoutOnly, timeout: timeout) else { return nil }
    return (r.status, r.output)
}

/// The first of `candidates` that exists and is executable.
func findTool(_ candidates: [String]) -> String? {
    candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// Runs `body` off the test's thread, so blocking socket calls do not hold the cooperative pool.
func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { c in
        Thread.detachNewThread { c.resume(with: Result { try body() }) }
    }
}

func makeTempDir(_ tag: String) -> String {
    var t = Array("/tmp/libellula-\(tag)-XXXXXX".utf8CString)
    let p = t.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    return String(cString: p!)
}
