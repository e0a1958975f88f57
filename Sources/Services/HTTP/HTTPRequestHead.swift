/// The method of a request, as far as the file server cares.
public enum HTTPMethod: Sendable, Equatable {
    case get, head
    /// Any other syntactically valid method.
    case other
}

/// A parsed request line and the header fields the file server uses.
public struct HTTPRequestHead: Sendable {
    /// The method.
    public var method: HTTPMethod = .other
    /// The request target as sent (origin form, or absolute form).
    public var target: String = ""
    /// Where the target's bytes start in the parsed buffer.
    var targetOffset: Int = 0
    /// How many bytes the target has.
    var targetLength: Int = 0
    /// The minor version of HTTP/1.x.
    public var minorVersion: Int = 1
    /// Whether the connection stays open after the response.
    public var keepAlive: Bool = true
    /// Whether a Host field was present.
    public var hasHost: Bool = false
    /// The body length announced by Content-Length (0 when absent).
    public var contentLength: Int = 0
    /// Whether Transfer-Encoding was present.
    public var hasTransferEncoding: Bool = false
    /// Whether an If-None-Match field was present. Its value stays in the request buffer
    /// (``ifNoneMatchOffset``, ``ifNoneMatchLength``) and is compared there, never copied.
    public var hasIfNoneMatch: Bool = false
    /// Where the If-None-Match value (whitespace trimmed) starts in the parsed buffer.
    var ifNoneMatchOffset: Int = 0
    /// How many bytes the If-None-Match value has.
    var ifNoneMatchLength: Int = 0
    /// If-Modified-Since, raw.
    public var ifModifiedSince: String?
    /// Range, raw.
    public var range: String?
    /// If-Range, raw.
    public var ifRange: String?

    /// An empty head: no method yet, HTTP/1.1, keep-alive.
    public init() {}

    /// Whether the answer is the plain full representation (no validators, no range).
    var isPlain: Bool {
        !hasIfNoneMatch && ifModifiedSince == nil && range == nil && contentLength == 0 && !hasTransferEncoding
    }
}
