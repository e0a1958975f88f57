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

    /// `cpus` (from `--cpus`): that many CPUs and connections instead of up to 2, an
    /// aggregate row per stream row, and no TAP rows.
    static func run(reporter: BenchReporter, quick: Bool, cpus: Int? = nil) async throws {
        let rows: [(String, Int, Bool, InterfaceOffloads)] = [
            ("bulk 64 KiB writes", 65536, false, []),
            ("bulk 64 KiB writes, 64 KB TSO", 65536, false, [.checksum, .segmentation]),
            ("64 B writes, no Nagle", 64, true, []),
        ]
        // LIBELLULA_BENCH_TCP_ROWS=0,2 runs only those rows (for profiling one of them).
        let only = ProcessInfo.processInfo.environment["LIBELLULA_BENCH_TCP_ROWS"].map { Set($0.split(separator: ",").compactMap { Int($0) }) }
        for (i, (label, writeSize, noDelay, offloads)) in rows.enumerated() where only?.contains(i) ?? true {
            try await stream(label: label, writeSize: writeSize, noDelay: noDelay, offloads: offloads,
                             reporter: reporter, quick: quick, cpuCount: cpus)
        }
        if cpus == nil, ProcessInfo.processInfo.environment["LIBELLULA_BENCH_NO_TAP"] == nil {
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

    /// Opens connections to argv[1]:argv[2] for argv[3] seconds from argv[4] processes, each
    /// sending one 32-byte request, reading the reply and closing; prints connections/s.
    static let connector = """
    import os, socket, sys, time
    host, port, secs, procs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    req = b'x' * 32
    pipes = []
    start = time.time()
    for _ in range(procs):
        r, w = os.pipe()
        if os.fork() == 0:
            n, end = 0, start + secs
            while time.time() < end:
                try:
                    s = socket.create_connection((host, port), timeout=5)
                    s.sendall(req); got = b''
                    while len(got) < len(req):
                        b = s.recv(64)
                        if not b: break
                        got += b
                    s.close()
                    if got == req: n += 1
                except OSError:
                    pass
            os.write(w, str(n).encode()); os._exit(0)
        os.close(w); pipes.append(r)
    total = sum(int(os.read(r, 64) or b'0') for r in pipes)
    for _ in range(procs): os.wait()
    print(total / (time.time() - start))
    """

    /// Answers one request per connection on port argv[1] (the Linux side of the
    /// connections/s row): accept, read, write it back, close.
    static let requestServer = """
    import socket, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(1024)
    while True:
        c, _ = s.accept(); b = c.recv(64)
        if b: c.sendall(b)
        c.close()
    """

    /// Sends argv[3] MB of random bytes to the echo at argv[1]:argv[2] while reading the
    /// echo back; prints "ok SECONDS" when the SHA-256 of both matches, else "bad ...".
    static let shaClient = """
    import hashlib, os, socket, sys, threading, time
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) * 1000000
    block = os.urandom(1 << 20); sent = hashlib.sha256()
    s = socket.create_connection((host, port), timeout=60)
    t0 = time.time()
    def send():
        left = n
        while left > 0:
            b = block[:min(left, len(block))]; s.sendall(b); sent.update(b); left -= len(b)
        s.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=send); t.start()
    h = hashlib.sha256(); got = 0
    while True:
        b = s.recv(1 << 20)
        if not b: break
        h.update(b); got += len(b)
    t.join(); s.close()
    ok = got == n and h.digest() == sent.digest()
    print(("ok %f" % (time.time() - t0)) if ok else ("bad %d of %d" % (got, n)))
    """

    /// A threaded TCP echo server on port argv[1] (the Linux side of the SHA-256 row).
    static let echoServer = """
    import socket, sys, threading
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(16)
    def serve(c):
        while True:
            b = c.recv(1 << 20)
            if not b: break
            c.sendall(b)
        c.close()
    while True:
        c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
    """

    /// What a Libellula server thread does with one connection.
    enum Service: Sendable { case sink, oneRequest, echo }

    static func serve(_ conn: TCPConnection, _ service: Service) async {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 18, alignment: 64)
        defer { buf.deallocate() }
        switch service {
        case .sink:
            while let n = try? await conn.read(into: buf, timeout: .seconds(30)), n > 0 {}
        case .oneRequest:
            var got = 0
            while got < 32, let n = try? await conn.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[got..<64]), timeout: .seconds(5)),
                  n > 0 { got += n }
            if got > 0 { try? await conn.write(UnsafeRawBufferPointer(rebasing: buf[0..<got]), timeout: .seconds(5)) }
        case .echo:
            while let n = try? await conn.read(into: buf, timeout: .seconds(30)), n > 0 {
                do { try await conn.write(UnsafeRawBufferPointer(rebasing: buf[0..<n]), timeout: .seconds(30)) } catch { break }
            }
        }
        await conn.close(linger: .seconds(1))
    }

    /// Runs a Python snippet in the rig's namespace `ns` and returns its output.
    /// (Bounded by `timeout`, so a stuck row cannot hang the bench.)
    static func python(_ ns: String, _ code: String, _ args: [String], limit: Int = 300) -> String {
        NetBench.sh("/usr/sbin/ip", ["netns", "exec", ns, "/usr/bin/timeout", "\(limit)", "/usr/bin/python3", "-c", code] + args).1
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Starts a Python server in `ns`.
    static func spawn(_ ns: String, _ code: String, _ args: [String]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", ns, "/usr/bin/python3", "-c", code] + args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// The TAP rows, each next to Linux ↔ Linux over veth in the same rig and run (the
    /// same Python client in the peer namespace; the Linux servers run in the router
    /// namespace): one bulk flow (TSO and checksum offload), connections per second (open,
    /// one request, close), and a 100 MB echo whose SHA-256 the client checks.
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
        let peer = "\(prefix)-peer", router = "\(prefix)-rtr"
        let mib = quick ? "256" : "1024"
        let connSeconds = quick ? "2" : "5"
        let shaMB = ProcessInfo.processInfo.environment["LIBELLULA_BENCH_SHA_MB"] ?? "100"
        let verbose = ProcessInfo.processInfo.environment["LIBELLULA_BENCH_VERBOSE"] != nil
        // Linux ↔ Linux over veth.
        let servers = [try spawn(router, sink, ["9300"]), try spawn(router, requestServer, ["9302"]),
                       try spawn(router, echoServer, ["9304"])]
        try await Task.sleep(for: .milliseconds(500))
        let linuxBulk = Double(python(peer, sender, ["10.200.1.254", "9300", mib])) ?? 0
        let linuxConns = Double(python(peer, connector, ["10.200.1.254", "9302", connSeconds, "4"])) ?? 0
        let linuxSHA = python(peer, shaClient, ["10.200.1.254", "9304", shaMB])
        // SIGKILL: the children inherit the CPUs' blocked signal mask, so SIGTERM would wait.
        for s in servers { kill(s.processIdentifier, SIGKILL); s.waitUntilExit() }
        // Linux ↔ Libellula over the TAP.
        let cpus = min(2, max(1, LWKT.onlineCores))
        let system = try LWKT.boot(cpus: cpus, configuration: .init(warnings: false))
        let slab = SlabAllocator(system: system, configuration: .init(debug: false))
        let tap = try TAPInterface(name: "\(prefix)t", queues: cpus)
        _ = NetBench.sh("/bin/bash", [script, "attach", prefix, "\(prefix)t"])
        var c = NetStackConfiguration(address: IPv4Address(10, 200, 2, 1), gateway: IPv4Address(10, 200, 2, 254))
        c.tcp.receiveBufferSize = 4 << 20
        c.tcp.msl = .seconds(1)
        let stack = try NetStack(system: system, allocator: slab, interface: tap, configuration: c)
        try stack.start()
        var listeners: [TCPListener] = []
        var threads: [LWKTThread] = []
        for (port, service) in [(UInt16(9301), Service.sink), (9303, .oneRequest), (9305, .echo)] {
            for l in try stack.listen(port: port, backlog: 1024) {
                listeners.append(l)
                let cpu = try system.cpu(l.cpuID)
                threads.append(LWKTThread.spawn(on: cpu, name: "tcp-tap-accept") {
                    while let conn = try? await l.accept(timeout: nil) {
                        LWKTThread.spawn(on: cpu, name: "tcp-tap-conn") { await serve(conn, service) }
                    }
                })
            }
        }
        try await Task.sleep(for: .milliseconds(200))
        let ours = Double(python(peer, sender, ["10.200.2.1", "9301", mib])) ?? 0
        if verbose { print("tcp TAP: bulk \(ours)") }
        let ourConns = python(peer, connector, ["10.200.2.1", "9303", connSeconds, "4"], limit: 60)
        if verbose { print("tcp TAP: connections \(ourConns)\n\(stack.counters.table())") }
        let ourSHA = python(peer, shaClient, ["10.200.2.1", "9305", shaMB], limit: 120)
        if verbose { print("tcp TAP: sha \(ourSHA)") }
        reporter.report("tcp TAP bulk, Linux sender → Libellula (\(cpus) CPU)", unit: "Gbit/s", value: ours,
                        baseline: "Linux → Linux over veth", baselineValue: linuxBulk)
        reporter.report("tcp TAP connections/s (open, 32 B request, close; 4 Linux clients)", unit: "conn/s",
                        value: Double(ourConns) ?? 0,
                        baseline: "Linux Python server over veth", baselineValue: linuxConns)
        func rate(_ line: String) -> Double? {
            let parts = line.split(separator: " ")
            guard parts.first == "ok", parts.count == 2, let secs = Double(parts[1]), secs > 0,
                  let mb = Double(shaMB) else { return nil }
            return mb * 1e6 * 8 / secs / 1e9
        }
        if let o = rate(ourSHA), let l = rate(linuxSHA) {
            reporter.report("tcp TAP \(shaMB) MB echo, SHA-256 checked by the Linux client", unit: "Gbit/s each way", value: o,
                            baseline: "Linux echo over veth", baselineValue: l)
        } else {
            print("tcp TAP \(shaMB) MB echo with SHA-256: FAILED (Libellula: \(ourSHA); Linux: \(linuxSHA))")
        }
        for l in listeners { _ = try? await system.run(on: l.cpuID) { l.close() } }
        for t in threads { t.cancel() }
        try await stack.stop()
        _ = try await system.shutdown()
    }

    /// One connection per CPU streaming one way for a few seconds; goodput, segments and
    /// (with the malloc counter preloaded) malloc calls per segment are measured over the
    /// steady part only, after a warm-up that lets the windows and buffers grow.
    static func stream(label: String, writeSize: Int, noDelay: Bool, offloads: InterfaceOffloads,
                       reporter: BenchReporter, quick: Bool, cpuCount: Int? = nil) async throws {
        let cpus = cpuCount ?? min(2, max(1, LWKT.onlineCores))
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
        if cpuCount != nil {
            reporter.report("tcp \(label): segments processed, \(cpus) CPUs, aggregate", unit: "M seg/s", value: segs / secs / 1e6)
            reporter.report("tcp \(label): goodput, \(cpus) CPUs, aggregate", unit: "Gbit/s", value: bytes * 8 / secs / 1e9)
        }
        if let m0, let m1 {
            reporter.report("tcp \(label): malloc calls per segment", unit: "", value: Double(m1 - m0) / max(1, segs))
        }
        for l in listeners { _ = try? await system.run(on: l.cpuID) { l.close() } }
        try await a.stop()
        try await b.stop()
        _ = try await system.shutdown()
    }
}
