import Foundation
import Glibc
import LibellulaTestSupport

/// The `libellula` binary built by `swift build` (debug), or nil when it is not there.
/// `LIBELLULA_BINARY` names another one (to run these tests against an older build).
let libellulaBinary: String? = {
    if let other = ProcessInfo.processInfo.environment["LIBELLULA_BINARY"] { return other }
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent(".build/debug/libellula").path
    return FileManager.default.isExecutableFile(atPath: path) ? path : nil
}()

/// A real `libellula` process whose standard output and error go to one temporary file, so
/// a test can wait for a log line or for the exit without a pipe filling up. Killed (SIGKILL)
/// when dropped while still running, so a failing test never leaves a server behind.
final class CLIProcess: @unchecked Sendable {
    /// The child, started with posix_spawn (LibellulaTestSupport), not Foundation's Process.
    let process: Subprocess
    let logPath: String

    init(_ binary: String, _ arguments: [String]) throws {
        logPath = makeTempDir("cli") + "/output.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process = try Subprocess(binary, arguments, output: .file(logPath))
    }

    deinit {
        if process.isRunning { process.terminate(SIGKILL) }
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: (logPath as NSString).deletingLastPathComponent)
    }

    /// Everything the process wrote so far.
    var output: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Waits (bounded) until the output contains `needle`; returns the output then, or nil.
    func waitForOutput(containing needle: String, timeout: TimeInterval = 30) -> String? {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            let text = output
            if text.contains(needle) { return text }
            if !process.isRunning { return output.contains(needle) ? output : nil }
            usleep(20_000)
        }
        return nil
    }

    /// The port printed after `prefix` (for example `on http://127.0.0.1:`), waiting for it.
    func port(after prefix: String, timeout: TimeInterval = 30) -> UInt16? {
        guard let text = waitForOutput(containing: prefix, timeout: timeout),
              let r = text.range(of: prefix) else { return nil }
        let digits = text[r.upperBound...].prefix { $0.isNumber }
        return UInt16(digits)
    }

    /// Waits (bounded) for the exit; its status, or nil if it is still running.
    func waitForExit(timeout: TimeInterval) -> Int32? {
        let end = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < end { usleep(20_000) }
        if process.isRunning { return nil }
        process.waitUntilExit()
        return process.terminationStatus
    }

    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }
}

/// Runs `libellula` with `arguments` to its end (bounded); its status and output.
func runLibellula(_ arguments: [String], timeout: TimeInterval = 30) throws -> (status: Int32?, output: String)? {
    guard let binary = libellulaBinary else { return nil }
    let p = try CLIProcess(binary, arguments)
    let status = p.waitForExit(timeout: timeout)
    return (status, p.output)
}

extension RawClient {
    /// Reads one CRLF-terminated line (without the CRLF); nil if the stream ended first.
    func readLine() -> String? {
        for _ in 0..<1000 {
            if let i = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[0..<i], as: UTF8.self)
                buffer.removeFirst(i + 1)
                return line.hasSuffix("\r") ? String(line.dropLast()) : line
            }
            if !fill() { return nil }
        }
        return nil
    }
}

/// One request over IPv6 to `[::1]:port`; the raw reply (up to the server's close).
func ipv6Exchange(port: UInt16, _ request: String) -> String? {
    let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var tv = timeval(tv_sec: 30, tv_usec: 0)  // generous: a loaded machine stalls the server
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var s6 = sockaddr_in6()
    s6.sin6_family = sa_family_t(AF_INET6)
    s6.sin6_port = port.bigEndian
    _ = inet_pton(AF_INET6, "::1", &s6.sin6_addr)
    let rc = withUnsafePointer(to: &s6) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
    }
    guard rc == 0 else { return nil }
    _ = request.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while data.count < 1 << 20 {
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        data += chunk[0..<n]
    }
    return String(decoding: data, as: UTF8.self)
}
