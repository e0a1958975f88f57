import CLibellula
import Synchronization

/// The Big Giant Lock as DragonFly has it today: one token (`mp_token`), taken only around
/// subsystems and handlers registered as not MP-safe. Its coverage — which subsystems
/// still take it, how often, and how long they hold it — is reported live.
public enum Giant {
    /// The token itself.
    public static let token = Token(name: "Giant")

    static let registry = Mutex<[String: Subsystem]>([:])

    /// A subsystem or handler known to Giant's coverage report.
    public final class Subsystem: @unchecked Sendable {
        /// Its name, such as `vfs.hostfs` or `http.handler./upload`.
        public let name: String
        /// Whether it runs without Giant.
        public let mpSafe: Bool
        let calls = Atomic<Int>(0)
        let giantAcquisitions = Atomic<Int>(0)
        let contended = Atomic<Int>(0)
        let holdNanos = Atomic<Int>(0)

        init(name: String, mpSafe: Bool) {
            self.name = name
            self.mpSafe = mpSafe
        }

        /// Runs `body`, holding Giant if this subsystem is not MP-safe.
        public func run<R>(_ body: () async throws -> R) async rethrows -> R {
            calls.add(1, ordering: .relaxed)
            if mpSafe { return try await body() }
            let before = Giant.token.contentions
            await Giant.token.acquire(.exclusive)
            if Giant.token.contentions != before { contended.add(1, ordering: .relaxed) }
            giantAcquisitions.add(1, ordering: .relaxed)
            let t0 = lb_now_ns()
            defer {
                holdNanos.add(Int(lb_now_ns() &- t0), ordering: .relaxed)
                try? Giant.token.release()
            }
            return try await body()
        }
    }

    /// Registers (or finds) a subsystem. A name registered twice keeps its first setting.
    @discardableResult
    public static func register(_ name: String, mpSafe: Bool) -> Subsystem {
        registry.withLock { r in
            if let s = r[name] { return s }
            let s = Subsystem(name: name, mpSafe: mpSafe)
            r[name] = s
            return s
        }
    }

    /// The coverage of one subsystem.
    public struct Coverage: Codable, Sendable, Equatable {
        public var name: String
        public var mpSafe: Bool
        public var calls: Int
        public var giantAcquisitions: Int
        public var contended: Int
        public var holdNanos: Int
    }

    /// Every registered subsystem's coverage, sorted by name.
    public static func coverage() -> [Coverage] {
        registry.withLock { r in
            r.values.map {
                Coverage(name: $0.name, mpSafe: $0.mpSafe, calls: $0.calls.load(ordering: .relaxed),
                         giantAcquisitions: $0.giantAcquisitions.load(ordering: .relaxed),
                         contended: $0.contended.load(ordering: .relaxed),
                         holdNanos: $0.holdNanos.load(ordering: .relaxed))
            }.sorted { $0.name < $1.name }
        }
    }
}
