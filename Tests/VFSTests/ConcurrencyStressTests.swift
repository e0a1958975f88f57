import Glibc
import Synchronization
import Testing
@testable import VFS

/// Box for a closure handed to a pthread.
private final class ThreadBody: @unchecked Sendable {
    let run: @Sendable () -> Void
    init(_ run: @escaping @Sendable () -> Void) { self.run = run }
}

/// Runs `count` OS threads, each calling `body(index)`, and joins them. A watchdog aborts the
/// process with a message if they have not all finished within `timeout` seconds, so a
/// deadlock fails the run instead of hanging it.
func runThreads(_ count: Int, timeout: Int = 60, _ body: @escaping @Sendable (Int) -> Void) {
    let state = ThreadCounter()
    var threads: [pthread_t] = []
    for i in 0..<count {
        let box = Unmanaged.passRetained(ThreadBody {
            body(i)
            state.finish()
        })
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            guard let arg else { return nil }
            Unmanaged<ThreadBody>.fromOpaque(arg).takeRetainedValue().run()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed")
        threads.append(t)
    }
    let start = time(nil)
    while state.count < count {
        usleep(2_000)
        if Int(time(nil) - start) > timeout {
            let msg = "watchdog: threads did not finish within \(timeout) s (deadlock or livelock)\n"
            _ = msg.withCString { Glibc.write(2, $0, strlen($0)) }
            abort()
        }
    }
    for t in threads { pthread_join(t, nil) }
}

/// Counts finished threads.
final class ThreadCounter: @unchecked Sendable {
    private let value = Atomic<Int>(0)
    func finish() { value.wrappingAdd(1, ordering: .releasing) }
    var count: Int { value.load(ordering: .acquiring) }
}

@Suite(.serialized) struct ConcurrencyStressTests {
    /// Property 6: lookups racing renames of an ancestor see the right inode or ENOENT, never
    /// another file's; getcwd sees one of the two true paths.
    @Test(arguments: [2, 8])
    func lookupsDuringRenames(threads: Int) throws {
        let (vfs, p) = makeMemVFS()
        try p.mkdir("/p"); try p.mkdir("/p/a"); try p.mkdir("/p/a/q")
        try writeFile(p, "/p/a/x", "x"); try writeFile(p, "/p/decoy", "d")
        let xInode = try p.stat("/p/a/x").inode
        let wrong = Atomic<Int>(0)
        let goodCwd = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let iterations = 20_000
        runThreads(threads) { i in
            let me = p.fork()
            if i == 0 {
                for _ in 0..<iterations / 4 {
                    try? me.rename("/p/a", "/p/b")
                    try? me.rename("/p/b", "/p/a")
                }
                stop.store(true, ordering: .releasing)
            } else if i == 1 {
                // The renamer is already running: /p/a/q may be /p/b/q at this instant, and
                // for a moment neither name may resolve, so try both until one works.
                var entered = false
                for _ in 0..<1_000_000 where !entered {
                    entered = (try? me.chdir("/p/a/q")) != nil || (try? me.chdir("/p/b/q")) != nil
                }
                while entered && !stop.load(ordering: .acquiring) {
                    if let cwd = try? me.getcwd() {
                        if cwd == "/p/a/q" || cwd == "/p/b/q" { goodCwd.wrappingAdd(1, ordering: .relaxed) } else { wrong.wrappingAdd(1, ordering: .relaxed) }
                    }
                    for path in ["/p/a/x", "/p/b/x"] {
                        switch Result(catching: { () throws(VFSError) in try me.stat(path) }) {
                        case .success(let a): if a.inode != xInode { wrong.wrappingAdd(1, ordering: .relaxed) }
                        case .failure(let e): if e != .noent { wrong.wrappingAdd(1, ordering: .relaxed) }
                        }
                    }
                }
            } else {
                var n = 0
                while !stop.load(ordering: .acquiring) {
                    n += 1
                    let path = n % 2 == 0 ? "/p/a/x" : "/p/b/x"
                    switch Result(catching: { () throws(VFSError) in try me.stat(path) }) {
                    case .success(let a): if a.inode != xInode { wrong.wrappingAdd(1, ordering: .relaxed) }
                    case .failure(let e): if e != .noent { wrong.wrappingAdd(1, ordering: .relaxed) }
                    }
                    // churn in a sibling directory
                    if i % 2 == 0 {
                        _ = try? me.open("/p/t\(i)", [.create, .writeOnly])
                        me.closeAll()
                        try? me.unlink("/p/t\(i)")
                    }
                }
            }
        }
        #expect(wrong.load(ordering: .relaxed) == 0)
        #expect(goodCwd.load(ordering: .relaxed) > 0)
        #expect(vfs.namecache.checkTopology().isEmpty)
        #expect(try p.stat("/p/a/x").inode == xInode)
    }

    /// Property 7 and the cycle race: renames in both directions between two directories,
    /// with rmdir/mkdir/create/unlink, and directory renames that race to form a cycle.
    @Test(arguments: [2, 8])
    func crossRenamesDoNotDeadlockOrCycle(threads: Int) throws {
        let (vfs, p) = makeMemVFS()
        for d in ["/A", "/B", "/x", "/x/a", "/y", "/y/b"] { try p.mkdir(d) }
        try writeFile(p, "/A/x", ""); try writeFile(p, "/B/y2", "")
        let rounds = 3_000
        runThreads(threads) { i in
            let me = p.fork()
            for r in 0..<rounds {
                switch (i + r) % 6 {
                case 0: try? me.rename("/A/x", "/B/y"); try? me.rename("/B/y", "/A/x")
                case 1: try? me.rename("/B/y2", "/A/x2"); try? me.rename("/A/x2", "/B/y2")
                case 2: try? me.mkdir("/A/d\(i)"); try? me.rmdir("/A/d\(i)")
                case 3: _ = try? me.open("/B/f\(i)", [.create, .writeOnly]); me.closeAll(); try? me.unlink("/B/f\(i)")
                case 4: try? me.rename("/x/a", "/y/b/a"); try? me.rename("/y/b/a", "/x/a")
                default: try? me.rename("/y", "/x/a/y"); try? me.rename("/x/a/y", "/y")
                }
            }
        }
        #expect(vfs.namecache.checkTopology().isEmpty)
        // The tree is still a tree: every directory reaches the root by `..`.
        var stack = ["/"]
        var seen = 0
        while let d = stack.popLast() {
            seen += 1
            #expect(seen < 1000)
            for e in try p.listDirectory(d) where e.type == .directory {
                stack.append(d == "/" ? "/" + e.name : d + "/" + e.name)
            }
        }
        #expect(vfs.namecache.heldRecordCount() == 0)
    }

    /// Many threads resolving, creating and removing the same names: one record per name,
    /// and the cache agrees with the file system afterwards.
    @Test(arguments: [2, 8])
    func createRemoveRaces(threads: Int) throws {
        let (vfs, p) = makeMemVFS()
        try p.mkdir("/d")
        runThreads(threads) { i in
            let me = p.fork()
            for r in 0..<3_000 {
                let name = "/d/n\(r % 7)"
                switch (i + r) % 4 {
                case 0: _ = try? me.open(name, [.create, .writeOnly]); me.closeAll()
                case 1: try? me.unlink(name)
                case 2: _ = try? me.stat(name)
                default: try? me.symlink("n0", name + "s"); try? me.unlink(name + "s")
                }
            }
        }
        #expect(vfs.namecache.checkTopology().isEmpty)
        // every cached answer matches a fresh file system lookup
        for k in 0..<7 {
            let viaCache = Result { () throws(VFSError) in try p.stat("/d/n\(k)") }.map(\.inode)
            let fs = vfs.rootMount.fileSystem
            let dnode = try #require(try p.nlookup(Array("/d".utf8), follow: true).record.node)
            let direct = try fs.resolve(Array("n\(k)".utf8), in: dnode)
            switch viaCache {
            case .success(let ino):
                let node = try #require(direct)
                #expect(try fs.attributes(of: node).inode == ino)
            case .failure(let e): #expect(e == .noent && direct == nil)
            }
        }
    }
}
