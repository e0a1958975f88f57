import Testing
import Synchronization
import LWKT
import Slab
@testable import NetStack
import LibellulaTestSupport

/// Two stacks joined by a simulated wire on one LWKT system.
struct SimPair: @unchecked Sendable {
    let system: LWKTSystem
    let link: SimulatedLink
    let a: NetStack
    let b: NetStack
    static let addressA = IPv4Address(10, 0, 0, 1)
    static let addressB = IPv4Address(10, 0, 0, 2)
}

/// Boots a system, builds two stacks over a `SimulatedLink`, runs `body` on CPU 0 and
/// tears everything down.
func withSimPair(cpus: Int = 2, aToB: LinkFaults = .none, bToA: LinkFaults = .none,
                              steering: SimulatedLink.Steering = .roundRobin, offloads: InterfaceOffloads = [],
                              configure: (inout NetStackConfiguration, inout NetStackConfiguration) -> Void = { _, _ in },
                              _ body: @escaping @Sendable (SimPair) async throws -> Void) async throws {
    let system = try LWKT.boot(cpus: cpus, configuration: .init(idleSpin: .microseconds(20), pin: false, warnings: false))
    let slab = SlabAllocator(system: system, configuration: .init(debug: false))
    let link = SimulatedLink(queues: cpus, aToB: aToB, bToA: bToA, steering: steering, offloads: offloads)
    var ca = NetStackConfiguration(address: SimPair.addressA)
    var cb = NetStackConfiguration(address: SimPair.addressB)
    configure(&ca, &cb)
    let a = try NetStack(system: system, allocator: slab, interface: link.a, configuration: ca)
    let b = try NetStack(system: system, allocator: slab, interface: link.b, configuration: cb)
    try a.start()
    try b.start()
    let pair = SimPair(system: system, link: link, a: a, b: b)
    let result: Result<Void, any Error>
    do { result = .success(try await system.run(on: 0) { try await body(pair) }) } catch { result = .failure(error) }
    try await a.stop()
    try await b.stop()
    _ = try await system.shutdown(timeout: .seconds(20))
    return try result.get()
}


/// A payload whose bytes derive from `tag`, to check integrity.
func pattern(_ count: Int, tag: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ tag &* 7) }
}
