import Foundation
import Glibc
import LWKT
import Synchronization
import Testing
@testable import VFS
import LibellulaTestSupport

/// The VFS called from LWKT threads (issue 15): the differential runs against the host
/// kernel and the namecache properties under concurrent change, on 2 and 8 CPUs sharing one
/// namespace, with an IPI watchdog that fails the test when any CPU leaves an IPI unanswered
/// for more than 100 ms while the others answer (a CPU blocked in the kernel or on a lock).
/// Every VFS call goes through the parking API (`VFSProcess.parking`): MemFS work and cached
/// HostFS answers run on the CPU, a held record parks the thread, HostFS host calls run on
/// the host-I/O pool.
@Suite(.serialized) struct LWKTVFSTests {
    @Test(arguments: [2, 8])
    func differentialRunsOnCPUs(cpus: Int) async throws {
        let vfs = VirtualFileSystem(rootFileSystem: MemFS(), hostIO: HostIOPool(threads: 2))
        let p = vfs.makeProcess()
        var dirs: [String] = []
        defer { for d in dirs { removeTree(d) }; vfs.hostIO.shutdown() }
        let workers = min(cpus, 4)
        var processes: [(VFSProcess, String, Bool)] = []
        for w in 0..<workers {
            let oracle = makeTempDir("lwkt-oracle")
            dirs.append(oracle)
            try p.mkdir("/w\(w)")
            let onHost = w % 2 == 1
            if onHost {
                let mine = makeTempDir("lwkt-hostfs")
                dirs.append(mine)
                try vfs.mount(try HostFS(hostPath: mine), at: "/w\(w)", by: p)
            }
            let child = p.fork()
            try child.chroot("/w\(w)")
            processes.append((child, oracle, onHost))
        }
        let problems = try await withLWKT(cpus: cpus) { system -> [String] in
            let dog = IPIWatchdog(system: system)
            let found = try await withThrowingTaskGroup(of: [String].self) { group in
                for (w, (child, oracle, onHost)) in processes.enumerated() {
                    group.addTask {
                        try await system.run(on: w % cpus, name: "diff\(w)") { () -> [String] in
                            let seed = UInt64(100 + 10 * cpus + w)
                            return try await differentialRunOnCPU(seed: seed, steps: 150, vfsProcess: child,
                                                                  hostBase: oracle, offCPU: onHost)
                        }
                    }
                }
                var all: [String] = []
                for try await p in group { all += p }
                return all
            }
            let stall = dog.finish()
            #expect(stall < ipiStallLimitMs, "a CPU left an IPI unanswered for \(stall) ms")
            return found
        }
        #expect(problems.isEmpty, "\(problems.prefix(6).joined(separator: "\n"))")
        #expect(vfs.namecache.checkTopology().isEmpty)
        #expect(vfs.hostIO.statistics.completed >= 1)
    }

    final class Tally: @unchecked Sendable {
        let wrong = Atomic<Int>(0)
        let lookups = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
    }

    /// Lookups on every CPU but one while the last CPU adds names, renames a directory back
    /// and forth, removes files and changes its working directory: a stable path is always
    /// found with the right type, a moving one is a regular file or not found (never another
    /// error or type), and the topology is sound at the end.
    @Test(arguments: [2, 8])
    func lookupsDuringChangesOnCPUs(cpus: Int) async throws {
        let (vfs, p) = makeMemVFS(minimumNegatives: 64)
        try p.mkdir("/stable"); try p.mkdir("/stable/d"); try writeFile(p, "/stable/d/f", "s")
        try p.mkdir("/m"); try p.mkdir("/m/a"); try writeFile(p, "/m/a/f", "m")
        let tally = Tally()
        try await withLWKT(cpus: cpus) { system in
            let dog = IPIWatchdog(system: system)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for c in 0..<(cpus - 1) {
                    let reader = p.fork()
                    group.addTask {
                        try await system.run(on: c, name: "reader\(c)") {
                            for i in 0..<20_000 where !tally.stop.load(ordering: .relaxed) {
                                if (try? await reader.parking.stat("/stable/d/f"))?.type != .regular { tally.wrong.wrappingAdd(1, ordering: .relaxed) }
                                // The moving file: found as a regular file or not found, nothing else.
                                for path in ["/m/a/f", "/m/b/f"] {
                                    do {
                                        if try await reader.parking.lookup(path) != .regular { tally.wrong.wrappingAdd(1, ordering: .relaxed) }
                                    } catch {
                                        if (error as? VFSError) != .noent { tally.wrong.wrappingAdd(1, ordering: .relaxed) }
                                    }
                                }
                                _ = try? await reader.parking.lookup("/stable/miss\(i % 300)")
                                tally.lookups.wrappingAdd(1, ordering: .relaxed)
                                if i % 4 == 0 { await LWKT.yield() }
                            }
                        }
                    }
                }
                let writer = p.fork()
                group.addTask {
                    try await system.run(on: cpus - 1, name: "writer") {
                        for i in 0..<400 {
                            let w = writer.parking
                            if i % 2 == 0 { try await w.rename("/m/a", "/m/b") } else { try await w.rename("/m/b", "/m/a") }
                            let fd = try await w.open("/stable/new\(i)", [.create, .writeOnly])
                            try await w.write(fd, Array("n".utf8))
                            try w.close(fd)
                            if i % 3 == 0 { try await w.unlink("/stable/new\(i)") }
                            try await w.chdir(i % 2 == 0 ? "/stable" : "/stable/d")
                            await LWKT.yield()
                        }
                        tally.stop.store(true, ordering: .relaxed)
                    }
                }
                try await group.waitForAll()
            }
            let stall = dog.finish()
            #expect(stall < ipiStallLimitMs, "a CPU left an IPI unanswered for \(stall) ms")
        }
        #expect(tally.wrong.load(ordering: .relaxed) == 0)
        #expect(tally.lookups.load(ordering: .relaxed) > 0)
        #expect(vfs.namecache.checkTopology().isEmpty)
    }
}

/// `differentialRun` as an LWKT thread does it: one operation per job (the thread yields
/// between steps, so its CPU answers IPIs between them), each through the parking API
/// (`parking.perform`: on the CPU when it can finish there, else on the pool); the host side
/// of each step runs on the pool too (it is a host call). `offCPU` says whether the worker's
/// tree is a HostFS (its operations must then have used the pool).
func differentialRunOnCPU(seed: UInt64, steps: Int, vfsProcess p: VFSProcess, hostBase: String, offCPU: Bool) async throws -> [String] {
    var gen = OpGenerator(rng: SeededRandom(seed: seed))
    var problems: [String] = []
    for d in ["/p", "/p/q", "/p/q/r"] {
        try await p.parking.mkdir(d)
        Glibc.mkdir(hostBase + d, 0o755)
    }
    for i in 0..<steps {
        let op = gen.op(prefix: "/p/q/r")
        let mine = try await p.parking.perform { () throws(VFSError) in runVFS(p, op) }
        let theirs = try await p.vfs.hostIO.perform { runHost(hostBase, op) }
        if mine != theirs {
            problems.append("seed \(seed) step \(i): \(op): vfs \(mine), host \(theirs)")
            if problems.count > 5 { break }
        }
        await LWKT.yield()
    }
    let a = try await p.parking.perform { () throws(VFSError) in try rethrowTyped { try treeOfVFS(p) } }
    let b = try await p.vfs.hostIO.perform { treeOfHost(hostBase) }
    if a != b { problems.append("seed \(seed): trees differ\nvfs:  \(a)\nhost: \(b)") }
    return problems
}

/// Every namecache property test of `NamecachePropertyTests`, run as LWKT threads spread
/// over 2 and 8 CPUs at once (each on its own namespace), with the IPI watchdog.
@Suite(.serialized) struct LWKTPropertyTests {
    typealias Property = @Sendable () throws -> Void

    static var properties: [(String, Property)] {
        let t = NamecachePropertyTests()
        var list: [(String, Property)] = [
            ("renameIntoOwnSubtreeIsRefused", t.renameIntoOwnSubtreeIsRefused),
            ("renameToItselfAndBetweenHardLinksDoesNothing", t.renameToItselfAndBetweenHardLinksDoesNothing),
            ("renameTypeRules", t.renameTypeRules),
            ("renameAcrossMountsAndOfMountPoints", t.renameAcrossMountsAndOfMountPoints),
            ("renameMovesTheRecord", t.renameMovesTheRecord),
            ("unlinkWhileOpen", t.unlinkWhileOpen),
            ("negativeEntriesAreBounded", t.negativeEntriesAreBounded),
            ("dotDotStaysAtRootAndJail", t.dotDotStaysAtRootAndJail),
            ("mountCrossings", t.mountCrossings),
            ("removedWorkingDirectory", t.removedWorkingDirectory),
            ("symlinkLimits", t.symlinkLimits),
            ("pathSyntax", t.pathSyntax),
            ("searchPermission", t.searchPermission),
            ("getcwdAfterAncestorRename", t.getcwdAfterAncestorRename),
            ("holdsReturnToZeroAndUnmountBusy", t.holdsReturnToZeroAndUnmountBusy),
            ("stickyDirectory", t.stickyDirectory),
            ("attributeChanges", t.attributeChanges),
            ("readdirAndFchdir", t.readdirAndFchdir),
            ("chrootConfinesLookups", t.chrootConfinesLookups),
            ("fastAndLockedWalksAgree", t.fastAndLockedWalksAgree),
        ]
        for how in ["create", "mkdir", "link", "symlink", "rename"] {
            list.append(("negativeEntryInvalidatedBy(\(how))", { try t.negativeEntryInvalidatedBy(how) }))
        }
        return list
    }

    @Test(arguments: [2, 8])
    func propertiesHoldOnCPUs(cpus: Int) async throws {
        let failures = try await withLWKT(cpus: cpus) { system -> [String] in
            let dog = IPIWatchdog(system: system)
            let failed = try await withThrowingTaskGroup(of: String?.self) { group in
                for (i, (name, property)) in Self.properties.enumerated() {
                    group.addTask {
                        try await system.run(on: i % cpus, name: name) { () -> String? in
                            // One property per job; the CPU answers IPIs between jobs.
                            await LWKT.yield()
                            do { try property() } catch { return "\(name): \(error)" }
                            return nil
                        }
                    }
                }
                var out: [String] = []
                for try await f in group { if let f { out.append(f) } }
                return out
            }
            // Some properties are one long job (thousands of names); what must never happen
            // is a CPU blocked in the kernel, so the blocked time is what is checked here.
            let blocked = dog.finishBlocked()
            #expect(blocked < ipiStallLimitMs, "a CPU was blocked, deaf to IPIs, for \(blocked) ms")
            return failed
        }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
    }
}
