import CFUSE
import Dispatch
import Glibc
import VFS

/// The FUSE operations, each a request read from a channel turned into VFS calls.
///
/// Rules: every VFS call goes through the parking API (`VFSProcess.parking`, through
/// `vfsCall`): a cached answer comes back on the CPU at once, a record lock another thread
/// holds parks the channel's thread (its CPU runs on), and a HostFS call that can block runs
/// on the host-I/O pool. A handler's VFS work is one `vfsCall` where it can be (one pool trip
/// at most), and whatever must happen only once (`FUSENodeTable.remember`, holds, handles)
/// comes after it, outside: a `vfsCall` body may be run again from its start (VFSAttempt
/// rule 2). A handler writes its reply payload at `out` (its request's reply buffer) and returns its size, or a
/// negative errno for replies the VFS has no error for (ENOSYS); VFS errors are thrown and
/// become the reply's errno. Every reply that gives the kernel a node id counts one lookup
/// of it (`FUSENodeTable.remember`). Permission checks are the kernel's (the mount uses
/// `default_permissions`); the caller's uid and gid own what it creates.
extension FUSEServer {
    private static let entrySize = MemoryLayout<fuse_entry_out>.size
    private static let direntSize = MemoryLayout<fuse_dirent>.size
    private static let renameNoReplace: UInt32 = 1
    private static let renameExchange: UInt32 = 2
    /// What a handler returns when its reply is written later, by another thread.
    static let replyLater = Int.min

    /// Runs synchronous VFS work the parking way (see the rules above).
    @inline(__always)
    func vfsCall<R>(_ body: () throws(VFSError) -> R) async throws(VFSError) -> R {
        try await process.parking.perform(body)
    }

    func handle(_ h: fuse_in_header, arg: UnsafeRawPointer, argLength: Int, channel ch: FUSEChannel,
                out: UnsafeMutableRawPointer) async throws(VFSError) -> Int {
        switch h.opcode {
        case FUSE_LOOKUP.rawValue:
            ch.counters.add(.lookups)
            let dir = try record(h.nodeid)
            let name = try Self.name(arg, argLength)
            let found = try await vfsCall { () throws(VFSError) -> EntryInfo? in
                guard let r = try process.lookup(name, in: dir) else { return nil }
                return try entryInfo(r)
            }
            guard let found else {
                ch.counters.add(.negativeLookups)
                var e = fuse_entry_out()
                (e.entry_valid, e.entry_valid_nsec) = Self.split(options.negativeTimeout)
                out.storeBytes(of: e, as: fuse_entry_out.self)
                return Self.entrySize
            }
            return entry(found, out)

        case FUSE_GETATTR.rawValue:
            ch.counters.add(.getattrs)
            if argLength >= MemoryLayout<fuse_getattr_in>.size {
                let g = arg.loadUnaligned(as: fuse_getattr_in.self)
                if g.getattr_flags & UInt32(FUSE_GETATTR_FH) != 0, let f = FUSEOpenFile.from(handle: g.fh) {
                    return attrReply(try await vfsCall { () throws(VFSError) in try f.file.attributes() }, out)
                }
            }
            let (a, blocks) = try await process.parking.attributesAndBlocks(of: try record(h.nodeid))
            return attrReply(a, out, blocks: blocks)

        case FUSE_SETATTR.rawValue:
            return try await setattr(h, arg, argLength, out)

        case FUSE_READLINK.rawValue:
            let target = try await process.parking.readSymlink(try record(h.nodeid))
            target.withUnsafeBytes { b in if let base = b.baseAddress { out.copyMemory(from: base, byteCount: b.count) } }
            return target.count

        case FUSE_SYMLINK.rawValue:
            let (name, rest) = try Self.twoNames(arg, argLength)
            let dir = try record(h.nodeid)
            return entry(try await vfsCall { () throws(VFSError) in
                try entryInfo(try process.makeSymlink(name, in: dir, target: rest, credentials: Self.creds(h)))
            }, out)

        case FUSE_MKNOD.rawValue:
            guard argLength > MemoryLayout<fuse_mknod_in>.size else { throw .inval }
            let m = arg.loadUnaligned(as: fuse_mknod_in.self)
            let name = try Self.name(arg + MemoryLayout<fuse_mknod_in>.size, argLength - MemoryLayout<fuse_mknod_in>.size)
            let dir = try record(h.nodeid)
            let info: EntryInfo
            switch m.mode & UInt32(S_IFMT) {
            case UInt32(S_IFREG):
                info = try await vfsCall { () throws(VFSError) in
                    try entryInfo(try process.create(name, in: dir, mode: m.mode & 0o7777, exclusive: true, credentials: Self.creds(h)).record)
                }
            case UInt32(S_IFIFO):
                // The kernel runs the pipe itself; the file system only keeps the name.
                info = try await vfsCall { () throws(VFSError) in
                    try entryInfo(try process.makeFIFO(name, in: dir, mode: m.mode & 0o7777, credentials: Self.creds(h)))
                }
            default:
                return -Int(EPERM)  // devices and sockets are not stored
            }
            return entry(info, out)

        case FUSE_MKDIR.rawValue:
            guard argLength > MemoryLayout<fuse_mkdir_in>.size else { throw .inval }
            let m = arg.loadUnaligned(as: fuse_mkdir_in.self)
            let name = try Self.name(arg + MemoryLayout<fuse_mkdir_in>.size, argLength - MemoryLayout<fuse_mkdir_in>.size)
            let dir = try record(h.nodeid)
            return entry(try await vfsCall { () throws(VFSError) in
                try entryInfo(try process.makeDirectory(name, in: dir, mode: m.mode & 0o7777, credentials: Self.creds(h)))
            }, out)

        case FUSE_UNLINK.rawValue:
            try await process.parking.unlink(try Self.name(arg, argLength), in: try record(h.nodeid))
            return 0

        case FUSE_RMDIR.rawValue:
            try await process.parking.removeDirectory(try Self.name(arg, argLength), in: try record(h.nodeid))
            return 0

        case FUSE_RENAME.rawValue, FUSE_RENAME2.rawValue:
            let fixed = h.opcode == FUSE_RENAME.rawValue ? MemoryLayout<fuse_rename_in>.size : MemoryLayout<fuse_rename2_in>.size
            guard argLength > fixed else { throw .inval }
            let newDir = arg.loadUnaligned(as: UInt64.self)
            let flags = h.opcode == FUSE_RENAME2.rawValue ? arg.loadUnaligned(fromByteOffset: 8, as: UInt32.self) : 0
            let (old, new) = try Self.twoNames(arg + fixed, argLength - fixed)
            let mode: VFSProcess.RenameMode
            switch flags {
            case 0: mode = .replace
            case Self.renameNoReplace: mode = .noReplace
            case Self.renameExchange: mode = .exchange
            default: throw .inval
            }
            try await process.parking.rename(old, in: try record(h.nodeid), to: new, in: try record(newDir), mode: mode)
            return 0

        case FUSE_LINK.rawValue:
            guard argLength > 8 else { throw .inval }
            let source = try record(arg.loadUnaligned(as: UInt64.self))
            let name = try Self.name(arg + 8, argLength - 8)
            let dir = try record(h.nodeid)
            return entry(try await vfsCall { () throws(VFSError) in
                try entryInfo(try process.link(source, as: name, in: dir))
            }, out)

        case FUSE_OPEN.rawValue, FUSE_OPENDIR.rawValue:
            guard argLength >= 8 else { throw .inval }
            let flags = Int32(bitPattern: arg.loadUnaligned(as: UInt32.self))
            let r = try record(h.nodeid)
            let f = try await open(r, flags: flags, directory: h.opcode == FUSE_OPENDIR.rawValue, truncate: true)
            var o = fuse_open_out()
            o.fh = f.retainedHandle()
            o.open_flags = keepCacheFlag
            out.storeBytes(of: o, as: fuse_open_out.self)
            return MemoryLayout<fuse_open_out>.size

        case FUSE_CREATE.rawValue:
            guard argLength > MemoryLayout<fuse_create_in>.size else { throw .inval }
            let c = arg.loadUnaligned(as: fuse_create_in.self)
            let name = try Self.name(arg + MemoryLayout<fuse_create_in>.size, argLength - MemoryLayout<fuse_create_in>.size)
            let flags = Int32(bitPattern: c.flags)
            let dir = try record(h.nodeid)
            // One call: the create, the open and the entry's attributes. An attempt gives up
            // only before the create changes anything (its locks, or HostFS's first host call).
            let (info, file) = try await vfsCall { () throws(VFSError) -> (EntryInfo, any FSOpenFile) in
                let (r, created) = try process.create(name, in: dir, mode: c.mode & 0o7777,
                                                      exclusive: flags & O_EXCL != 0, credentials: Self.creds(h))
                let file = try openData(r, flags: flags, directory: false, truncate: !created)
                do throws(VFSError) { return (try entryInfo(r), file) } catch { file.close(); throw error }
            }
            let f = holdOpen(info.record, file, flags: flags)
            let size = entry(info, out)
            var o = fuse_open_out()
            o.fh = f.retainedHandle()
            o.open_flags = keepCacheFlag
            (out + size).storeBytes(of: o, as: fuse_open_out.self)
            return size + MemoryLayout<fuse_open_out>.size

        case FUSE_READ.rawValue:
            guard argLength >= MemoryLayout<fuse_read_in>.size else { throw .inval }
            let rd = arg.loadUnaligned(as: fuse_read_in.self)
            guard let f = FUSEOpenFile.from(handle: rd.fh) else { throw .badf }
            let want = min(Int(rd.size), FUSEServer.bufferSize - FUSEChannel.outHeaderSize)
            let n = try await vfsCall { () throws(VFSError) in
                try f.file.read(into: UnsafeMutableRawBufferPointer(start: out, count: want), at: Int64(rd.offset))
            }
            ch.counters.add(.reads)
            ch.counters.add(.bytesRead, n)
            return n

        case FUSE_WRITE.rawValue:
            guard argLength >= MemoryLayout<fuse_write_in>.size else { throw .inval }
            let wr = arg.loadUnaligned(as: fuse_write_in.self)
            guard let f = FUSEOpenFile.from(handle: wr.fh) else { throw .badf }
            let count = min(Int(wr.size), argLength - MemoryLayout<fuse_write_in>.size)
            let data = UnsafeRawBufferPointer(start: arg + MemoryLayout<fuse_write_in>.size, count: count)
            let r = try await vfsCall { () throws(VFSError) in try f.file.write(data, at: Int64(wr.offset), append: f.append) }
            ch.counters.add(.writes)
            ch.counters.add(.bytesWritten, r.count)
            var o = fuse_write_out()
            o.size = UInt32(r.count)
            out.storeBytes(of: o, as: fuse_write_out.self)
            return MemoryLayout<fuse_write_out>.size

        case FUSE_STATFS.rawValue:
            // statvfs of the host directory is a host call: it goes to the pool.
            let st = hostRoot == nil ? statfs() : try await vfs.hostIO.perform { () throws(VFSError) in statfs() }
            out.storeBytes(of: st, as: fuse_statfs_out.self)
            return MemoryLayout<fuse_statfs_out>.size

        case FUSE_RELEASE.rawValue, FUSE_RELEASEDIR.rawValue:
            guard argLength >= 8 else { throw .inval }
            guard let f = FUSEOpenFile.release(handle: arg.loadUnaligned(as: UInt64.self)) else { return 0 }
            // Closing a host descriptor can wait (a network file system flushes): on the pool.
            if vfs.mayBlock {
                try await vfs.hostIO.perform { () throws(VFSError) in f.close(process) }
            } else {
                f.close(process)
            }
            return 0

        case FUSE_FSYNC.rawValue:
            guard argLength >= 8 else { throw .inval }
            guard let f = FUSEOpenFile.from(handle: arg.loadUnaligned(as: UInt64.self)) else { throw .badf }
            if !vfs.rootMount.fileSystem.changesBehindCache { return 0 }  // MemFS: nothing to flush
            // fsync of a host file can block for a long time: it runs on a helper thread,
            // which writes the reply on this channel's descriptor; the CPU goes on serving.
            let fd = ch.fd, unique = h.unique
            syncsInFlight.wrappingAdd(1, ordering: .relaxed)
            DispatchQueue.global().async { [self] in
                var code: Int32 = 0
                do throws(VFSError) { try f.file.sync() } catch { code = error == .other ? EIO : error.rawValue }
                var header = fuse_out_header(len: UInt32(MemoryLayout<fuse_out_header>.size), error: -code, unique: unique)
                _ = Glibc.write(fd, &header, MemoryLayout<fuse_out_header>.size)
                syncsInFlight.wrappingSubtract(1, ordering: .relaxed)
            }
            return Self.replyLater

        case FUSE_FLUSH.rawValue, FUSE_FSYNCDIR.rawValue:
            return 0

        case FUSE_READDIR.rawValue, FUSE_READDIRPLUS.rawValue:
            guard argLength >= MemoryLayout<fuse_read_in>.size else { throw .inval }
            let rd = arg.loadUnaligned(as: fuse_read_in.self)
            guard let f = FUSEOpenFile.from(handle: rd.fh), f.isDirectory else { throw .badf }
            return try await readdir(h.nodeid, f, offset: Int(rd.offset), size: Int(rd.size), plus: h.opcode == FUSE_READDIRPLUS.rawValue, out)

        case FUSE_SETXATTR.rawValue:
            guard argLength > 8 else { throw .inval }
            let size = Int(arg.loadUnaligned(as: UInt32.self))
            let flags = arg.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
            let name = try Self.name(arg + 8, argLength - 8)
            let start = 8 + name.count + 1
            guard start + size <= argLength else { throw .inval }
            let value = Array(UnsafeRawBufferPointer(start: arg + start, count: size))
            try process.setExtendedAttribute(name, value, of: try record(h.nodeid), create: flags & 1 != 0, replace: flags & 2 != 0)
            return 0

        case FUSE_GETXATTR.rawValue, FUSE_LISTXATTR.rawValue:
            guard argLength >= 8 else { throw .inval }
            let size = Int(arg.loadUnaligned(as: UInt32.self))
            let r = try record(h.nodeid)
            var bytes: [UInt8]
            if h.opcode == FUSE_GETXATTR.rawValue {
                bytes = try process.extendedAttribute(try Self.name(arg + 8, argLength - 8), of: r)
            } else {
                bytes = []
                for n in try process.extendedAttributeNames(of: r) { bytes += n; bytes.append(0) }
            }
            if size == 0 {
                var o = fuse_getxattr_out()
                o.size = UInt32(bytes.count)
                out.storeBytes(of: o, as: fuse_getxattr_out.self)
                return MemoryLayout<fuse_getxattr_out>.size
            }
            if bytes.count > size { throw .range }
            bytes.withUnsafeBytes { b in if let base = b.baseAddress { out.copyMemory(from: base, byteCount: b.count) } }
            return bytes.count

        case FUSE_REMOVEXATTR.rawValue:
            try process.removeExtendedAttribute(try Self.name(arg, argLength), of: try record(h.nodeid))
            return 0

        case FUSE_DESTROY.rawValue:
            destroyed.store(true, ordering: .relaxed)
            return 0

        default:
            // ACCESS (the kernel checks modes itself), locks (the kernel keeps flock and
            // POSIX locks locally when the server does not take them), LSEEK, FALLOCATE, ...
            return -Int(ENOSYS)
        }
    }

    // MARK: helpers

    /// FOPEN_KEEP_CACHE when nothing but this mount changes the files (MemFS): the kernel
    /// keeps a file's cached pages across opens. A host directory can change behind the
    /// mount, so its files start from an empty page cache at every open.
    var keepCacheFlag: UInt32 { vfs.rootMount.fileSystem.changesBehindCache ? 0 : UInt32(FOPEN_KEEP_CACHE) }

    func record(_ id: UInt64) throws(VFSError) -> NCRecord {
        guard let r = nodes.record(id) else { throw .stale }
        return r
    }

    static func creds(_ h: fuse_in_header) -> Credentials { Credentials(uid: h.uid, gid: h.gid) }

    static func split(_ seconds: Double) -> (UInt64, UInt32) {
        let s = seconds.rounded(.down)
        return (UInt64(s), UInt32(min((seconds - s) * 1e9, 999_999_999)))
    }

    /// A NUL-terminated name at `p` within `length` bytes.
    static func name(_ p: UnsafeRawPointer, _ length: Int) throws(VFSError) -> [UInt8] {
        let b = UnsafeRawBufferPointer(start: p, count: max(length, 0))
        guard let end = b.firstIndex(of: 0) else { throw .inval }
        return Array(b[0..<end])
    }

    /// Two NUL-terminated strings one after the other.
    static func twoNames(_ p: UnsafeRawPointer, _ length: Int) throws(VFSError) -> ([UInt8], [UInt8]) {
        let first = try name(p, length)
        let second = try name(p + first.count + 1, length - first.count - 1)
        return (first, second)
    }

    static func fill(_ a: FileAttributes, blocks: Int64? = nil) -> fuse_attr {
        var f = fuse_attr()
        f.ino = a.inode
        f.size = UInt64(max(a.size, 0))
        f.blocks = blocks.map { UInt64(max($0, 0)) } ?? (f.size + 511) / 512
        f.atime = UInt64(bitPattern: a.atime.seconds); f.atimensec = UInt32(truncatingIfNeeded: a.atime.nanoseconds)
        f.mtime = UInt64(bitPattern: a.mtime.seconds); f.mtimensec = UInt32(truncatingIfNeeded: a.mtime.nanoseconds)
        f.ctime = UInt64(bitPattern: a.ctime.seconds); f.ctimensec = UInt32(truncatingIfNeeded: a.ctime.nanoseconds)
        let typeBits: UInt32
        switch a.type {
        case .regular: typeBits = UInt32(S_IFREG)
        case .directory: typeBits = UInt32(S_IFDIR)
        case .symlink: typeBits = UInt32(S_IFLNK)
        case .other: typeBits = UInt32(S_IFIFO)
        }
        f.mode = typeBits | (a.mode & 0o7777)
        f.nlink = a.nlink
        f.uid = a.uid
        f.gid = a.gid
        f.blksize = 4096
        return f
    }

    private func attrReply(_ a: FileAttributes, _ out: UnsafeMutableRawPointer, blocks: Int64? = nil) -> Int {
        var o = fuse_attr_out()
        (o.attr_valid, o.attr_valid_nsec) = Self.split(options.attributeTimeout)
        o.attr = Self.fill(a, blocks: blocks)
        out.storeBytes(of: o, as: fuse_attr_out.self)
        return MemoryLayout<fuse_attr_out>.size
    }

    /// What an entry reply says about a record, read inside a `vfsCall`.
    struct EntryInfo {
        let record: NCRecord
        let attributes: FileAttributes
        let blocks: Int64?
    }

    /// The record's attributes for an entry reply (synchronous: call it inside `vfsCall`).
    func entryInfo(_ r: NCRecord) throws(VFSError) -> EntryInfo {
        let (a, blocks) = try process.attributesAndBlocks(of: r)
        return EntryInfo(record: r, attributes: a, blocks: blocks)
    }

    /// Writes an entry reply (counting one kernel lookup of the record).
    private func entry(_ info: EntryInfo, _ out: UnsafeMutableRawPointer) -> Int {
        out.storeBytes(of: entryOut(info), as: fuse_entry_out.self)
        return Self.entrySize
    }

    private func entryOut(_ info: EntryInfo) -> fuse_entry_out {
        let a = info.attributes, blocks = info.blocks
        var e = fuse_entry_out()
        e.nodeid = nodes.remember(info.record, attributes: a)
        (e.entry_valid, e.entry_valid_nsec) = Self.split(options.entryTimeout)
        (e.attr_valid, e.attr_valid_nsec) = Self.split(options.attributeTimeout)
        e.attr = Self.fill(a, blocks: blocks)
        return e
    }

    private func open(_ r: NCRecord, flags: Int32, directory: Bool, truncate: Bool) async throws(VFSError) -> FUSEOpenFile {
        let file = try await vfsCall { () throws(VFSError) in try openData(r, flags: flags, directory: directory, truncate: truncate) }
        return holdOpen(r, file, flags: flags)
    }

    /// Opens the file system's file for `r` and truncates it when asked (synchronous: call it
    /// inside `vfsCall`; it has nothing to undo if an attempt gives up at the open).
    private func openData(_ r: NCRecord, flags: Int32, directory: Bool, truncate: Bool) throws(VFSError) -> any FSOpenFile {
        let mode = flags & O_ACCMODE
        let isDir = process.isDirectory(r)
        if directory && !isDir { throw .notdir }
        let file = try process.openFile(r, read: directory || mode != O_WRONLY, write: !directory && mode != O_RDONLY)
        if truncate && !isDir && flags & O_TRUNC != 0 {
            do { try file.truncate(to: 0) } catch { file.close(); throw error }
        }
        return file
    }

    /// The handle of an opened file, holding its record until release.
    private func holdOpen(_ r: NCRecord, _ file: any FSOpenFile, flags: Int32) -> FUSEOpenFile {
        process.hold(r)
        return FUSEOpenFile(file: file, record: r, append: flags & O_APPEND != 0, isDirectory: process.isDirectory(r))
    }

    private func setattr(_ h: fuse_in_header, _ arg: UnsafeRawPointer, _ argLength: Int, _ out: UnsafeMutableRawPointer) async throws(VFSError) -> Int {
        guard argLength >= MemoryLayout<fuse_setattr_in>.size else { throw .inval }
        let s = arg.loadUnaligned(as: fuse_setattr_in.self)
        let r = try record(h.nodeid)
        let valid = s.valid
        let file = valid & UInt32(FATTR_FH) != 0 ? FUSEOpenFile.from(handle: s.fh) : nil
        var change = AttributeChange()
        if valid & UInt32(FATTR_MODE) != 0 { change.mode = s.mode & 0o7777 }
        if valid & UInt32(FATTR_UID) != 0 { change.uid = s.uid }
        if valid & UInt32(FATTR_GID) != 0 { change.gid = s.gid }
        let now = Timespec.now()
        if valid & UInt32(FATTR_ATIME_NOW) != 0 { change.atime = now } else if valid & UInt32(FATTR_ATIME) != 0 {
            change.atime = Timespec(seconds: Int64(bitPattern: s.atime), nanoseconds: Int64(s.atimensec))
        }
        if valid & UInt32(FATTR_MTIME_NOW) != 0 { change.mtime = now } else if valid & UInt32(FATTR_MTIME) != 0 {
            change.mtime = Timespec(seconds: Int64(bitPattern: s.mtime), nanoseconds: Int64(s.mtimensec))
        }
        let changesMore = change.mode != nil || change.uid != nil || change.gid != nil || change.atime != nil || change.mtime != nil
        // One call for the truncation, the other changes and the answer. It takes no record
        // lock, and on HostFS the first host call comes before any change, so an attempt
        // that gives up has changed nothing.
        let (a, blocks) = try await vfsCall { () throws(VFSError) -> (FileAttributes, Int64?) in
            if valid & UInt32(FATTR_SIZE) != 0 {
                if let f = file, !f.isDirectory { try f.file.truncate(to: Int64(s.size)) } else {
                    try process.setAttributes(of: r, AttributeChange(size: Int64(s.size)))
                }
            }
            if changesMore { try process.setAttributes(of: r, change) }
            if let f = file { return (try f.file.attributes(), nil) }
            return try process.attributesAndBlocks(of: r)
        }
        return attrReply(a, out, blocks: blocks)
    }

    private func statfs() -> fuse_statfs_out {
        var o = fuse_statfs_out()
        var st = statvfs()
        if let host = hostRoot, statvfs(host, &st) == 0 {
            o.st.blocks = UInt64(st.f_blocks); o.st.bfree = UInt64(st.f_bfree); o.st.bavail = UInt64(st.f_bavail)
            o.st.files = UInt64(st.f_files); o.st.ffree = UInt64(st.f_ffree)
            o.st.bsize = UInt32(st.f_bsize); o.st.frsize = UInt32(st.f_frsize)
        } else {
            // MemFS: memory is the limit; report the machine's free memory.
            let pages = UInt64(max(sysconf(Int32(_SC_PHYS_PAGES)), 0))
            let free = UInt64(max(sysconf(Int32(_SC_AVPHYS_PAGES)), 0))
            o.st.blocks = pages; o.st.bfree = free; o.st.bavail = free
            o.st.files = 1 << 32; o.st.ffree = (1 << 32) - UInt64(nodes.count)
            o.st.bsize = 4096; o.st.frsize = 4096
        }
        o.st.namelen = UInt32(PathLimits.nameMax)
        return o
    }

    /// READDIR / READDIRPLUS: entries from `offset` (an index into the listing, with `.` and
    /// `..` first) that fit in `size` bytes. The listing and, for READDIRPLUS, the entries'
    /// records and attributes are read in one `vfsCall`; the node table learns of them after.
    private func readdir(_ dirID: UInt64, _ f: FUSEOpenFile, offset: Int, size: Int, plus: Bool,
                         _ out: UnsafeMutableRawPointer) async throws(VFSError) -> Int {
        if offset == 0 { f.listing = try await vfsCall { () throws(VFSError) in try f.file.readDirectory() } }
        let limit = min(size, FUSEServer.bufferSize - FUSEChannel.outHeaderSize)
        let total = f.listing.count + 2
        func name(_ index: Int) -> [UInt8] {
            if index < 2 { return index == 0 ? [UInt8(ascii: ".")] : [UInt8(ascii: "."), UInt8(ascii: ".")] }
            return Array(f.listing[index - 2].name.utf8)
        }
        func recordSize(_ n: [UInt8]) -> Int { ((plus ? Self.entrySize + Self.direntSize : Self.direntSize) + n.count + 7) & ~7 }
        // The entries that fit.
        var end = offset, used = 0
        while end < total {
            let size = recordSize(name(end))
            if used + size > limit { break }
            used += size
            end += 1
        }
        var infos = [EntryInfo?](repeating: nil, count: end - offset)
        if plus, end > offset, let dir = nodes.record(dirID) {
            let listing = f.listing
            infos = try await vfsCall { () throws(VFSError) -> [EntryInfo?] in
                (offset..<end).map { index -> EntryInfo? in
                    guard index >= 2, let child = try? process.lookup(Array(listing[index - 2].name.utf8), in: dir) else { return nil }
                    return try? entryInfo(child)
                }
            }
        }
        used = 0
        for index in offset..<end {
            let n = name(index)
            var ino: UInt64 = 1
            var type = FileType.directory
            if index >= 2 {
                ino = f.listing[index - 2].inode
                type = f.listing[index - 2].type
            }
            let size = recordSize(n)
            let fixed = plus ? Self.entrySize + Self.direntSize : Self.direntSize
            let p = out + used
            if plus {
                var e = fuse_entry_out()
                if let info = infos[index - offset] {
                    e = entryOut(info)
                    ino = e.attr.ino
                }
                p.storeBytes(of: e, as: fuse_entry_out.self)
            }
            var dirent = fuse_dirent()
            dirent.ino = ino
            dirent.off = UInt64(index + 1)
            dirent.namelen = UInt32(n.count)
            dirent.type = Self.direntType(type)
            let d = p + (plus ? Self.entrySize : 0)
            d.storeBytes(of: dirent, as: fuse_dirent.self)
            n.withUnsafeBytes { b in if let base = b.baseAddress { (d + Self.direntSize).copyMemory(from: base, byteCount: b.count) } }
            let pad = size - fixed - n.count
            if pad > 0 { (d + Self.direntSize + n.count).initializeMemory(as: UInt8.self, repeating: 0, count: pad) }
            used += size
        }
        return used
    }

    private static func direntType(_ t: FileType) -> UInt32 {
        switch t {
        case .regular: UInt32(DT_REG)
        case .directory: UInt32(DT_DIR)
        case .symlink: UInt32(DT_LNK)
        case .other: UInt32(DT_UNKNOWN)
        }
    }
}

extension FUSEOpenFile {
    /// Closes the file system's open file and drops the record hold taken at open.
    func close(_ process: VFSProcess) {
        file.close()
        process.release(record)
    }
}
