import Foundation
import Glibc
import LibellulaTestSupport
import Synchronization

/// A rig from `Scripts/netrig.sh` for `serve` tests: a peer namespace, a router namespace
/// and a persistent multi-queue TAP in the router. `serve` runs in the router namespace,
/// on host sockets (reached over the veth, 10.200.1.254) or on the own stack over the TAP
/// (10.200.2.1); clients run in the peer namespace.
final class ServeRig: @unchecked Sendable {
    let prefix: String
    var peer: String { "\(prefix)-peer" }
    var router: String { "\(prefix)-rtr" }
    var tap: String { "\(prefix)-tap" }
    private var isDown = false

    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let script = repository.appendingPathComponent("Scripts/netrig.sh").path
    static let checks = repository.appendingPathComponent("Tests/ServicesTests/Scripts/backend_checks.py").path
    static let conformance = repository.appendingPathComponent("Tests/ServicesTests/Scripts/http_conformance.py").path
    static let pymemcacheCheck = repository.appendingPathComponent("Scripts/memcached/pymemcache_check.py").path
    static let oracle = repository.appendingPathComponent("Scripts/memcached/oracle.py").path
    /// The python3 on PATH (the one Scripts/test.sh installs pymemcache for).
    static let python = which("python3") ?? "/usr/bin/python3"
    static let ip = "/usr/sbin/ip"

    /// Why the rig tests cannot run here, or nil when they can: root, /dev/net/tun, the
    /// tools of Scripts/test-deps.txt, pymemcache, and a built `libellula`.
    static let unavailableReason: String? = {
        guard getuid() == 0 else { return "needs root (network namespaces and a TAP device)" }
        guard FileManager.default.fileExists(atPath: "/dev/net/tun") else { return "needs /dev/net/tun" }
        for tool in [ip, "/usr/sbin/nft", "/usr/bin/curl", python] where !FileManager.default.isExecutableFile(atPath: tool) {
            return "needs \(tool) (Scripts/test-deps.txt)"
        }
        if run(python, ["-c", "import pymemcache"]).status != 0 { return "needs pymemcache (Scripts/test-pip-deps.txt)" }
        if libellulaBinary == nil { return "needs the libellula binary (swift build)" }
        return nil
    }()

    private static let counter = Atomic<Int>(0)

    /// Removes rigs of test processes that died before their cleanup ran (prefix `ls<pid>x<n>`).
    private static let sweptStale: Bool = {
        for line in run(ip, ["netns", "list"]).output.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            guard name.hasPrefix("ls"), name.hasSuffix("-peer"), let x = name.firstIndex(of: "x"),
                  let pid = Int32(name[name.index(name.startIndex, offsetBy: 2)..<x]) else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { _ = run("/bin/bash", [script, "down", String(name.dropLast("-peer".count))]) }
        }
        return true
    }()

    /// Builds a fresh rig with its TAP.
    init() throws {
        _ = Self.sweptStale
        prefix = "ls\(getpid())x\(Self.counter.wrappingAdd(1, ordering: .relaxed).oldValue)"
        let up = rig("up")
        guard up.status == 0 else { throw RigError(what: "netrig.sh up: \(up.output)") }
        let t = rig("tap")
        guard t.status == 0 else { rig("down"); throw RigError(what: "netrig.sh tap: \(t.output)") }
    }

    deinit { if !isDown { rig("down") } }

    struct RigError: Error, CustomStringConvertible { let what: String; var description: String { what } }

    @discardableResult
    func rig(_ args: String...) -> (status: Int32, output: String) {
        Self.run("/bin/bash", [Self.script] + [args[0], prefix] + args.dropFirst())
    }

    /// Tears the rig down; what is left of it afterwards (empty when everything went).
    func down() -> String {
        isDown = true
        rig("down")
        return rig("leftovers").output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `libellula ARGS` in the router namespace, running.
    func serve(_ args: [String]) throws -> CLIProcess {
        try CLIProcess(Self.ip, ["netns", "exec", router, libellulaBinary ?? "libellula"] + args)
    }

    /// Runs a program in the peer namespace to its end (bounded).
    func inPeer(_ exe: String, _ args: [String], timeout: TimeInterval = 90) -> (status: Int32, output: String) {
        Self.run(Self.ip, ["netns", "exec", peer, exe] + args, timeout: timeout)
    }

    /// Runs a program, waiting at most `timeout` seconds (then kills it); status and output.
    @discardableResult
    static func run(_ exe: String, _ args: [String], timeout: TimeInterval = 90) -> (status: Int32, output: String) {
        // posix_spawn (LibellulaTestSupport), not Foundation's Process.
        do {
            let r = try Subprocess.run(exe, args, timeout: timeout)
            return (r.status, r.output)
        } catch {
            return (-1, "\(error)")
        }
    }
}
