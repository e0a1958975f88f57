import ArgumentParser
import Foundation
import LWKT
import Services

/// `libellula memcached`: boots the CPUs and serves the memcached protocol until
/// interrupted (SIGINT/SIGTERM), then prints per-CPU counters and shuts down.
struct MemcachedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memcached",
        abstract: "Serve the memcached text and meta protocol from per-CPU shards."
    )

    @Option(help: "Number of CPUs (default: one per online core).")
    var cpus: Int?

    @Option(help: "Address and port to listen on.")
    var listen: String = "127.0.0.1:11211"

    @Option(help: "Memory limit for items, in MiB.")
    var memory: Int = 64

    @Option(help: "Largest value accepted, in KiB.")
    var maxValueKB: Int = 1024

    @Option(help: "Stop after this many seconds (default: run until interrupted).")
    var seconds: Double?

    @Flag(help: "Measure the cost of a cross-CPU GET against a local one (needs --cpus 2 or more), then exit.")
    var measureHop = false

    func run() async throws {
        guard let colon = listen.lastIndex(of: ":"), let port = UInt16(listen[listen.index(after: colon)...]) else {
            throw ValidationError("--listen wants ADDR:PORT")
        }
        let address = String(listen[..<colon])
        let system = try LWKT.boot(cpus: cpus)
        let service = try await MemcachedService.start(system: system, address: address, port: port,
                                                       memoryLimit: memory << 20, maxValueSize: maxValueKB << 10)
        if measureHop {
            let (local, remote) = try await service.measureHop()
            print(String(format: "GET hit, in place on the owner: %.0f ns; sent to the owner by doMsg and back: %.0f ns", local, remote))
            let r = try await service.measureRouting()
            print(String(format: "10-key get, all keys local: %.0f ns; keys on 2 CPUs: %.0f ns", r.multiGetLocal, r.multiGetMixed))
            print(String(format: "8 pipelined gets on 2 CPUs, one message per remote command: %.0f ns; one message per owner: %.0f ns",
                         r.pipelineOneByOne, r.pipelineBatched))
            await service.stop()
            try await system.shutdown()
            return
        }
        print("libellula memcached: \(system.cpuCount) CPUs, listening on \(address):\(service.port), \(memory) MiB")
        fflush(nil)
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let stop = DispatchSemaphore(value: 0)
        let sources = [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { stop.signal() }
            s.resume()
            return s
        }
        if let seconds {
            DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { stop.signal() }
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async { stop.wait(); c.resume() }
        }
        _ = sources
        let counters = try await service.perCPUCounters()
        for (i, c) in counters.enumerated() {
            print("cpu\(i): get_hits \(c.getHits) get_misses \(c.getMisses) cmd_set \(c.cmdSet) local \(c.localRequests) remote_sent \(c.remoteSent) remote_served \(c.remoteServed) items \(c.currItems) evictions \(c.evictions)")
        }
        await service.stop()
        try await system.shutdown()
    }
}
