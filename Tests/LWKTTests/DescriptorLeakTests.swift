import Testing
import Synchronization
import LibellulaTestSupport
@testable import LWKT
#if canImport(Glibc)
import Glibc
#endif

/// A shut-down system gives back its descriptors (each CPU's epoll instance and eventfd)
/// at shutdown, even while references to it live on; and the tests' process helper starts
/// programs whatever the number of open descriptors.
@Suite("Descriptor leaks", .serialized)
struct DescriptorLeakTests {
    /// The count settles back to `baseline + slack` (other suites running side by side in
    /// a parallel run can hold a few for a while, so it is read again for up to 10 s).
    static func settles(atMost limit: Int) async -> (Bool, FDCensus) {
        var census = FDCensus.take()
        for _ in 0..<100 where census.total > limit {
            try? await Task.sleep(for: .milliseconds(100))
            census = FDCensus.take()
        }
        return (census.total <= limit, census)
    }

    @Test("Booting and shutting down systems leaves no descriptors behind")
    func shutdownClosesCPUDescriptors() async throws {
        let cycles = 12, cpus = 2
        // One cycle first, for whatever the process opens once (lazily) on a first boot.
        let warm = try LWKT.boot(cpus: cpus, configuration: .init(idleSpin: .microseconds(20), warnings: false))
        try await warm.shutdown()
        let baseline = FDCensus.take()
        var kept: [LWKTSystem] = []   // held on purpose: shutdown, not deinit, must close them
        for _ in 0..<cycles {
            let s = try LWKT.boot(cpus: cpus, configuration: .init(idleSpin: .microseconds(20), warnings: false))
            // Make the CPUs sleep in epoll and be woken by IPIs, so the eventfds are used.
            _ = try await s.run(on: 1) { 1 }
            let report = try await s.shutdown()
            #expect(report.joinedCPUs == cpus)
            for c in s.cpus { #expect(c.descriptorsClosed) }
            kept.append(s)
        }
        let (ok, after) = await Self.settles(atMost: baseline.total + 2)
        #expect(ok, "before \(baseline), after \(cycles) systems of \(cpus) CPUs: \(after), grew \(after.growth(since: baseline))")
        withExtendedLifetime(kept) {}
    }

    @Test("Shutting down twice and waking a stopped CPU are harmless")
    func closeIsIdempotent() async throws {
        let s = try LWKT.boot(cpus: 2, configuration: .init(idleSpin: .microseconds(20), warnings: false))
        try await s.shutdown()
        try await s.shutdown()
        for c in s.cpus {
            c.closeDescriptors()
            // A late sender: must not write to a closed (or reused) descriptor number.
            c.signals.pointee.sleeping.store(1, ordering: .sequentiallyConsistent)
            c.wakeIfSleeping(counters: c.counters)
            #expect(c.descriptorsClosed)
        }
    }

    @Test("Senders racing a shutdown never write to a closed eventfd")
    func wakersRacingShutdown() async throws {
        // Bounded: 6 systems, each with a foreign thread posting wakes while it shuts down.
        for _ in 0..<6 {
            let s = try LWKT.boot(cpus: 2, configuration: .init(idleSpin: .microseconds(1), warnings: false))
            let stop = Atomic<Bool>(false)
            let cpu = try s.cpu(1)
            let sender = Thread2 {
                var n = 0
                while !stop.load(ordering: .acquiring) && n < 200_000 {
                    cpu.signals.pointee.sleeping.store(1, ordering: .sequentiallyConsistent)
                    cpu.wakeIfSleeping(counters: cpu.counters)
                    n += 1
                }
            }
            try await s.shutdown()
            // The closed numbers are reused at once (lowest free first): pipes take them, and
            // a wake that still went to the old eventfd number would land in one of them.
            var pipes: [[Int32]] = []
            for _ in 0..<4 {
                var p: [Int32] = [-1, -1]
                if pipe(&p) == 0 { pipes.append(p) }
            }
            usleep(20_000)
            stop.store(true, ordering: .releasing)
            sender.join()
            #expect(cpu.descriptorsClosed)
            for p in pipes {
                _ = fcntl(p[0], F_SETFL, O_NONBLOCK)
                var b: UInt64 = 0
                #expect(read(p[0], &b, 8) == -1, "a wake was written to a reused descriptor")
                close(p[0])
                close(p[1])
            }
        }
    }

    /// A boot that fails part way (here: out of descriptors at the third CPU) closes what
    /// the CPUs made so far had opened. In a child process, whose descriptor limit it lowers.
    @Test("A boot that runs out of descriptors gives back the ones it opened")
    func failedBootClosesDescriptors() async {
        await #expect(processExitsWith: .success) {
            // A timed sleep first: it makes the runtime's timer machinery (libdispatch's
            // epoll instance, eventfd and timerfd) open its descriptors now, not during the
            // measurement below, where they would count as the boot's.
            try? await Task.sleep(for: .milliseconds(5))
            // Fill the free numbers below the highest open one (the runner may have passed
            // this process a descriptor with a high number), so that new descriptors can
            // only take numbers above it.
            let top = Int32(DescriptorLeakTests.highestDescriptor())
            var fillers: [Int32] = []
            while fillers.count < 4096 {
                let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
                if fd < 0 { break }
                if fd > top { close(fd); break }
                fillers.append(fd)
            }
            let before = FDCensus.count()
            var rl = rlimit()
            getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
            // Room for two CPUs (two descriptors each) and the census's own directory.
            rl.rlim_cur = rlim_t(top + 6)
            setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
            var failed = false
            do { _ = try LWKT.boot(cpus: 16, configuration: .init(warnings: false)) } catch { failed = true }
            let after = FDCensus.count()
            for fd in fillers { close(fd) }
            if !(failed && after == before) {
                var err = StandardErrorStream()
                print("failed boot: threw \(failed), descriptors \(before) before, \(after) after: \(FDCensus.list().suffix(8))", to: &err)
            }
            exit(failed && after == before ? 0 : 1)
        }
    }

    /// The highest open descriptor number (new ones take the lowest free numbers).
    static func highestDescriptor() -> Int { Int(FDCensus.list().last?.fd ?? 2) }

    @Test("The process helper starts programs with more than 2,000 descriptors open")
    func spawnWithManyDescriptors() throws {
        var fds: [Int32] = []
        defer { for fd in fds { close(fd) } }
        Self.raiseOpenLimit(to: FDCensus.count() + 2_200)
        for _ in 0..<2_100 {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { break }
            fds.append(fd)
        }
        try #require(fds.count == 2_100, "could not open 2,100 descriptors (limit \(Self.openLimit()))")
        #expect(FDCensus.count() >= 2_100)
        let t = try Subprocess.run("/bin/true")
        #expect(t.status == 0 && !t.timedOut)
        // The child sees only 0, 1 and 2 (plus the one ls opens for the directory).
        let ls = try Subprocess.run("/bin/sh", ["-c", "ls /proc/self/fd | wc -l"])
        #expect(ls.status == 0)
        #expect(Int(ls.output.trimmingCharacters()) ?? 99 <= 5, "child descriptors: \(ls.output)")
    }

    @Test("The process helper reports status, output, signals and timeouts")
    func spawnBasics() throws {
        let echo = try Subprocess.run("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"])
        #expect(echo.status == 3)
        #expect(echo.output.contains("out") && echo.output.contains("err"))
        let onlyOut = try Subprocess.run("/bin/sh", ["-c", "echo out; echo err >&2"], output: .stdoutOnly)
        #expect(onlyOut.output == "out\n")
        let env = try Subprocess.run("/bin/sh", ["-c", "echo $LB_X"], environment: ["LB_X": "y", "PATH": "/usr/bin:/bin"])
        #expect(env.output == "y\n")
        let dir = try Subprocess.run("/bin/pwd", directory: "/tmp")
        #expect(dir.output == "/tmp\n")
        let killed = try Subprocess.run("/bin/sh", ["-c", "kill -9 $$"])
        #expect(killed.signal == SIGKILL && killed.status == 128 + SIGKILL)
        // The timeout kills the whole group (the sleep the shell started too).
        let slow = try Subprocess.run("/bin/sh", ["-c", "sleep 30; echo never"], timeout: 0.3)
        #expect(slow.timedOut && !slow.output.contains("never"))
        // What a background child writes after the shell exited is collected too (tests
        // that start workers with `&` rely on it), and a timeout kills such children.
        let late = try Subprocess.run("/bin/sh", ["-c", "echo hi; (sleep 0.3; echo late) & exit 0"], timeout: 10)
        #expect(late.status == 0 && !late.timedOut && late.output == "hi\nlate\n")
        let stuck = try Subprocess.run("/bin/sh", ["-c", "(sleep 30; echo never) & exit 0"], timeout: 0.5)
        #expect(stuck.timedOut && stuck.status == 0 && !stuck.output.contains("never"))
        #expect(throws: SubprocessError.self) { try Subprocess.run("/nonexistent/program") }
        let bg = try Subprocess("/bin/sleep", ["30"], output: .discarded)
        #expect(bg.isRunning)
        bg.terminate()
        let r = bg.wait(timeout: 5)
        #expect(r.signal == SIGTERM && !r.timedOut)
    }

    static func openLimit() -> Int {
        var rl = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
        return Int(rl.rlim_cur)
    }

    /// Raises the soft descriptor limit to at least `n` when the hard limit allows.
    static func raiseOpenLimit(to n: Int) {
        var rl = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl) == 0, rl.rlim_cur < rlim_t(n) else { return }
        rl.rlim_cur = min(rl.rlim_max, rlim_t(n))
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
    }
}

/// A plain OS thread for the racing sender (not a Swift task: it must not be an LWKT CPU
/// and must spin without yielding to the cooperative pool).
final class Thread2: @unchecked Sendable {
    private var tid = pthread_t()
    private let body: () -> Void
    init(_ body: @escaping @Sendable () -> Void) {
        self.body = body
        let me = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&tid, nil, { arg in
            let t = Unmanaged<Thread2>.fromOpaque(arg!).takeRetainedValue()
            t.body()
            return nil
        }, me)
    }
    func join() { pthread_join(tid, nil) }
}

private extension String {
    func trimmingCharacters() -> String {
        String(self.filter { !$0.isWhitespace })
    }
}

/// Standard error as a `TextOutputStream`, for an exit test's diagnostics.
struct StandardErrorStream: TextOutputStream {
    mutating func write(_ string: String) { _ = string.withCString { Glibc.write(2, $0, strlen($0)) } }
}
