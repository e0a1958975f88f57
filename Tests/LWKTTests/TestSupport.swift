import Testing
import Synchronization
@testable import LWKT

/// Boots a system for one test and shuts it down afterwards, checking that the shutdown
/// was clean (every thread finished, every CPU joined).
func withSystem<R>(cpus: Int, spin: Duration = .microseconds(20),
                   _ body: (LWKTSystem) async throws -> R) async throws -> R {
    let system = try LWKT.boot(cpus: cpus, configuration: .init(idleSpin: spin, warnings: false))
    do {
        let r = try await body(system)
        let report = try await system.shutdown(timeout: .seconds(20))
        #expect(report.leakedThreads == 0)
        #expect(report.joinedCPUs == cpus)
        #expect(system.liveThreads.isEmpty)
        return r
    } catch {
        _ = try? await system.shutdown(timeout: .seconds(20))
        throw error
    }
}

/// A counter many threads bump; used as an IPI argument.
final class Counter: @unchecked Sendable {
    let value = Atomic<Int>(0)
    var plain = 0
    var log: [Int] = []
    var ctx: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }
}

/// Fails the test (instead of hanging) if `body` does not finish within `seconds`.
func withWatchdog<R: Sendable>(seconds: Double, _ what: String,
                               _ body: @escaping @Sendable () async throws -> R) async throws -> R {
    try await withThrowingTaskGroup(of: R?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        guard let first = try await group.next() else { throw WatchdogTimeout(what: what) }
        group.cancelAll()
        guard let value = first else { throw WatchdogTimeout(what: what) }
        return value
    }
}

/// Fails the test (instead of hanging) if `progress` stands still for `stallSeconds` while
/// `body` runs, or if `body` runs past `limitSeconds`. For stress runs whose length depends
/// on the machine's load: a deadlock stops the progress for good, a loaded machine only
/// slows it down.
func withProgressWatchdog<R: Sendable>(stallSeconds: Double, limitSeconds: Double, _ what: String,
                                       progress: @escaping @Sendable () -> Int,
                                       _ body: @escaping @Sendable () async throws -> R) async throws -> R {
    try await withThrowingTaskGroup(of: R?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            let start = ContinuousClock.now
            var last = progress()
            var lastChange = start
            while true {
                try await Task.sleep(for: .milliseconds(100))
                let now = ContinuousClock.now
                let p = progress()
                if p != last { (last, lastChange) = (p, now) }
                if now - lastChange > .seconds(stallSeconds) || now - start > .seconds(limitSeconds) { return nil }
            }
        }
        guard let first = try await group.next() else { throw WatchdogTimeout(what: what) }
        group.cancelAll()
        guard let value = first else { throw WatchdogTimeout(what: what) }
        return value
    }
}

struct WatchdogTimeout: Error, CustomStringConvertible {
    let what: String
    var description: String { "watchdog: \(what) did not finish in time" }
}
