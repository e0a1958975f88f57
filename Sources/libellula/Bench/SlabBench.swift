#if canImport(Glibc)
import Glibc
#endif
import CLibellula
import LWKT
import Slab
import Synchronization

/// `libellula bench slab`: the slab allocator against glibc malloc, mimalloc and jemalloc
/// (Debian's libmimalloc2.0 and libjemalloc2, loaded with dlopen into this process), all
/// driven from the same LWKT CPUs in the same run.
enum SlabBench {
    typealias MallocFn = @convention(c) (Int) -> UnsafeMutableRawPointer?
    typealias FreeFn = @convention(c) (UnsafeMutableRawPointer?) -> Void

    /// A C allocator reached through function pointers.
    struct CAllocator: @unchecked Sendable {
        let name: String
        let malloc: MallocFn
        let free: FreeFn
    }

    /// The baselines that could be loaded (glibc always; the others when installed).
    static func baselines() -> [CAllocator] {
        var list: [CAllocator] = []
        func load(_ name: String, _ handle: UnsafeMutableRawPointer?, _ m: String, _ f: String) {
            guard let ms = dlsym(handle, m), let fs = dlsym(handle, f) else { return }
            list.append(CAllocator(name: name, malloc: unsafeBitCast(ms, to: MallocFn.self),
                                   free: unsafeBitCast(fs, to: FreeFn.self)))
        }
        load("glibc", nil, "malloc", "free")
        if let h = dlopen("libmimalloc.so.2", RTLD_NOW | RTLD_LOCAL) {
            load("mimalloc", h, "mi_malloc", "mi_free")
        } else {
            print("slab bench: libmimalloc.so.2 not loadable (install libmimalloc2.0); skipping mimalloc")
        }
        if let h = dlopen("libjemalloc.so.2", RTLD_NOW | RTLD_LOCAL) {
            load("jemalloc", h, "malloc", "free")
        } else {
            let why = dlerror().map { String(cString: $0) } ?? "unknown"
            // Debian's jemalloc uses initial-exec TLS; dlopen needs spare static TLS space.
            print("slab bench: libjemalloc.so.2 not loadable (\(why)); skipping jemalloc."
                  + " Run with GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384 to include it.")
        }
        return list
    }

    /// One allocator under test, seen through two plain functions.
    struct Subject: @unchecked Sendable {
        let name: String
        let alloc: (Int) -> UnsafeMutableRawPointer?
        let free: (UnsafeMutableRawPointer) -> Void
    }

    static func run(reporter: BenchReporter, quick: Bool) async throws {
        let cpus = min(2, max(1, LWKT.onlineCores))
        let system = try LWKT.boot(cpus: cpus, configuration: .init(warnings: false))
        defer { _ = try? system.shutdownBlocking() }
        // The system's slab: its arena pointers are in the CPUs' globaldata.
        let slab = SlabAllocator.shared(for: system, configuration: .init(debug: false))
        let bases = baselines()
        if getenv("LIBELLULA_REQUIRE_BASELINES") != nil {
            let have = Set(bases.map(\.name))
            let lacking = ["glibc", "mimalloc", "jemalloc"].filter { !have.contains($0) }
            guard lacking.isEmpty else {
                throw BenchError("slab bench: baselines missing: \(lacking.joined(separator: ", ")) (Scripts/bench-slab.sh installs them)")
            }
        }
        let scale = quick ? 1 : 5

        // Rows 1-3 are measured in interleaved repetitions (slab, then every baseline,
        // back to back, five times; three for producer/consumer), so that a loaded
        // machine's swings hit all allocators alike; each row reports the median value per
        // allocator, and the per-repetition ratios slab/baseline are printed with their median.
        func median(_ v: [Double]) -> Double { v.isEmpty ? 0 : v.sorted()[v.count / 2] }
        func interleaved(_ title: String, unit: String, reps: Int, higherIsBetter: Bool = false,
                         slabRun: () async throws -> Double,
                         baseRun: (CAllocator) async throws -> Double) async throws {
            var slabValues: [Double] = []
            var baseValues = [[Double]](repeating: [], count: bases.count)
            for _ in 0..<reps {
                slabValues.append(try await slabRun())
                for (k, b) in bases.enumerated() { baseValues[k].append(try await baseRun(b)) }
            }
            for (k, b) in bases.enumerated() {
                let ratios = zip(slabValues, baseValues[k]).map { $0.1 == 0 ? 0 : $0.0 / $0.1 }
                print("\(title) slab/\(b.name) per repetition: "
                      + ratios.map { String(format: "%.2f", $0) }.joined(separator: " ")
                      + "  median \(String(format: "%.2f", median(ratios)))"
                      + (higherIsBetter ? " (higher is better)" : " (lower is better)"))
                reporter.report("\(title) (median of \(reps))", unit: unit, value: median(slabValues),
                                baseline: b.name, baselineValue: median(baseValues[k]))
            }
        }

        // 1. 64-byte allocate+free pairs on one CPU.
        let pairs = 2_000_000 * scale
        try await interleaved("slab alloc+free 64 B (one CPU)", unit: "ns/pair", reps: 5,
                              slabRun: { try await system.run(on: 0) { pairLoop(slab, count: pairs) } },
                              baseRun: { b in try await system.run(on: 0) { pairLoop(b, count: pairs) } })

        // 2. 1,000 mixed sizes (16-1024 B) allocated, then freed in LIFO order.
        let rounds = 1_000 * scale
        try await interleaved("slab 1000 mixed 16-1024 B, alloc then free", unit: "ns/object", reps: 5,
                              slabRun: { try await system.run(on: 0) { mixedLoop(slab, rounds: rounds) } },
                              baseRun: { b in try await system.run(on: 0) { mixedLoop(b, rounds: rounds) } })

        // 3. Producer/consumer: CPU 0 allocates 64 B, CPU 1 frees (the remote path).
        if cpus >= 2 {
            let objects = 2_000_000 * scale
            try await interleaved("slab producer/consumer 64 B (CPU0 alloc, CPU1 free)", unit: "M objects/s",
                                  reps: 3, higherIsBetter: true,
                                  slabRun: {
                                      try await producerConsumer(system: system, objects: objects,
                                                                 alloc: { slab.allocate(64) }, free: { slab.free($0) })
                                  },
                                  baseRun: { b in
                                      try await producerConsumer(system: system, objects: objects,
                                                                 alloc: { b.malloc(64) }, free: { b.free($0) })
                                  })
            let s = slab.statistics()
            reporter.report("slab producer/consumer: remote chunks reclaimed", unit: "chunks",
                            value: Double(s.sizeClasses.reduce(0) { $0 + $1.remoteFreesReceived }))
            reporter.report("slab producer/consumer: remote-free batches handed over", unit: "batches",
                            value: Double(s.cpus.reduce(0) { $0 + $1.remoteBatchesSent }))
            reporter.report("slab producer/consumer: owner notifications", unit: "posts",
                            value: Double(s.cpus.reduce(0) { $0 + $1.mailboxPosts }))
        }

        // 4. RSS after freeing everything (64 MiB of 64-1024 B objects).
        let rssSlab = try await system.run(on: 0) { () -> (Double, Double) in
            let before = residentKiB()
            retainedAfterFree(slab)
            let afterFree = residentKiB() - before
            if let p = slab.allocate(64) { slab.free(p) }    // the allocation path trims
            return (afterFree, residentKiB() - before)
        }
        for b in bases {
            let v = try await system.run(on: 0) { () -> Double in
                let before = residentKiB()
                retainedAfterFree(b)
                return residentKiB() - before
            }
            reporter.report("RSS kept after freeing 64 MiB (slab: after next alloc)", unit: "KiB",
                            value: rssSlab.1, baseline: b.name, baselineValue: v)
        }
        reporter.report("slab RSS kept right after freeing 64 MiB (before any alloc)", unit: "KiB", value: rssSlab.0)

        // 5. Oscillation around a zone boundary: OS memory calls per cycle.
        let cycles = 10_000
        let osCalls = try await system.run(on: 0) { () -> Double in
            var held: [UnsafeMutableRawPointer] = []
            held.reserveCapacity(600)
            var before = 0
            for cycle in -1..<cycles {
                if cycle == 0 { before = slab.statistics().osMemoryCalls }   // after one warm-up cycle
                for _ in 0..<513 { if let p = slab.allocate(256) { held.append(p) } }   // a zone holds 496
                for p in held { slab.free(p) }
                held.removeAll(keepingCapacity: true)
            }
            return Double(slab.statistics().osMemoryCalls - before) / Double(cycles)
        }
        reporter.report("slab oscillation at a zone boundary", unit: "mmap+munmap+madvise/cycle", value: osCalls)
    }

    // MARK: - Workloads

    static func subject(_ slab: SlabAllocator) -> Subject {
        Subject(name: "slab", alloc: { slab.allocate($0) }, free: { slab.free($0) })
    }

    static func subject(_ c: CAllocator) -> Subject {
        Subject(name: c.name, alloc: { c.malloc($0) }, free: { c.free($0) })
    }

    /// ns per allocate+free pair of 64 bytes.
    static func pairLoop(_ slab: SlabAllocator, count: Int) -> Double {
        for _ in 0..<10_000 { if let p = slab.allocate(64) { slab.free(p) } }
        let t0 = lb_now_ns()
        for i in 0..<count {
            guard let p = slab.allocate(64) else { continue }
            p.storeBytes(of: UInt8(truncatingIfNeeded: i), as: UInt8.self)
            slab.free(p)
        }
        return Double(lb_now_ns() - t0) / Double(count)
    }

    static func pairLoop(_ c: CAllocator, count: Int) -> Double {
        for _ in 0..<10_000 { c.free(c.malloc(64)) }
        let t0 = lb_now_ns()
        for i in 0..<count {
            guard let p = c.malloc(64) else { continue }
            p.storeBytes(of: UInt8(truncatingIfNeeded: i), as: UInt8.self)
            c.free(p)
        }
        return Double(lb_now_ns() - t0) / Double(count)
    }

    static let mixedSizes: [Int] = {
        var x: UInt64 = 0x2545_F491_4F6C_DD1D
        return (0..<1000).map { _ in
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            return 16 + Int(x % 1009)
        }
    }()

    /// ns per object (one allocation and its free) for 1,000 mixed sizes, LIFO.
    static func mixedLoop(_ slab: SlabAllocator, rounds: Int) -> Double {
        let held = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 1000)
        defer { held.deallocate() }
        let sizes = mixedSizes
        var t0: UInt64 = 0
        for r in -10..<rounds {
            if r == 0 { t0 = lb_now_ns() }
            for i in 0..<1000 { held[i] = slab.allocate(sizes[i]) }
            var i = 999
            while i >= 0 { if let p = held[i] { slab.free(p) }; i -= 1 }
        }
        return Double(lb_now_ns() - t0) / Double(rounds * 1000)
    }

    static func mixedLoop(_ c: CAllocator, rounds: Int) -> Double {
        let held = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 1000)
        defer { held.deallocate() }
        let sizes = mixedSizes
        var t0: UInt64 = 0
        for r in -10..<rounds {
            if r == 0 { t0 = lb_now_ns() }
            for i in 0..<1000 { held[i] = c.malloc(sizes[i]) }
            var i = 999
            while i >= 0 { c.free(held[i]); i -= 1 }
        }
        return Double(lb_now_ns() - t0) / Double(rounds * 1000)
    }

    /// A single-producer single-consumer ring of pointers (4096 slots), with cached
    /// indices so each side touches the other's line only when it must.
    final class Ring: @unchecked Sendable {
        static let size = 4096
        let slots = UnsafeMutablePointer<UInt>.allocate(capacity: Ring.size)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 256, alignment: 128)
        var head: UnsafeMutablePointer<Atomic<Int>> { raw.assumingMemoryBound(to: Atomic<Int>.self) }
        var tail: UnsafeMutablePointer<Atomic<Int>> { (raw + 128).assumingMemoryBound(to: Atomic<Int>.self) }
        init() {
            raw.bindMemory(to: Atomic<Int>.self, capacity: 1).initialize(to: Atomic(0))
            (raw + 128).bindMemory(to: Atomic<Int>.self, capacity: 1).initialize(to: Atomic(0))
        }
        deinit {
            slots.deallocate()
            raw.deallocate()
        }
    }

    /// Million objects per second through one producer CPU and one consumer CPU.
    static func producerConsumer(system: LWKTSystem, objects: Int,
                                 alloc: @escaping @Sendable () -> UnsafeMutableRawPointer?,
                                 free: @escaping @Sendable (UnsafeMutableRawPointer) -> Void,
                                 producerCPU: Int = 0, consumerCPU: Int = 1) async throws -> Double {
        let ring = Ring()
        let start = lb_now_ns()
        async let consumer: Void = system.run(on: consumerCPU, name: "consumer") {
            var head = 0
            var tailSeen = 0
            while head < objects {
                if head == tailSeen {
                    tailSeen = ring.tail.pointee.load(ordering: .acquiring)
                    if head == tailSeen { lb_cpu_relax(); continue }
                }
                while head < tailSeen {
                    if let p = UnsafeMutableRawPointer(bitPattern: ring.slots[head & (Ring.size - 1)]) { free(p) }
                    head += 1
                    if head & 63 == 0 { ring.head.pointee.store(head, ordering: .releasing) }
                }
                ring.head.pointee.store(head, ordering: .releasing)
            }
        }
        async let producer: Void = system.run(on: producerCPU, name: "producer") {
            var tail = 0
            var headSeen = 0
            while tail < objects {
                if tail - headSeen >= Ring.size {
                    headSeen = ring.head.pointee.load(ordering: .acquiring)
                    if tail - headSeen >= Ring.size { lb_cpu_relax(); continue }
                }
                let p = alloc()
                p?.storeBytes(of: 1, as: UInt8.self)
                ring.slots[tail & (Ring.size - 1)] = UInt(bitPattern: p)
                tail += 1
                if tail & 63 == 0 { ring.tail.pointee.store(tail, ordering: .releasing) }
            }
            ring.tail.pointee.store(tail, ordering: .releasing)
        }
        _ = try await (consumer, producer)
        let ns = Double(lb_now_ns() - start)
        return Double(objects) / ns * 1000
    }

    /// Allocates 64 MiB in 64-1024 B objects and frees them all.
    static func retainedAfterFree(_ slab: SlabAllocator) {
        retained(alloc: { slab.allocate($0) }, free: { slab.free($0) })
    }

    static func retainedAfterFree(_ c: CAllocator) {
        retained(alloc: { c.malloc($0) }, free: { c.free($0) })
    }

    static func retained(alloc: (Int) -> UnsafeMutableRawPointer?, free: (UnsafeMutableRawPointer) -> Void) {
        let count = (64 << 20) / 544
        let held = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: count)
        defer { held.deallocate() }
        for i in 0..<count {
            let size = 64 + (i * 37) % 961
            let p = alloc(size)
            p?.initializeMemory(as: UInt8.self, repeating: 1, count: size)
            held[i] = p
        }
        for i in 0..<count { if let p = held[i] { free(p) } }
    }

    /// Resident set size of this process, from /proc/self/statm.
    static func residentKiB() -> Double {
        guard let f = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(f) }
        var size = 0, resident = 0
        withUnsafeMutablePointer(to: &size) { s in
            withUnsafeMutablePointer(to: &resident) { r in
                _ = withVaList([s, r]) { vfscanf(f, "%ld %ld", $0) }
            }
        }
        return Double(resident * Int(sysconf(Int32(_SC_PAGESIZE)))) / 1024
    }
}

/// A benchmark that cannot run as asked.
struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
