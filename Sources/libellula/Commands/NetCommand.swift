import ArgumentParser
import Foundation
import LWKT
import NetStack
import Slab
import Synchronization

/// Set by SIGINT/SIGTERM while `libellula net` runs.
private let netStopRequested = Atomic<Bool>(false)

/// `libellula net --tap NAME --address A/P`: serves ping and a UDP echo port on a TAP
/// device with the Libellula stack, and prints per-CPU counters on exit. With
/// `--socket-echo-port` it also runs a UDP echo as a socket application: one `UDPSocket`
/// and, on every CPU, an LWKT thread that receives a datagram and sends it back (the
/// counterpart of a Linux echo server's `recvfrom`/`sendto` loop, for `Scripts/bench-udp.sh`).
struct NetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "net",
        abstract: "Bring up the network stack on a TAP device; answer ping and UDP echo.",
        discussion: "Needs CAP_NET_ADMIN to open the TAP. Stops on Ctrl-C (or after --duration) and prints the per-CPU counters."
    )

    @Option(help: "TAP device name (created if missing; multi-queue, one queue per CPU).")
    var tap: String

    @Option(help: "IPv4 address and prefix length, for example 10.200.2.1/24.")
    var address: String

    @Option(help: "Default gateway (optional).")
    var gateway: String?

    @Option(help: "UDP port the stack answers as an echo server.")
    var echoPort: UInt16 = 7

    @Option(help: "Also answer UDP echo on this port as a socket application (a UDPSocket with a receive/send thread on every CPU), not inside the stack.")
    var socketEchoPort: UInt16?

    @OptionGroup var cpuOptions: CPUOptions

    @Option(help: "Stop after this many seconds (default: run until interrupted).")
    var duration: Double?

    @Flag(help: "Open the TAP without IFF_VNET_HDR (no checksum or segmentation offload).")
    var noVnetHeader = false

    func parseAddress() throws -> (IPv4Address, Int) {
        let parts = address.split(separator: "/")
        guard parts.count == 2, let a = IPv4Address(String(parts[0])), let p = Int(parts[1]), (0...32).contains(p) else {
            throw ValidationError("--address must look like 10.200.2.1/24")
        }
        return (a, p)
    }

    func validate() throws {
        _ = try parseAddress()
        if let g = gateway, IPv4Address(g) == nil { throw ValidationError("--gateway must be an IPv4 address") }
    }

    func run() async throws {
        let (addr, prefix) = try parseAddress()
        let n = cpuOptions.cpus ?? LWKT.onlineCores
        let system = try LWKT.boot(cpus: n)
        let slab = SlabAllocator(system: system)
        let device: TAPInterface
        do {
            device = try TAPInterface(name: tap, queues: n, vnetHeader: !noVnetHeader)
        } catch {
            _ = try? await system.shutdown()
            throw runtimeFailure(ExitStatus.osError, "cannot open TAP device \(tap): \(error)")
        }
        var c = NetStackConfiguration(address: addr, prefixLength: prefix, gateway: gateway.flatMap { IPv4Address($0) })
        c.udpEchoPort = echoPort
        let stack = try NetStack(system: system, allocator: slab, interface: device, configuration: c)
        try stack.start()
        var echoSocket: UDPSocket?
        var echoThreads: [LWKTThread] = []
        if let port = socketEchoPort {
            let socket = try await UDPSocket.bind(stack, port: port)
            echoSocket = socket
            for id in 0..<n {
                echoThreads.append(LWKTThread.spawn(on: try system.cpu(id), name: "udp-socket-echo") {
                    // Each datagram's mbuf goes back out as the reply (no copy); the loop
                    // ends when the socket is closed.
                    while let d = try? await socket.receivePacket(timeout: nil) {
                        socket.send(packet: d.packet, to: d.source)
                    }
                })
            }
        }
        print("libellula net: \(addr)/\(prefix) on \(tap) (\(n) queues, MAC \(device.macAddress), offloads: "
              + "\(device.offloads.contains(.checksum) ? "checksum" : "none")\(device.offloads.contains(.segmentation) ? "+TSO" : "")); "
              + "answering ping and UDP echo on port \(echoPort)"
              + (socketEchoPort.map { ", socket-application UDP echo on port \($0)" } ?? "") + ". Ctrl-C to stop.")
        flushStandardOutput()
        signal(SIGINT) { _ in netStopRequested.store(true, ordering: .relaxed) }
        signal(SIGTERM) { _ in netStopRequested.store(true, ordering: .relaxed) }
        let deadline = duration.map { ContinuousClock.now + .milliseconds(Int64($0 * 1000)) }
        while !netStopRequested.load(ordering: .relaxed) {
            if let deadline, ContinuousClock.now >= deadline { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        try await echoSocket?.close()
        for t in echoThreads { await t.join() }
        try await stack.stop()
        print(stack.counters.table())
        _ = try await system.shutdown()
    }
}
