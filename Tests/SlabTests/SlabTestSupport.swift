import Testing
import Synchronization
import LWKT
@testable import Slab
import LibellulaTestSupport

/// Boots an LWKT system for one test and shuts it down afterwards.
func withSlabSystem<R>(cpus: Int, _ body: (LWKTSystem) async throws -> R) async throws -> R {
    let system = try LWKT.boot(cpus: cpus, configuration: .init(idleSpin: .microseconds(20), warnings: false))
    do {
        let r = try await body(system)
        _ = try await system.shutdown(timeout: .seconds(20))
        return r
    } catch {
        _ = try? await system.shutdown(timeout: .seconds(20))
        throw error
    }
}


/// Fills `bytes` bytes at `p` with a pattern derived from `tag`.
func fill(_ p: UnsafeMutableRawPointer, bytes: Int, tag: UInt8) {
    p.initializeMemory(as: UInt8.self, repeating: tag, count: bytes)
}

/// Whether `bytes` bytes at `p` all hold `tag`.
func holds(_ p: UnsafeRawPointer, bytes: Int, tag: UInt8) -> Bool {
    let b = UnsafeRawBufferPointer(start: p, count: bytes)
    return b.allSatisfy { $0 == tag }
}

/// Pointers as a Sendable value, for handing chunks between threads in tests.
struct PointerBatch: @unchecked Sendable {
    var pointers: [UnsafeMutableRawPointer]
}

/// An unbounded multi-producer queue of pointer batches, for free storms.
final class BatchQueue: @unchecked Sendable {
    private let items = Mutex<[PointerBatch]>([])
    let produced = Atomic<Int>(0)
    func push(_ b: PointerBatch) { items.withLock { $0.append(b) } }
    func pop() -> PointerBatch? { items.withLock { $0.isEmpty ? nil : $0.removeFirst() } }
}

/// An atomic integer shared between test tasks.
final class SharedCounter: Sendable {
    let value = Atomic<Int>(0)
}
