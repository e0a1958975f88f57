import Glibc

/// Namespace operations: mkdir, rmdir, unlink, rename, link, symlink.
extension VFSProcess {
    /// Looks `path` up as the entry an operation acts on, locks the entry and its directory
    /// (child before parent), makes sure the entry is current, and runs `body`. If a concurrent
    /// change moved either record before the locks were taken, the lookup is repeated.
    func withLockedEntry<R>(_ path: [UInt8], willBeDir: Bool = false,
                            _ body: (LookupResult) throws(VFSError) -> R) throws(VFSError) -> R {
        for _ in 0..<10_000 {
            let res = try nlookup(path, follow: false, allowNegative: true, willBeDir: willBeDir, entry: true)
            guard res.kind == .normal, let dir = res.directory else { return try body(res) }
            if let done = try lockedIfCurrent(res.record, in: dir, { () throws(VFSError) -> R in try body(res) }) { return done }
        }
        throw .again
    }

    /// The step every name operation shares (path or handle): locks the entry `child` and its
    /// directory (rule 4's order), checks that the entry is still the directory's child and
    /// current (resolving or revalidating it), and runs `body` with both locked. Returns nil,
    /// having run nothing, when a concurrent change moved either record: look it up again.
    func lockedIfCurrent<R>(_ child: NCRecord, in dir: NCRecord, _ body: () throws(VFSError) -> R) throws(VFSError) -> R? {
        let both = [child, dir]
        try namecache.lockAll(both)
        defer { namecache.unlockAll(both) }
        guard !dir.isDestroyed, !child.isDestroyed, child.parent === dir, try ensureResolvedLocked(child) else { return nil }
        return try body()
    }

    /// The step both renames share: with the mount's rename lock and the four records locked
    /// (rule 4), checks that source and target are still their directories' children and
    /// current, and runs `body`. Returns nil, having run nothing, when something moved.
    func withRenameLocks<R>(_ src: NCRecord, in srcDir: NCRecord, _ dst: NCRecord, in dstDir: NCRecord,
                            _ body: () throws(VFSError) -> R) throws(VFSError) -> R? {
        let mount = srcDir.mount
        try mount.renameLock.lockExclusive()
        defer { mount.renameLock.unlock(.exclusive) }
        let all = [src, dst, srcDir, dstDir]
        try namecache.lockAll(all)
        defer { namecache.unlockAll(all) }
        guard !src.isDestroyed, !dst.isDestroyed, !srcDir.isDestroyed, !dstDir.isDestroyed,
              src.parent === srcDir, dst.parent === dstDir,
              try ensureResolvedLocked(src), try ensureResolvedLocked(dst) else { return nil }
        return try body()
    }

    /// Whether `ancestor` is `record` or one of its ancestors inside the same mount.
    func isAncestor(_ ancestor: NCRecord, of record: NCRecord) -> Bool {
        namecache.gate.read {
            var cur: NCRecord? = record
            while let c = cur {
                if c === ancestor { return true }
                cur = c.parent
            }
            return false
        }
    }

    /// Creates a directory.
    public func mkdir(_ path: String, mode: UInt32 = 0o755) throws(VFSError) {
        try withLockedEntry(Array(path.utf8), willBeDir: true) { (res) throws(VFSError) in
            guard res.kind == .normal, let dir = res.directory, let dnode = dir.node else { throw .exist }
            let e = res.record
            if e.state == .positive { throw .exist }
            try checkAccess(dir, [.write, .execute])
            let node = try dir.mount.fileSystem.makeDirectory(e.name, in: dnode, mode: mode & 0o1777, credentials: credentials)
            namecache.setResolved(e, node: node, worldSearchable: mode & 0o001 != 0)
        }
    }

    /// Removes an empty directory.
    public func rmdir(_ path: String) throws(VFSError) {
        try withLockedEntry(Array(path.utf8), willBeDir: true) { (res) throws(VFSError) in
            switch res.kind {
            case .dot: throw .inval
            case .dotdot: throw .notempty
            case .root: throw .busy
            case .normal: break
            }
            guard let dir = res.directory, let dnode = dir.node else { throw .noent }
            let e = res.record
            guard e.state == .positive, let node = e.node else { throw .noent }
            try checkAccess(dir, [.write, .execute])
            try checkSticky(dir, e)
            guard e.isDirectory else { throw .notdir }
            if e.mountedHere != nil { throw .busy }
            try dir.mount.fileSystem.removeDirectory(e.name, in: dnode, node: node)
            namecache.replace(e, negative: true)
        }
    }

    /// Removes a name of a non-directory.
    public func unlink(_ path: String) throws(VFSError) {
        try withLockedEntry(Array(path.utf8)) { (res) throws(VFSError) in
            guard res.kind == .normal, let dir = res.directory, let dnode = dir.node else { throw .isdir }
            let e = res.record
            guard e.state == .positive, let node = e.node else { throw .noent }
            if res.trailingSlash { throw e.isDirectory ? .isdir : .notdir }
            try checkAccess(dir, [.write, .execute])
            try checkSticky(dir, e)
            if e.isDirectory { throw .isdir }
            try dir.mount.fileSystem.unlink(e.name, in: dnode, node: node)
            namecache.replace(e, negative: true)
        }
    }

    /// Creates a symbolic link at `path` holding `target`.
    public func symlink(_ target: String, _ path: String) throws(VFSError) {
        let t = Array(target.utf8)
        if t.isEmpty { throw .noent }
        if t.count >= PathLimits.pathMax { throw .nametoolong }
        try withLockedEntry(Array(path.utf8)) { (res) throws(VFSError) in
            guard res.kind == .normal, let dir = res.directory, let dnode = dir.node else { throw .exist }
            let e = res.record
            if e.state == .positive { throw .exist }
            if res.trailingSlash { throw .noent }
            try checkAccess(dir, [.write, .execute])
            let node = try dir.mount.fileSystem.makeSymlink(e.name, in: dnode, target: t, credentials: credentials)
            namecache.setResolved(e, node: node, worldSearchable: false)
        }
    }

    /// Adds the name `newPath` for the object at `oldPath` (a final symlink is not followed).
    public func link(_ oldPath: String, _ newPath: String) throws(VFSError) {
        let old = try nlookup(Array(oldPath.utf8), follow: false)
        let src = old.record
        guard let node = src.node else { throw .noent }
        try withLockedEntry(Array(newPath.utf8)) { (res) throws(VFSError) in
            guard res.kind == .normal, let dir = res.directory, let dnode = dir.node else { throw .exist }
            let e = res.record
            if e.state == .positive { throw .exist }
            if res.trailingSlash { throw .noent }
            if dir.mount !== src.mount { throw .xdev }
            try checkAccess(dir, [.write, .execute])
            if src.isDirectory { throw .perm }
            try dir.mount.fileSystem.link(node, as: e.name, in: dnode)
            namecache.setResolved(e, node: node, worldSearchable: false)
        }
    }

    /// Renames `from` to `to`, replacing what `to` named.
    public func rename(_ from: String, _ to: String) throws(VFSError) {
        let fromPath = Array(from.utf8), toPath = Array(to.utf8)
        for _ in 0..<10_000 {
            let a = try nlookup(fromPath, follow: false, allowNegative: true, willBeDir: true, entry: true)
            let b = try nlookup(toPath, follow: false, allowNegative: true, willBeDir: true, entry: true)
            guard a.kind == .normal, b.kind == .normal, let srcDir = a.directory, let dstDir = b.directory else { throw .busy }
            if srcDir.mount !== dstDir.mount { throw .xdev }
            let src = a.record, dst = b.record
            let mount = srcDir.mount
            let done: Void? = try withRenameLocks(src, in: srcDir, dst, in: dstDir) { () throws(VFSError) in
                guard src.state == .positive, let srcNode = src.node, let sdNode = srcDir.node, let ddNode = dstDir.node else { throw .noent }
                if !src.isDirectory && (a.trailingSlash || b.trailingSlash) { throw .notdir }
                if src === dst { return }
                if src.isDirectory && isAncestor(src, of: dstDir) { throw .inval }
                if dst.state == .positive && isAncestor(dst, of: srcDir) { throw .notempty }
                if dst.state == .positive, let dn = dst.node, dn === srcNode { return }
                try checkAccess(srcDir, [.write, .execute])
                try checkSticky(srcDir, src)
                if dst.state == .positive {
                    try checkAccess(dstDir, [.write, .execute])
                    try checkSticky(dstDir, dst)
                    if src.isDirectory && !dst.isDirectory { throw .notdir }
                    if !src.isDirectory && dst.isDirectory { throw .isdir }
                    if dst.mountedHere != nil { throw .busy }
                } else {
                    try checkAccess(dstDir, [.write, .execute])
                }
                if src.mountedHere != nil { throw .busy }
                if dst.state == .positive, let dn = dst.node { try mount.fileSystem.nodeWillBeReplaced(dn) }
                try mount.fileSystem.moving { () throws(VFSError) in
                    try mount.fileSystem.rename(src.name, in: sdNode, to: dst.name, in: ddNode)
                    mount.fileSystem.nodeMoved(srcNode, to: dst.name, in: ddNode)
                }
                namecache.move(src, over: dst)
            }
            if done != nil { return }
        }
        throw .again
    }
}
