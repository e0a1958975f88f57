import CLibellula
import Synchronization

/// The latency histograms every ``LWKTSystem`` keeps, recorded by one-line hooks in the
/// subsystems (no allocation, no lock; see ``LatencyHistogram``) and read by the statistics
/// pages and `/metrics`.
public final class SystemLatencies: Sendable {
    /// HTTP request service time: from a parsed request head to its response queued.
    public let httpService: LatencyHistogram
    /// memcached command time: the commands of one read (pipelined ones together), from
    /// parsing to their replies queued.
    public let memcachedCommand: LatencyHistogram
    /// Cross-CPU `doMsg` round trips that did not complete in the caller's context.
    public let doMsgRoundTrip: LatencyHistogram
    /// IPI delivery, sampled: from a probe's send to its handler on the target CPU.
    public let ipiDelivery: LatencyHistogram
    /// FUSE request service time: from a request read on a CPU's channel to its reply
    /// written (only while a mount runs on the system).
    public let fuseRequest: LatencyHistogram

    /// The stall watchdog running for this system, if one was started (see ``Observability``).
    let watchdog = Mutex<StallWatchdog?>(nil)
    /// 1 while a stall watchdog of this system is parked, waiting for a CPU to leave its
    /// idle sleep (a futex word; see ``StallWatch`` and ``StallDetector``).
    nonisolated(unsafe) let watchdogParked: UnsafeMutablePointer<UInt32> = {
        let p = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        p.initialize(to: 0)
        return p
    }()

    init(cpuCount: Int) {
        httpService = LatencyHistogram(name: "http_service", help: "HTTP request service time (parsed head to response queued)", cpuCount: cpuCount)
        memcachedCommand = LatencyHistogram(name: "memcached_command", help: "memcached command time (the commands of one read, parsed to replies queued)", cpuCount: cpuCount)
        doMsgRoundTrip = LatencyHistogram(name: "domsg_round_trip", help: "Cross-CPU doMsg round trip (asynchronous completions only)", cpuCount: cpuCount)
        ipiDelivery = LatencyHistogram(name: "ipi_delivery", help: "IPI delivery, sampled by probes (send to handler)", cpuCount: cpuCount)
        fuseRequest = LatencyHistogram(name: "fuse_request", help: "FUSE request service time (read from the channel to reply written)", cpuCount: cpuCount)
    }

    deinit { watchdogParked.deallocate() }

    /// Every histogram, in report order.
    public var all: [LatencyHistogram] { [httpService, memcachedCommand, doMsgRoundTrip, ipiDelivery, fuseRequest] }
}

extension LWKTSystem {
    /// Records `nanos` into `histogram` from the current CPU (or the shared block off a CPU).
    @inlinable @inline(__always)
    public static func recordLatency(_ histogram: LatencyHistogram, since start: UInt64) {
        histogram.record(lb_now_ns() &- start, cpu: CPU.currentID)
    }
}

extension CPU {
    /// The current CPU's index, or -1 off a CPU: one thread-local load.
    @inlinable
    public static var currentID: Int {
        guard let l = currentLocal else { return -1 }
        return l.pointee.cpu._withUnsafeGuaranteedRef { $0.id }
    }
}

extension SystemLatencies {
    /// The `doMsg` hook: records a round trip that went asynchronous, on the current CPU.
    @usableFromInline
    static func recordDoMsg(since start: UInt64) {
        guard let l = CPU.currentLocal else { return }
        l.pointee.cpu._withUnsafeGuaranteedRef { $0.system.latencies.doMsgRoundTrip.record(lb_now_ns() &- start, cpu: $0.id) }
    }

    /// The IPI probe's handler: runs on the target CPU, `arg2` is the send time.
    static let probeHandler: IPIFunction = { _, sentAt in
        guard let l = CPU.currentLocal else { return }
        l.pointee.cpu._withUnsafeGuaranteedRef {
            $0.system.latencies.ipiDelivery.record(lb_now_ns() &- UInt64(truncatingIfNeeded: sentAt), cpu: $0.id)
        }
    }

    /// Starts one LWKT thread per CPU that every `interval` sends an active IPI probe to the
    /// next CPU, timing its delivery into ``ipiDelivery`` (sampling: the crossbar's own
    /// sends are not touched). Needs two or more CPUs; the threads end when cancelled or
    /// when the system shuts down.
    @discardableResult
    public static func startIPIProbes(on system: LWKTSystem, interval: Duration = .milliseconds(100)) -> [LWKTThread] {
        guard system.cpuCount >= 2 else { return [] }
        return system.cpus.map { cpu in
            let target = (cpu.id + 1) % system.cpuCount
            return LWKTThread.spawn(on: cpu, priority: .kernel, name: "ipi-probe") {
                while (try? await LWKT.sleep(for: interval)) != nil {
                    let now = Int(truncatingIfNeeded: lb_now_ns())
                    system.crossbar.send(to: target, SystemLatencies.probeHandler, nil, now)
                }
            }
        }
    }
}

extension SystemLatencies {
    /// Each histogram's quantiles, merged over CPUs, by name.
    public func summaries() -> [String: LatencySummary] {
        var d: [String: LatencySummary] = [:]
        for h in all { d[h.name] = h.merged().summary }
        return d
    }
}

extension LWKTSystem {
    /// The stall watchdog's counters and recent reports (empty when none runs).
    public var stallStatistics: StallStatistics {
        latencies.watchdog.withLock { $0 }?.statistics ?? StallStatistics()
    }
}
