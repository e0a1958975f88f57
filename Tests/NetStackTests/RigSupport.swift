import Foundation
import LibellulaTestSupport
import Testing
import Synchronization
@testable import NetStack

/// Drives `Scripts/netrig.sh` and Linux-side helpers for the TAP tests.
enum Rig {
    static let script: String = {
        var dir = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { dir.deleteLastPathComponent() }
        return dir.appendingPathComponent("Scripts/netrig.sh").path
    }()

    static let python = "/usr/bin/python3"

    /// Whether the TAP tests can run: root, /dev/net/tun and the tools in Scripts/test-deps.txt.
    static let available: Bool = {
        guard getuid() == 0, FileManager.default.fileExists(atPath: "/dev/net/tun") else { return false }
        for tool in ["ip", "nft", "ping"] where run("/bin/sh", ["-c", "command -v \(tool)"]).status != 0 { return false }
        return FileManager.default.isExecutableFile(atPath: python)
    }()

    static let skipReason: Comment = "needs root, /dev/net/tun and iproute2, nftables, iputils-ping and python3 (Scripts/test-deps.txt)"

    private static let counter = Atomic<Int>(0)

    /// A fresh rig prefix unique to this process: `lb<pid>x<n>`. The first call also
    /// removes rigs left behind by test processes that died before their cleanup ran.
    static func prefix() -> String {
        _ = sweptStale
        return "lb\(getpid())x\(counter.wrappingAdd(1, ordering: .relaxed).oldValue)"
    }

    private static let sweptStale: Bool = {
        let list = run("/usr/sbin/ip", ["netns", "list"]).output
        for line in list.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            guard name.hasPrefix("lb"), name.hasSuffix("-peer"), let x = name.firstIndex(of: "x"),
                  let pid = Int32(name[name.index(name.startIndex, offsetBy: 2)..<x]) else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH {
                rig("down", String(name.dropLast("-peer".count)))
            }
        }
        return true
    }()

    /// Runs a program to its end (killed after `timeout` seconds): its status and merged
    /// output. posix_spawn, not Foundation's Process (see LibellulaTestSupport/Subprocess).
    @discardableResult
    static func run(_ exe: String, _ args: [String], timeout: Double = 600) -> (status: Int32, output: String) {
        do {
            let r = try Subprocess.run(exe, args, timeout: timeout)
            return (r.status, r.timedOut ? r.output + "\n(killed after \(timeout) s)" : r.output)
        } catch {
            return (-1, "\(error)")
        }
    }

    @discardableResult
    static func rig(_ args: String...) -> (status: Int32, output: String) { run("/bin/bash", [script] + args) }

    /// Runs a Python snippet in namespace `ns`.
    static func python(in ns: String, _ code: String, _ args: [String] = []) -> (status: Int32, output: String) {
        run("/usr/sbin/ip", ["netns", "exec", ns, python, "-c", code] + args)
    }

    /// Starts a Python snippet in namespace `ns` in the background.
    static func spawnPython(in ns: String, _ code: String, _ args: [String] = []) throws -> Subprocess {
        try Subprocess("/usr/sbin/ip", ["netns", "exec", ns, python, "-c", code] + args, output: .discarded)
    }

    /// A UDP echo server that serves for `seconds` seconds: argv port, seconds.
    static let echoServer = """
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(('0.0.0.0', int(sys.argv[1]))); s.settimeout(0.5)
    end = time.time() + float(sys.argv[2])
    while time.time() < end:
        try:
            d, a = s.recvfrom(70000); s.sendto(d, a)
        except socket.timeout:
            pass
    """

    /// Sends datagrams of the given sizes and checks each echo: argv host, port, sizes.
    static let echoClient = """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    sizes = [int(x) for x in sys.argv[3].split(',')]
    ok = 0
    for n in sizes:
        data = bytes((i * 7 + n) & 255 for i in range(n))
        for attempt in range(3):
            s.sendto(data, (sys.argv[1], int(sys.argv[2])))
            try:
                r, _ = s.recvfrom(70000)
                if r == data:
                    ok += 1; break
            except socket.timeout:
                pass
    print(ok)
    sys.exit(0 if ok == len(sizes) else 1)
    """

    /// Request/response loop for `seconds`: argv host, port, seconds; prints requests answered.
    static let rateClient = """
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.5)
    addr = (sys.argv[1], int(sys.argv[2])); end = time.time() + float(sys.argv[3]); n = 0
    msg = b'x' * 32
    while time.time() < end:
        s.sendto(msg, addr)
        try:
            s.recvfrom(2048); n += 1
        except socket.timeout:
            pass
    print(n)
    """
}
