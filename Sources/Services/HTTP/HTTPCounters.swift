import Synchronization

/// One CPU's HTTP counters. Written only by that CPU (a relaxed load and store, no locked
/// instruction), readable by anyone.
final class HTTPCounters: Sendable {
    let accepted = Atomic<Int>(0)
    let open = Atomic<Int>(0)
    let rejected = Atomic<Int>(0)
    let timeouts = Atomic<Int>(0)
    let requests = Atomic<Int>(0)
    let status2xx = Atomic<Int>(0)
    let status3xx = Atomic<Int>(0)
    let status4xx = Atomic<Int>(0)
    let status5xx = Atomic<Int>(0)
    let bytesSent = Atomic<Int>(0)

    @inline(__always)
    static func add(_ a: borrowing Atomic<Int>, _ n: Int = 1) {
        a.store(a.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    func count(_ status: HTTPStatus) {
        switch status.rawValue {
        case 200..<300: Self.add(status2xx)
        case 300..<400: Self.add(status3xx)
        case 400..<500: Self.add(status4xx)
        default: Self.add(status5xx)
        }
    }

    func snapshot(cpu: Int) -> HTTPCPUStatistics {
        HTTPCPUStatistics(cpu: cpu, connectionsAccepted: accepted.load(ordering: .relaxed),
                          connectionsOpen: open.load(ordering: .relaxed),
                          connectionsRejected: rejected.load(ordering: .relaxed),
                          timeouts: timeouts.load(ordering: .relaxed), requests: requests.load(ordering: .relaxed),
                          responses2xx: status2xx.load(ordering: .relaxed), responses3xx: status3xx.load(ordering: .relaxed),
                          responses4xx: status4xx.load(ordering: .relaxed), responses5xx: status5xx.load(ordering: .relaxed),
                          bytesSent: bytesSent.load(ordering: .relaxed))
    }
}

/// One CPU's HTTP counters at one moment.
public struct HTTPCPUStatistics: Codable, Sendable, Equatable {
    /// The CPU.
    public var cpu: Int
    /// Connections accepted on it.
    public var connectionsAccepted: Int
    /// Connections open now.
    public var connectionsOpen: Int
    /// Connections refused with 503 (over the per-CPU limit).
    public var connectionsRejected: Int
    /// Connections closed because a deadline passed.
    public var timeouts: Int
    /// Requests parsed.
    public var requests: Int
    /// Responses with a 2xx status.
    public var responses2xx: Int
    /// Responses with a 3xx status.
    public var responses3xx: Int
    /// Responses with a 4xx status.
    public var responses4xx: Int
    /// Responses with a 5xx status (503 refusals included).
    public var responses5xx: Int
    /// Bytes written to clients.
    public var bytesSent: Int
}
