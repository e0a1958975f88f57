import Foundation
import Glibc
import LWKT
import Synchronization
import Testing
@testable import VFS
import LibellulaTestSupport

/// The parking API under contention (bounded): two LWKT threads per CPU on 2 and 8 CPUs
/// create, rename, link and remove a handful of shared names in a MemFS directory and in a
/// HostFS directory, so attempts give up on held records (and park) on the CPUs while pool
/// threads wait for the same records synchronously. Every result must be one a concurrent
/// run can give, every CPU must keep answering IPIs, and at the end the namecache must be
/// sound, no record left locked, and the VFS must agree with the host directory.
@Suite(.serialized) struct ParkingStressTests {
    final class Tally: @unchecked Sendable {
        let unexpected = Mutex<[String]>([])
        let ops = Atomic<Int>(0)
    }

    @Test(arguments: [2, 8])
    func sharedNamesUnderContention(cpus: Int) async throws {
        let host = makeTempDir("parking-stress")
        defer { removeTree(host) }
        let vfs = VirtualFileSystem(rootFileSystem: MemFS(), hostIO: HostIOPool(threads: 2))
        defer { vfs.hostIO.shutdown() }
        let p = vfs.makeProcess()
        try p.mkdir("/m")
        try p.mkdir("/h")
        try vfs.mount(try HostFS(hostPath: host), at: "/h", by: p)
        let tally = Tally()
        let allowed: Set<VFSError> = [.noent, .exist, .notempty, .isdir, .notdir, .inval, .perm]  // EPERM: a hard link to a directory
        try await withLWKT(cpus: cpus) { system in
            let dog = IPIWatchdog(system: system)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for t in 0..<(2 * cpus) {
                    let me = p.fork()
                    group.addTask {
                        try await system.run(on: t % cpus, name: "stress\(t)") {
                            var rng = SeededRandom(seed: UInt64(7_000 + 31 * cpus + t))
                            for i in 0..<(cpus == 2 ? 160 : 60) {
                                let base = rng.next() % 2 == 0 ? "/m" : "/h"
                                let a = "\(base)/n\(rng.next() % 4)", b = "\(base)/n\(rng.next() % 4)"
                                let w = me.parking
                                let op = rng.next() % 6
                                do {
                                    switch op {
                                    case 0:
                                        let fd = try await w.open(a, [.create, .writeOnly])
                                        try await w.write(fd, Array("x".utf8))
                                        try w.close(fd)
                                    case 1: try await w.rename(a, b)
                                    case 2: try await w.unlink(a)
                                    case 3: try await w.link(a, b)
                                    case 4: try await w.mkdir(a)
                                    default: try await w.rmdir(a)
                                    }
                                } catch {
                                    if !((error as? VFSError).map { allowed.contains($0) } ?? false) {
                                        tally.unexpected.withLock { $0.append("thread \(t) step \(i) op \(op) (\(a), \(b)): \(error)") }
                                    }
                                }
                                tally.ops.wrappingAdd(1, ordering: .relaxed)
                                if i % 8 == 0 { await LWKT.yield() }
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let stall = dog.finish()
            #expect(stall < ipiStallLimitMs, "a CPU left an IPI unanswered for \(stall) ms")
        }
        #expect(tally.unexpected.withLock { $0 } == [])
        #expect(tally.ops.load(ordering: .relaxed) == 2 * cpus * (cpus == 2 ? 160 : 60))
        #expect(vfs.namecache.checkTopology().isEmpty)
        // Nothing stays locked, and the HostFS side agrees with the host.
        for name in ["/m", "/h"] {
            let r = try p.nlookup(Array(name.utf8), follow: true).record
            #expect(!r.recordLock.isLocked, "\(name) left locked")
        }
        #expect(!vfs.rootRecord.mount.renameLock.isLocked)
        var hostNames = (try? FileManager.default.contentsOfDirectory(atPath: host)) ?? []
        hostNames.sort()
        (vfs.mountList.last?.fileSystem as? HostFS)?.settle()
        let ours = try p.listDirectory("/h").map(\.name)
        #expect(ours == hostNames, "VFS \(ours) vs host \(hostNames)")
    }
}
