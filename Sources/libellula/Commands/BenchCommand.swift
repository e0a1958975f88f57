import ArgumentParser
import Foundation
import LWKT

/// `libellula bench SUITE`: runs a benchmark suite and prints a table, or JSON lines.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Run a benchmark suite: \(BenchCommand.suites.joined(separator: ", ")).",
        discussion: """
        Each row compares Libellula with the alternative a user would pick, measured in the same run.
        With --cpus N, the suites that can scale (\(BenchCommand.scalingSuites.joined(separator: ", "))) run their \
        scaling variant instead: the same work on every one of N CPUs at once, reported as an aggregate and a \
        per-CPU rate (run it at 1, 2, 4, 8, 16 to see how it scales).
        """
    )

    static let suites = ["ipi", "wake", "spawn", "switch", "ports", "slab", "vfs", "net", "tcp", "all"]

    /// The suites that honour `--cpus`.
    static let scalingSuites = ["ipi", "ports", "slab", "tcp"]

    @Argument(help: ArgumentHelp("The suite to run: \(BenchCommand.suites.joined(separator: ", ")) (all runs every one)."))
    var suite: String

    @Flag(help: "Print one JSON object per line: name, unit, value, baseline, baseline_value.")
    var json = false

    @Flag(help: "Fewer iterations (a smoke run).")
    var quick = false

    @Option(help: ArgumentHelp("Run the scaling variant on N CPUs, one per core (suites \(BenchCommand.scalingSuites.joined(separator: ", ")); at most \(CPUOptions.maximumWithoutOversubscribe) here).",
                               valueName: "N"))
    var cpus: Int?

    func validate() throws {
        guard BenchCommand.suites.contains(suite) else {
            throw ValidationError("unknown suite '\(suite)'; choose one of \(BenchCommand.suites.joined(separator: ", "))")
        }
        if let cpus {
            guard BenchCommand.scalingSuites.contains(suite) else {
                throw ValidationError("--cpus works with \(BenchCommand.scalingSuites.joined(separator: ", ")), not '\(suite)'")
            }
            guard cpus >= 1, cpus <= CPUOptions.maximumWithoutOversubscribe else {
                throw ValidationError("--cpus must be between 1 and \(CPUOptions.maximumWithoutOversubscribe) (twice the \(LWKT.onlineCores) online cores), got \(cpus)")
            }
        }
    }

    func run() async throws {
        let reporter = BenchReporter(json: json)
        if let cpus {
            if !json { print("== \(suite) --cpus \(cpus) ==") }
            switch suite {
            case "ipi": try await ScalingBench.ipi(cpus: cpus, reporter: reporter, quick: quick)
            case "ports": try await ScalingBench.ports(cpus: cpus, reporter: reporter, quick: quick)
            case "slab": try await ScalingBench.slab(cpus: cpus, reporter: reporter, quick: quick)
            case "tcp": try await TCPBench.run(reporter: reporter, quick: quick, cpus: cpus)
            default: break
            }
            return
        }
        let everything = ["ipi", "wake", "spawn", "switch", "ports", "slab", "vfs", "net"]
        for s in suite == "all" ? everything : [suite] {
            if !json { print("== \(s) ==") }
            switch s {
            case "ipi": try await LWKTBench.ipi(reporter: reporter, quick: quick)
            case "wake": try await LWKTBench.wake(reporter: reporter, quick: quick)
            case "spawn": try await LWKTBench.spawn(reporter: reporter, quick: quick)
            case "switch": try await LWKTBench.switchSuite(reporter: reporter, quick: quick)
            case "ports": try await PortsBench.ports(reporter: reporter, quick: quick)
            case "slab": try await SlabBench.run(reporter: reporter, quick: quick)
            case "vfs": try await VFSBench.run(reporter: reporter, quick: quick)
            case "net": try await NetBench.run(reporter: reporter, quick: quick)
            case "tcp": try await TCPBench.run(reporter: reporter, quick: quick)
            default: break
            }
        }
    }
}
