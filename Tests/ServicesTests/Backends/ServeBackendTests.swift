import Foundation
import Glibc
import Testing
@testable import Services

/// The network backends `serve` can run on.
enum ServeBackend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    /// Host sockets, reached from the peer over the veth (10.200.1.254).
    case host
    /// Libellula's own TCP/IP on the rig's TAP (10.200.2.1), routed by the router namespace.
    case tap

    var testDescription: String { rawValue }

    /// The address clients use.
    var serverHost: String { self == .host ? "10.200.1.254" : "10.200.2.1" }

    /// `serve`'s network arguments on `rig`.
    func arguments(_ rig: ServeRig) -> [String] {
        switch self {
        case .host: ["--http", "\(serverHost):8080", "--memcached", "\(serverHost):11211"]
        case .tap: ["--net", "tap:\(rig.tap),address=10.200.2.1/24,gateway=10.200.2.254"]
        }
    }
}

/// The HTTP and memcached checks of the other suites (python http.client conformance, curl,
/// pipelining, traversal spellings, byte-for-byte replies against Debian's memcached,
/// pymemcache), run from the rig's peer namespace against a
/// real `libellula serve` in the router namespace, once per backend: host sockets and the
/// own TCP/IP stack over the TAP. Then 1,000 connections open at once (none lost, both
/// CPUs accept), and SIGTERM with connections open (they are closed, the process exits 0).
/// Root only; skipped with the reason otherwise.
@Suite(.serialized) struct ServeBackendTests {
    @Test(.timeLimit(.minutes(4)), arguments: ServeBackend.allCases)
    func servicesOverBackend(_ backend: ServeBackend) async throws {
        if let why = ServeRig.unavailableReason {
            print("skipping serve backend test (\(backend)): \(why)")
            return
        }
        let rig = try ServeRig()
        let server = try rig.serve(["serve", "--cpus", "2", "--log-level", "notice"] + backend.arguments(rig))
        let started = server.waitForOutput(containing: "memcached protocol on", timeout: 60)
        #expect(started != nil, "serve started: \(server.output)")
        let host = backend.serverHost
        let base = "http://\(host):8080"
        if started != nil {
            try await blocking { Self.clientChecks(rig, backend: backend, host: host, base: base) }

            // Shutdown with connections open: 50 idle keep-alive connections see the server
            // close them, and the process exits cleanly.
            let holder = try CLIProcess(ServeRig.ip, ["netns", "exec", rig.peer, ServeRig.python, ServeRig.checks, "hold", host, "8080", "50"])
            let held = holder.waitForOutput(containing: "held", timeout: 60)
            #expect(held?.contains("held 50") == true, "\(backend): 50 connections held: \(holder.output)")
            server.signal(SIGTERM)
            let status = server.waitForExit(timeout: 30)
            #expect(status == 0, "\(backend): serve exits 0 after SIGTERM: \(server.output.suffix(1500))")
            #expect(server.output.contains("0 threads leaked"))
            let closed = holder.waitForOutput(containing: "closed", timeout: 60)
            #expect(closed?.contains("closed 50") == true, "\(backend): the server closed every open connection: \(holder.output)")
        }
        server.signal(SIGKILL)
        _ = server.waitForExit(timeout: 10)
        // The rig goes without a trace, nftables table included.
        #expect(rig.rig("impair", "0", "tcp").status == 0)
        let left = rig.down()
        #expect(left.isEmpty, "\(backend): the rig left \(left)")
    }

    /// The checks a client makes from the peer namespace (blocking; run off the test's task).
    static func clientChecks(_ rig: ServeRig, backend: ServeBackend, host: String, base: String) {
        // curl: keep-alive over three URLs, a range, a conditional request.
        let keep = rig.inPeer("/usr/bin/curl", ["-s", "--max-time", "20", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
                                                "-w", "%{http_code} %{num_connects}\\n",
                                                "\(base)/hello.txt", "\(base)/style.css", "\(base)/docs/"])
        #expect(keep.output.split(separator: "\n") == ["200 1", "200 0", "200 0"], "\(backend) curl keep-alive: \(keep.output)")
        #expect(rig.inPeer("/usr/bin/curl", ["-s", "--max-time", "20", "-r", "0-3", "\(base)/hello.txt"]).output == "hell")
        let cond = rig.inPeer("/usr/bin/curl", ["-s", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}",
                                                "-z", "Sat, 01 Jan 2050 00:00:00 GMT", "\(base)/hello.txt"])
        #expect(cond.output == "304", "\(backend) curl conditional: \(cond.output)")

        // Python's http.client: the conformance script of ConformanceTests.
        let conf = rig.inPeer(ServeRig.python, [ServeRig.conformance, "8080", host])
        #expect(conf.status == 0 && conf.output.contains("checks passed"), "\(backend) http.client: \(conf.output)")

        // Pipelining: three requests in one segment, answered in order.
        let pipe = rig.inPeer(ServeRig.python, [ServeRig.checks, "pipeline", host, "8080"])
        #expect(pipe.output.trimmingCharacters(in: .whitespacesAndNewlines) == "200 404 200", "\(backend) pipelining: \(pipe.output)")

        // Traversal spellings arrive byte for byte and are refused (the demo root has nothing
        // above it to leak; what matters here is that no spelling reaches a 200).
        let trav = rig.inPeer(ServeRig.python, [ServeRig.checks, "traversal", host, "8080"] + TraversalTests.attempts)
        let lines = trav.output.split(separator: "\n")
        #expect(lines.count == TraversalTests.attempts.count, "\(backend) traversal: \(trav.output)")
        for line in lines {
            let status = Int(line.split(separator: " ").last ?? "") ?? -1
            #expect([400, 403, 404].contains(status), "\(backend) traversal: \(line)")
        }

        // Byte for byte against Debian's memcached (the oracle runs in the peer namespace on
        // its loopback), on a cache nothing else has touched yet.
        if let memcached = which("memcached") {
            do {
                let oracle = try CLIProcess(ServeRig.ip, ["netns", "exec", rig.peer, memcached, "-l", "127.0.0.1", "-p", "11299",
                                                          "-U", "0", "-t", "2", "-m", "64", "-u", "root"])
                let up = rig.inPeer("/bin/bash", ["-c", "for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/11299) 2>/dev/null && exit 0; sleep 0.05; done; exit 1"])
                #expect(up.status == 0, "\(backend): memcached (the oracle) did not start")
                let diff = rig.inPeer(ServeRig.python, [ServeRig.oracle, "127.0.0.1:11299", "\(host):11211"], timeout: 120)
                #expect(diff.status == 0 && diff.output.contains(" 0 mismatches"), "\(backend) oracle differences:\n\(diff.output)")
                oracle.signal(SIGKILL)
                _ = oracle.waitForExit(timeout: 10)
            } catch {
                Issue.record("\(backend): cannot start memcached as the oracle: \(error)")
            }
        } else {
            print("skipping the byte-for-byte memcached comparison (\(backend)): Debian's memcached is not installed (Scripts/test-deps.txt)")
        }

        // pymemcache: every command it has, against the memcached service on the same stack.
        let mc = rig.inPeer(ServeRig.python, [ServeRig.pymemcacheCheck, "\(host):11211"])
        #expect(mc.status == 0, "\(backend) pymemcache: \(mc.output)")

        // 1,000 connections open at once, then a request on each: none lost.
        let many = rig.inPeer(ServeRig.python, [ServeRig.checks, "concurrent", host, "8080", "1000"], timeout: 120)
        #expect(many.output.contains("answered 1000"), "\(backend) 1000 concurrent: \(many.output)")
        // Both CPUs accepted some of them (the hash spreads connections over the CPUs).
        let stats = rig.inPeer("/usr/bin/curl", ["-s", "--max-time", "20", "\(base)/_stats.json"])
        let json = (try? JSONSerialization.jsonObject(with: Data(stats.output.utf8))) as? [String: Any]
        let http = json?["http"] as? [[String: Any]] ?? []
        let accepted = http.map { ($0["connections_accepted"] as? Int) ?? 0 }
        #expect(accepted.count == 2 && accepted.allSatisfy { $0 > 100 } && accepted.reduce(0, +) >= 1000,
                "\(backend) accepts per CPU: \(accepted)")
        // The own stack reports its listen replicas (HTTP and memcached on each CPU), its
        // accepts per CPU and the packets forwarded between CPUs; host sockets report none.
        let net = json?["network"] as? [String: Any]
        if backend == .tap {
            let cpus = net?["cpus"] as? [[String: Any]] ?? []
            #expect(cpus.map { $0["listeners"] as? Int } == [2, 2], "\(backend) listen replicas: \(String(describing: net))")
            let netAccepted = cpus.map { ($0["accepted"] as? Int) ?? 0 }
            #expect(netAccepted.allSatisfy { $0 > 100 } && netAccepted.reduce(0, +) >= accepted.reduce(0, +))
            // The TAP's eBPF program queues every frame on its owner CPU, the first SYN of
            // each connection included: nothing is forwarded between CPUs.
            #expect((net?["flow_steering"] as? String)?.hasPrefix("eBPF") == true, "\(backend) steering: \(String(describing: net))")
            let forwarded = cpus.map { ($0["forwarded"] as? Int) ?? -1 }
            #expect(forwarded == [0, 0], "\(backend) packets forwarded between CPUs with flow steering: \(forwarded)")
            let metrics = rig.inPeer("/usr/bin/curl", ["-s", "--max-time", "20", "\(base)/metrics"]).output
            let steeringLine = metrics.split(separator: "\n").first { $0.contains("net_flow_steering{") }
            #expect(steeringLine?.hasSuffix(" 1") == true, "\(backend) /metrics steering: \(String(describing: steeringLine))")
        } else {
            #expect(net == nil)
        }
    }

    /// Without the steering program (`steering=off`) the kernel queues a connection's first
    /// SYN by its own hash, so about half of them (2 CPUs) land on the wrong CPU and are
    /// forwarded; the server says so. (With 200 connections, none forwarded would happen
    /// with probability 2^-200.) The program a killed server left on the persistent TAP is
    /// removed (else nothing would be forwarded).
    @Test(.timeLimit(.minutes(2)))
    func withoutSteeringFirstPacketsAreForwarded() async throws {
        if let why = ServeRig.unavailableReason {
            print("skipping steering-off test: \(why)")
            return
        }
        let rig = try ServeRig()
        // A steered server first, so that the TAP holds a program when the second starts.
        for steering in ["ebpf", "off"] {
            let args = ["--net", ServeBackend.tap.arguments(rig)[1] + ",steering=\(steering)"]
            let server = try rig.serve(["serve", "--cpus", "2", "--no-memcached", "--log-level", "notice"] + args)
            #expect(server.waitForOutput(containing: "serving", timeout: 60) != nil, "serve started: \(server.output)")
            #expect(server.output.contains(steering == "off" ? "flow steering: off" : "flow steering: eBPF"), "\(server.output)")
            if steering == "off" {
                let many = try await blocking { rig.inPeer(ServeRig.python, [ServeRig.checks, "concurrent", "10.200.2.1", "8080", "200"], timeout: 90) }
                #expect(many.output.contains("answered 200"), "200 concurrent: \(many.output)")
                let stats = try await blocking { rig.inPeer("/usr/bin/curl", ["-s", "--max-time", "20", "http://10.200.2.1:8080/_stats.json"]) }
                let json = (try? JSONSerialization.jsonObject(with: Data(stats.output.utf8))) as? [String: Any]
                let net = json?["network"] as? [String: Any]
                #expect((net?["flow_steering"] as? String)?.hasPrefix("off") == true, "\(String(describing: net))")
                let forwarded = (net?["cpus"] as? [[String: Any]] ?? []).map { ($0["forwarded"] as? Int) ?? 0 }
                print("steering off: packets forwarded between CPUs per CPU: \(forwarded)")
                #expect(forwarded.reduce(0, +) > 0, "without steering some first SYNs are forwarded: \(forwarded)")
            }
            if steering == "ebpf" {
                // Killed, so the program stays on the persistent TAP for the next server.
                server.signal(SIGKILL)
                _ = server.waitForExit(timeout: 10)
            } else {
                server.signal(SIGTERM)
                #expect(server.waitForExit(timeout: 30) == 0, "\(server.output.suffix(800))")
            }
        }
        let left = rig.down()
        #expect(left.isEmpty, "the rig left \(left)")
    }

    /// `netrig.sh down` removes everything even when the server died holding the TAP.
    @Test(.timeLimit(.minutes(2)))
    func rigGoesAwayAfterACrash() async throws {
        if let why = ServeRig.unavailableReason {
            print("skipping rig crash test: \(why)")
            return
        }
        let rig = try ServeRig()
        let server = try rig.serve(["serve", "--cpus", "2", "--no-memcached"] + ServeBackend.tap.arguments(rig))
        #expect(server.waitForOutput(containing: "serving", timeout: 60) != nil, "serve started: \(server.output)")
        let hello = try await blocking { rig.inPeer("/usr/bin/curl", ["-s", "--max-time", "20", "http://10.200.2.1:8080/hello.txt"]) }
        #expect(hello.output == "hello\n")
        server.signal(SIGKILL)
        _ = server.waitForExit(timeout: 10)
        let left = rig.down()
        #expect(left.isEmpty, "the rig left \(left)")
    }
}
