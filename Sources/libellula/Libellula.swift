import ArgumentParser

/// The `libellula` command: boots Libellula's CPUs and runs its services and benchmarks.
@main
struct Libellula: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "libellula",
        abstract: "DragonFly BSD's LWKT SMP design as a Swift library OS.",
        discussion: "Exit status: 0 success, 64 command-line error, 66 missing input (--root), 69 service unavailable (address in use, server refused), 70 internal error (shutdown did not finish), 71 other operating-system error, 77 permission denied.",
        version: "libellula \(libellulaVersion)",
        subcommands: [BootCommand.self, ServeCommand.self, StatCommand.self, MemcachedCommand.self, BenchCommand.self, NetCommand.self, MountCommand.self]
    )
}

/// The version `libellula --version` prints.
let libellulaVersion = "0.2.0"
