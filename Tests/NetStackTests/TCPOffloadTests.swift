import Testing
import LWKT
@testable import NetStack

/// The in-memory fast path: a `SimulatedLink` with checksum and segmentation offload
/// (64 KB TSO segments cross whole), the per-CPU cluster cache, and socket timeouts kept
/// as PCB deadlines.
@Suite(.serialized) struct TCPOffloadTests {
    /// Byte-exact echo with 64 KB TSO segments and unchecked checksums; nothing leaks.
    @Test(.timeLimit(.minutes(2)))
    func tsoEchoIsByteExact() async throws {
        try await withSimPair(steering: .flowHash, offloads: [.checksum, .segmentation],
                              configure: { a, b in tcpTestConfiguration(&a); tcpTestConfiguration(&b) }) { (p: SimPair) async throws in
            let server = try EchoServer(p.b, port: 7)
            let base = p.a.pool.outstanding + p.b.pool.outstanding
            try await echoRoundTrip(p.a, to: IPv4Endpoint(SimPair.addressB, 7), payload: pattern(4 << 20, tag: 9), timeout: .seconds(60))
            #expect(p.a.counters.total(.tcpTSOSegmentsSent) > 0, "the sender cut no TSO segments")
            #expect(p.b.counters.total(.tcpTSOSegmentsSent) > 0, "the echo cut no TSO segments")
            #expect(p.a.counters.total(.dropBadTransportChecksum) + p.b.counters.total(.dropBadTransportChecksum) == 0)
            let a = try await p.a.waitForNoConnections(), b = try await p.b.waitForNoConnections()
            #expect(a.connections == 0 && b.connections == 0)
            try await server.stop()
            #expect(server.errors.withLock { $0.isEmpty })
            try await LWKT.sleep(for: .milliseconds(50))
            #expect(p.a.pool.outstanding + p.b.pool.outstanding <= base, "mbufs leaked (cached clusters excluded)")
        }
    }

    /// With faults on an offloading wire, the wire completes partial checksums before it
    /// corrupts frames, so the receiver catches every corrupted TSO segment and the echo
    /// is still byte-exact.
    @Test(.timeLimit(.minutes(2)))
    func tsoUnderFaultsCatchesCorruption() async throws {
        let f = LinkFaults(loss: 0.01, corruption: 0.05, delay: .microseconds(100), seed: 77)
        var back = f
        back.seed = 78
        try await withSimPair(aToB: f, bToA: back, steering: .flowHash, offloads: [.checksum, .segmentation],
                              configure: { a, b in tcpTestConfiguration(&a); tcpTestConfiguration(&b) }) { (p: SimPair) async throws in
            let server = try EchoServer(p.b, port: 7)
            try await echoRoundTrip(p.a, to: IPv4Endpoint(SimPair.addressB, 7), payload: pattern(1 << 20, tag: 3), timeout: .seconds(90))
            let corrupted = p.link.a.statistics.corrupted + p.link.b.statistics.corrupted
            let caught = p.a.counters.total(.dropBadTransportChecksum) + p.b.counters.total(.dropBadTransportChecksum)
                + p.a.counters.total(.dropBadIPChecksum) + p.b.counters.total(.dropBadIPChecksum)
                + p.a.counters.total(.dropBadTransportHeader) + p.b.counters.total(.dropBadTransportHeader)
                + p.a.counters.total(.dropBadIPHeader) + p.b.counters.total(.dropBadIPHeader)
                + p.a.counters.total(.dropNotForUs) + p.b.counters.total(.dropNotForUs)
                + p.a.counters.total(.dropTruncated) + p.b.counters.total(.dropTruncated)
                + p.a.counters.total(.dropUnsupported) + p.b.counters.total(.dropUnsupported)
            #expect(corrupted > 0, "the seed corrupted nothing; the test proves nothing")
            #expect(caught > 0, "corrupted frames got through unchecked")
            try await server.stop()
        }
    }

    /// A cluster freed on the CPU that allocated it is reused from that CPU's cache and
    /// does not count as outstanding; a cache never holds more than its depth.
    @Test func clusterCacheReusesAndBounds() async throws {
        try await withSimPair(cpus: 1) { (p: SimPair) async throws in
            let pool = p.a.pool
            let before = pool.outstanding
            guard let m = pool.allocateCluster() else { Issue.record("no cluster"); return }
            let first = m.opaque
            m.free()
            #expect(pool.outstanding == before)
            guard let again = pool.allocateCluster() else { Issue.record("no cluster"); return }
            #expect(again.opaque == first, "a freed cluster is reused from the CPU's cache")
            #expect(again.length == 0 && again.headroom == MbufPool.defaultHeadroom && again.next == nil)
            again.free()
            var held: [Mbuf] = []
            for _ in 0..<(MbufPool.clusterCacheDepth + 8) { if let c = pool.allocateCluster() { held.append(c) } }
            #expect(held.count == MbufPool.clusterCacheDepth + 8)
            for c in held { c.free() }
            #expect(pool.outstanding == before)
            #expect(pool.cachedClusters(cpu: 0) == MbufPool.clusterCacheDepth)
        }
    }

    /// A read with a timeout on an idle connection ends with ETIMEDOUT, woken by the PCB's
    /// socket deadline, and the connection still works afterwards.
    @Test(.timeLimit(.minutes(1)))
    func readTimeoutUsesThePCBDeadline() async throws {
        try await withSimPair(steering: .flowHash, configure: { a, b in tcpTestConfiguration(&a); tcpTestConfiguration(&b) }) { (p: SimPair) async throws in
            let server = try EchoServer(p.b, port: 7)
            let c = try await TCPConnection.connect(p.a, to: IPv4Endpoint(SimPair.addressB, 7), timeout: .seconds(10))
            let start = ContinuousClock.now
            do throws(TCPError) {
                _ = try await c.read(max: 16, timeout: .milliseconds(100))
                Issue.record("read returned without data")
            } catch {
                #expect(error == .timedOut)
                #expect(error.errno == 110)
            }
            #expect(ContinuousClock.now - start >= .milliseconds(100))
            try await c.write([1, 2, 3], timeout: .seconds(5))
            #expect(try await c.read(max: 16, timeout: .seconds(5)) == [1, 2, 3])
            await c.close(linger: .seconds(2))
            try await server.stop()
        }
    }
}
