import CLibellula
import LWKT

/// The statistics documents a server renders: the `/_stats` page, `/_stats.json`, the
/// Prometheus exposition at `/metrics` and the `/_health` check.
enum StatisticsDocument: Int, CaseIterable {
    case html, json, metrics, health

    /// Whether a request target given as bytes names one of the documents (compared without
    /// making a `String`).
    static func isDocument(_ target: UnsafeRawBufferPointer) -> Bool {
        // The longest name is "/_stats.json" (12 bytes).
        guard target.count <= 12 else { return false }
        return StatisticsDocument(path: String(decoding: target, as: UTF8.self)) != nil
    }

    /// The document served at `path`, if any.
    init?(path: String) {
        switch path {
        case "/_stats": self = .html
        case "/_stats.json": self = .json
        case "/metrics": self = .metrics
        case "/_health": self = .health
        default: return nil
        }
    }

    /// Its `Content-Type` header line.
    var contentType: String {
        switch self {
        case .html: "Content-Type: text/html; charset=utf-8\r\n"
        case .json, .health: "Content-Type: application/json\r\n"
        case .metrics: "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
        }
    }

    /// Whether a rendering is reused for the interval (the health check is answered live:
    /// that a CPU answers it is the point).
    var cached: Bool { self != .health }
}

/// Rendered statistics documents, kept per CPU and reused for an interval, so a flood of
/// `/_stats` requests costs each CPU at most one snapshot and one rendering per interval
/// per document instead of one per request, and cannot starve file serving.
///
/// Rules of this file: slot `(cpu, document)` is read and written only by CPU `cpu`'s own
/// thread (the connection handlers run on the CPU that accepted them), so no lock or
/// atomic guards it; debug builds check the caller's CPU. A body is an immutable array
/// handed out by reference count, never copied.
final class StatisticsPageCache: @unchecked Sendable {
    struct Entry {
        var body: [UInt8] = []
        var renderedAt: UInt64 = 0
        var valid = false
    }

    private let entries: UnsafeMutablePointer<Entry>
    private let cpuCount: Int
    /// How long a rendered document is reused, in nanoseconds (0: render every request).
    let intervalNanos: UInt64

    init(cpuCount: Int, interval: Duration) {
        self.cpuCount = cpuCount
        let (s, atto) = interval.components
        intervalNanos = UInt64(max(0, s)) &* 1_000_000_000 &+ UInt64(max(0, atto) / 1_000_000_000)
        let n = cpuCount * StatisticsDocument.allCases.count
        entries = .allocate(capacity: n)
        entries.initialize(repeating: Entry(), count: n)
    }

    deinit {
        entries.deinitialize(count: cpuCount * StatisticsDocument.allCases.count)
        entries.deallocate()
    }

    /// The body of `document` for CPU `cpu`: the one rendered less than an interval ago, or
    /// a fresh one from `render` (nil: rendering failed; nothing is cached).
    func body(_ document: StatisticsDocument, cpu: Int, now: UInt64 = lb_now_ns(),
              render: () -> [UInt8]?) -> [UInt8]? {
        precondition(cpu >= 0 && cpu < cpuCount, "statistics cache: CPU \(cpu) out of range")
        assert(CPU.current.map { $0.id == cpu } ?? true, "statistics cache slot used off its CPU")
        guard document.cached else { return render() }
        let slot = entries + cpu * StatisticsDocument.allCases.count + document.rawValue
        if slot.pointee.valid, now &- slot.pointee.renderedAt < intervalNanos { return slot.pointee.body }
        guard let fresh = render() else { return nil }
        slot.pointee = Entry(body: fresh, renderedAt: now, valid: true)
        return fresh
    }
}
