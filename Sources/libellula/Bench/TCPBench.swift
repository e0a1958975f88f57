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
        // (label, write size, Nagle off, link offloads, link MTU). MTU 116 leaves 76 bytes
        // for TCP payload and options (the MSS in use is printed).
        // The tag names the row in the table (the reporter keeps 48 characters of a name);
        // a line before each row's results describes it in full.
        let rows: [(String, Int, Bool, InterfaceOffloads, Int)] = [
            ("bulk", 65536, false, [], 1500),
            ("tso", 65536, false, [.checksum, .segmentation], 1500),
            ("64B-writes", 64, true, [], 1500),
            ("small/sw", 65536, false, [], 116),
            ("small/offload", 65536, false, [.checksum], 116),
        ]
        // LIBELLULA_BENCH_TCP_ROWS=0,2 runs only those rows (for profiling one of them).
        let only = ProcessInfo.processInfo.environment["LIBELLULA_BENCH_TCP_ROWS"].map { Set($0.split(separator: ",").compactMap { Int($0) }) }
        for (i, (label, writeSize, noDelay, offloads, mtu)) in rows.enumerated() where only?.contains(i) ?? true {
            try await stream(label: label, writeSize: writeSize, noDelay: noDelay, offloads: offloads, mtu: mtu,
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

    /// Runs the C peer (`Scripts/tcp-peer.c`, built by `Scripts/bench-tcp.sh`) in the rig's
    /// namespace `ns` and returns its output. (Bounded by `timeout`, so a stuck row cannot
    /// hang the bench.)
    static func peer(_ binary: String, _ ns: String, _ args: [String], limit: Int = 300) -> String {
        NetBench.sh("/usr/sbin/ip", ["netns", "exec", ns, "/usr/bin/timeout", "\(limit)", binary] + args).1
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Starts a C peer server in `ns`.
    static func spawn(_ binary: String, _ ns: String, _ args: [String]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", ns, binary] + args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// The TAP rows, each next to Linux ↔ Linux over veth in the same rig and run (the
    /// same C client, `tcp-peer`, in the peer namespace; the Linux servers are the same C
    /// program in the router namespace): one bulk flow (TSO and checksum offload),
    /// connections per second (open, one request, close), and an echo of `SHA_MB`
    /// megabytes that the client checks byte for byte.
    static func tap(reporter: BenchReporter, quick: Bool) async throws {
        let script = "Scripts/netrig.sh"
        let binary = ProcessInfo.processInfo.environment["LIBELLULA_TCP_PEER"] ?? ""
        guard getuid() == 0, FileManager.default.fileExists(atPath: script),
              FileManager.default.isExecutableFile(atPath: binary) else {
            print("tcp bench: the TAP rows need root, \(script) (run from the repository root) and the C peer in "
                  + "LIBELLULA_TCP_PEER (Scripts/bench-tcp.sh builds Scripts/tcp-peer.c); skipped")
            return
        }
        let prefix = "lbc\(getpid() % 100_000)"
        guard NetBench.sh("/bin/bash", [script, "up", prefix]).0 == 0 else { print("tcp bench: rig setup failed; skipped"); return }
        defer { _ = NetBench.sh("/bin/bash", [script, "down", prefix]) }
        let peerNS = "\(prefix)-peer", router = "\(prefix)-rtr"
        let mib = quick ? "256" : "1024"
        let connSeconds = quick ? "2" : "5"
        let shaMB = ProcessInfo.processInfo.environment["LIBELLULA_BENCH_SHA_MB"] ?? "100"
        let verbose = ProcessInfo.processInfo.environment["LIBELLULA_BENCH_VERBOSE"] != nil
        // Linux ↔ Linux over veth.
        let servers = [try spawn(binary, router, ["sink", "9300"]), try spawn(binary, router, ["request", "9302"]),
                       try spawn(binary, router, ["echo", "9304"])]
        try await Task.sleep(for: .milliseconds(300))
        let linuxBulk = Double(peer(binary, peerNS, ["source", "10.200.1.254", "9300", mib])) ?? 0
        let linuxConns = Double(peer(binary, peerNS, ["connect", "10.200.1.254", "9302", connSeconds, "4"])) ?? 0
        let linuxSHA = peer(binary, peerNS, ["verify", "10.200.1.254", "9304", shaMB])
        if verbose { print("tcp veth: bulk \(linuxBulk) conns \(linuxConns) echo \(linuxSHA)") }
        // SIGKILL: the children inherit the CPUs' blocked signal mask, so SIGTERM would wait.
        for s in servers { kill(s.processIdentifier, SIGKILL); s.waitUntilExit() }
        // Linux ↔ Libellula over the TAP.
        let cpus = min(2, max(1, LWKT.onlineCores))
        // LIBELLULA_BENCH_IDLE_SPIN_US sets the CPUs' idle spin window (default: LWKT's).
        let spin = ProcessInfo.processInfo.environment["LIBELLULA_BENCH_IDLE_SPIN_US"].flatMap { Int($0) }
        let system = try LWKT.boot(cpus: cpus, configuration: .init(idleSpin: spin.map { .microseconds($0) }, warnings: false))
        let slab = SlabAllocator(system: system, configuration: .init(debug: false))
        let tap = try TAPInterface(name: "\(prefix)t", queues: cpus)
        // As `serve --net tap` does: each flow's packets reach its owner CPU's queue.
        let steering = tap.installFlowSteering(cpus: cpus)
        if verbose { print("tcp TAP: flow steering \(steering)") }
        _ = NetBench.sh("/bin/bash", [script, "attach", prefix, "\(prefix)t"])
        var c = NetStackConfiguration(address: IPv4Address(10, 200, 2, 1), gateway: IPv4Address(10, 200, 2, 254))
        c.tcp.receiveBufferSize = 4 << 20
        c.tcp.msl = .seconds(1)
        // LIBELLULA_TCP_HOLD_SMALL_WRITES=0: every socket write transmits at once (A/B).
        if ProcessInfo.processInfo.environment["LIBELLULA_TCP_HOLD_SMALL_WRITES"] == "0" { c.tcp.holdSmallWrites = false }
        if verbose { print("tcp TAP: hold small writes \(c.tcp.holdSmallWrites)") }
        let stack = try NetStack(system: system, allocator: slab, interface: tap, configuration: c)
        try stack.start()
        var listeners: [TCPListener] = []
        var threads: [LWKTThread] = []
        for (port, service) in [(UInt16(9301), Service.sink), (9303, .oneRequest), (9305, .echo)] {
            for l in try stack.listen(port: port, backlog: 1024) {
                listeners.append(l)
                let cpu = try system.cpu(l.cpuID)
                if service == .oneRequest {
                    // Like the Linux server (`tcp-peer request`: threads that accept and serve
                    // inline): four threads per CPU, each serving what it accepted itself.
                    for _ in 0..<4 {
                        threads.append(LWKTThread.spawn(on: cpu, name: "tcp-tap-request") {
                            while let conn = try? await l.accept(timeout: nil) { await serve(conn, service) }
                        })
                    }
                    continue
                }
                threads.append(LWKTThread.spawn(on: cpu, name: "tcp-tap-accept") {
                    while let conn = try? await l.accept(timeout: nil) {
                        LWKTThread.spawn(on: cpu, name: "tcp-tap-conn") { await serve(conn, service) }
                    }
                })
            }
        }
        try await Task.sleep(for: .milliseconds(200))
        let ours = Double(peer(binary, peerNS, ["source", "10.200.2.1", "9301", mib])) ?? 0
        if verbose { print("tcp TAP: bulk \(ours)") }
        let ourConns = peer(binary, peerNS, ["connect", "10.200.2.1", "9303", connSeconds, "4"], limit: 60)
        if verbose { print("tcp TAP: connections \(ourConns)\n\(stack.counters.table())") }
        let ourSHA = peer(binary, peerNS, ["verify", "10.200.2.1", "9305", shaMB], limit: 120)
        if verbose { print("tcp TAP: sha \(ourSHA)") }
        reporter.report("tcp TAP bulk, Linux sender → Libellula (\(cpus) CPU)", unit: "Gbit/s", value: ours,
                        baseline: "Linux → Linux over veth", baselineValue: linuxBulk)
        reporter.report("tcp TAP connections/s (open, 32 B request, close; 4 Linux clients)", unit: "conn/s",
                        value: Double(ourConns) ?? 0,
                        baseline: "Linux server over veth", baselineValue: linuxConns)
        func rate(_ line: String) -> Double? {
            let parts = line.split(separator: " ")
            guard parts.first == "ok", parts.count == 2, let secs = Double(parts[1]), secs > 0,
                  let mb = Double(shaMB) else { return nil }
            return mb * 1e6 * 8 / secs / 1e9
        }
        if let o = rate(ourSHA), let l = rate(linuxSHA) {
            reporter.report("tcp TAP \(shaMB) MB echo, checked byte for byte", unit: "Gbit/s each way", value: o,
                            baseline: "Linux echo over veth", baselineValue: l)
        } else {
            print("tcp TAP \(shaMB) MB echo: FAILED (Libellula: \(ourSHA); Linux: \(linuxSHA))")
        }
        for l in listeners { _ = try? await system.run(on: l.cpuID) { l.close() } }
        for t in threads { t.cancel() }
        try await stack.stop()
        _ = try await system.shutdown()
    }

    /// One connection per CPU streaming one way (stack a's client writes, stack b's server
    /// reads) for a few seconds; goodput, segments and (with the malloc counter preloaded)
    /// malloc calls per segment are measured over the steady part only, after a warm-up
    /// that lets the windows and buffers grow. Segments are counted where they are sent:
    /// data segments a → b, pure ACKs b → a (and whatever else each side sent), so
    /// "all segments" is every TCP segment either stack processed.
    static func stream(label: String, writeSize: Int, noDelay: Bool, offloads: InterfaceOffloads, mtu: Int,
                       reporter: BenchReporter, quick: Bool, cpuCount: Int? = nil) async throws {
        let cpus = cpuCount ?? min(2, max(1, LWKT.onlineCores))
        let checksums = offloads.contains(.checksum) ? "checksum offload (veth-like)" : "software checksums"
        let segs = offloads.contains(.segmentation) ? "64 KB TSO segments" : "at most \(mtu - 40) B of payload per segment"
        print("tcp row \(label): \(writeSize) B writes\(noDelay ? ", Nagle off" : ""), link MTU \(mtu) (\(segs)), \(checksums); "
              + "\(cpus) CPUs, one connection per CPU, both ends on that CPU")
        let seconds = quick ? 1.0 : 3.0
        let warmup = 0.3
        let system = try LWKT.boot(cpus: cpus, configuration: .init(warnings: false))
        let slab = SlabAllocator(system: system, configuration: .init(debug: false))
        let link = SimulatedLink(queues: cpus, mtu: mtu, steering: .flowHash, offloads: offloads)
        let a = try NetStack(system: system, allocator: slab, interface: link.a, configuration: NetStackConfiguration(address: clientIP))
        let b = try NetStack(system: system, allocator: slab, interface: link.b, configuration: NetStackConfiguration(address: serverIP))
        try a.start()
        try b.start()
        let listeners = try b.listen(port: 5001)
        let received = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let mss = Atomic<Int>(0)
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
                mss.store(c.maximumSegmentSize, ordering: .relaxed)
                let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: writeSize, alignment: 64)
                defer { buf.deallocate() }
                while !stop.load(ordering: .relaxed) {
                    do { try await c.write(UnsafeRawBufferPointer(buf), timeout: .seconds(10)) } catch { break }
                }
                try? c.shutdown(.write)
                await c.close(linger: .seconds(2))
            })
        }
        struct Counts {
            var data = 0, acks = 0, all = 0, bytes = 0, mallocs: Int?
        }
        func counts() -> Counts {
            let dataSent = a.counters.total(.tcpDataSegmentsSent)
            return Counts(data: dataSent,
                          acks: b.counters.total(.tcpSegmentsSent) - b.counters.total(.tcpDataSegmentsSent),
                          all: a.counters.total(.tcpSegmentsReceived) + b.counters.total(.tcpSegmentsReceived),
                          bytes: received.load(ordering: .relaxed), mallocs: mallocCalls())
        }
        try await Task.sleep(for: .nanoseconds(Int64(warmup * 1e9)))
        let t0 = lb_now_ns(), c0 = counts()
        try await Task.sleep(for: .nanoseconds(Int64(seconds * 1e9)))
        let t1 = lb_now_ns(), c1 = counts()
        stop.store(true, ordering: .relaxed)
        for t in threads { await t.join() }
        let secs = Double(t1 &- t0) / 1e9
        let perCPU = secs * Double(cpus)
        let bytes = Double(c1.bytes - c0.bytes)
        let data = Double(c1.data - c0.data), acks = Double(c1.acks - c0.acks), all = Double(c1.all - c0.all)
        let avg = Int(bytes / max(1, data))
        let mssInUse = mss.load(ordering: .relaxed)
        // (The average moves with what the buffers and the wire hold at the two snapshots;
        // the MSS is what every full data segment carries.)
        print("tcp row \(label): MSS in use (payload per full segment, options excluded) \(mssInUse) B; "
              + "bytes read per data segment sent in the interval \(avg) B")
        reporter.report("tcp \(label): goodput", unit: "Gbit/s per CPU", value: bytes * 8 / perCPU / 1e9,
                        baseline: offloads.contains(.segmentation) ? "goal" : nil, baselineValue: offloads.contains(.segmentation) ? 20 : nil)
        reporter.report("tcp \(label): data seg a→b (MSS \(mssInUse) B)", unit: "M seg/s per CPU",
                        value: data / perCPU / 1e6, baseline: "goal", baselineValue: 1.0)
        reporter.report("tcp \(label): pure ACKs b→a (\(String(format: "%.2f", acks / max(1, data)))/data seg)",
                        unit: "M seg/s per CPU", value: acks / perCPU / 1e6)
        reporter.report("tcp \(label): all segments (both stacks)", unit: "M seg/s per CPU", value: all / perCPU / 1e6,
                        baseline: "goal", baselineValue: 1.0)
        if cpuCount != nil {
            reporter.report("tcp \(label): all segments, \(cpus) CPUs, aggregate", unit: "M seg/s", value: all / secs / 1e6)
            reporter.report("tcp \(label): goodput, \(cpus) CPUs, aggregate", unit: "Gbit/s", value: bytes * 8 / secs / 1e9)
        }
        if let m0 = c0.mallocs, let m1 = c1.mallocs {
            reporter.report("tcp \(label): mallocs per segment", unit: "", value: Double(m1 - m0) / max(1, all))
        }
        for l in listeners { _ = try? await system.run(on: l.cpuID) { l.close() } }
        try await a.stop()
        try await b.stop()
        _ = try await system.shutdown()
    }
}
