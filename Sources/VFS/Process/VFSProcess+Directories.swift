/// Working directory, root and jail, and attribute changes.
extension VFSProcess {
    /// Changes the working directory.
    public func chdir(_ path: String) throws(VFSError) {
        let r = try nlookup(Array(path.utf8), follow: true).record
        guard r.isDirectory else { throw .notdir }
        try checkAccess(r, .execute)
        replaceDirectories(cwd: r)
    }

    /// Changes the working directory to an open directory.
    public func fchdir(_ fd: Int32) throws(VFSError) {
        let f = try file(fd)
        guard f.isDirectory else { throw .notdir }
        try checkAccess(f.record, .execute)
        replaceDirectories(cwd: f.record)
    }

    /// Makes `path` the process root (superuser only). As on Linux, the working directory is
    /// left where it is.
    public func chroot(_ path: String) throws(VFSError) {
        guard credentials.uid == 0 else { throw .perm }
        let r = try nlookup(Array(path.utf8), follow: true).record
        guard r.isDirectory else { throw .notdir }
        try checkAccess(r, .execute)
        replaceDirectories(root: r)
    }

    /// Puts the process in a jail at `path`: root, jail root and working directory all move
    /// there, and `..` never climbs above it again.
    public func jail(_ path: String) throws(VFSError) {
        guard credentials.uid == 0 else { throw .perm }
        let r = try nlookup(Array(path.utf8), follow: true).record
        guard r.isDirectory else { throw .notdir }
        replaceDirectories(cwd: r, root: r, jail: r)
    }

    /// The working directory as a path from the process root, built by walking parent records
    /// (jumping from each mount's root to the record it covers). ENOENT when the directory has
    /// been removed; ERANGE when the path needs more than `bufferSize` bytes with its NUL.
    public func getcwd(bufferSize: Int = PathLimits.pathMax) throws(VFSError) -> String {
        if bufferSize < 2 { throw .range }
        let result: Result<[UInt8], VFSError> = namecache.gate.read {
            var parts: [[UInt8]] = []
            var c = cwd
            var steps = 0
            while c !== root && c !== jailRoot {
                steps += 1
                if steps > 100_000 { return .failure(.noent) }
                if c.isDestroyed { return .failure(.noent) }
                if c.flags & NCRecord.isMountRoot != 0 {
                    guard let covered = c.mount.covered else { return .failure(.noent) }
                    c = covered
                    continue
                }
                guard let p = c.parent else { return .failure(.noent) }
                parts.append(c.name)
                c = p
            }
            var out: [UInt8] = []
            for part in parts.reversed() {
                out.append(UInt8(ascii: "/"))
                out.append(contentsOf: part)
            }
            if out.isEmpty { out = [UInt8(ascii: "/")] }
            return .success(out)
        }
        let bytes = try result.get()
        if bytes.count + 1 > bufferSize { throw .range }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Changes the permission bits (owner or superuser).
    public func chmod(_ path: String, mode: UInt32) throws(VFSError) {
        let r = try nlookup(Array(path.utf8), follow: true).record
        let a = try attributes(r)
        let cred = credentials
        guard cred.uid == 0 || cred.uid == a.uid, let node = r.node else { throw .perm }
        var m = mode & 0o7777
        if cred.uid != 0 && a.type != .directory && !cred.isMember(of: a.gid) { m &= ~0o2000 }
        try r.mount.fileSystem.setAttributes(of: node, AttributeChange(mode: m))
        if r.isDirectory { namecache.setWorldSearchable(r, m & 0o001 != 0) }
    }

    /// Changes owner and group. The superuser may set both; the owner may only move the file to
    /// a group it belongs to. A change by a non-superuser clears set-user-ID and set-group-ID.
    public func chown(_ path: String, uid: UInt32?, gid: UInt32?, follow: Bool = true) throws(VFSError) {
        let r = try nlookup(Array(path.utf8), follow: follow).record
        let a = try attributes(r)
        let cred = credentials
        guard let node = r.node else { throw .noent }
        if cred.uid != 0 {
            if let u = uid, u != a.uid { throw .perm }
            guard cred.uid == a.uid else { throw .perm }
            if let g = gid, g != a.gid, !cred.isMember(of: g) { throw .perm }
        }
        var change = AttributeChange(uid: uid, gid: gid)
        if a.type == .regular && a.mode & 0o6000 != 0 && (uid != nil || gid != nil) { change.mode = a.mode & ~0o6000 }
        try r.mount.fileSystem.setAttributes(of: node, change)
    }

    /// Sets access and modification times; `nil` for both means now, which write permission
    /// allows; explicit times need the owner or the superuser.
    public func utimes(_ path: String, access: Timespec?, modification: Timespec?) throws(VFSError) {
        let r = try nlookup(Array(path.utf8), follow: true).record
        let a = try attributes(r)
        let cred = credentials
        guard let node = r.node else { throw .noent }
        if access == nil && modification == nil {
            if cred.uid != 0 && cred.uid != a.uid && !Self.permits(a, cred, .write) { throw .acces }
            let now = Timespec.now()
            try r.mount.fileSystem.setAttributes(of: node, AttributeChange(atime: now, mtime: now))
        } else {
            if cred.uid != 0 && cred.uid != a.uid { throw .perm }
            try r.mount.fileSystem.setAttributes(of: node, AttributeChange(atime: access, mtime: modification))
        }
    }
}
