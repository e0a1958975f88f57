import Glibc

/// An open file of `HostFS`: a host descriptor opened for reading and/or writing. Each data
/// call is a host call (`VFSAttempt.hostCall()` first).
final class HostFSOpenFile: FSOpenFile, @unchecked Sendable {
    let fd: Int32
    let device: UInt64
    /// The node opened: writes and truncation drop its cached attributes at once.
    let node: HostFSNode

    init(fd: Int32, device: UInt64, node: HostFSNode) {
        self.fd = fd
        self.device = device
        self.node = node
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(VFSError) -> Int {
        try VFSAttempt.hostCall()
        var n = Glibc.pread(fd, buffer.baseAddress, buffer.count, off_t(offset))
        // A FIFO, socket or character device has no offset (ESPIPE): read the stream. The
        // descriptor is non-blocking, so with no data this is EAGAIN, never a wait.
        if n < 0 && Glibc.errno == ESPIPE { n = Glibc.read(fd, buffer.baseAddress, buffer.count) }
        if n < 0 { throw .current }
        return n
    }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: Int64, append: Bool) throws(VFSError) -> (count: Int, end: Int64) {
        try VFSAttempt.hostCall()
        var off = offset
        if append {
            var st = stat()
            if fstat(fd, &st) != 0 { throw .current }
            off = Int64(st.st_size)
        }
        var n = Glibc.pwrite(fd, buffer.baseAddress, buffer.count, off_t(off))
        if n < 0 && Glibc.errno == ESPIPE { n = Glibc.write(fd, buffer.baseAddress, buffer.count) }
        node.forgetAttributes()
        if n < 0 { throw .current }
        return (n, off + Int64(n))
    }

    func attributes() throws(VFSError) -> FileAttributes {
        try VFSAttempt.hostCall()
        var st = stat()
        if fstat(fd, &st) != 0 { throw .current }
        return HostFS.attributes(st, device: device)
    }

    func truncate(to length: Int64) throws(VFSError) {
        try VFSAttempt.hostCall()
        defer { node.forgetAttributes() }
        if Glibc.ftruncate(fd, off_t(length)) != 0 { throw .current }
    }

    func readDirectory() throws(VFSError) -> [DirectoryEntry] {
        try VFSAttempt.hostCall()
        let dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd < 0 { throw .current }
        guard let dir = fdopendir(dfd) else { let e = VFSError.current; Glibc.close(dfd); throw e }
        defer { closedir(dir) }
        var out: [DirectoryEntry] = []
        while let ent = Glibc.readdir(dir) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw -> String in
                let bytes = raw.prefix { $0 != 0 }
                return String(decoding: bytes, as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            let t: FileType
            switch Int32(ent.pointee.d_type) {
            case Int32(DT_DIR): t = .directory
            case Int32(DT_REG): t = .regular
            case Int32(DT_LNK): t = .symlink
            default: t = .other
            }
            out.append(DirectoryEntry(name: name, inode: UInt64(ent.pointee.d_ino), type: t))
        }
        return out
    }

    func close() { Glibc.close(fd) }
}
