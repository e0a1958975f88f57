import Foundation
import Glibc
import LWKT
import Synchronization
import Testing
@testable import VFS

/// A file system whose host calls are slow (a stalled disk or network file system), used
/// through the parking API from an LWKT thread: the operations go to the host-I/O pool and
/// the CPU's other thread keeps running, with every CPU answering IPIs within 100 ms.
final class SlowFS: FileSystem, @unchecked Sendable {
    let inner = MemFS()
    let delay: useconds_t
    let slowCalls = Atomic<Int>(0)
    init(delay: useconds_t) { self.delay = delay }
    var rootNode: any FSNode { inner.rootNode }
    var deviceID: UInt64 { inner.deviceID }
    var changesBehindCache: Bool { false }
    var callsMayBlock: Bool { true }
    private func slow() throws(VFSError) {
        try enteringHost()
        slowCalls.wrappingAdd(1, ordering: .relaxed)
        usleep(delay)
    }
    func resolve(_ name: [UInt8], in directory: any FSNode) throws(VFSError) -> (any FSNode)? { try slow(); return try inner.resolve(name, in: directory) }
    func revalidate(_ name: [UInt8], in directory: any FSNode, cached: (any FSNode)?) -> Bool { true }
    func attributes(of node: any FSNode) throws(VFSError) -> FileAttributes { try inner.attributes(of: node) }
    func setAttributes(of node: any FSNode, _ change: AttributeChange) throws(VFSError) { try slow(); try inner.setAttributes(of: node, change) }
    func create(_ name: [UInt8], in directory: any FSNode, mode: UInt32, credentials: Credentials) throws(VFSError) -> any FSNode {
        try slow(); return try inner.create(name, in: directory, mode: mode, credentials: credentials)
    }
    func makeDirectory(_ name: [UInt8], in directory: any FSNode, mode: UInt32, credentials: Credentials) throws(VFSError) -> any FSNode {
        try slow(); return try inner.makeDirectory(name, in: directory, mode: mode, credentials: credentials)
    }
    func makeSymlink(_ name: [UInt8], in directory: any FSNode, target: [UInt8], credentials: Credentials) throws(VFSError) -> any FSNode {
        try slow(); return try inner.makeSymlink(name, in: directory, target: target, credentials: credentials)
    }
    func link(_ node: any FSNode, as name: [UInt8], in directory: any FSNode) throws(VFSError) { try slow(); try inner.link(node, as: name, in: directory) }
    func unlink(_ name: [UInt8], in directory: any FSNode, node: any FSNode) throws(VFSError) { try slow(); try inner.unlink(name, in: directory, node: node) }
    func removeDirectory(_ name: [UInt8], in directory: any FSNode, node: any FSNode) throws(VFSError) {
        try slow(); try inner.removeDirectory(name, in: directory, node: node)
    }
    func rename(_ name: [UInt8], in directory: any FSNode, to newName: [UInt8], in newDirectory: any FSNode) throws(VFSError) {
        try slow(); try inner.rename(name, in: directory, to: newName, in: newDirectory)
    }
    func readSymlink(_ node: any FSNode) throws(VFSError) -> [UInt8] { try inner.readSymlink(node) }
    func open(_ node: any FSNode, name: [UInt8], in directory: (any FSNode)?, read: Bool, write: Bool) throws(VFSError) -> any FSOpenFile {
        SlowOpenFile(try inner.open(node, name: name, in: directory, read: read, write: write), fs: self)
    }

    /// An open file whose reads wait (a blocked read).
    final class SlowOpenFile: FSOpenFile, @unchecked Sendable {
        let inner: any FSOpenFile
        let fs: SlowFS
        init(_ inner: any FSOpenFile, fs: SlowFS) { self.inner = inner; self.fs = fs }
        func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(VFSError) -> Int {
            try fs.slow(); return try inner.read(into: buffer, at: offset)
        }
        func write(_ buffer: UnsafeRawBufferPointer, at offset: Int64, append: Bool) throws(VFSError) -> (count: Int, end: Int64) {
            try inner.write(buffer, at: offset, append: append)
        }
        func attributes() throws(VFSError) -> FileAttributes { try inner.attributes() }
        func truncate(to length: Int64) throws(VFSError) { try inner.truncate(to: length) }
        func readDirectory() throws(VFSError) -> [DirectoryEntry] { try inner.readDirectory() }
        func close() { inner.close() }
    }
}

@Suite(.serialized) struct SlowHostTests {
    @Test func slowCallsAndBlockedReadsThroughTheParkingAPIDoNotStopTheCPU() async throws {
        let slow = SlowFS(delay: 250_000)
        let vfs = VirtualFileSystem(rootFileSystem: MemFS(), hostIO: HostIOPool(threads: 2))
        defer { vfs.hostIO.shutdown() }
        let p = vfs.makeProcess()
        try p.mkdir("/slow")
        try vfs.mount(slow, at: "/slow", by: p)
        // Made off the CPUs, so the LWKT thread's calls below find the names cached.
        let fd0 = try p.open("/slow/f", [.create, .writeOnly])
        try p.write(fd0, Array("data".utf8))
        try p.close(fd0)
        let callsBefore = slow.slowCalls.load(ordering: .relaxed)
        try await withLWKT(cpus: 2) { system in
            let (ticks, stall) = try await HostIOTests().measure(system) {
                // Cached: answered on the CPU, no host call.
                guard try await p.parking.stat("/slow/f").size == 4 else { throw VFSError.io }
                // A slow host call: a name the cache does not know is resolved on the pool.
                do {
                    _ = try await p.parking.stat("/slow/missing")
                    throw VFSError.exist
                } catch VFSError.noent {}
                // A blocked read: the open is answered on the CPU, the read waits on the pool.
                let fd = try await p.parking.open("/slow/f")
                let bytes = try await p.parking.read(fd, count: 16)
                try p.parking.close(fd)
                guard bytes == Array("data".utf8) else { throw VFSError.io }
            }
            #expect(ticks > 10, "the other thread on the CPU must run while the slow calls are in progress")
            #expect(stall < ipiStallLimitMs, "a CPU left an IPI unanswered for \(stall) ms")
        }
        #expect(slow.slowCalls.load(ordering: .relaxed) - callsBefore == 2, "one slow resolve and one slow read")
        #expect(vfs.hostIO.statistics.submitted == 2)
        #expect(vfs.hostIO.statistics.finishedOnCPU >= 1, "the open of a cached name finishes on the CPU")
    }
}
