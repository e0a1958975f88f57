/// How an ``HTTPServer`` listens, limits clients and times out.
public struct HTTPServerConfiguration: Sendable {
    /// Where to listen (port 0: any free port, shared by every CPU's listener).
    public var address: SocketAddress = .loopback(port: 8080)
    /// Request-size limits.
    public var limits = HTTPLimits()
    /// Open connections allowed per CPU; the next one gets 503 and is closed.
    public var maxConnectionsPerCPU: Int = 4096
    /// How long a keep-alive connection may sit idle between requests.
    public var idleTimeout: Duration = .seconds(30)
    /// How long a client may take to send a request head once it has started one.
    public var requestTimeout: Duration = .seconds(10)
    /// How long a client may take to accept a response's bytes.
    public var writeTimeout: Duration = .seconds(30)
    /// How long a closing connection waits for the client to close its side.
    public var closeLinger: Duration = .seconds(1)
    /// Whether `/_stats` and `/_stats.json` are served.
    public var statisticsEnabled: Bool = true
    /// How long each CPU reuses a rendered statistics document (0: render every request).
    public var statisticsInterval: Duration = .seconds(1)
    /// Whether each CPU keeps a hot-file cache of small files' responses.
    public var hotCacheEnabled: Bool = true
    /// Whether each CPU keeps host files open between requests, with their attributes and
    /// validators (the counterpart of nginx's `open_file_cache`).
    public var openFileCacheEnabled: Bool = true
    /// How long a hot-file or open-file cache entry is trusted before the file's inode, size,
    /// modification and change times are checked again (zero: on every request).
    public var cacheValidity: Duration = .seconds(1)
    /// Listen backlog of each CPU's socket.
    public var backlog: Int = 1024

    /// The defaults: 127.0.0.1:8080, 30 s idle timeout, 4096 connections per CPU.
    public init() {}
}
