import ArgumentParser
import Glibc
import LWKT
import Services

/// Exit statuses of the `libellula` commands, after BSD's `sysexits.h`: a usage error (64)
/// is only ever a malformed command line; a failure at run time gets the code of its cause
/// and a one-line message with the system's own words for the error, and no usage text.
enum ExitStatus {
    /// The command line is wrong (ArgumentParser prints the usage).
    static let usage: Int32 = 64
    /// An input file or directory (such as `--root`) does not exist or is not a directory.
    static let noInput: Int32 = 66
    /// A service is unavailable: an address in use or not local, a server that refuses.
    static let unavailable: Int32 = 69
    /// An internal error (for example CPUs that did not stop in time).
    static let software: Int32 = 70
    /// The operating system refused something else (memory, descriptors, threads).
    static let osError: Int32 = 71
    /// Permission denied (a privileged port, an unreadable directory).
    static let noPermission: Int32 = 77

    /// The status for a failed system call's `errno`.
    static func forErrno(_ e: Int32) -> Int32 {
        switch e {
        case EADDRINUSE, EADDRNOTAVAIL, ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, ETIMEDOUT, ECONNRESET: unavailable
        case EACCES, EPERM: noPermission
        case ENOENT, ENOTDIR: noInput
        default: osError
        }
    }
}

/// Prints `libellula: error: MESSAGE` to standard error and returns the exit to throw.
func runtimeFailure(_ status: Int32, _ message: String) -> ExitCode {
    fflush(nil)
    var line = "libellula: error: " + message + "\n"
    line.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    return ExitCode(status)
}

/// The text of `errno` value `e` (`strerror`).
func errorText(_ e: Int32) -> String { String(cString: strerror(e)) }

/// `--cpus` and `--oversubscribe`, the same for every command that boots CPUs.
struct CPUOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: ArgumentHelp("Number of CPUs (default: one per online core; at most \(CPUOptions.maximumWithoutOversubscribe) here without --oversubscribe)."))
    var cpus: Int?

    @Flag(help: "Allow more CPUs than twice the online cores (each pair of CPUs gets an IPI ring, so memory grows with the square of --cpus).")
    var oversubscribe = false

    /// The most CPUs allowed without `--oversubscribe`: twice the online cores (at least 4).
    static var maximumWithoutOversubscribe: Int { max(4, 2 * LWKT.onlineCores) }

    /// LWKT's own limit.
    static let hardMaximum = 1024

    /// Bytes of IPI rings `n` CPUs take (one ring of slots for each ordered pair).
    static func ringBytes(_ n: Int) -> Int { n * n * IPICrossbar.ringCapacity * 32 }

    func validate() throws {
        guard let cpus else { return }
        if cpus < 1 { throw ValidationError("--cpus must be at least 1, got \(cpus)") }
        if cpus > Self.hardMaximum { throw ValidationError("--cpus must be at most \(Self.hardMaximum), got \(cpus)") }
        if cpus > Self.maximumWithoutOversubscribe && !oversubscribe {
            throw ValidationError("--cpus \(cpus) is more than twice the \(LWKT.onlineCores) online cores; add --oversubscribe to run anyway (its IPI rings take about \(Self.ringBytes(cpus) >> 20) MiB)")
        }
    }
}

/// Parses an `ADDR:PORT` option, naming the option in the error.
func parseAddress(_ text: String, option: String) throws -> SocketAddress {
    guard let a = SocketAddress(parsing: text) else {
        throw ValidationError("\(option) wants ADDR:PORT (127.0.0.1:8080, *:8080, [::1]:8080 or [::]:8080), got '\(text)'")
    }
    return a
}
