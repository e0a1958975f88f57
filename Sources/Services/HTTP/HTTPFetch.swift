import Glibc

/// A minimal blocking HTTP/1.1 GET for command-line tools (`libellula stat`): IPv4 or IPv6,
/// `http://` only, `Connection: close`, bounded by a receive timeout.
public enum HTTPFetch {
    /// Why a fetch failed.
    public enum Failure: Error, CustomStringConvertible {
        case badURL(String), connect(String, Int32), malformedResponse, status(Int)
        /// A short explanation.
        public var description: String {
            switch self {
            case .badURL(let u): "not an http://ADDR:PORT/ URL: \(u)"
            case .connect(let a, let e): "cannot connect to \(a): \(String(cString: strerror(e)))"
            case .malformedResponse: "malformed HTTP response"
            case .status(let s): "HTTP status \(s)"
            }
        }
    }

    /// GETs `path` from the server named by `url` (`http://host:port`, any path in it is
    /// replaced); returns the body of a 200 response.
    public static func get(_ url: String, path: String, timeoutSeconds: Int = 10) throws(Failure) -> [UInt8] {
        guard url.hasPrefix("http://") else { throw .badURL(url) }
        var hostPort = String(url.dropFirst(7))
        if let slash = hostPort.firstIndex(of: "/") { hostPort = String(hostPort[..<slash]) }
        if !hostPort.contains(":") { hostPort += ":80" }
        guard let addr = SocketAddress(parsing: hostPort) else { throw .badURL(url) }
        let fd = socket(addr.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .connect(hostPort, errno) }
        defer { close(fd) }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let rc = addr.withSockaddr { connect(fd, $0, $1) }
        guard rc == 0 else { throw .connect(hostPort, errno) }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: \(hostPort)\r\nConnection: close\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while data.count < 64 << 20 {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            data.append(contentsOf: chunk[0..<n])
        }
        guard let split = (0..<max(0, data.count - 3)).first(where: {
            data[$0] == 13 && data[$0 + 1] == 10 && data[$0 + 2] == 13 && data[$0 + 3] == 10
        }) else { throw .malformedResponse }
        let statusLine = String(decoding: data[0..<split], as: UTF8.self).split(separator: "\r\n").first ?? ""
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { throw .malformedResponse }
        guard status == 200 else { throw .status(status) }
        return Array(data[(split + 4)...])
    }
}
