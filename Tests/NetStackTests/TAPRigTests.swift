import Foundation
import Testing
import LWKT
import Slab
@testable import NetStack

/// A stack on a multi-queue TAP inside the rig of Scripts/netrig.sh, with Linux as the peer.
struct TAPRig: @unchecked Sendable {
    let prefix: String
    let system: LWKTSystem
    let stack: NetStack
    var peerNS: String { "\(prefix)-peer" }
    var routerNS: String { "\(prefix)-rtr" }
    static let stackAddress = IPv4Address(10, 200, 2, 1)
    static let peerAddress = IPv4Address(10, 200, 1, 1)
}

func withTAPRig(cpus: Int = 2, _ body: (TAPRig) async throws -> Void) async throws {
    let prefix = Rig.prefix()
    let up = Rig.rig("up", prefix)
    guard up.status == 0 else { Issue.record("rig up failed: \(up.output)"); return }
    defer { Rig.rig("down", prefix) }
    let system = try LWKT.boot(cpus: cpus, configuration: .init(idleSpin: .microseconds(20), pin: false, warnings: false))
    let slab = SlabAllocator(system: system, configuration: .init(debug: false))
    let tap = try TAPInterface(name: "\(prefix)t", queues: cpus)
    #expect(tap.offloads.contains(.checksum))
    let attach = Rig.rig("attach", prefix, "\(prefix)t")
    #expect(attach.status == 0, "\(attach.output)")
    var c = NetStackConfiguration(address: TAPRig.stackAddress, prefixLength: 24, gateway: IPv4Address(10, 200, 2, 254))
    c.udpEchoPort = 7
    let stack = try NetStack(system: system, allocator: slab, interface: tap, configuration: c)
    try stack.start()
    let rig = TAPRig(prefix: prefix, system: system, stack: stack)
    var failure: (any Error)?
    do { try await body(rig) } catch { failure = error }
    try await stack.stop()
    _ = try await system.shutdown(timeout: .seconds(20))
    if let failure { throw failure }
}

@Suite(.serialized, .enabled(if: Rig.available, Rig.skipReason))
struct TAPRigTests {
    @Test(.timeLimit(.minutes(2))) func pingBothWays() async throws {
        try await withTAPRig { rig in
            let r = Rig.run("/usr/sbin/ip", ["netns", "exec", rig.peerNS, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.200.2.1"])
            #expect(r.status == 0, "Linux → stack ping: \(r.output)")
            let replies = try await rig.system.run(on: 0) { try await rig.stack.ping(TAPRig.peerAddress, count: 3, timeout: .seconds(5)) }
            #expect(replies == 3, "stack → Linux ping")
            #expect(rig.stack.counters.total(.icmpEchoReplies) >= 3)
        }
    }

    @Test(.timeLimit(.minutes(2))) func udpEchoBothWaysWithFragments() async throws {
        try await withTAPRig { rig in
            // Linux client → the stack's echo port; large sizes are fragmented by Linux and
            // reassembled by us, and our replies are fragmented by us.
            let sizes = "10,1400,1473,3000,30000,65000"
            let r = Rig.python(in: rig.peerNS, Rig.echoClient, ["10.200.2.1", "7", sizes])
            #expect(r.status == 0, "Linux → stack UDP echo: \(r.output)")
            #expect(rig.stack.counters.total(.datagramsReassembled) >= 4)
            #expect(rig.stack.counters.total(.fragmentsSent) > 0)
            // The stack's socket → a Linux echo server.
            let server = try Rig.spawnPython(in: rig.peerNS, Rig.echoServer, ["9000", "20"])
            defer { server.terminate() }
            try await Task.sleep(for: .milliseconds(400))
            let stack = rig.stack
            let ok = try await rig.system.run(on: 1) { () async throws -> Int in
                let s = try await UDPSocket.bind(stack)
                var ok = 0
                for size in [16, 1472, 1473, 5000, 40000, 65507] {
                    let data = pattern(size, tag: size)
                    for _ in 0..<3 {
                        try await s.send(data, to: IPv4Endpoint(TAPRig.peerAddress, 9000))
                        if let d = try await s.receive(timeout: .seconds(2)) {
                            if d.payload == data { ok += 1; break }
                        }
                    }
                }
                try await s.close()
                return ok
            }
            #expect(ok == 6, "stack → Linux UDP echo")
        }
    }

    @Test(.timeLimit(.minutes(2))) func routerLossIsExactlyWhatUDPLoses() async throws {
        try await withTAPRig { rig in
            let server = try Rig.spawnPython(in: rig.peerNS, Rig.echoServer, ["9001", "30"])
            defer { server.terminate() }
            try await Task.sleep(for: .milliseconds(400))
            let stack = rig.stack
            // Warm ARP on both sides before loss starts.
            _ = try await rig.system.run(on: 0) { try await stack.ping(TAPRig.peerAddress, count: 1, timeout: .seconds(3)) }
            #expect(Rig.rig("impair", rig.prefix, "150").status == 0)
            let n = 300
            let received = try await rig.system.run(on: 0) { () async throws -> Int in
                let s = try await UDPSocket.bind(stack)
                var got = 0
                for i in 0..<n {
                    try await s.send(pattern(64, tag: i), to: IPv4Endpoint(TAPRig.peerAddress, 9001))
                    if i % 16 == 15 { try await LWKT.sleep(for: .milliseconds(2)) }
                    while try await s.receive(timeout: .zero) != nil { got += 1 }
                }
                let deadline = ContinuousClock.now + .seconds(3)
                while ContinuousClock.now < deadline, let _ = try await s.receive(timeout: .milliseconds(300)) { got += 1 }
                try await s.close()
                return got
            }
            let drops = Int(Rig.rig("drops", rig.prefix).output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
            Rig.rig("unimpair", rig.prefix)
            #expect(drops > 0)
            #expect(received == n - drops, "received \(received), router dropped \(drops)")
        }
    }
}

/// Runs with or without privilege: invalid names are refused up front, and without
/// CAP_NET_ADMIN opening a TAP fails with a message that says what is missing.
@Suite struct TAPErrorTests {
    @Test func tapErrorsAreClear() throws {
        #expect(throws: NetError.self) { _ = try TAPInterface(name: String(repeating: "x", count: 40), queues: 1) }
        #expect(throws: NetError.self) { _ = try TAPInterface(name: "bad/name", queues: 1) }
        #expect(throws: NetError.self) { _ = try TAPInterface(name: "lbq", queues: 0) }
        guard getuid() != 0, FileManager.default.fileExists(atPath: "/dev/net/tun") else { return }
        do {
            _ = try TAPInterface(name: "lbnopriv", queues: 1)
            Issue.record("opening a TAP without privilege succeeded")
        } catch NetError.permissionDenied(let message) {
            #expect(message.contains("CAP_NET_ADMIN"))
        }
    }
}
