import Glibc
import LWKT

/// The VFS API for LWKT threads: every call of the synchronous API, `async`, such that no
/// wait ever stops the caller's CPU.
///
/// How a call runs (rules of this file):
/// 1. A cached path that the lock-free walk answers (`stat`, `lstat`, `lookup`) is answered
///    at once, synchronously: no attempt, no hop, no allocation.
/// 2. Otherwise the synchronous operation runs on the CPU as a non-blocking attempt
///    (`VFSAttempt`). Most operations on MemFS, and on HostFS names and attributes that are
///    cached and current, finish there.
/// 3. If the attempt meets a record lock (or an open file's offset lock) that another thread
///    holds, it gives up before changing anything; the LWKT thread parks on that lock
///    (`tsleep`, woken by the release) while its CPU runs other threads, then runs the
///    operation again.
/// 4. If the attempt reaches a host call that could block (HostFS), it gives up before
///    changing anything and the whole operation runs once on the host-I/O pool; the thread
///    parks until the pool's answer comes back by IPI. On the pool, waits are ordinary
///    (they stop a pool thread, never a CPU).
/// 5. Called from a thread that is not an LWKT CPU, a call simply runs synchronously.
///
/// Use it as `try await process.parking.open("/a/b")`; `perform(_:)` runs a composite body
/// the same way (its rule: nothing unrepeatable before its last point that may wait, see
/// `VFSAttempt` rule 2).
public struct VFSParkingCalls: Sendable {
    /// The process the calls act for.
    public let process: VFSProcess

    /// Attempts on the CPU before the operation is sent to the pool, where waiting for a lock
    /// is harmless: bounds the work a thread repeats under heavy contention.
    static let attemptsBeforePool = 16

    /// Runs the synchronous VFS work `body` without ever making the CPU wait (rules 2–5).
    /// `body` may run more than once: it must do nothing unrepeatable before the last point
    /// where it may wait (a lock or a host call). A single VFS operation always qualifies.
    public func perform<R>(_ body: () throws(VFSError) -> R) async throws(VFSError) -> R {
        guard CPU.current != nil else { return try body() }
        let pool = process.vfs.hostIO
        for _ in 0..<Self.attemptsBeforePool {
            let (result, outcome) = VFSAttempt.run(body)
            if let result {
                pool.countOnCPU()
                return try result.get()
            }
            switch outcome {
            case .contended(let lock):
                pool.countLockPark()
                try await lock.awaitRelease()
            case .needsHost, .finished:
                return try await pool.perform(body)
            }
        }
        return try await pool.perform(body)
    }

    // MARK: paths

    /// `VFSProcess.stat(_:)`; a cached path is answered without leaving the caller.
    public func stat(_ path: String) async throws(VFSError) -> FileAttributes {
        switch process.fastLookup(path, follow: true, wantAttributes: true) {
        case .found(let a): return a
        case .error(let e): throw e
        case .type, .fallback: return try await perform { () throws(VFSError) in try process.stat(path) }
        }
    }

    /// `VFSProcess.lstat(_:)`; a cached path is answered without leaving the caller.
    public func lstat(_ path: String) async throws(VFSError) -> FileAttributes {
        switch process.fastLookup(path, follow: false, wantAttributes: true) {
        case .found(let a): return a
        case .error(let e): throw e
        case .type, .fallback: return try await perform { () throws(VFSError) in try process.lstat(path) }
        }
    }

    /// `VFSProcess.lookup(_:follow:)`; a cached path is answered without leaving the caller.
    public func lookup(_ path: String, follow: Bool = true) async throws(VFSError) -> FileType {
        switch process.fastLookup(path, follow: follow, wantAttributes: false) {
        case .type(let t): return t
        case .found(let a): return a.type
        case .error(let e): throw e
        case .fallback: return try await perform { () throws(VFSError) in try process.lookup(path, follow: follow) }
        }
    }

    /// `VFSProcess.open(_:_:mode:)`.
    public func open(_ path: String, _ flags: OpenFlags = .readOnly, mode: UInt32 = 0o644) async throws(VFSError) -> Int32 {
        try await perform { () throws(VFSError) in try process.open(path, flags, mode: mode) }
    }

    /// `VFSProcess.close(_:)`.
    public func close(_ fd: Int32) throws(VFSError) { try process.close(fd) }

    /// `VFSProcess.read(_:into:)`.
    public func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) async throws(VFSError) -> Int {
        try await perform { () throws(VFSError) in try process.read(fd, into: buffer) }
    }

    /// `VFSProcess.read(_:count:)`.
    public func read(_ fd: Int32, count: Int) async throws(VFSError) -> [UInt8] {
        try await perform { () throws(VFSError) in try process.read(fd, count: count) }
    }

    /// `VFSProcess.pread(_:count:at:)`.
    public func pread(_ fd: Int32, count: Int, at offset: Int64) async throws(VFSError) -> [UInt8] {
        try await perform { () throws(VFSError) in try process.pread(fd, count: count, at: offset) }
    }

    /// `VFSProcess.write(_:_:)`.
    @discardableResult
    public func write(_ fd: Int32, _ bytes: [UInt8]) async throws(VFSError) -> Int {
        try await perform { () throws(VFSError) in try process.write(fd, bytes) }
    }

    /// `VFSProcess.pwrite(_:_:at:)`.
    @discardableResult
    public func pwrite(_ fd: Int32, _ bytes: [UInt8], at offset: Int64) async throws(VFSError) -> Int {
        try await perform { () throws(VFSError) in try process.pwrite(fd, bytes, at: offset) }
    }

    /// `VFSProcess.seek(_:_:from:)`.
    @discardableResult
    public func seek(_ fd: Int32, _ offset: Int64, from whence: SeekWhence) async throws(VFSError) -> Int64 {
        try await perform { () throws(VFSError) in try process.seek(fd, offset, from: whence) }
    }

    /// `VFSProcess.fstat(_:)`.
    public func fstat(_ fd: Int32) async throws(VFSError) -> FileAttributes {
        try await perform { () throws(VFSError) in try process.fstat(fd) }
    }

    /// `VFSProcess.ftruncate(_:length:)`.
    public func ftruncate(_ fd: Int32, length: Int64) async throws(VFSError) {
        try await perform { () throws(VFSError) in try process.ftruncate(fd, length: length) }
    }

    /// `VFSProcess.truncate(_:length:)`.
    public func truncate(_ path: String, length: Int64) async throws(VFSError) {
        try await perform { () throws(VFSError) in try process.truncate(path, length: length) }
    }

    /// `VFSProcess.readdir(_:)`.
    public func readdir(_ fd: Int32) async throws(VFSError) -> [DirectoryEntry] {
        try await perform { () throws(VFSError) in try process.readdir(fd) }
    }

    /// `VFSProcess.listDirectory(_:)`.
    public func listDirectory(_ path: String) async throws(VFSError) -> [DirectoryEntry] {
        try await perform { () throws(VFSError) in try process.listDirectory(path) }
    }

    /// `VFSProcess.readlink(_:)`.
    public func readlink(_ path: String) async throws(VFSError) -> String {
        try await perform { () throws(VFSError) in try process.readlink(path) }
    }

    /// `VFSProcess.mkdir(_:mode:)`.
    public func mkdir(_ path: String, mode: UInt32 = 0o755) async throws(VFSError) {
        try await perform { () throws(VFSError) in try process.mkdir(path, mode: mode) }
    }

    /// `VFSProcess.rmdir(_:)`.
    public func rmdir(_ path: String) async throws(VFSError) {
        try await perform { () throws(VFSError) in try process.rmdir(path) }
    }

    /// `VFSProcess.unlink(_:)`.
    public func unlink(_ path: String) async throws(VFSError) {
        try await perform { () throws(VFSError) in try process.unlink(path) }
    }

    /// `VFSProcess.rename(_:_:)`.
    public func rename(_ from: String, _ to: String) async throws(VFSError) {
        try await perform { () throws(VFSError) in try process.rename(from, to) }
    }

    /// `VFSProcess.symlink(_:_:)`.
    public func symlink(_ target: String, _ path: String) async throws(VFSError) {
        try await perform { () throws(VFSError) in try process.symlink(target, path) }
    }

    /// `VFSProcess.link(_:_:)`.
    public func link(_ oldPath: String, _ newPath: String) async throws(VFSError) {
        try await perform { () throws(VFSError) in try process.link(oldPath, newPath) }
    }

    /// `VFSProcess.chmod(_:mode:)`.
    public func chmod(_ path: String, mode: UInt32) async throws(VFSError) {
        try await perform { () throws(VFSError) in try process.chmod(path, mode: mode) }
    }

    /// `VFSProcess.chdir(_:)`.
    public func chdir(_ path: String) async throws(VFSError) {
        try await perform { () throws(VFSError) in try process.chdir(path) }
    }

    // MARK: records (servers that hand out handles, such as FUSE)

    /// `VFSProcess.lookup(_:in:)`: a cached, current name is answered on the CPU.
    public func lookup(_ name: [UInt8], in directory: NCRecord) async throws(VFSError) -> NCRecord? {
        try await perform { () throws(VFSError) in try process.lookup(name, in: directory) }
    }

    /// `VFSProcess.attributes(of:)`.
    public func attributes(of record: NCRecord) async throws(VFSError) -> FileAttributes {
        try await perform { () throws(VFSError) in try process.attributes(of: record) }
    }

    /// `VFSProcess.attributesAndBlocks(of:)`.
    public func attributesAndBlocks(of record: NCRecord) async throws(VFSError) -> (FileAttributes, blocks: Int64?) {
        try await perform { () throws(VFSError) in try process.attributesAndBlocks(of: record) }
    }

    /// `VFSProcess.create(_:in:mode:exclusive:credentials:)`.
    public func create(_ name: [UInt8], in directory: NCRecord, mode: UInt32, exclusive: Bool,
                       credentials: Credentials) async throws(VFSError) -> (record: NCRecord, created: Bool) {
        try await perform { () throws(VFSError) in
            try process.create(name, in: directory, mode: mode, exclusive: exclusive, credentials: credentials)
        }
    }

    /// `VFSProcess.makeDirectory(_:in:mode:credentials:)`.
    public func makeDirectory(_ name: [UInt8], in directory: NCRecord, mode: UInt32,
                              credentials: Credentials) async throws(VFSError) -> NCRecord {
        try await perform { () throws(VFSError) in
            try process.makeDirectory(name, in: directory, mode: mode, credentials: credentials)
        }
    }

    /// `VFSProcess.makeSymlink(_:in:target:credentials:)`.
    public func makeSymlink(_ name: [UInt8], in directory: NCRecord, target: [UInt8],
                            credentials: Credentials) async throws(VFSError) -> NCRecord {
        try await perform { () throws(VFSError) in
            try process.makeSymlink(name, in: directory, target: target, credentials: credentials)
        }
    }

    /// `VFSProcess.makeFIFO(_:in:mode:credentials:)`.
    public func makeFIFO(_ name: [UInt8], in directory: NCRecord, mode: UInt32,
                         credentials: Credentials) async throws(VFSError) -> NCRecord {
        try await perform { () throws(VFSError) in
            try process.makeFIFO(name, in: directory, mode: mode, credentials: credentials)
        }
    }

    /// `VFSProcess.link(_:as:in:)`.
    public func link(_ source: NCRecord, as name: [UInt8], in directory: NCRecord) async throws(VFSError) -> NCRecord {
        try await perform { () throws(VFSError) in try process.link(source, as: name, in: directory) }
    }

    /// `VFSProcess.unlink(_:in:)`.
    public func unlink(_ name: [UInt8], in directory: NCRecord) async throws(VFSError) {
        try await perform { () throws(VFSError) in try process.unlink(name, in: directory) }
    }

    /// `VFSProcess.removeDirectory(_:in:)`.
    public func removeDirectory(_ name: [UInt8], in directory: NCRecord) async throws(VFSError) {
        try await perform { () throws(VFSError) in try process.removeDirectory(name, in: directory) }
    }

    /// `VFSProcess.rename(_:in:to:in:mode:)`.
    public func rename(_ name: [UInt8], in directory: NCRecord, to newName: [UInt8], in newDirectory: NCRecord,
                       mode: VFSProcess.RenameMode = .replace) async throws(VFSError) {
        try await perform { () throws(VFSError) in
            try process.rename(name, in: directory, to: newName, in: newDirectory, mode: mode)
        }
    }

    /// `VFSProcess.readSymlink(_:)`.
    public func readSymlink(_ record: NCRecord) async throws(VFSError) -> [UInt8] {
        try await perform { () throws(VFSError) in try process.readSymlink(record) }
    }

    /// `VFSProcess.setAttributes(of:_:)`.
    public func setAttributes(of record: NCRecord, _ change: AttributeChange) async throws(VFSError) {
        try await perform { () throws(VFSError) in try process.setAttributes(of: record, change) }
    }

    /// `VFSProcess.openFile(_:read:write:)`.
    public func openFile(_ record: NCRecord, read: Bool, write: Bool) async throws(VFSError) -> any FSOpenFile {
        try await perform { () throws(VFSError) in try process.openFile(record, read: read, write: write) }
    }
}

extension VFSProcess {
    /// The VFS API for LWKT threads (`VFSParkingCalls`): the same operations, `async`; lock
    /// contention parks the thread, host calls that can block go to the host-I/O pool, and
    /// cached answers come back at once.
    public var parking: VFSParkingCalls { VFSParkingCalls(process: self) }
}
