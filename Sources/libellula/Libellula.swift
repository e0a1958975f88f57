import ArgumentParser

/// The `libellula` command: boots Libellula's CPUs and runs its services and benchmarks.
@main
struct Libellula: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "libellula",
        abstract: "DragonFly BSD's LWKT SMP design as a Swift library OS.",
        subcommands: [BootCommand.self, ServeCommand.self, StatCommand.self, MemcachedCommand.self, BenchCommand.self, NetCommand.self, MountCommand.self]
    )
}
