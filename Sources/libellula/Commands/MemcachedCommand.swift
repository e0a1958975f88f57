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

    @OptionGroup var cpuOptions: CPUOptions

    @Option(name: [.customLong("memcached"), .customLong("listen")],
            help: "Address to listen on: ADDR:PORT, [IPV6]:PORT, or [::]:PORT for IPv6 and IPv4 (as `serve --memcached`; --listen is the same).")
    var memcached: String = "127.0.0.1:11211"

    @Option(parsing: .unconditional, help: "MiB of items kept before evicting (memcached's -m).")
    var memory: Int = 64

    @Option(parsing: .unconditional, help: "Largest value accepted, in KiB (memcached's -I).")
    var maxValueKB: Int = 1024

    @Option(parsing: .unconditional, help: "Stop after this many seconds (default: run until SIGINT or SIGTERM).")
    var seconds: Double?

    @Option(parsing: .unconditional, help: "Idle spin window in microseconds before a CPU sleeps (default: 50 with spare cores, 5 when the CPUs take every core, 2 when they outnumber the cores).")
    var spinMicroseconds: Int?

    @Flag(inversion: .prefixedNo,
          help: "Pin each CPU's thread to a core, or not (let the host scheduler place them, as memcached's threads are). Default: pin only when the machine has cores to spare for clients and the kernel.")
    var pin: Bool?

    @Flag(help: "Measure the cost of a cross-CPU GET against a local one (needs --cpus 2 or more), then exit.")
    var measureHop = false

    func validate() throws {
        _ = try parseAddress(memcached, option: "--memcached")
        if memory < 1 || memory > 1 << 20 { throw ValidationError("--memory must be between 1 and \(1 << 20) (MiB), got \(memory)") }
        if maxValueKB < 1 || maxValueKB > 1 << 20 {
            throw ValidationError("--max-value-kb must be between 1 and \(1 << 20) (KiB), got \(maxValueKB)")
        }
        if let spinMicroseconds, spinMicroseconds < 0 || spinMicroseconds > 1_000_000 {
            throw ValidationError("--spin-microseconds must be between 0 and 1000000, got \(spinMicroseconds)")
        }
        if let seconds, !(seconds > 0) { throw ValidationError("--seconds must be more than 0, got \(seconds)") }
    }

    func run() async throws {
        let signals = SignalWaiter()
        let address = try parseAddress(memcached, option: "--memcached")
        let system: LWKTSystem
        let placement = MemcachedService.cpuPlacement(cpus: cpuOptions.cpus ?? LWKT.onlineCores, cores: LWKT.onlineCores,
                                                      pin: pin, spinMicroseconds: spinMicroseconds)
        let configuration = LWKTConfiguration(idleSpin: placement.spinMicroseconds.map { .microseconds($0) }, pin: placement.pin)
        do { system = try LWKT.boot(cpus: cpuOptions.cpus, configuration: configuration) } catch {
            throw runtimeFailure(ExitStatus.osError, "cannot boot the CPUs: \(error)")
        }
        let service: MemcachedService
        do {
            service = try await MemcachedService.start(system: system, address: address.host, port: address.port,
                                                       memoryLimit: memory << 20, maxValueSize: maxValueKB << 10)
        } catch {
            _ = try? await system.shutdown()
            throw ServeCommand.listenFailure("--memcached", memcached, error)
        }
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
        let spin = placement.spinMicroseconds.map { "\($0) µs" } ?? "LWKT default"
        print("libellula memcached: \(system.cpuCount) CPUs (\(placement.pin ? "pinned" : "not pinned"), idle spin \(spin)), listening on \(address.host):\(service.port), \(memory) MiB")
        fflush(nil)
        if let seconds {
            DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { signals.fire(0) }
        }
        _ = await signals.wait()
        let counters = try await service.perCPUCounters()
        for (i, c) in counters.enumerated() {
            print("cpu\(i): get_hits \(c.getHits) get_misses \(c.getMisses) cmd_set \(c.cmdSet) local \(c.localRequests) remote_sent \(c.remoteSent) remote_served \(c.remoteServed) items \(c.currItems) evictions \(c.evictions)")
        }
        await service.stop()
        let report = try await system.shutdown()
        if report.leakedThreads > 0 {
            throw runtimeFailure(ExitStatus.software, "\(report.leakedThreads) LWKT threads did not stop")
        }
    }
}
