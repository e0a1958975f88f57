import Glibc
import LWKT
import Synchronization
import VFS

/// `libellula bench vfs`: cached path lookups through the namecache against the host kernel's
/// `stat()` on the same tree, negative lookups, and lookup throughput on one and two threads.
enum VFSBench {
    static func run(reporter: BenchReporter, quick: Bool) async throws {
        let iterations = quick ? 40_000 : 200_000
        let kernelIterations = quick ? 10_000 : 40_000
        let depths = [1, 2, 4, 8, 16]

        // The same tree in the VFS (MemFS) and on the host: c1/c2/.../c16, with a file f at every level.
        let vfs = VirtualFileSystem(rootFileSystem: MemFS())
        let p = vfs.makeProcess()
        let hostDir = try makeHostDir()
        defer { removeHostTree(hostDir) }
        let hostFD = Glibc.open(hostDir, O_RDONLY | O_DIRECTORY)
        defer { Glibc.close(hostFD) }
        try p.close(try p.open("/f", [.create, .writeOnly]))
        Glibc.close(Glibc.open(hostDir + "/f", O_CREAT | O_WRONLY, 0o644))
        var dir = ""
        for level in 1...15 {
            dir += "/c\(level)"
            try p.mkdir(dir)
            Glibc.mkdir(hostDir + dir, 0o755)
            let fd = try p.open(dir + "/f", [.create, .writeOnly])
            try p.close(fd)
            Glibc.close(Glibc.open(hostDir + dir + "/f", O_CREAT | O_WRONLY, 0o644))
        }

        /// Path of `depth` components ending in a file (or in `leaf`).
        func path(_ depth: Int, leaf: String = "f") -> String {
            var s = ""
            for level in 0..<(depth - 1) { s += "/c\(level + 1)" }
            return s + "/" + leaf
        }

        for d in depths {
            let vpath = path(d)
            let hpath = String(vpath.dropFirst())
            _ = try p.stat(vpath) // warm the cache
            let kernel = time(kernelIterations) { _ = kernelStat(hostFD, hpath) }
            let vstat = time(iterations) { _ = try? p.stat(vpath) }
            let vlookup = time(iterations) { _ = try? p.lookup(vpath) }
            reporter.report("vfs cached stat, depth \(d)", unit: "ns/lookup", value: vstat, baseline: "kernel stat()", baselineValue: kernel)
            reporter.report("vfs cached stat, depth \(d), per component", unit: "ns", value: vstat / Double(d), baseline: "kernel stat()", baselineValue: kernel / Double(d))
            reporter.report("vfs cached lookup (no attributes), depth \(d)", unit: "ns/lookup", value: vlookup, baseline: "kernel stat()", baselineValue: kernel)
        }
        for d in depths {
            let vpath = path(d, leaf: "missing")
            let hpath = String(vpath.dropFirst())
            _ = try? p.stat(vpath)
            let kernel = time(kernelIterations) { _ = kernelStat(hostFD, hpath) }
            let vneg = time(iterations) { _ = try? p.stat(vpath) }
            reporter.report("vfs negative stat (ENOENT), depth \(d)", unit: "ns/lookup", value: vneg, baseline: "kernel stat() ENOENT", baselineValue: kernel)
        }

        // Throughput on one and two threads, the same file and a different file per thread.
        let seconds = quick ? 0.2 : 0.5
        let fileA = path(4), fileB = path(4, leaf: "g")
        try p.close(try p.open(fileB, [.create, .writeOnly]))
        _ = try p.stat(fileB)
        for same in [true, false] {
            let kind = same ? "same file" : "different files"
            let one = throughput(threads: 1, seconds: seconds) { _ in p.fork() } body: { proc, _ in _ = try? proc.stat(fileA) }
            let two = throughput(threads: 2, seconds: seconds) { i in (p.fork(), same || i == 0 ? fileA : fileB) } body: { ctx, _ in
                _ = try? ctx.0.stat(ctx.1)
            }
            reporter.report("vfs stat d4 lookups/s, 1 thread, \(kind)", unit: "lookups/s", value: one)
            reporter.report("vfs stat d4 lookups/s, 2 threads, \(kind)", unit: "lookups/s", value: two, baseline: "1 thread", baselineValue: one)
        }
        let hostA = String(fileA.dropFirst())
        let kOne = throughput(threads: 1, seconds: seconds) { _ in () } body: { _, _ in _ = kernelStat(hostFD, hostA) }
        let kTwo = throughput(threads: 2, seconds: seconds) { _ in () } body: { _, _ in _ = kernelStat(hostFD, hostA) }
        reporter.report("kernel stat() d4, 2 threads, same file", unit: "lookups/s", value: kTwo, baseline: "1 thread", baselineValue: kOne)

        // Cached lookups on one thread while a second thread makes distinct new names (each a
        // miss that adds a record and resolves it) as fast as it can.
        // The control: the second thread only spins (same CPU sharing, no namecache work).
        let (spun, _) = lookupsDuringCreates(p, path: fileA, seconds: seconds, creating: false)
        let before = vfs.namecache.statistics
        let (busy, creates) = lookupsDuringCreates(p, path: fileA, seconds: seconds, creating: true)
        let after = vfs.namecache.statistics
        let made = Double(max(1, after.misses - before.misses))
        reporter.report("vfs reader-draining write sections per new name", unit: "drains/name",
                        value: Double(after.drains - before.drains) / made)
        reporter.report("vfs non-draining publish sections per new name", unit: "publishes/name",
                        value: Double(after.publishes - before.publishes) / made)
        reporter.report("vfs stat d4 lookups/s while another thread creates names", unit: "lookups/s", value: busy,
                        baseline: "other thread spins", baselineValue: spun)
        reporter.report("vfs new names/s made by the creator meanwhile", unit: "names/s", value: creates)

        // HostFS: the same tree as a host directory mounted in the VFS, cached stat against the
        // kernel's stat() of the same file.
        try p.mkdir("/host")
        try vfs.mount(try HostFS(hostPath: hostDir), at: "/host", by: p)
        for d in [1, 4, 8] {
            let vpath = "/host" + path(d)
            let hpath = String(path(d).dropFirst())
            _ = try p.stat(vpath)
            let kernel = time(kernelIterations) { _ = kernelStat(hostFD, hpath) }
            let vstat = time(kernelIterations) { _ = try? p.stat(vpath) }
            reporter.report("vfs HostFS cached stat, depth \(d)", unit: "ns/lookup", value: vstat, baseline: "kernel stat()", baselineValue: kernel)
        }

        // The cost of keeping host calls off the CPUs: an open+fstat+close of a HostFS file
        // made by an LWKT thread through the host-I/O pool (parked, answered by IPI) against
        // the same calls made directly on the CPU thread. Pools whose idle threads sleep at
        // once (every call wakes one: a futex) and that spin 50 µs first; `offCPU` (always a
        // trip) against the parking API (an attempt on the CPU first); and a cached `stat`,
        // which the parking API answers without a trip. Rounds interleaved in one run.
        let rounds = quick ? 2_000 : 10_000
        let sleepy = VirtualFileSystem(rootFileSystem: try HostFS(hostPath: hostDir), hostIO: HostIOPool(threads: 2, spin: .zero))
        let spinning = VirtualFileSystem(rootFileSystem: try HostFS(hostPath: hostDir), hostIO: HostIOPool(threads: 2, spin: .microseconds(50)))
        let ps = sleepy.makeProcess(), pw = spinning.makeProcess()
        _ = try ps.stat("/c1/f")
        let system = try LWKT.boot(cpus: 1, configuration: .init(warnings: false))
        let costs = try await system.run(on: 0) { () -> [Double] in
            func once(_ p: VFSProcess) throws(VFSError) {
                let fd = try p.open("/c1/f")
                _ = try p.fstat(fd)
                try p.close(fd)
            }
            var sums = [Double](repeating: 0, count: 6)
            let slice = max(1, rounds / 10)
            func timed(_ i: Int, _ body: () async throws -> Void) async rethrows {
                let t0 = now()
                for _ in 0..<slice { try await body() }
                sums[i] += Double(now() - t0)
            }
            for _ in 0..<10 {
                try await timed(0) { try once(ps) }
                try await timed(1) { try await ps.offCPU { try once(ps) } }
                try await timed(2) { try await ps.parking.perform { () throws(VFSError) in try once(ps) } }
                try await timed(3) { try await pw.offCPU { try once(pw) } }
                try await timed(4) { _ = try await ps.offCPU { try ps.stat("/c1/f") } }
                try await timed(5) { _ = try await ps.parking.stat("/c1/f") }
            }
            return sums.map { $0 / Double(slice * 10) }
        }
        _ = try await system.shutdown()
        let sleepyStats = sleepy.hostIO.statistics
        reporter.report("vfs HostFS open+fstat+close via offCPU, pool threads sleep when idle", unit: "ns/call",
                        value: costs[1], baseline: "on the CPU thread", baselineValue: costs[0])
        reporter.report("vfs HostFS open+fstat+close via parking.perform, same pool", unit: "ns/call",
                        value: costs[2], baseline: "via offCPU", baselineValue: costs[1])
        reporter.report("vfs HostFS open+fstat+close via offCPU, pool threads spin 50 µs when idle", unit: "ns/call",
                        value: costs[3], baseline: "threads sleep when idle", baselineValue: costs[1])
        reporter.report("vfs HostFS cached stat via parking.stat (no trip)", unit: "ns/call",
                        value: costs[5], baseline: "via offCPU (a trip)", baselineValue: costs[4])
        for (name, io) in [("sleep when idle", sleepyStats), ("spin 50 µs", spinning.hostIO.statistics)] {
            let n = Double(max(io.completed, 1))
            reporter.report("vfs host-I/O pool (\(name)): p50 / p99 latency", unit: "ns",
                            value: Double(io.p50LatencyNanos), baseline: "p99", baselineValue: Double(io.p99LatencyNanos))
            reporter.report("vfs host-I/O pool (\(name)): mean wait for a pool thread", unit: "ns", value: Double(io.totalQueueWaitNanos) / n)
            reporter.report("vfs host-I/O pool (\(name)): mean host calls", unit: "ns", value: Double(io.totalRunNanos) / n)
            reporter.report("vfs host-I/O pool (\(name)): mean answer trip (end of call to IPI run)", unit: "ns", value: Double(io.totalAnswerNanos) / n)
            reporter.report("vfs host-I/O pool (\(name)): semaphore wakeups per call", unit: "ratio", value: Double(io.wakeups) / n)
        }
        sleepy.hostIO.shutdown()
        spinning.hostIO.shutdown()

        let s = vfs.namecache.statistics
        reporter.report("namecache hits (components)", unit: "count", value: Double(s.hits))
        reporter.report("namecache lookups on the lock-free path", unit: "count", value: Double(s.fastLookups))
        reporter.report("namecache lookups on the locked path", unit: "count", value: Double(s.slowLookups))
    }

    // MARK: helpers

    /// Stat calls per second of `path` on one OS thread, while a second OS thread stats
    /// distinct names that do not exist yet, each adding a record to the namecache (with
    /// `creating`), or only spins (without). Returns (lookups/s, new names/s).
    static func lookupsDuringCreates(_ p: VFSProcess, path: String, seconds: Double, creating: Bool) -> (Double, Double) {
        let shared = Shared([p.fork(), p.fork()])
        let made = Atomic<Int>(0)
        let generation = Int(now() % 1_000_000)
        var tids: [pthread_t] = []
        let threads = 2
        for i in 0..<threads {
            let job = Job {
                let proc = shared.contexts[i]
                shared.ready.wrappingAdd(1, ordering: .relaxed)
                while shared.ready.load(ordering: .relaxed) < threads {}
                var n = 0
                while !shared.stop.load(ordering: .relaxed) {
                    if i == 0 {
                        for _ in 0..<256 { _ = try? proc.stat(path) }
                        n += 256
                    } else if creating {
                        _ = try? proc.stat("/c1/new-\(generation)-\(n)")
                        n += 1
                    } else {
                        for _ in 0..<256 { atomicMemoryFence(ordering: .acquiring) }
                    }
                }
                if i == 0 { shared.total.wrappingAdd(n, ordering: .relaxed) } else { made.wrappingAdd(n, ordering: .relaxed) }
            }
            var t = pthread_t()
            _ = pthread_create(&t, nil, { arg in
                guard let arg else { return nil }
                Unmanaged<Job>.fromOpaque(arg).takeRetainedValue().run()
                return nil
            }, Unmanaged.passRetained(job).toOpaque())
            tids.append(t)
        }
        while shared.ready.load(ordering: .relaxed) < threads { sched_yield() }
        let t0 = now()
        usleep(UInt32(seconds * 1_000_000))
        shared.stop.store(true, ordering: .relaxed)
        for t in tids { pthread_join(t, nil) }
        let elapsed = Double(now() - t0) / 1e9
        return (Double(shared.total.load(ordering: .relaxed)) / elapsed, Double(made.load(ordering: .relaxed)) / elapsed)
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Mean nanoseconds per call of `body`, best of three runs.
    static func time(_ n: Int, _ body: () -> Void) -> Double {
        var best = Double.infinity
        for _ in 0..<3 {
            let t0 = now()
            for _ in 0..<n { body() }
            best = min(best, Double(now() - t0) / Double(n))
        }
        return best
    }

    static func kernelStat(_ dirfd: Int32, _ rel: String) -> Int32 {
        var st = stat()
        return fstatat(dirfd, rel, &st, 0)
    }

    final class Shared<C>: @unchecked Sendable {
        let stop = Atomic<Bool>(false)
        let total = Atomic<Int>(0)
        let ready = Atomic<Int>(0)
        let contexts: [C]
        init(_ c: [C]) { contexts = c }
    }

    final class Job: @unchecked Sendable {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }

    /// Calls per second summed over `threads` OS threads running `body` for `seconds`.
    static func throughput<C>(threads: Int, seconds: Double, make: (Int) -> C, body: @escaping (C, Int) -> Void) -> Double {
        let shared = Shared((0..<threads).map(make))
        var tids: [pthread_t] = []
        for i in 0..<threads {
            let job = Job {
                let ctx = shared.contexts[i]
                shared.ready.wrappingAdd(1, ordering: .relaxed)
                while shared.ready.load(ordering: .relaxed) < threads {}
                var n = 0
                while !shared.stop.load(ordering: .relaxed) {
                    for _ in 0..<256 { body(ctx, i) }
                    n += 256
                }
                shared.total.wrappingAdd(n, ordering: .relaxed)
            }
            var t = pthread_t()
            _ = pthread_create(&t, nil, { arg in
                guard let arg else { return nil }
                Unmanaged<Job>.fromOpaque(arg).takeRetainedValue().run()
                return nil
            }, Unmanaged.passRetained(job).toOpaque())
            tids.append(t)
        }
        while shared.ready.load(ordering: .relaxed) < threads { sched_yield() }
        let t0 = now()
        usleep(UInt32(seconds * 1_000_000))
        shared.stop.store(true, ordering: .relaxed)
        for t in tids { pthread_join(t, nil) }
        let elapsed = Double(now() - t0) / 1e9
        return Double(shared.total.load(ordering: .relaxed)) / elapsed
    }

    static func makeHostDir() throws -> String {
        var template = Array("/tmp/libellula-vfsbench-XXXXXX".utf8CString)
        let ok = template.withUnsafeMutableBufferPointer { b -> Bool in
            guard let base = b.baseAddress else { return false }
            return mkdtemp(base) != nil
        }
        guard ok else { throw VFSError.current }
        return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func removeHostTree(_ path: String) {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        if st.st_mode & S_IFMT == S_IFDIR, let d = opendir(path) {
            var names: [String] = []
            while let e = readdir(d) {
                let n = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if n != "." && n != ".." { names.append(n) }
            }
            closedir(d)
            for n in names { removeHostTree(path + "/" + n) }
            Glibc.rmdir(path)
        } else {
            Glibc.unlink(path)
        }
    }
}
