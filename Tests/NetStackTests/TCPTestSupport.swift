import Testing
import Synchronization
import LWKT
@testable import NetStack

/// TCP settings for tests: short TIME-WAIT and timers so runs stay brief.
func tcpTestConfiguration(_ c: inout NetStackConfiguration) {
    c.tcp.msl = .milliseconds(50)
    c.tcp.minimumRTO = .milliseconds(30)
    c.tcp.initialRTO = .milliseconds(200)
    // A low ceiling keeps exponential backoff from stretching a lossy test run into
    // minutes when a loaded machine delays the threads.
    c.tcp.maximumRTO = .seconds(1)
    c.tcp.finWait2Timeout = .seconds(2)
    c.tcp.secret = (0x1234, 0x5678)
}

/// An echo server on every CPU of a stack: each accepted connection is served by a
/// thread on its own CPU, which records where it ran.
final class EchoServer: @unchecked Sendable {
    let stack: NetStack
    let listeners: [TCPListener]
    private let threads = Mutex<[LWKTThread]>([])
    /// (peer port, CPU the handler ran on, CPU the connection says it belongs to).
    let served = Mutex<[(UInt16, Int, Int)]>([])
    let errors = Mutex<[TCPError]>([])
    /// Whether handlers echo (otherwise they only read, after `readDelay`).
    let echo: Bool
    let readDelay: Duration

    init(_ stack: NetStack, port: UInt16, echo: Bool = true, readDelay: Duration = .zero, backlog: Int = 128) throws {
        self.stack = stack
        self.echo = echo
        self.readDelay = readDelay
        listeners = try stack.listen(port: port, backlog: backlog)
        var list: [LWKTThread] = []
        for l in listeners {
            let cpu = try stack.system.cpu(l.cpuID)
            list.append(LWKTThread.spawn(on: cpu, name: "echo-accept\(l.cpuID)") { [self] in
                while true {
                    guard let c = try? await l.accept() else { return }
                    let t = LWKTThread.spawn(on: cpu, name: "echo") { [self] in await self.serve(c) }
                    threads.withLock { $0.append(t) }
                }
            })
        }
        threads.withLock { $0.append(contentsOf: list) }
    }

    var port: UInt16 { listeners[0].address.port }

    func serve(_ c: TCPConnection) async {
        served.withLock { $0.append((c.peer.port, CPU.current?.id ?? -1, c.cpuID)) }
        if readDelay > .zero { try? await LWKT.sleep(for: readDelay) }
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 32768, alignment: 16)
        defer { buf.deallocate() }
        do {
            while true {
                let n = try await c.read(into: buf, timeout: .seconds(150))
                if n == 0 { break }
                if echo { try await c.write(UnsafeRawBufferPointer(rebasing: buf[0..<n]), timeout: .seconds(150)) }
            }
            await c.close(linger: .seconds(2))
        } catch {
            errors.withLock { $0.append(error) }
            c.abort()
        }
    }

    /// Closes every listener (each on its CPU) and waits for the threads.
    func stop() async throws {
        for l in listeners { try await stack.system.run(on: l.cpuID) { l.close() } }
        for _ in 0..<200 {
            let list = threads.withLock { $0 }
            for t in list { await t.join() }
            if threads.withLock({ $0.count }) == list.count { break }
        }
    }
}

/// Connects, writes `payload` from a second thread on this CPU while reading the echo,
/// checks it, and closes. Returns the connection (closed).
@discardableResult
func echoRoundTrip(_ stack: NetStack, to server: IPv4Endpoint, payload: [UInt8], timeout: Duration = .seconds(60)) async throws -> TCPConnection {
    let c = try await TCPConnection.connect(stack, to: server, timeout: .seconds(10))
    #expect(c.cpuID == CPU.current?.id, "an active open is owned by the calling CPU")
    let writer = LWKTThread.spawn(on: CPU.current!, name: "writer") {
        do {
            try await c.write(payload, timeout: timeout)
            try c.shutdown(.write)
        } catch {
            Issue.record("write failed: \(error)")
        }
    }
    var got: [UInt8] = []
    got.reserveCapacity(payload.count)
    let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
    defer { buf.deallocate() }
    while true {
        let n = try await c.read(into: buf, timeout: timeout)
        if n == 0 { break }
        got.append(contentsOf: UnsafeRawBufferPointer(rebasing: buf[0..<n]))
    }
    await writer.join()
    #expect(got.count == payload.count)
    #expect(got == payload, "echo differs")
    await c.close(linger: .seconds(2))
    return c
}

extension NetStack {
    /// Connections and buffer bytes of every CPU (read on each CPU).
    func tcpCensus() async throws -> (connections: Int, bufferBytes: Int) {
        var conns = 0, bytes = 0
        for i in 0..<system.cpuCount {
            let (c, b) = try await system.run(on: i) { (self.tcpConnectionCount(cpu: i), self.tcpBufferBytes(cpu: i)) }
            conns += c; bytes += b
        }
        return (conns, bytes)
    }

    /// Waits until every connection is gone (TIME-WAIT expired) or `limit` passes.
    func waitForNoConnections(limit: Duration = .seconds(10)) async throws -> (connections: Int, bufferBytes: Int) {
        let deadline = ContinuousClock.now + limit
        var c = try await tcpCensus()
        while c.connections > 0 || c.bufferBytes > 0, ContinuousClock.now < deadline {
            try await LWKT.sleep(for: .milliseconds(20))
            c = try await tcpCensus()
        }
        return c
    }
}
