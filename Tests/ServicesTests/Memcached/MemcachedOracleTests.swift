import Foundation
import Glibc
import LibellulaTestSupport
import Testing
@testable import Services

/// Differential and client-library tests: they need python3 (and pymemcache), and Debian's
/// memcached as the oracle. Scripts/test.sh installs them; without them these tests skip.
@Suite(.serialized) struct MemcachedOracleTests {
    static let hasPython = which("python3") != nil
    static let hasMemcached = which("memcached") != nil
    static let hasPymemcache = hasPython && pythonHas("pymemcache")

    @Test(.enabled(if: hasPython && hasMemcached,
                   "needs python3 and Debian's memcached (apt-get install memcached; Scripts/test.sh does it)"))
    func sameResponsesAsMemcached() async throws {
        guard let mc = which("memcached"), let py = which("python3") else { return }
        let port = freePort()
        let oracle = try Subprocess(mc, ["-l", "127.0.0.1", "-p", "\(port)", "-U", "0", "-t", "2", "-m", "64"] + (getuid() == 0 ? ["-u", "root"] : []),
                                    output: .discarded)
        defer { kill(oracle.processIdentifier, SIGKILL); oracle.waitUntilExit() }
        // Wait (bounded) until the oracle accepts connections.
        var up = false
        for _ in 0..<100 where !up {
            if (try? TestClient(port: port)) != nil { up = true } else { usleep(20_000) }
        }
        try #require(up, "memcached did not start on port \(port)")
        try await withService { s in
            let (status, output) = try await runProcess(py, ["\(memcachedScripts)/oracle.py", "127.0.0.1:\(port)", "127.0.0.1:\(s.port)"])
            #expect(status == 0, "oracle differences:\n\(output)")
            #expect(output.contains(" 0 mismatches"))
        }
    }

    /// Randomized storage commands (valid and refused, their values commands themselves):
    /// replies byte for byte as memcached's, and no value ever runs as commands.
    @Test(.enabled(if: hasPython && hasMemcached,
                   "needs python3 and Debian's memcached (apt-get install memcached; Scripts/test.sh does it)"))
    func storageFuzzHasNoDesyncs() async throws {
        guard let mc = which("memcached"), let py = which("python3") else { return }
        let port = freePort()
        let oracle = try startOracle(mc, port: port)
        defer { kill(oracle.processIdentifier, SIGKILL); oracle.waitUntilExit() }
        try await withService { s in
            let (status, output) = try await runProcess(py, ["\(memcachedScripts)/storage_fuzz.py", "127.0.0.1:\(port)", "127.0.0.1:\(s.port)", "400"])
            #expect(status == 0, "fuzz:\n\(output)")
            #expect(output.contains(" 0 mismatches") && output.contains("subject 0"))
        }
    }

    /// Issue 11 item 6: under the same -m, the same items fill the cache as in memcached
    /// (`bytes` and the memory limit count what memcached counts).
    @Test(.enabled(if: hasPython && hasMemcached,
                   "needs python3 and Debian's memcached (apt-get install memcached; Scripts/test.sh does it)"))
    func memoryLimitAsMemcached() async throws {
        guard let mc = which("memcached"), let py = which("python3") else { return }
        let port = freePort()
        let oracle = try startOracle(mc, port: port, megabytes: 16)
        defer { kill(oracle.processIdentifier, SIGKILL); oracle.waitUntilExit() }
        try await withService(memory: 16 << 20) { s in
            let (status, output) = try await runProcess(py, ["\(memcachedScripts)/memory_check.py", "127.0.0.1:\(port)", "127.0.0.1:\(s.port)"])
            #expect(status == 0, "memory:\n\(output)")
        }
    }

    /// Starts Debian's memcached (2 threads, -I 1m) and waits until it accepts.
    func startOracle(_ mc: String, port: UInt16, megabytes: Int = 64) throws -> Subprocess {
        // posix_spawn (LibellulaTestSupport), not Foundation's Process.
        let oracle = try Subprocess(mc, ["-l", "127.0.0.1", "-p", "\(port)", "-U", "0", "-t", "2", "-m", "\(megabytes)"] + (getuid() == 0 ? ["-u", "root"] : []),
                                    output: .discarded)
        var up = false
        for _ in 0..<100 where !up {
            if (try? TestClient(port: port)) != nil { up = true } else { usleep(20_000) }
        }
        if !up { kill(oracle.processIdentifier, SIGKILL); throw TestError("memcached did not start on port \(port)") }
        return oracle
    }

    @Test(.enabled(if: hasPymemcache,
                   "needs python3 with pymemcache (pip install -r Scripts/test-pip-deps.txt; Scripts/test.sh does it)"))
    func pymemcacheEveryCommand() async throws {
        guard let py = which("python3") else { return }
        try await withService { s in
            let (status, output) = try await runProcess(py, ["\(memcachedScripts)/pymemcache_check.py", "127.0.0.1:\(s.port)"])
            #expect(status == 0, "pymemcache:\n\(output)")
            #expect(output.contains("checks passed"))
        }
    }
}
