import Glibc

/// File operations: open, read, write, seek, truncate, close, stat, readdir.
extension VFSProcess {
    /// Opens (and with `.create` creates) a file; returns a descriptor.
    public func open(_ path: String, _ flags: OpenFlags = .readOnly, mode: UInt32 = 0o644) throws(VFSError) -> Int32 {
        let bytes = Array(path.utf8)
        let creating = flags.contains(.create)
        if creating && bytes.last == UInt8(ascii: "/") {
            // Linux walks to the last component first (its errors win), then refuses.
            _ = try nlookup(bytes, follow: false, allowNegative: true, entry: true)
            throw .isdir
        }
        let follow = !(flags.contains(.noFollow) || (creating && flags.contains(.exclusive)))
        for _ in 0..<10_000 {
            let res = try nlookup(bytes, follow: follow, allowNegative: creating)
            if creating && res.kind != .normal { throw .isdir }
            var record = res.record
            var created = false
            if record.state != .positive {
                guard let dir = res.directory else { throw .noent }
                let again: Bool = try lockedIfCurrent(record, in: dir) { () throws(VFSError) -> Bool in
                    if record.state == .positive { return true }
                    guard let dnode = dir.node else { throw .noent }
                    try checkAccess(dir, [.write, .execute])
                    let node = try dir.mount.fileSystem.create(record.name, in: dnode, mode: mode & 0o7777, credentials: credentials)
                    namecache.setResolved(record, node: node, worldSearchable: false)
                    created = true
                    return false
                } ?? true
                if again { continue }
            } else if creating && flags.contains(.exclusive) {
                throw .exist
            }
            record = res.record
            return try openRecord(record, directory: res.directory, flags: flags, created: created)
        }
        throw .again
    }

    private func openRecord(_ record: NCRecord, directory: NCRecord?, flags: OpenFlags, created: Bool) throws(VFSError) -> Int32 {
        guard let node = record.node else { throw .noent }
        let isDir = record.isDirectory
        if flags.contains(.create) && isDir { throw .isdir }
        if flags.contains(.directory) && !isDir { throw .notdir }
        if record.isSymlink { throw .loop }
        if isDir && flags.writable { throw .isdir }
        // FIFOs, sockets and devices: refused unless asked for, because opening one can wait
        // for a peer indefinitely (a FIFO's open blocks until a writer appears).
        if node.type == .other && !flags.contains(.nonBlocking) { throw .notsup }
        if !created {
            var want: AccessMode = []
            if flags.readable { want.insert(.read) }
            if flags.writable || flags.contains(.truncate) { want.insert(.write) }
            try checkAccess(record, want)
        }
        let fs = record.mount.fileSystem
        let f = try fs.open(node, name: record.name, in: directory?.node, read: flags.readable, write: flags.writable)
        if flags.contains(.truncate) && record.state == .positive && node.type == .regular && !created {
            try f.truncate(to: 0)
        }
        let of = OpenFile(record: record, file: f, readable: flags.readable, writable: flags.writable,
                          append: flags.contains(.append), isDirectory: isDir)
        return try install(of)
    }

    /// Closes a descriptor.
    public func close(_ fd: Int32) throws(VFSError) {
        guard files.withLock({ $0.removeValue(forKey: fd) }) != nil else { throw .badf }
    }

    /// Reads at the file offset and advances it.
    public func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(VFSError) -> Int {
        let f = try file(fd)
        guard f.readable else { throw .badf }
        if f.isDirectory { throw .isdir }
        return try f.withOffset { (off: inout Int64) throws(VFSError) -> Int in
            let n = try f.file.read(into: buffer, at: off)
            off += Int64(n)
            return n
        }
    }

    /// Reads up to `count` bytes at the file offset.
    public func read(_ fd: Int32, count: Int) throws(VFSError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: max(count, 0))
        let n = try rethrowTyped { try out.withUnsafeMutableBytes { b in try read(fd, into: b) } }
        out.removeSubrange(n...)
        return out
    }

    /// Writes at the file offset (or the end with `.append`) and advances it.
    @discardableResult
    public func write(_ fd: Int32, _ bytes: [UInt8]) throws(VFSError) -> Int {
        let f = try file(fd)
        guard f.writable else { throw .badf }
        return try f.withOffset { (off: inout Int64) throws(VFSError) -> Int in
            let r = try rethrowTyped { try bytes.withUnsafeBytes { b in try f.file.write(b, at: off, append: f.append) } }
            off = r.end
            return r.count
        }
    }

    /// Reads at `offset` without moving the file offset.
    public func pread(_ fd: Int32, count: Int, at offset: Int64) throws(VFSError) -> [UInt8] {
        let f = try file(fd)
        guard f.readable else { throw .badf }
        if f.isDirectory { throw .isdir }
        if offset < 0 { throw .inval }
        var out = [UInt8](repeating: 0, count: max(count, 0))
        let n = try rethrowTyped { try out.withUnsafeMutableBytes { b in try f.file.read(into: b, at: offset) } }
        out.removeSubrange(n...)
        return out
    }

    /// Writes at `offset` without moving the file offset (Linux appends when the file was
    /// opened with `.append`).
    @discardableResult
    public func pwrite(_ fd: Int32, _ bytes: [UInt8], at offset: Int64) throws(VFSError) -> Int {
        let f = try file(fd)
        guard f.writable else { throw .badf }
        if offset < 0 { throw .inval }
        return try rethrowTyped { try bytes.withUnsafeBytes { b in try f.file.write(b, at: offset, append: f.append).count } }
    }

    /// Moves the file offset; returns the new offset.
    @discardableResult
    public func seek(_ fd: Int32, _ offset: Int64, from whence: SeekWhence) throws(VFSError) -> Int64 {
        let f = try file(fd)
        let size = whence == .end ? try f.file.attributes().size : 0
        return try f.withOffset { (off: inout Int64) throws(VFSError) -> Int64 in
            let base: Int64 = switch whence { case .set: 0; case .current: off; case .end: size }
            let (n, overflow) = base.addingReportingOverflow(offset)
            if overflow || n < 0 { throw .inval }
            off = n
            return n
        }
    }

    /// Sets the length of an open file.
    public func ftruncate(_ fd: Int32, length: Int64) throws(VFSError) {
        let f = try file(fd)
        if length < 0 { throw .inval }
        guard f.writable, !f.isDirectory else { throw .inval }
        try f.file.truncate(to: length)
    }

    /// Sets the length of the file at `path`.
    public func truncate(_ path: String, length: Int64) throws(VFSError) {
        if length < 0 { throw .inval }
        let r = try nlookup(Array(path.utf8), follow: true).record
        if r.isDirectory { throw .isdir }
        guard let node = r.node, node.type == .regular else { throw .inval }
        try checkAccess(r, .write)
        try r.mount.fileSystem.setAttributes(of: node, AttributeChange(size: length))
    }

    /// Attributes of an open file.
    public func fstat(_ fd: Int32) throws(VFSError) -> FileAttributes {
        let f = try file(fd)
        var a = try f.file.attributes()
        a.device = f.record.mount.deviceID
        return a
    }

    /// Attributes of the object at `path`, following a final symlink. A cached path is answered
    /// without locks.
    public func stat(_ path: String) throws(VFSError) -> FileAttributes {
        switch fastLookup(path, follow: true, wantAttributes: true) {
        case .found(let a): return a
        case .error(let e): throw e
        case .type, .fallback: return try attributes(nlookup(Array(path.utf8), follow: true).record)
        }
    }

    /// Attributes of the object at `path`, not following a final symlink.
    public func lstat(_ path: String) throws(VFSError) -> FileAttributes {
        switch fastLookup(path, follow: false, wantAttributes: true) {
        case .found(let a): return a
        case .error(let e): throw e
        case .type, .fallback: return try attributes(nlookup(Array(path.utf8), follow: false).record)
        }
    }

    /// Looks `path` up and returns the type of what it names, without reading attributes: the
    /// bare cost of a path lookup.
    public func lookup(_ path: String, follow: Bool = true) throws(VFSError) -> FileType {
        switch fastLookup(path, follow: follow, wantAttributes: false) {
        case .type(let t): return t
        case .error(let e): throw e
        case .found(let a): return a.type
        case .fallback:
            guard let n = try nlookup(Array(path.utf8), follow: follow).record.node else { throw .noent }
            return n.type
        }
    }

    /// Looks `path` up with the locked walk only (for tests comparing both walks).
    public func lookupLocked(_ path: String, follow: Bool = true) throws(VFSError) -> FileAttributes {
        try attributes(nlookup(Array(path.utf8), follow: follow).record)
    }

    /// Lists an open directory (without `.` and `..`).
    public func readdir(_ fd: Int32) throws(VFSError) -> [DirectoryEntry] {
        let f = try file(fd)
        guard f.isDirectory else { throw .notdir }
        return try f.file.readDirectory()
    }

    /// Lists the directory at `path` (without `.` and `..`), sorted by name.
    public func listDirectory(_ path: String) throws(VFSError) -> [DirectoryEntry] {
        let fd = try open(path, [.directory])
        defer { try? close(fd) }
        return try readdir(fd).sorted { $0.name < $1.name }
    }

    /// The target of the symlink at `path`.
    public func readlink(_ path: String) throws(VFSError) -> String {
        let r = try nlookup(Array(path.utf8), follow: false).record
        guard r.isSymlink, let node = r.node else { throw .inval }
        return String(decoding: try r.mount.fileSystem.readSymlink(node), as: UTF8.self)
    }
}

/// Runs a closure whose errors the compiler sees as untyped (a `rethrows` API around VFS calls)
/// and hands its `VFSError` on.
@inline(__always)
func rethrowTyped<R>(_ body: () throws -> R) throws(VFSError) -> R {
    do { return try body() } catch let e as VFSError { throw e } catch { throw .io }
}
