#if canImport(Glibc)
import Glibc
#endif

// Starting host programs (ip, nft, curl, python3, sh, the libellula binary) from tests with
// posix_spawn instead of Foundation's Process. Foundation walks /proc/self/fd in the child
// path and has crashed there with many descriptors open; this helper never looks at the
// descriptor table: the child gets stdin from /dev/null, stdout and stderr from pipes (or
// /dev/null), and every other descriptor is closed in it (closefrom where glibc has
// `posix_spawn_file_actions_addclosefrom_np`, otherwise the O_CLOEXEC the project opens
// everything with). The child runs in a process group of its own so that a timeout kills
// what it started too. Ignored signals (SIGPIPE in the test runner) are reset to default.

/// Where a child's standard output and standard error go.
public enum SubprocessOutput: Sendable {
    /// Both into one pipe the parent reads (merged, in the order written).
    case merged
    /// Standard output into a pipe; standard error to /dev/null.
    case stdoutOnly
    /// Standard error into a pipe; standard output to /dev/null.
    case stderrOnly
    /// Both to /dev/null.
    case discarded
    /// Both to the parent's own descriptors 1 and 2.
    case inherited
    /// Both appended to the file at this path (created if missing), so that a long-running
    /// child never blocks on a full pipe and a test can read what it wrote so far.
    case file(String)
}

/// Why a program could not be started.
public struct SubprocessError: Error, CustomStringConvertible, Sendable {
    /// What failed.
    public var operation: String
    /// The error number.
    public var code: Int32
    public var description: String { "\(operation): \(String(cString: strerror(code))) (errno \(code))" }
}

/// How a finished program ended.
public struct SubprocessResult: Sendable {
    /// The exit status, or 128 plus the signal number when a signal ended it.
    public var status: Int32
    /// The signal that ended it, if one did.
    public var signal: Int32?
    /// What it wrote (per the `output` choice; empty for discarded or inherited).
    public var output: String
    /// Whether the timeout ran out and the program (and its process group) was killed.
    public var timedOut: Bool
}

/// A started program. Wait for it with ``wait(timeout:)`` (which also collects its output)
/// or end it with ``terminate(_:)``; a child never waited for is killed and reaped when the
/// object goes away.
public final class Subprocess: @unchecked Sendable {
    // All state below is touched by the one thread that drives the child (tests do not
    // share a Subprocess between threads), except `pid`, which never changes.

    /// The child's process id (also its process group id).
    public let pid: pid_t
    private var readFD: Int32
    private var collected: [UInt8] = []
    private var exit: (status: Int32, signal: Int32?)?

    /// Starts `executable` (a path, or a name looked up on PATH) with `arguments`.
    /// `environment` replaces the parent's when given; `directory` is the child's working
    /// directory.
    public init(_ executable: String, _ arguments: [String] = [], environment: [String: String]? = nil,
                directory: String? = nil, output: SubprocessOutput = .merged) throws {
        var actions = posix_spawn_file_actions_t()
        var attr = posix_spawnattr_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawnattr_init(&attr)
        defer {
            posix_spawn_file_actions_destroy(&actions)
            posix_spawnattr_destroy(&attr)
        }
        var pipeFDs: [Int32] = [-1, -1]
        var usesPipe = false
        switch output {
        case .merged, .stdoutOnly, .stderrOnly: usesPipe = true
        default: break
        }
        if usesPipe {
            guard SpawnExtensions.cloexecPipe(&pipeFDs) == 0 else { throw SubprocessError(operation: "pipe2", code: errno) }
        }
        let (readEnd, writeEnd) = (pipeFDs[0], pipeFDs[1])
        defer { if writeEnd >= 0 { close(writeEnd) } }

        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        switch output {
        case .merged:
            posix_spawn_file_actions_adddup2(&actions, writeEnd, 1)
            posix_spawn_file_actions_adddup2(&actions, writeEnd, 2)
        case .stdoutOnly:
            posix_spawn_file_actions_adddup2(&actions, writeEnd, 1)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        case .stderrOnly:
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_adddup2(&actions, writeEnd, 2)
        case .discarded:
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        case .inherited:
            break
        case .file(let path):
            posix_spawn_file_actions_addopen(&actions, 1, path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        if let closeFrom = SpawnExtensions.addCloseFrom { _ = closeFrom(&actions, 3) }
        if let directory {
            guard let chdir = SpawnExtensions.addChdir else {
                if readEnd >= 0 { close(readEnd) }
                throw SubprocessError(operation: "posix_spawn_file_actions_addchdir_np", code: ENOSYS)
            }
            _ = chdir(&actions, directory)
        }

        // Own process group; default dispositions for the signals a test runner ignores;
        // nothing blocked.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGPIPE, SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&defaults, s) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setpgroup(&attr, 0)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv = ([executable] + arguments).map { strdup($0) }
        defer { for p in argv { free(p) } }
        var argvNull = argv + [nil]
        var envStrings: [UnsafeMutablePointer<CChar>?] = []
        if let environment { envStrings = environment.map { strdup("\($0.key)=\($0.value)") } }
        defer { for p in envStrings { free(p) } }
        var envNull = envStrings + [nil]

        var child: pid_t = 0
        let rc: Int32 = argvNull.withUnsafeMutableBufferPointer { av in
            envNull.withUnsafeMutableBufferPointer { ev in
                let envp: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>
                if environment == nil { envp = environ } else { envp = ev.baseAddress! }
                if executable.contains("/") {
                    return posix_spawn(&child, executable, &actions, &attr, av.baseAddress!, envp)
                }
                return posix_spawnp(&child, executable, &actions, &attr, av.baseAddress!, envp)
            }
        }
        guard rc == 0 else {
            if readEnd >= 0 { close(readEnd) }
            throw SubprocessError(operation: "posix_spawn \(executable)", code: rc)
        }
        pid = child
        readFD = readEnd
    }

    deinit {
        if exit == nil {
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
            _ = reap(block: true)
        }
        if readFD >= 0 { close(readFD) }
    }

    /// Runs a program to its end and returns how it ended and what it wrote. After
    /// `timeout` seconds the child's process group is killed and `timedOut` is set.
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String] = [], environment: [String: String]? = nil,
                           directory: String? = nil, output: SubprocessOutput = .merged,
                           timeout: Double = 300) throws -> SubprocessResult {
        let p = try Subprocess(executable, arguments, environment: environment, directory: directory, output: output)
        return p.wait(timeout: timeout)
    }

    /// Whether the child has not exited yet (reaps it when it has).
    public var isRunning: Bool { exit == nil && !reap(block: false) }

    /// The child's process id (Foundation's name, for callers written against `Process`).
    public var processIdentifier: pid_t { pid }

    /// The exit status (or 128 plus the signal number) once the child has been waited
    /// for; -1 before.
    public var terminationStatus: Int32 { exit?.status ?? -1 }

    /// Waits for the child without a time limit (its output, if piped, is collected).
    public func waitUntilExit() { _ = wait(timeout: .infinity) }

    /// Sends `signal` to the child (and, with `group`, to its whole process group).
    public func terminate(_ signal: Int32 = SIGTERM, group: Bool = true) {
        guard exit == nil else { return }
        if group { kill(-pid, signal) }
        kill(pid, signal)
    }

    /// Collects the child's output until it has exited and the pipe is closed (programs
    /// it left running in the background still hold the pipe, and are waited for too, as
    /// Foundation's `readDataToEndOfFile` would), and returns how it ended. After `timeout`
    /// seconds the child's process group is killed and `timedOut` is set.
    @discardableResult
    public func wait(timeout: Double = 300) -> SubprocessResult {
        let deadline = timeout.isFinite ? Self.now() + max(0, timeout) : .infinity
        var timedOut = false
        while true {
            let exited = exit != nil || reap(block: false)
            if readFD < 0 {
                if exited { break }
                if Self.now() >= deadline { timedOut = true; break }
                usleep(2_000)
                continue
            }
            if drain(waitMillis: 20) < 0 { close(readFD); readFD = -1; continue }   // end of file
            if Self.now() >= deadline { timedOut = true; break }
        }
        if timedOut {
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
            _ = reap(block: true)
            if readFD >= 0 { _ = drain(waitMillis: 0) }
        }
        if readFD >= 0 { close(readFD); readFD = -1 }
        let e = exit ?? (status: -1, signal: nil)
        return SubprocessResult(status: e.status, signal: e.signal,
                                output: String(decoding: collected, as: UTF8.self), timedOut: timedOut)
    }

    /// What the child wrote to its pipe since the last call, waiting up to `timeout` seconds
    /// for the first byte (Foundation's `availableData`); nil at end of file or when nothing
    /// came in time. What it returns is also part of the output ``wait(timeout:)`` returns.
    public func readAvailable(timeout: Double = 30) -> String? {
        guard readFD >= 0 else { return nil }
        let start = collected.count
        let got = drain(waitMillis: Int32(max(0, min(timeout, 3_600)) * 1000))
        if got < 0 { close(readFD); readFD = -1 }
        guard collected.count > start else { return nil }
        return String(decoding: collected[start...], as: UTF8.self)
    }

    /// Reads what the pipe has, waiting up to `waitMillis` for the first byte: the number
    /// of bytes read, or -1 at end of file.
    private func drain(waitMillis: Int32) -> Int {
        var pfd = pollfd(fd: readFD, events: Int16(POLLIN), revents: 0)
        let r = poll(&pfd, 1, waitMillis)
        guard r > 0 else { return 0 }
        var total = 0
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(readFD, $0.baseAddress, $0.count) }
            if n > 0 {
                collected.append(contentsOf: chunk[0..<n])
                total += n
                if n < chunk.count { return total }
                continue
            }
            if n == 0 { return total > 0 ? total : -1 }
            if errno == EINTR { continue }
            return total > 0 ? total : -1
        }
    }

    /// Reaps the child if it has exited; returns whether it has.
    private func reap(block: Bool) -> Bool {
        if exit != nil { return true }
        var st: Int32 = 0
        while true {
            let r = waitpid(pid, &st, block ? 0 : WNOHANG)
            if r == pid { break }
            if r == 0 { return false }
            if errno == EINTR { continue }
            // Someone else reaped it (ECHILD): the status is lost.
            exit = (status: -1, signal: nil)
            return true
        }
        let termsig = st & 0x7f
        if termsig == 0 {
            exit = (status: (st >> 8) & 0xff, signal: nil)
        } else {
            exit = (status: 128 + termsig, signal: termsig)
        }
        return true
    }

    private static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

/// glibc's non-portable spawn file actions, looked up at run time (closefrom needs glibc
/// 2.34, chdir 2.29).
enum SpawnExtensions {
    typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    typealias Chdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32

    typealias Pipe2 = @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32

    static let addCloseFrom: CloseFrom? = symbol("posix_spawn_file_actions_addclosefrom_np")
    static let pipe2: Pipe2? = symbol("pipe2")

    /// A pipe whose two ends are close-on-exec (atomically with pipe2 where it is found).
    static func cloexecPipe(_ fds: inout [Int32]) -> Int32 {
        if let pipe2 { return fds.withUnsafeMutableBufferPointer { pipe2($0.baseAddress!, O_CLOEXEC) } }
        guard pipe(&fds) == 0 else { return -1 }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        return 0
    }
    static let addChdir: Chdir? = symbol("posix_spawn_file_actions_addchdir_np")

    private static func symbol<F>(_ name: String) -> F? {
        guard let p = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { return nil }
        return unsafeBitCast(p, to: F.self)
    }
}
