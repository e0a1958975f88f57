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
        let rows: [(String, Int, Bool, InterfaceOffloads)] = [
            ("bulk 64 KiB writes", 65536, false, []),
            ("bulk 64 KiB writes, 64 KB TSO", 65536, false, [.checksum, .segmentation]),
            ("64 B writes, no Nagle", 64, true, []),
        ]
        for (label, writeSize, noDelay, offloads) in rows {
            try await stream(label: label, writeSize: writeSize, noDelay: noDelay, offloads: offloads,
                             reporter: reporter, quick: quick)
        }
        if ProcessInfo.processInfo.environment["LIBELLULA_BENCH_NO_TAP"] == nil {
            try await tap(reporter: reporter, quick: quick)
        }
    }

    /// Malloc-family calls so far, when `Scripts/malloc-count.c` is preloaded (it exports
    /// `malloc_count_calls`); nil otherwise.
    static func mallocCalls() -> Int? {
        guard let handle = dlopen(nil, RTLD_NOW), let sym = dlsym(handle, "malloc_count_calls") else { return nil }
        typealias Counter = @convention(c) () -> Int
        return unsafeBitCast(sym, to: Counter.self)()
    }

    /// Sends argv[3] MiB to argv[1]:argv[2] and prints the goodput in Gbit/s (until the
    /// receiver's close after end of stream).
    static let sender = """
    import socket, sys, time
    host, port, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    buf = b'x' * (1 << 20)
    s = socket.create_connection((host, port), timeout=60)
    t = time.time()
    for _ in range(mib): s.sendall(buf)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536): pass
    print(mib * 8 * (1 << 20) / (time.time() - t) / 1e9)
    """

    /// Reads one connection on port argv[1] to its end, then closes.
    static let sink = """
    import socket, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(1); s.settimeout(30)
    c, _ = s.accept(); b = bytearray(1 << 20)
    while c.recv_into(b): pass
    c.close()
    """

    /// One bulk flow from a Linux sender to a Libellula sink over the TAP (with TSO and
    /// checksum offload), next to the same sender to a Linux sink over veth.
    static func tap(reporter: BenchReporter, quick: Bool) async throws {
        let script = "Scripts/netrig.sh"
        guard getuid() == 0, FileManager.default.fileExists(atPath: script),
              FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") else {
            print("tcp bench: the TAP rows need root, /usr/bin/python3 and \(script) (run from the repository root); skipped")
            return
        }
        let prefix = "lbc\(getpid() % 100_000)"
        guard NetBench.sh("/bin/bash", [script, "up", prefix]).0 == 0 else { print("tcp bench: rig setup failed; skipped"); return }
        defer { _ = NetBench.sh("/bin/bash", [script, "down", prefix]) }
        let mib = quick ? "256" : "1024"
        // Linux → Linux over veth.
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        server.arguments = ["netns", "exec", "\(prefix)-rtr", "/usr/bin/python3", "-c", sink, "9300"]
        try server.run()
        try await Task.sleep(for: .milliseconds(400))
        let linux = Double(NetBench.sh("/usr/sbin/ip", ["netns", "exec", "\(prefix)-peer", "/usr/bin/python3", "-c", sender,
                                                         "10.200.1.254", "9300", mib]).1.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        server.terminate()
        server.waitUntilExit()
        // Linux → Libellula over the TAP.
        let cpus = min(2, max(1, LWKT.onlineCores))
        let system = try LWKT.boot(cpus: cpus, configuration: .init(warnings: false))
        let slab = SlabAllocator(system: system, configuration: .init(debug: false))
        let tap = try TAPInterface(name: "\(prefix)t", queues: cpus)
        _ = NetBench.sh("/bin/bash", [script, "attach", prefix, "\(prefix)t"])
        var c = NetStackConfiguration(address: IPv4Address(10, 200, 2, 1), gateway: IPv4Address(10, 200, 2, 254))
        c.tcp.receiveBufferSize = 4 << 20
        let stack = try NetStack(system: system, allocator: slab, interface: tap, configuration: c)
        try stack.start()
        let listeners = try stack.listen(port: 9301)
        var threads: [LWKTThread] = []
        for l in listeners {
            threads.append(LWKTThread.spawn(on: try system.cpu(l.cpuID), name: "tcp-tap-sink") {
                guard let conn = try? await l.accept(timeout: .seconds(30)) else { return }
                let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 18, alignment: 64)
                defer { buf.deallocate() }
                while let n = try? await conn.read(into: buf, timeout: .seconds(30)), n > 0 {}
                await conn.close(linger: .seconds(1))
            })
        }
        try await Task.sleep(for: .milliseconds(200))
        let ours = Double(NetBench.sh("/usr/sbin/ip", ["netns", "exec", "\(prefix)-peer", "/usr/bin/python3", "-c", sender,
                                                        "10.200.2.1", "9301", mib]).1.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        reporter.report("tcp TAP bulk, Linux sender → Libellula (\(cpus) CPU)", unit: "Gbit/s", value: ours,
                        baseline: "Linux → Linux over veth", baselineValue: linux)
        for l in listeners { _ = try? await system.run(on: l.cpuID) { l.close() } }
        for t in threads { t.cancel() }
        try await stack.stop()
        _ = try await system.shutdown()
    }

    /// One connection per CPU streaming one way for a few seconds; goodput, segments and
    /// (with the malloc counter preloaded) malloc calls per segment are measured over the
    /// steady part only, after a warm-up that lets the windows and buffers grow.
    static func stream(label: String, writeSize: Int, noDelay: Bool, offloads: InterfaceOffloads,
                       reporter: BenchReporter, quick: Bool) async throws {
        let cpus = min(2, max(1, LWKT.onlineCores))
        let seconds = quick ? 1.0 : 3.0
        let warmup = 0.3
        let system = try LWKT.boot(cpus: cpus, configuration: .init(warnings: false))
        let slab = SlabAllocator(system: system, configuration: .init(debug: false))
        let link = SimulatedLink(queues: cpus, steering: .flowHash, offloads: offloads)
        let a = try NetStack(system: system, allocator: slab, interface: link.a, configuration: NetStackConfiguration(address: clientIP))
        let b = try NetStack(system: system, allocator: slab, interface: link.b, configuration: NetStackConfiguration(address: serverIP))
        try a.start()
        try b.start()
        let listeners = try b.listen(port: 5001)
        let received = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
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
                while !stop.load(ordering: .relaxed) {
                    do { try await c.write(UnsafeRawBufferPointer(buf), timeout: .seconds(10)) } catch { break }
                }
                try? c.shutdown(.write)
                await c.close(linger: .seconds(2))
            })
        }
        func segments() -> Int { a.counters.total(.tcpSegmentsReceived) + b.counters.total(.tcpSegmentsReceived) }
        try await Task.sleep(for: .nanoseconds(Int64(warmup * 1e9)))
        let t0 = lb_now_ns(), bytes0 = received.load(ordering: .relaxed), seg0 = segments(), m0 = mallocCalls()
        try await Task.sleep(for: .nanoseconds(Int64(seconds * 1e9)))
        let t1 = lb_now_ns(), bytes1 = received.load(ordering: .relaxed), seg1 = segments(), m1 = mallocCalls()
        stop.store(true, ordering: .relaxed)
        for t in threads { await t.join() }
        let secs = Double(t1 &- t0) / 1e9
        let bytes = Double(bytes1 - bytes0)
        let segs = Double(seg1 - seg0)
        let tso = a.counters.total(.tcpTSOSegmentsSent) > 0
            ? " (\(Int(Double(received.load(ordering: .relaxed)) / max(1, Double(b.counters.total(.tcpSegmentsReceived)))) / 1024) KiB avg)" : ""
        reporter.report("tcp \(label): goodput", unit: "Gbit/s per CPU", value: bytes * 8 / secs / 1e9 / Double(cpus),
                        baseline: offloads.contains(.segmentation) ? "goal" : nil, baselineValue: offloads.contains(.segmentation) ? 20 : nil)
        reporter.report("tcp \(label): segments processed\(tso)", unit: "M seg/s per CPU", value: segs / secs / 1e6 / Double(cpus),
                        baseline: "goal", baselineValue: 1.0)
        if let m0, let m1 {
            reporter.report("tcp \(label): malloc calls per segment", unit: "", value: Double(m1 - m0) / max(1, segs))
        }
        for l in listeners { _ = try? await system.run(on: l.cpuID) { l.close() } }
        try await a.stop()
        try await b.stop()
        _ = try await system.shutdown()
    }
}
