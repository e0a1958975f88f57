import CLibellula
import Foundation
import LWKT
import NetStack
import Slab
import Synchronization

/// `libellula bench net` (TCP rows): two Libellula stacks on one LWKT system joined by a
/// flow-steered `SimulatedLink`; on every CPU one connection, opened from that CPU (so
/// both ends live there), carries a one-way stream: bulk 64 KiB writes, or 64-byte
/// writes with Nagle off. Reports goodput and TCP segments processed (both stacks, data
/// and ACKs) per CPU.
enum TCPBench {
    static let clientIP = IPv4Address(10, 0, 0, 1)
    static let serverIP = IPv4Address(10, 0, 0, 2)

    static func run(reporter: BenchReporter, quick: Bool) async throws {
        for (label, writeSize, noDelay) in [("bulk 64 KiB writes", 65536, false), ("64 B writes, no Nagle", 64, true)] {
            try await stream(label: label, writeSize: writeSize, noDelay: noDelay, reporter: reporter, quick: quick)
        }
    }

    static func stream(label: String, writeSize: Int, noDelay: Bool, reporter: BenchReporter, quick: Bool) async throws {
        let cpus = min(2, max(1, LWKT.onlineCores))
        let seconds = quick ? 1.0 : 3.0
        let system = try LWKT.boot(cpus: cpus, configuration: .init(warnings: false))
        let slab = SlabAllocator(system: system, configuration: .init(debug: false))
        let link = SimulatedLink(queues: cpus, steering: .flowHash)
        let a = try NetStack(system: system, allocator: slab, interface: link.a, configuration: NetStackConfiguration(address: clientIP))
        let b = try NetStack(system: system, allocator: slab, interface: link.b, configuration: NetStackConfiguration(address: serverIP))
        try a.start()
        try b.start()
        let listeners = try b.listen(port: 5001)
        let received = Atomic<Int>(0)
        let start = Atomic<UInt64>(0)
        var threads: [LWKTThread] = []
        for k in 0..<cpus {
            let cpu = try system.cpu(k)
            threads.append(LWKTThread.spawn(on: cpu, name: "tcp-sink\(k)") {
                guard let c = try? await listeners[k].accept(timeout: .seconds(10)) else { return }
                let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 64)
                defer { buf.deallocate() }
                while let n = try? await c.read(into: buf, timeout: .seconds(10)), n > 0 { received.add(n, ordering: .relaxed) }
                await c.close(linger: .seconds(1))
            })
            threads.append(LWKTThread.spawn(on: cpu, name: "tcp-source\(k)") {
                guard let c = try? await TCPConnection.connect(a, to: IPv4Endpoint(serverIP, 5001), timeout: .seconds(10)) else { return }
                c.noDelay = noDelay
                let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: writeSize, alignment: 64)
                defer { buf.deallocate() }
                _ = start.compareExchange(expected: 0, desired: lb_now_ns(), ordering: .relaxed)
                let end = ContinuousClock.now + .nanoseconds(Int64(seconds * 1e9))
                while ContinuousClock.now < end {
                    do { try await c.write(UnsafeRawBufferPointer(buf), timeout: .seconds(10)) } catch { break }
                }
                try? c.shutdown(.write)
                await c.close(linger: .seconds(2))
            })
        }
        for t in threads { await t.join() }
        let secs = Double(lb_now_ns() &- start.load(ordering: .relaxed)) / 1e9
        let bytes = Double(received.load(ordering: .relaxed))
        let segments = Double(a.counters.total(.tcpSegmentsReceived) + b.counters.total(.tcpSegmentsReceived))
        reporter.report("tcp \(label): goodput", unit: "Gbit/s per CPU", value: bytes * 8 / secs / 1e9 / Double(cpus))
        reporter.report("tcp \(label): segments processed", unit: "M seg/s per CPU", value: segments / secs / 1e6 / Double(cpus),
                        baseline: "goal", baselineValue: 1.0)
        for l in listeners { _ = try? await system.run(on: l.cpuID) { l.close() } }
        try await a.stop()
        try await b.stop()
        _ = try await system.shutdown()
    }
}
