import ArgumentParser
import Foundation

/// `libellula bench SUITE`: runs a benchmark suite and prints a table, or JSON lines.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Run a benchmark suite: \(BenchCommand.suites.joined(separator: ", ")).",
        discussion: "Each row compares Libellula with the alternative a user would pick, measured in the same run."
    )

    static let suites = ["ipi", "wake", "spawn", "switch", "ports", "slab", "vfs", "net", "tcp", "all"]

    @Argument(help: ArgumentHelp("The suite to run: \(BenchCommand.suites.joined(separator: ", ")) (all runs every one)."))
    var suite: String

    @Flag(help: "Print one JSON object per line: name, unit, value, baseline, baseline_value.")
    var json = false

    @Flag(help: "Fewer iterations (a smoke run).")
    var quick = false

    func validate() throws {
        guard BenchCommand.suites.contains(suite) else {
            throw ValidationError("unknown suite '\(suite)'; choose one of \(BenchCommand.suites.joined(separator: ", "))")
        }
    }

    func run() async throws {
        let reporter = BenchReporter(json: json)
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
