import Testing
import Synchronization
import LWKT
@testable import NetStack

@Suite(.serialized) struct TCPBehaviourTests {
    static func config(_ a: inout NetStackConfiguration, _ b: inout NetStackConfiguration) {
        tcpTestConfiguration(&a); tcpTestConfiguration(&b)
    }

    @Test(.timeLimit(.minutes(1))) func typedErrorsCarryLinuxErrnos() async throws {
        try await withSimPair(steering: .flowHash, configure: { a, b in
            Self.config(&a, &b)
            a.tcp.synRetries = 2
        }) { (p: SimPair) async throws in
            // Nobody listens: the RST answers the SYN.
            do {
                _ = try await TCPConnection.connect(p.a, to: IPv4Endpoint(SimPair.addressB, 81))
                Issue.record("connect succeeded")
            } catch let error as TCPError {
                #expect(error == .connectionRefused && error.errno == 111)
            }
            // Nobody there at all: the SYN is retried, then given up.
            do {
                _ = try await TCPConnection.connect(p.a, to: IPv4Endpoint(IPv4Address(10, 0, 0, 77), 80))
                Issue.record("connect succeeded")
            } catch let error as TCPError {
                #expect(error == .timedOut && error.errno == 110)
            }
            // The server aborts: the client sees ECONNRESET.
            let listeners = try p.b.listen(port: 90)
            let aborter = LWKTThread.spawn(on: try p.system.cpu(0), name: "aborter") {
                if let c = try? await listeners[0].accept(timeout: .seconds(5)) {
                    _ = try? await c.read(max: 10, timeout: .seconds(5))
                    c.abort()
                }
            }
            let c = try await TCPConnection.connect(p.a, to: IPv4Endpoint(SimPair.addressB, 90))
            #expect(c.cpuID == 0)
            try await c.write([1, 2, 3])
            do {
                _ = try await c.read(max: 10, timeout: .seconds(5))
                Issue.record("read succeeded")
            } catch let error as TCPError {
                #expect(error == .connectionReset && error.errno == 104)
            }
            await aborter.join()
            #expect(c.state == .closed)
            c.abort()
            for l in listeners { try await p.system.run(on: l.cpuID) { l.close() } }
            // Port 90 is free again.
            let again = try p.b.listen(port: 90)
            for l in again { try await p.system.run(on: l.cpuID) { l.close() } }
            #expect(throws: TCPError.addressInUse) {
                let x = try p.b.listen(port: 91)
                _ = try p.b.listen(port: 91)
                _ = x
            }
        }
    }

    @Test(.timeLimit(.minutes(1))) func halfCloseAndBrokenPipe() async throws {
        try await withSimPair(steering: .flowHash, configure: Self.config) { (p: SimPair) async throws in
            let listeners = try p.b.listen(port: 100)
            let server = LWKTThread.spawn(on: try p.system.cpu(0), name: "server") {
                do {
                    guard let c = try await listeners[0].accept(timeout: .seconds(5)) else { Issue.record("no accept"); return }
                    var got: [UInt8] = []
                    while true {
                        let b = try await c.read(max: 4096, timeout: .seconds(5))
                        if b.isEmpty { break }
                        got += b
                    }
                    #expect(got == pattern(5000, tag: 9))
                    #expect(c.state == .closeWait)
                    // Half-closed by the peer: this side still sends.
                    try await c.write(pattern(7000, tag: 10))
                    await c.close(linger: .seconds(2))
                    #expect(c.state == .closed || c.state == .lastAck)
                } catch {
                    Issue.record("server: \(error)")
                }
            }
            let c = try await TCPConnection.connect(p.a, to: IPv4Endpoint(SimPair.addressB, 100))
            try await c.write(pattern(5000, tag: 9))
            try c.shutdown(.write)
            #expect(c.state == .finWait1 || c.state == .finWait2)
            await #expect(throws: TCPError.brokenPipe) { try await c.write([1]) }
            var back: [UInt8] = []
            while true {
                let b = try await c.read(max: 4096, timeout: .seconds(5))
                if b.isEmpty { break }
                back += b
            }
            #expect(back == pattern(7000, tag: 10))
            #expect(c.state == .timeWait)
            await server.join()
            await c.close()
            let a = try await p.a.waitForNoConnections(), b = try await p.b.waitForNoConnections()
            #expect(a.connections == 0 && b.connections == 0)
            for l in listeners { try await p.system.run(on: l.cpuID) { l.close() } }
        }
    }

    @Test(.timeLimit(.minutes(1))) func simultaneousCloseEndsInTimeWaitOnBothSides() async throws {
        try await withSimPair(aToB: LinkFaults(delay: .milliseconds(5), seed: 1),
                              bToA: LinkFaults(delay: .milliseconds(5), seed: 2), steering: .flowHash, configure: Self.config) { (p: SimPair) async throws in
            let listeners = try p.b.listen(port: 110)
            let sawStates = Mutex<[TCPState]>([])
            let c = try await TCPConnection.connect(p.a, to: IPv4Endpoint(SimPair.addressB, 110))
            let s = try #require(try await p.system.run(on: c.cpuID) { try await listeners[c.cpuID].accept(timeout: .seconds(5)) })
            // Both FINs cross on the wire (5 ms each way): FIN-WAIT-1 -> CLOSING -> TIME-WAIT.
            try await p.system.run(on: s.cpuID) { try s.shutdown(.write) }
            try c.shutdown(.write)
            let deadline = ContinuousClock.now + .seconds(5)
            while ContinuousClock.now < deadline {
                let a = c.state, b = try await p.system.run(on: s.cpuID) { s.state }
                sawStates.withLock { $0.append(a); $0.append(b) }
                if a == .timeWait && b == .timeWait { break }
                try await LWKT.sleep(for: .milliseconds(1))
            }
            #expect(c.state == .timeWait)
            #expect(try await p.system.run(on: s.cpuID) { s.state } == .timeWait)
            #expect(sawStates.withLock { $0.contains(.closing) })
            await c.close()
            try await p.system.run(on: s.cpuID) { await s.close() }
            let a = try await p.a.waitForNoConnections(), b = try await p.b.waitForNoConnections()
            #expect(a.connections == 0 && b.connections == 0 && a.bufferBytes == 0 && b.bufferBytes == 0)
            for l in listeners { try await p.system.run(on: l.cpuID) { l.close() } }
        }
    }

    @Test(.timeLimit(.minutes(1))) func synCookiesWhenTheSynQueueIsFull() async throws {
        try await withSimPair(steering: .flowHash, configure: { a, b in
            Self.config(&a, &b)
            b.tcp.synQueueLimit = 0
        }) { (p: SimPair) async throws in
            let server = try EchoServer(p.b, port: 120)
            let c = try await echoRoundTrip(p.a, to: IPv4Endpoint(SimPair.addressB, 120), payload: pattern(300_000, tag: 3))
            #expect(c.pcb.sackEnabled && c.pcb.tsEnabled && c.pcb.sndScale > 0, "options survive the cookie")
            #expect(p.b.counters.total(.tcpCookiesSent) >= 1)
            #expect(p.b.counters.total(.tcpCookiesAccepted) == 1)
            #expect(p.b.counters.total(.tcpSynReceived) == 0)
            try await server.stop()
            let b = try await p.b.waitForNoConnections()
            #expect(b.connections == 0)
        }
    }

    @Test(.timeLimit(.minutes(1))) func zeroWindowIsProbedUntilTheReaderCatchesUp() async throws {
        try await withSimPair(steering: .flowHash, configure: { a, b in
            Self.config(&a, &b)
            b.tcp.receiveBufferSize = 8192
        }) { (p: SimPair) async throws in
            let listeners = try p.b.listen(port: 130)
            let total = 100_000
            // The reader starts reading only once the sender has probed the zero window
            // twice (not after a fixed sleep: under load the persist interval, which follows
            // the RTO, can outlast any sleep, and the window update the first read sends
            // would then open the window before a probe went out). If probing is broken no
            // probe ever comes: the reader gives up after 15 s and the test fails.
            let reader = LWKTThread.spawn(on: try p.system.cpu(0), name: "slow-reader") {
                do {
                    guard let c = try await listeners[0].accept(timeout: .seconds(5)) else {
                        Issue.record("accept timed out")
                        return
                    }
                    let giveUp = ContinuousClock.now + .seconds(15)
                    while p.a.counters.total(.tcpWindowProbes) < 2, ContinuousClock.now < giveUp {
                        try await LWKT.sleep(for: .milliseconds(5))
                    }
                    #expect(p.a.counters.total(.tcpWindowProbes) >= 2, "the sender probes the zero window")
                    var got: [UInt8] = []
                    while true {
                        let b = try await c.read(max: 3000, timeout: .seconds(10))
                        if b.isEmpty { break }
                        got += b
                    }
                    #expect(got == pattern(total, tag: 4))
                    await c.close()
                } catch { Issue.record("reader: \(error)") }
            }
            let c = try await TCPConnection.connect(p.a, to: IPv4Endpoint(SimPair.addressB, 130))
            try await c.write(pattern(total, tag: 4), timeout: .seconds(30))
            try c.shutdown(.write)
            await reader.join()
            await c.close()
            for l in listeners { try await p.system.run(on: l.cpuID) { l.close() } }
            let a = try await p.a.waitForNoConnections()
            #expect(a.connections == 0)
        }
    }

    @Test(.timeLimit(.minutes(1))) func writeTimesOutWhenThePeerDoesNotRead() async throws {
        try await withSimPair(steering: .flowHash, configure: { a, b in
            Self.config(&a, &b)
            a.tcp.sendBufferSize = 16384
            b.tcp.receiveBufferSize = 8192
        }) { (p: SimPair) async throws in
            let listeners = try p.b.listen(port: 135)
            let c = try await TCPConnection.connect(p.a, to: IPv4Endpoint(SimPair.addressB, 135))
            await #expect(throws: TCPError.timedOut) { try await c.write(pattern(100_000, tag: 1), timeout: .milliseconds(300)) }
            #expect(c.unacknowledged == 16384)
            c.abort()
            for l in listeners { try await p.system.run(on: l.cpuID) { l.close() } }
        }
    }

    @Test(.timeLimit(.minutes(1))) func keepaliveProbesThenTimesOut() async throws {
        try await withSimPair(steering: .flowHash, configure: { a, b in
            Self.config(&a, &b)
            a.tcp.keepaliveIdle = .milliseconds(100)
            a.tcp.keepaliveInterval = .milliseconds(50)
            a.tcp.keepaliveProbes = 3
        }) { (p: SimPair) async throws in
            let listeners = try p.b.listen(port: 140)
            let c = try await TCPConnection.connect(p.a, to: IPv4Endpoint(SimPair.addressB, 140))
            c.keepalive = true
            try await LWKT.sleep(for: .milliseconds(500))
            #expect(p.a.counters.total(.tcpKeepaliveProbes) >= 2)
            #expect(c.state == .established, "answered probes keep the connection")
            // The peer goes silent.
            p.link.b.setFaults(LinkFaults(loss: 1.0))
            do {
                _ = try await c.read(max: 10, timeout: .seconds(5))
                Issue.record("read returned")
            } catch let error as TCPError {
                #expect(error == .timedOut)
            }
            #expect(c.state == .closed)
            c.abort()
            p.link.b.setFaults(.none)
            for l in listeners { try await p.system.run(on: l.cpuID) { l.close() } }
        }
    }

    @Test(.timeLimit(.minutes(1))) func newRenoWithoutSACKRecovers() async throws {
        let faults = LinkFaults(loss: 0.05, reordering: 0.02, delay: .microseconds(200), seed: 11)
        try await withSimPair(aToB: faults, bToA: faults, configure: { a, b in
            Self.config(&a, &b)
            for c in [\NetStackConfiguration.tcp] { a[keyPath: c].congestionControl = .newReno; b[keyPath: c].congestionControl = .newReno }
            a.tcp.sack = false; b.tcp.sack = false
            a.tcp.timestamps = false; b.tcp.timestamps = false
        }) { (p: SimPair) async throws in
            let server = try EchoServer(p.b, port: 150)
            let done = Atomic<Bool>(false)
            let watchdog = LWKTThread.spawn(on: try p.system.cpu(1), name: "dump") {
                try? await LWKT.sleep(for: .seconds(15))
                if done.load(ordering: .relaxed) { return }
                let a = (try? await p.system.run(on: 0) { p.a.tcpDescribe(cpu: 0) + "\n" + p.b.tcpDescribe(cpu: 0) }) ?? ""
                let b = (try? await p.system.run(on: 1) { p.a.tcpDescribe(cpu: 1) + "\n" + p.b.tcpDescribe(cpu: 1) }) ?? ""
                print("STALL\n\(a)\n\(b)")
            }
            let c = try await echoRoundTrip(p.a, to: IPv4Endpoint(SimPair.addressB, 150), payload: pattern(1 << 20, tag: 5))
            done.store(true, ordering: .relaxed)
            watchdog.cancel()
            #expect(!c.pcb.sackEnabled && !c.pcb.tsEnabled)
            #expect(p.a.counters.total(.tcpSACKRecoveries) + p.b.counters.total(.tcpSACKRecoveries) == 0)
            #expect(p.a.counters.total(.tcpNewRenoRecoveries) + p.b.counters.total(.tcpNewRenoRecoveries) > 0)
            try await server.stop()
            #expect(server.errors.withLock { $0.isEmpty })
        }
    }

    @Test(.timeLimit(.minutes(1))) func receiveBufferGrowsWhileTheWindowLimits() async throws {
        try await withSimPair(steering: .flowHash, configure: { a, b in
            Self.config(&a, &b)
            b.tcp.initialReceiveBufferSize = 16 << 10
            b.tcp.receiveBufferSize = 1 << 20
        }) { (p: SimPair) async throws in
            let listeners = try p.b.listen(port: 160)
            let total = 3 << 20
            let reader = LWKTThread.spawn(on: try p.system.cpu(0), name: "reader") {
                do {
                    guard let c = try await listeners[0].accept(timeout: .seconds(5)) else { return }
                    #expect(c.receiveBufferSize == 16 << 10)
                    var got = 0
                    var sum: UInt64 = 0
                    let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
                    defer { buf.deallocate() }
                    while true {
                        let n = try await c.read(into: buf, timeout: .seconds(10))
                        if n == 0 { break }
                        for i in 0..<n { sum &+= UInt64(buf[i]) &* UInt64(got + i + 1) }
                        got += n
                    }
                    let want = pattern(total, tag: 6).enumerated().reduce(UInt64(0)) { $0 &+ UInt64($1.element) &* UInt64($1.offset + 1) }
                    #expect(got == total && sum == want)
                    #expect(c.receiveBufferSize > 16 << 10 && c.receiveBufferSize <= 1 << 20, "grew to \(c.receiveBufferSize)")
                    await c.close()
                } catch { Issue.record("reader: \(error)") }
            }
            let c = try await TCPConnection.connect(p.a, to: IPv4Endpoint(SimPair.addressB, 160))
            try await c.write(pattern(total, tag: 6), timeout: .seconds(20))
            try c.shutdown(.write)
            await reader.join()
            await c.close()
            for l in listeners { try await p.system.run(on: l.cpuID) { l.close() } }
            let b = try await p.b.waitForNoConnections()
            #expect(b.connections == 0 && b.bufferBytes == 0, "growth is charged and released")
        }
    }
}
