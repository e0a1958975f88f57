import Testing
import Synchronization
import LWKT
@testable import Slab

#if canImport(Glibc)
import Glibc
#endif

/// Allocates and frees on a plain OS thread (not a CPU, not a Swift executor thread).
func onPlainThread(_ body: @escaping @Sendable () -> Void) {
    final class Box: @unchecked Sendable { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
    var tid = pthread_t()
    let arg = Unmanaged.passRetained(Box(body)).toOpaque()
    let rc = pthread_create(&tid, nil, { arg in
        guard let arg else { return nil }
        Unmanaged<Box>.fromOpaque(arg).takeRetainedValue().body()
        return nil
    }, arg)
    precondition(rc == 0)
    pthread_join(tid, nil)
}

/// The arena index that owns the zone of chunk `p`.
func owner(of p: UnsafeMutableRawPointer) -> Int { Int(ZoneLayout.header(of: p).pointee.ownerIndex) }

final class PointerBox: @unchecked Sendable {
    let value = Mutex<UInt>(0)
    var pointer: UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: value.withLock { $0 }) }
    func set(_ p: UnsafeMutableRawPointer?) { value.withLock { $0 = UInt(bitPattern: p) } }
}

@Suite("One slab per system, in the globaldata")
struct SystemSlabTests {
    @Test func theSystemHasOneSlabAndItsArenasAreInTheGlobaldata() async throws {
        try await withSlabSystem(cpus: 2) { system in
            let config = SlabConfiguration(zoneRegionBytes: 64 << 20, debug: false)
            let first = SlabAllocator(system: system, configuration: config)
            #expect(first.isSystemSlab)
            #expect(SlabAllocator.shared(for: system) === first)
            for cpu in system.cpus { #expect(cpu.installedSlabOwner == first.control.raw) }
            // A second allocator for the same system is private: it works, but is not in
            // the globaldata.
            let second = SlabAllocator(system: system, configuration: config)
            #expect(!second.isSystemSlab)
            #expect(SlabAllocator.shared(for: system) === first)
            let owners = try await system.run(on: 1) { () -> [Int] in
                guard let a = first.allocate(64), let b = second.allocate(64) else { return [] }
                defer { first.free(a); second.free(b) }
                return [owner(of: a), owner(of: b)]
            }
            #expect(owners == [1, 1])
        }
    }

    @Test func aDestroyedSlabLeavesTheGlobaldata() async throws {
        try await withSlabSystem(cpus: 2) { system in
            weak var gone: SlabAllocator?
            do {
                let slab = SlabAllocator.shared(for: system, configuration: .init(zoneRegionBytes: 64 << 20, debug: false))
                gone = slab
                #expect(slab.isSystemSlab)
                #expect(system.cpus[0].installedSlabOwner != nil)
            }
            #expect(gone == nil)
            for cpu in system.cpus { #expect(cpu.installedSlabOwner == nil) }
            // The next request makes a new slab and installs it.
            let again = SlabAllocator.shared(for: system, configuration: .init(zoneRegionBytes: 64 << 20, debug: false))
            #expect(again.isSystemSlab)
            for cpu in system.cpus { #expect(cpu.installedSlabOwner == again.control.raw) }
        }
    }

    /// Threads that are not the system's CPUs use the shared pool (behind a lock), and may
    /// free any chunk; CPUs of another system count as such threads too.
    @Test func threadsThatAreNotCPUsUseTheSharedPool() async throws {
        try await withSlabSystem(cpus: 2) { system in
            let slab = SlabAllocator.shared(for: system, configuration: .init(zoneRegionBytes: 64 << 20, debug: true))
            let shared = slab.cpuCount
            // A task on the global executor.
            let p = try #require(slab.allocate(64))
            #expect(owner(of: p) == shared)
            // A plain OS thread, freeing a CPU's chunk (a remote free) and its own.
            let fromCPU = PointerBox()
            try await system.run(on: 0) { fromCPU.set(slab.allocate(100)) }
            #expect(owner(of: try #require(fromCPU.pointer)) == 0)
            let plain = PointerBox()
            onPlainThread {
                guard let q = slab.allocate(200), let c = fromCPU.pointer else { return }
                plain.set(q)
                slab.free(c)
            }
            let q = try #require(plain.pointer)
            #expect(owner(of: q) == shared)
            slab.free(q)
            slab.free(p)
            // A CPU of another system.
            let other = try LWKT.boot(cpus: 1, configuration: .init(idleSpin: .microseconds(20), warnings: false))
            let foreignOwner = try await other.run(on: 0) { () -> Int in
                guard let r = slab.allocate(64) else { return -1 }
                defer { slab.free(r) }
                return owner(of: r)
            }
            _ = try await other.shutdown()
            #expect(foreignOwner == shared)
            // The CPU that owned the remotely freed chunk gets its memory back.
            try await system.run(on: 0) { slab.poll() }
            #expect(slab.statistics().cpuCount == 2)
        }
    }
}
