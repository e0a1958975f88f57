import CLibellula
import Foundation
import LWKT
import NetStack
import Slab
import Synchronization

/// `libellula bench net`: small-packet UDP echo through the stack over `SimulatedLink`
/// (per CPU), and UDP echo request rate over the TAP (`Scripts/bench-udp.sh`: a C generator
/// against Libellula's socket-application and in-stack echoes and a Linux socket echo, in
/// the same rig and run).
enum NetBench {
    static func run(reporter: BenchReporter, quick: Bool) async throws {
        try await simulated(reporter: reporter, quick: quick)
        try await TCPBench.run(reporter: reporter, quick: quick)
        try await tap(reporter: reporter, quick: quick)
    }

    static let clientIP = IPv4Address(10, 0, 0, 1)
    static let serverIP = IPv4Address(10, 0, 0, 2)

    /// A 60-byte UDP frame from `sport` to the echo port.
    static func frame(sport: UInt16, dst: MACAddress, src: MACAddress) -> [UInt8] {
        let payload = 18
        var f = [UInt8](repeating: 0, count: 14 + 20 + 8 + payload)
        f.withUnsafeMutableBytes { b in
            let p = b.baseAddress!
            EthernetHeader(destination: dst, source: src, etherType: EthernetHeader.typeIPv4).write(to: p)
            IPv4Header(totalLength: 20 + 8 + payload, proto: IPv4Header.protocolUDP, source: clientIP, destination: serverIP,
                       identification: 1).write(to: p + 14)
            for i in 0..<payload { NetworkBytes.put8(p, 42 + i, UInt8(i)) }
            UDPHeader(sourcePort: sport, destinationPort: 7, length: 8 + payload).write(to: p + 34)
            var c = InternetChecksum()
            c.addPseudoHeader(source: clientIP, destination: serverIP, protocol: IPv4Header.protocolUDP, length: 8 + payload)
            c.add(p + 34, count: 8 + payload)
            NetworkBytes.put16(p, 40, c.value)
        }
        return f
    }

    /// Shared totals of one run.
    final class Totals: Sendable {
        let sent = Atomic<Int>(0)
        let echoed = Atomic<Int>(0)
    }

    enum Mode { case link, inject }

    static func simulated(reporter: BenchReporter, quick: Bool) async throws {
        let cpus = min(2, max(1, LWKT.onlineCores))
        let seconds = quick ? 1.0 : 3.0
        for (steering, mode, label) in [(SimulatedLink.Steering.flowHash, Mode.link, "flow-steered link"),
                                        (.roundRobin, .link, "round-robin link (forwarding)"),
                                        (.flowHash, .inject, "frames injected at the driver")] {
            let system = try LWKT.boot(cpus: cpus, configuration: .init(warnings: false))
            let slab = SlabAllocator(system: system, configuration: .init(debug: false))
            let link = SimulatedLink(queues: cpus, steering: steering)
            var c = NetStackConfiguration(address: serverIP)
            c.udpEchoPort = 7
            let stack = try NetStack(system: system, allocator: slab, interface: link.b, configuration: c)
            try stack.start()
            // Teach the server the client's hardware address with an ARP request.
            var arp = [UInt8](repeating: 0, count: 42)
            arp.withUnsafeMutableBytes { b in
                EthernetHeader(destination: .broadcast, source: link.a.macAddress, etherType: EthernetHeader.typeARP).write(to: b.baseAddress!)
                ARPPacket(operation: ARPPacket.request, senderMAC: link.a.macAddress, senderIP: clientIP,
                          targetMAC: .zero, targetIP: serverIP).write(to: b.baseAddress! + 14)
            }
            if let m = arp.withUnsafeBytes({ stack.pool.packet(copying: $0) }) { link.a.inject(m) }
            try await Task.sleep(for: .milliseconds(100))
            _ = link.a.drain { $0.free() }
            // Flows each CPU owns, so a flow-steered run never crosses CPUs.
            var flows: [[[UInt8]]] = Array(repeating: [], count: cpus)
            var port: UInt16 = 10000
            while flows.contains(where: { $0.count < 16 }) {
                let o = stack.owner(IPv4Endpoint(clientIP, port), IPv4Endpoint(serverIP, 7))
                if flows[o].count < 16 { flows[o].append(frame(sport: port, dst: link.b.macAddress, src: link.a.macAddress)) }
                port += 1
            }
            let totals = Totals()
            let start = ContinuousClock.now
            var threads: [LWKTThread] = []
            for k in 0..<cpus {
                let templates = flows[k]
                threads.append(LWKTThread.spawn(on: try system.cpu(k), priority: .user, name: "netgen\(k)") {
                    await generate(cpu: k, templates: templates, link: link, stack: stack, mode: mode,
                                   seconds: seconds, totals: totals)
                })
            }
            for t in threads { await t.join() }
            let elapsed = start.duration(to: .now)
            let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let echoed = totals.echoed.load(ordering: .relaxed)
            let perCPU = Double(echoed) / secs / Double(cpus) / 1e6
            reporter.report("net UDP echo 60 B, \(label)", unit: "M pkt/s per CPU", value: perCPU,
                            baseline: "goal", baselineValue: 1.0)
            if mode == .link, case .roundRobin = steering {
                reporter.report("net round-robin: forwarded share of frames", unit: "%",
                                value: 100 * Double(stack.counters.total(.forwarded)) / Double(max(1, stack.counters.total(.framesReceived))))
            }
            try await stack.stop()
            _ = link.a.drain { $0.free() }
            _ = try await system.shutdown()
        }
    }

    static func generate(cpu k: Int, templates: [[UInt8]], link: SimulatedLink, stack: NetStack, mode: Mode,
                         seconds: Double, totals: Totals) async {
        let window = 512
        let end = ContinuousClock.now + .nanoseconds(Int64(seconds * 1e9))
        var i = 0
        var sent = 0, echoed = 0
        let pool = stack.pool
        while ContinuousClock.now < end {
            let inflight = totals.sent.load(ordering: .relaxed) - totals.echoed.load(ordering: .relaxed)
            var n = 0
            while n < 128, inflight + n < window {
                let t = templates[i % templates.count]
                i &+= 1
                guard let m = t.withUnsafeBytes({ pool.packet(copying: $0, headroom: 64) }) else { break }
                if mode == .inject { stack.inject(frame: m, cpu: k) } else { _ = link.a.transmit(m, queue: k) }
                n += 1
            }
            sent += n
            totals.sent.add(n, ordering: .relaxed)
            let got = link.a.poll(queue: k, max: 4096) { $0.free() }
            echoed += got
            totals.echoed.add(got, ordering: .relaxed)
            await Task.yield()
        }
    }

    // MARK: - TAP against Linux

    /// The TAP rows: `Scripts/bench-udp.sh` (a C generator in the rig's peer namespace
    /// against a Linux socket echo one forwarding hop away, Libellula's socket-application
    /// echo and its in-stack echo, same server CPUs) run with this binary, its results
    /// reported as rows.
    static func tap(reporter: BenchReporter, quick: Bool) async throws {
        let script = "Scripts/bench-udp.sh"
        guard getuid() == 0, FileManager.default.fileExists(atPath: script),
              FileManager.default.isExecutableFile(atPath: "/usr/bin/cc"),
              let binary = Bundle.main.executablePath else {
            print("net bench: the TAP rows need root, /usr/bin/cc and \(script) (run from the repository root); skipped")
            return
        }
        let cpus = min(2, max(1, LWKT.onlineCores))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["LIBELLULA=\(binary)", "/bin/bash", script, quick ? "2" : "5", "\(cpus)"]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { print("net bench: \(script) failed (status \(p.terminationStatus)); TAP rows skipped"); return }
        // The script's summary lines: "NAME: replies_per_s=R p50_us=… …".
        func rate(_ label: String) -> Double? {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(label) }),
                  let field = line.split(separator: " ").first(where: { $0.hasPrefix("replies_per_s=") }) else { return nil }
            return Double(field.dropFirst("replies_per_s=".count))
        }
        guard let linux = rate("linux socket echo, forwarded:") else { print("net bench: no Linux result from \(script)"); return }
        let baseline = "Linux UDP echo (C, sockets) one forwarding hop away, C generator"
        if let v = rate("libellula socket:") {
            reporter.report("net TAP UDP echo, socket application, \(cpus) CPU", unit: "req/s", value: v, baseline: baseline, baselineValue: linux)
        }
        if let v = rate("libellula in-stack:") {
            reporter.report("net TAP UDP in-stack echo (no socket application), \(cpus) CPU", unit: "req/s", value: v, baseline: baseline, baselineValue: linux)
        }
    }

    static func sh(_ exe: String, _ args: [String]) -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do { try p.run() } catch { return (-1, "\(error)") }
        let d = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: d, as: UTF8.self))
    }
}
