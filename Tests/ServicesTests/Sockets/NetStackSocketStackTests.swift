import Glibc
import Synchronization
import Testing
import LWKT
import NetStack
import Slab
import VFS
@testable import Services

/// Two NetStacks joined by a `SimulatedLink` in one LWKT system: `server` runs an
/// HTTPServer over ``NetStackSocketStack``; `client` opens TCP connections to it.
struct OwnStackPair: @unchecked Sendable {
    let system: LWKTSystem
    let client: NetStack
    let server: NetStack
    let http: HTTPServer<NetStackSocketStack>
    static let clientAddress = IPv4Address(10, 0, 0, 1)
    static let serverAddress = IPv4Address(10, 0, 0, 2)
    var endpoint: IPv4Endpoint { IPv4Endpoint(Self.serverAddress, http.address.port) }

    /// Boots it, runs `body` on CPU 0 and tears everything down (the HTTP server first).
    static func run(cpus: Int = 2, steering: SimulatedLink.Steering = .flowHash,
                    _ body: @escaping @Sendable (OwnStackPair) async throws -> Void) async throws {
        let system = try LWKT.boot(cpus: cpus, configuration: .init(idleSpin: .microseconds(20), pin: false, warnings: false))
        let slab = SlabAllocator(system: system)
        let link = SimulatedLink(queues: cpus, steering: steering)
        func configuration(_ a: IPv4Address) -> NetStackConfiguration {
            var c = NetStackConfiguration(address: a)
            c.tcp.msl = .milliseconds(50)
            c.tcp.finWait2Timeout = .seconds(2)
            return c
        }
        let client = try NetStack(system: system, allocator: slab, interface: link.a, configuration: configuration(clientAddress))
        let server = try NetStack(system: system, allocator: slab, interface: link.b, configuration: configuration(serverAddress))
        try client.start()
        try server.start()
        let vfs = VirtualFileSystem(rootFileSystem: MemFS())
        try DemoSite.install(in: vfs)
        var config = HTTPServerConfiguration()
        config.address = SocketAddress(ipv4: 0, port: 0)
        let http = try HTTPServer(system: system, stack: NetStackSocketStack(stack: server), vfs: vfs, slab: slab, configuration: config)
        try http.start()
        let pair = OwnStackPair(system: system, client: client, server: server, http: http)
        let result: Result<Void, any Error>
        do { result = .success(try await system.run(on: 0) { try await body(pair) }) } catch { result = .failure(error) }
        await http.stop()
        try await client.stop()
        try await server.stop()
        let report = try await system.shutdown(timeout: .seconds(20))
        #expect(report.leakedThreads == 0)
        try result.get()
    }
}

/// Sends `request` on a fresh connection from the calling CPU and reads until the server
/// closes; the whole reply as text.
func exchange(_ stack: NetStack, _ server: IPv4Endpoint, _ request: String) async throws -> String {
    let c = try await TCPConnection.connect(stack, to: server, timeout: .seconds(20))
    try await c.write(Array(request.utf8), timeout: .seconds(20))
    var reply: [UInt8] = []
    while reply.count < 1 << 20 {
        let chunk = try await c.read(max: 65536, timeout: .seconds(20))
        if chunk.isEmpty { break }
        reply += chunk
    }
    await c.close(linger: .seconds(1))
    return String(decoding: reply, as: UTF8.self)
}

@Suite(.serialized) struct NetStackSocketStackTests {
    /// HTTP over the own stack, from every CPU: pipelined requests are answered in order,
    /// each connection is accepted and served on the CPU its 4-tuple names.
    @Test(.timeLimit(.minutes(2)), arguments: [SimulatedLink.Steering.flowHash, .roundRobin])
    func httpServerAnswersOverTheOwnStack(_ steering: SimulatedLink.Steering) async throws {
        try await OwnStackPair.run(cpus: 2, steering: steering) { p in
            let replies = Mutex<[String]>([])
            var threads: [LWKTThread] = []
            for cpu in 0..<2 {
                for _ in 0..<3 {
                    threads.append(LWKTThread.spawn(on: try p.system.cpu(cpu), name: "client") {
                        do {
                            let r = try await exchange(p.client, p.endpoint,
                                                       "GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
                                                       + "GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                            replies.withLock { $0.append(r) }
                        } catch {
                            Issue.record("client on CPU \(cpu): \(error)")
                        }
                    })
                }
            }
            for t in threads { await t.join() }
            let all = replies.withLock { $0 }
            #expect(all.count == 6)
            for r in all {
                // Status lines (the first body, "hello\n", has no CR before the next one).
                let statuses = r.components(separatedBy: "HTTP/1.1 ").dropFirst().map { "HTTP/1.1 " + $0.prefix(3) }
                #expect(statuses.count == 3, "three pipelined responses: \(r.prefix(300))")
                #expect(statuses.first == "HTTP/1.1 200")
                #expect(r.contains("\r\n\r\nhello\n"), "hello.txt's body comes first")
                #expect(r.contains("Libellula"))
                #expect(statuses.last == "HTTP/1.1 403", "no escape above the root: \(statuses)")
            }
            let stats = p.http.statistics().http
            #expect(stats.reduce(0) { $0 + $1.connectionsAccepted } == 6)
            #expect(stats.filter { $0.connectionsAccepted > 0 }.count == 2, "connections were accepted on both CPUs")
            // Each connection lived on its owner CPU: every segment was processed there, so
            // with flow steering nothing was forwarded between CPUs; /_stats says so per CPU.
            let net = try #require(p.http.statistics().network)
            #expect(net.cpus.map(\.listeners) == [1, 1], "one HTTP listen replica per CPU")
            #expect(net.cpus.map(\.accepted) == stats.map(\.connectionsAccepted))
            #expect(net.cpus.map(\.passiveOpens).reduce(0, +) == 6)
            #expect(net.cpus.map(\.forwarded) == (0..<2).map { p.server.counters.value(.forwarded, cpu: $0) })
            if case .flowHash = steering {
                #expect(p.server.counters.total(.forwarded) == 0)
            } else {
                #expect(net.cpus.map(\.forwarded).reduce(0, +) > 0, "round-robin steering forwards")
            }
            // /_stats.json carries it (snake_case) and `libellula stat`'s decoder reads it back.
            let data = try ServerStatistics.encoder().encode(p.http.statistics())
            let json = String(decoding: data, as: UTF8.self)
            #expect(json.contains("\"network\":{\"backend\":") && json.contains("\"forwarded_in\":"))
            let back = try ServerStatistics.decoder().decode(ServerStatistics.self, from: data)
            #expect(back.network?.backend == "Libellula TCP/IP on sim-b" && back.network?.cpus.map(\.listeners) == [1, 1])
            #expect(StatsPage.render(p.http.statistics()).contains("Network: Libellula TCP/IP on sim-b"))
            // The stack's own per-CPU counters ride in the snapshot's sections: a table on the
            // page, a Prometheus family and `stat`'s tables, all with the same snake_case names.
            let full = p.http.statistics()
            let sections = try #require(full.lwkt.sections)
            let server = try #require(sections.first { ModuleCounters.rows($0.value).contains { $0.name == "tcp_passive_opens" && $0.values.reduce(0, +) == 6 } },
                                      "a net section counts the six passive opens: \(sections.keys)")
            let page = StatsPage.render(full)
            #expect(page.contains("Counters: \(server.key)") && page.contains("<td>tcp_segments_received</td>"))
            let metrics = PrometheusExposition.render(full, latencies: nil)
            #expect(metrics.contains("libellula_module_counter{section=\"\(server.key)\",counter=\"tcp_passive_opens\",cpu=\"0\"}"))
            #expect(metrics.contains("libellula_net_accepted_total{cpu=\"0\",backend=\"Libellula TCP/IP on sim-b\"}"))
        }
    }

    /// Stopping the server with idle keep-alive connections open closes them (the clients
    /// see the end of the stream) and returns.
    @Test(.timeLimit(.minutes(2)))
    func stopClosesOpenConnections() async throws {
        try await OwnStackPair.run { p in
            var conns: [TCPConnection] = []
            for _ in 0..<4 {
                let c = try await TCPConnection.connect(p.client, to: p.endpoint, timeout: .seconds(20))
                try await c.write(Array("GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n".utf8), timeout: .seconds(20))
                let first = try await c.read(max: 4096, timeout: .seconds(20))
                #expect(String(decoding: first, as: UTF8.self).hasPrefix("HTTP/1.1 200"))
                conns.append(c)
            }
            await p.http.stop()
            // Active opens belong to the calling CPU (0), where this runs.
            for c in conns {
                #expect(c.cpuID == 0)
                var ended = false
                for _ in 0..<100 {
                    do {
                        let more = try await c.read(max: 4096, timeout: .seconds(10))
                        if more.isEmpty { ended = true; break }
                    } catch {
                        ended = true
                        break
                    }
                }
                #expect(ended, "the server closed the connection")
                c.abort()
            }
        }
    }

    /// A connection the service drops without closing is reset, not leaked: the client's
    /// read fails with ECONNRESET and the server's PCB goes away.
    @Test(.timeLimit(.minutes(2)))
    func droppedConnectionIsReset() async throws {
        try await OwnStackPair.run(cpus: 1) { p in
            let sockets = NetStackSocketStack(stack: p.server)
            let ls = try sockets.listen(on: SocketAddress(ipv4: 0, port: 0), cpus: p.system.cpus)
            let l = try #require(ls.first)
            let client = try await TCPConnection.connect(p.client, to: IPv4Endpoint(OwnStackPair.serverAddress, l.address.port),
                                                         timeout: .seconds(20))
            do {
                let accepted = try await l.accept()
                #expect(accepted.peer.port == client.local.port)
            }   // dropped here, on its CPU, without close
            do {
                let got = try await client.read(max: 100, timeout: .seconds(20))
                Issue.record("read \(got.count) bytes instead of a reset")
            } catch {
                #expect(error as? TCPError == .connectionReset, "\(error)")
            }
            client.abort()
            l.close()
            #expect(p.server.tcpConnectionCount(cpu: 0) == 0)
        }
    }

    /// Listening errors carry the errno a Linux program expects.
    @Test(.timeLimit(.minutes(2)))
    func listenErrorsCarryLinuxErrnos() async throws {
        try await OwnStackPair.run { p in
            let sockets = NetStackSocketStack(stack: p.server)
            let cpus = p.system.cpus
            func errno(_ body: () throws -> Void) -> Int32? {
                do { try body(); return nil } catch { return (error as? SocketError)?.errno }
            }
            #expect(errno { _ = try sockets.listen(on: SocketAddress(parsing: "10.9.9.9:80")!, cpus: cpus) } == EADDRNOTAVAIL)
            #expect(errno { _ = try sockets.listen(on: SocketAddress(parsing: "[::1]:80")!, cpus: cpus) } == EAFNOSUPPORT)
            #expect(errno { _ = try sockets.listen(on: SocketAddress(ipv4: 0, port: 81), cpus: [cpus[0]]) } == EINVAL)
            #expect(errno { _ = try sockets.listen(on: SocketAddress(ipv4: 0, port: p.http.address.port), cpus: cpus) } == EADDRINUSE)
            // The stack's own address works, and the port is freed by closing every replica.
            let ls = try sockets.listen(on: SocketAddress(ipv4: OwnStackPair.serverAddress.value, port: 0), cpus: cpus)
            #expect(ls.count == 2 && ls[0].address.port != 0 && ls[0].address == ls[1].address)
            for l in ls { try await p.system.run(on: l.cpuID) { l.close() } }
            let again = try sockets.listen(on: ls[0].address, cpus: cpus)
            for l in again { try await p.system.run(on: l.cpuID) { l.close() } }
            // Nobody listens on a closed port: ECONNREFUSED.
            do {
                _ = try await TCPConnection.connect(p.client, to: IPv4Endpoint(OwnStackPair.serverAddress, ls[0].address.port), timeout: .seconds(10))
                Issue.record("connected to a closed port")
            } catch let error as TCPError {
                #expect(SocketError(error, call: "connect").errno == ECONNREFUSED)
            }
        }
    }

    /// Every TCP error becomes the socket error the host backend reports for the same errno.
    @Test func errorMapping() {
        let cases: [(TCPError, SocketError)] = [
            (.connectionReset, .reset), (.brokenPipe, .reset), (.notConnected, .reset),
            (.timedOut, .timedOut), (.cancelled, .cancelled), (.closed, .closed),
            (.connectionRefused, .system(call: "c", errno: ECONNREFUSED)),
            (.addressInUse, .system(call: "c", errno: EADDRINUSE)),
            (.addressNotAvailable, .system(call: "c", errno: EADDRNOTAVAIL)),
            (.noBuffers, .system(call: "c", errno: ENOBUFS)),
        ]
        for (tcp, socket) in cases { #expect(SocketError(tcp, call: "c") == socket, "\(tcp)") }
        #expect(SocketError(.invalidArgument("x"), call: "c").errno == EINVAL)
        #expect(SocketError.reset.errno == ECONNRESET && SocketError.timedOut.errno == ETIMEDOUT)
    }
}
