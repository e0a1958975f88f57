#if !os(Linux)
#error("Libellula runs on Linux only: it needs Glibc, epoll, eventfd, futexes and pthread_setaffinity_np.")
#endif

import CLibellula

/// The namespace of Libellula's Light Weight Kernel Threading layer: booting the per-CPU
/// schedulers and the calls an LWKT thread makes on the CPU it runs on.
public enum LWKT {
    /// Starts one pinned OS thread per CPU and returns the running system.
    ///
    /// - Parameters:
    ///   - cpus: how many CPUs to start; `nil` means one per online core. More CPUs than
    ///     cores is allowed (a warning is printed) so that tests can oversubscribe.
    ///   - configuration: spinning, tick and logging settings.
    public static func boot(cpus: Int? = nil, configuration: LWKTConfiguration = .init()) throws -> LWKTSystem {
        let system = try LWKTSystem(cpuCount: cpus ?? Int(lb_online_cores()), configuration: configuration)
        StallWatchdog.startFromEnvironment(system)
        return system
    }

    /// The number of online processor cores of this machine.
    public static var onlineCores: Int { Int(lb_online_cores()) }
}

/// Errors raised by LWKT calls.
public enum LWKTError: Error, Equatable, CustomStringConvertible {
    /// The call must run on one of a system's CPUs (inside an LWKT thread or a task
    /// bound to a CPU executor).
    case notOnCPU(String)
    /// A CPU count outside 1...1024 was asked for.
    case invalidCPUCount(Int)
    /// A CPU index that the system does not have.
    case noSuchCPU(Int)
    /// The system is shutting down or has shut down.
    case shutDown
    /// A system call failed.
    case systemCall(String, Int32)
    /// A token was released out of order, or released by a thread that does not hold it.
    case tokenMisuse(String)
    /// A critical section was exited more often than entered.
    case criticalSectionUnderflow
    /// Every globaldata slot is taken (the payload is the name that asked for one).
    case globaldataSlotsExhausted(String)

    public var description: String {
        switch self {
        case .notOnCPU(let what): return "\(what) must be called on an LWKT CPU"
        case .invalidCPUCount(let n): return "invalid CPU count \(n) (1...1024)"
        case .noSuchCPU(let n): return "no CPU \(n) in this system"
        case .shutDown: return "the LWKT system is shut down"
        case .systemCall(let call, let err): return "\(call) failed: errno \(err)"
        case .tokenMisuse(let why): return "token misuse: \(why)"
        case .criticalSectionUnderflow: return "critical section exited more often than entered"
        case .globaldataSlotsExhausted(let name): return "no globaldata slot left for \(name)"
        }
    }
}
