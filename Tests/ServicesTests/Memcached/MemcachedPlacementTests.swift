import Testing
@testable import Services

/// The memcached command's default CPU placement (`MemcachedService.cpuPlacement`).
@Suite("memcached CPU placement")
struct MemcachedPlacementTests {
    @Test func spareCoresPinWithTheLWKTDefaultSpin() {
        let p = MemcachedService.cpuPlacement(cpus: 4, cores: 16, pin: nil, spinMicroseconds: nil)
        #expect(p.pin)
        #expect(p.spinMicroseconds == nil)
    }

    @Test func cpusOnEveryCoreNeitherPinNorSpinLong() {
        let p = MemcachedService.cpuPlacement(cpus: 2, cores: 2, pin: nil, spinMicroseconds: nil)
        #expect(!p.pin)
        #expect(p.spinMicroseconds == 5)
        // More CPUs than cores: LWKT's own oversubscription default (a 2 µs spin) applies.
        let over = MemcachedService.cpuPlacement(cpus: 4, cores: 2, pin: nil, spinMicroseconds: nil)
        #expect(!over.pin)
        #expect(over.spinMicroseconds == nil)
    }

    @Test func explicitChoicesWin() {
        let p = MemcachedService.cpuPlacement(cpus: 2, cores: 2, pin: true, spinMicroseconds: 50)
        #expect(p.pin)
        #expect(p.spinMicroseconds == 50)
        let q = MemcachedService.cpuPlacement(cpus: 1, cores: 16, pin: false, spinMicroseconds: nil)
        #expect(!q.pin)
        #expect(q.spinMicroseconds == nil)
    }
}
