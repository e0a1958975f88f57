import Glibc
import LibellulaTestSupport
import Testing
@testable import VFS

/// A HostFS namespace that nothing references any more gives back its host descriptors:
/// one per cached name, the watcher's inotify instance and its stop pipe.
@Suite("HostFS descriptor teardown", .serialized)
struct DescriptorTeardownTests {
    /// Mounts HostFS over `dir`, looks up every file in it (and a few missing names), and
    /// drops everything.
    static func cycle(_ dir: String, files: Int) throws {
        let vfs = VirtualFileSystem(rootFileSystem: MemFS())
        let p = vfs.makeProcess()
        try p.mkdir("/host")
        try vfs.mount(try HostFS(hostPath: dir), at: "/host", by: p)
        for i in 0..<files { _ = try p.stat("/host/d\(i % 4)/f\(i)") }
        for i in 0..<8 { #expect(throws: VFSError.noent) { try p.stat("/host/d0/missing\(i)") } }
    }

    @Test("A dropped HostFS namespace closes its descriptors")
    func droppedNamespaceClosesDescriptors() async throws {
        let dir = makeTempDir("fd-teardown")
        defer { removeTree(dir) }
        let files = 60
        for d in 0..<4 { mkdir(dir + "/d\(d)", 0o755) }
        for i in 0..<files { close(open(dir + "/d\(i % 4)/f\(i)", O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)) }
        try Self.cycle(dir, files: files)   // whatever opens once per process
        let baseline = FDCensus.take()
        for _ in 0..<4 { try Self.cycle(dir, files: files) }
        // The watcher's reader thread leaves on its own after the stop: allow it a moment.
        var after = FDCensus.take()
        for _ in 0..<40 where after.total > baseline.total + 2 {
            try await Task.sleep(for: .milliseconds(50))
            after = FDCensus.take()
        }
        // Before the fix: 4 × (60 files + 4 directories + root + inotify + 2 pipe ends).
        #expect(after.total <= baseline.total + 2,
                "before \(baseline), after 4 HostFS namespaces: \(after), grew \(after.growth(since: baseline))")
    }
}
