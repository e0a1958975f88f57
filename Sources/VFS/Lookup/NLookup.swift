import Synchronization
import Glibc

/// Permission bits asked for by `access` checks.
struct AccessMode: OptionSet {
    let rawValue: UInt32
    static let read = AccessMode(rawValue: 4)
    static let write = AccessMode(rawValue: 2)
    static let execute = AccessMode(rawValue: 1)
}

extension VFSProcess {
    /// The locked path walk (DragonFly's `nlookup`): resolves `path` component by component
    /// through the namecache, resolving unresolved records with the file system and
    /// revalidating records of file systems that change behind the cache.
    ///
    /// - Parameters:
    ///   - follow: follow a symlink in the last component.
    ///   - allowNegative: a missing last component is returned as a negative record instead
    ///     of ENOENT (create, rename target).
    ///   - willBeDir: a trailing slash is allowed after a non-directory (mkdir).
    ///   - entry: the last component is the name an operation acts on (unlink, rmdir, rename,
    ///     mkdir, link and symlink targets): it is never followed or crossed into, even with a
    ///     trailing slash, and the trailing-slash rule is left to the caller.
    func nlookup(_ path: [UInt8], follow: Bool, allowNegative: Bool = false, willBeDir: Bool = false, entry: Bool = false) throws(VFSError) -> LookupResult {
        if path.isEmpty { throw .noent }
        if path.count >= PathLimits.pathMax { throw .nametoolong }
        if path.contains(0) { throw .inval }
        namecache.gate.count(.slowLookups)
        vfs.settleStrictMounts()
        let (cwdRec, rootRec, jailRec, ctx) = snapshot()
        let cred = ctx.credentials
        var buf = path
        var pos = 0
        var cur = buf[0] == UInt8(ascii: "/") ? rootRec : cwdRec
        var links = 0
        while true {
            while pos < buf.count && buf[pos] == UInt8(ascii: "/") { pos += 1 }
            if pos == buf.count {
                return LookupResult(record: cur, directory: nil, kind: .root, trailingSlash: true)
            }
            let start = pos
            while pos < buf.count && buf[pos] != UInt8(ascii: "/") { pos += 1 }
            let len = pos - start
            if len > PathLimits.nameMax { throw .nametoolong }
            var after = pos
            while after < buf.count && buf[after] == UInt8(ascii: "/") { after += 1 }
            let trailing = after > pos && after == buf.count
            let isLast = after == buf.count
            pos = after

            guard cur.state == .positive, cur.isDirectory else { throw .notdir }
            try checkSearch(cur, cred)

            if len == 1 && buf[start] == UInt8(ascii: ".") {
                if isLast { return LookupResult(record: cur, directory: nil, kind: .dot, trailingSlash: trailing) }
                continue
            }
            if len == 2 && buf[start] == UInt8(ascii: ".") && buf[start + 1] == UInt8(ascii: ".") {
                cur = dotdot(cur, root: rootRec, jail: jailRec)
                if isLast { return LookupResult(record: cur, directory: nil, kind: .dotdot, trailingSlash: trailing) }
                continue
            }
            let name = Array(buf[start..<(start + len)])
            let (child, childState, childNode) = try resolvedChild(cur, name)
            if childState != .positive {
                if isLast && allowNegative {
                    return LookupResult(record: child, directory: cur, kind: .normal, trailingSlash: trailing)
                }
                throw .noent
            }
            if isLast && entry {
                return LookupResult(record: child, directory: cur, kind: .normal, trailingSlash: trailing)
            }
            if child.isSymlink && (!isLast || follow || trailing) {
                links += 1
                if links > PathLimits.maxSymlinks { throw .loop }
                guard let node = childNode else { throw .noent }
                let target = try child.mount.fileSystem.readSymlink(node)
                if target.isEmpty { throw .noent }
                var next = target
                if !isLast {
                    next.append(UInt8(ascii: "/"))
                    next.append(contentsOf: buf[pos...])
                } else if trailing {
                    next.append(UInt8(ascii: "/"))
                }
                if next.count >= PathLimits.pathMax { throw .nametoolong }
                buf = next
                pos = 0
                if target[0] == UInt8(ascii: "/") { cur = rootRec }
                continue
            }
            let landed = crossMounts(child)
            if isLast {
                if trailing && !landed.isDirectory && !willBeDir { throw .notdir }
                return LookupResult(record: landed, directory: cur, kind: .normal, trailingSlash: trailing)
            }
            cur = landed
        }
    }

    /// `..` from `dir`: stays at the process root and the jail root, climbs out of mounted
    /// file systems to the covered record, then takes the parent.
    func dotdot(_ dir: NCRecord, root: NCRecord, jail: NCRecord) -> NCRecord {
        var c = dir
        if c === root || c === jail { return c }
        while c.flags & NCRecord.isMountRoot != 0, let covered = c.mount.covered {
            c = covered
            if c === root || c === jail { return c }
        }
        return namecache.gate.read { c.parent } ?? c
    }

    /// Follows mounts stacked on `record` down to the top mount's root.
    func crossMounts(_ record: NCRecord) -> NCRecord {
        var r = record
        var depth = 0
        while let m = namecache.gate.read({ r.mountedHere }), depth < 64 {
            r = m.root
            depth += 1
        }
        return r
    }

    /// The record for `name` in `dir`, resolved (positive or negative) and, for file systems
    /// that change behind the cache, revalidated.
    func resolvedChild(_ dir: NCRecord, _ name: [UInt8]) throws(VFSError) -> (NCRecord, NCRecord.State, (any FSNode)?) {
        for _ in 0..<10_000 {
            if dir.isDestroyed { throw .noent }
            let r = namecache.lookupOrCreate(dir, name)
            if !r.mount.revalidates || r.isCurrent {
                // The state first: a record is resolved in a publish section, node before state.
                let (state, node, dead) = namecache.gate.read { () -> (NCRecord.State, (any FSNode)?, Bool) in
                    let s = r.state
                    atomicMemoryFence(ordering: .acquiring)
                    return (s, s == .positive ? r.node : nil, r.isDestroyed)
                }
                if state != .unresolved && !dead { return (r, state, node) }
            }
            try r.lock()
            let ok: Bool
            do { ok = try ensureResolvedLocked(r) } catch { r.unlock(); throw error }
            let snap = namecache.gate.read { (r.state, r.node) }
            r.unlock()
            if ok { return (r, snap.0, snap.1) }
        }
        throw .again
    }

    /// Makes a locked record resolved and current. Returns false when the record was destroyed
    /// or found stale (the caller looks the name up again).
    func ensureResolvedLocked(_ r: NCRecord) throws(VFSError) -> Bool {
        guard !r.isDestroyed, let parent = r.parent else { return false }
        guard let dirNode = parent.node else { return false }
        let fs = r.mount.fileSystem
        let name = r.name
        // The directory's validity word is read before asking the host: a change that lands
        // during the call moves the word past the stamp, and the next use checks again.
        let word = r.mount.revalidates ? fs.validityWord(for: dirNode) : nil
        let generation = word?.pointee.load(ordering: .acquiring) ?? 0
        if r.state == .unresolved {
            namecache.gate.count(.resolves)
            let node = try fs.resolve(name, in: dirNode)
            var ws = false
            if let node, node.type == .directory, let a = try? fs.attributes(of: node) { ws = a.mode & 0o001 != 0 }
            namecache.setResolved(r, node: node, worldSearchable: ws)
            if word != nil { r.stamp(word, generation) }
            return true
        }
        if r.mount.revalidates {
            if r.isCurrent { return true }
            if fs.callsMayBlock { try VFSAttempt.hostCall() }
            namecache.gate.count(.resolves)
            if fs.revalidate(name, in: dirNode, cached: r.state == .positive ? r.node : nil) {
                r.stamp(word, generation)
                return true
            }
            namecache.replace(r, negative: false)
            return false
        }
        return true
    }

    // MARK: permissions

    /// Search permission on a directory, with the world-searchable shortcut.
    func checkSearch(_ dir: NCRecord, _ cred: Credentials) throws(VFSError) {
        if cred.uid == 0 || dir.flags & NCRecord.worldSearchable != 0 { return }
        guard let node = dir.node else { throw .noent }
        let a = try dir.mount.fileSystem.attributes(of: node)
        if !Self.permits(a, cred, .execute) { throw .acces }
    }

    /// Whether `cred` may access an object with attributes `a` in `mode`.
    static func permits(_ a: FileAttributes, _ cred: Credentials, _ mode: AccessMode) -> Bool {
        if cred.uid == 0 {
            if mode.contains(.execute) && a.type != .directory { return a.mode & 0o111 != 0 }
            return true
        }
        let bits: UInt32
        if cred.uid == a.uid { bits = (a.mode >> 6) & 7 } else if cred.isMember(of: a.gid) { bits = (a.mode >> 3) & 7 } else { bits = a.mode & 7 }
        return bits & mode.rawValue == mode.rawValue
    }

    func attributes(_ r: NCRecord) throws(VFSError) -> FileAttributes {
        guard let node = r.node else { throw .noent }
        var a = try r.mount.fileSystem.attributes(of: node)
        a.device = r.mount.deviceID
        return a
    }

    func checkAccess(_ r: NCRecord, _ mode: AccessMode) throws(VFSError) {
        let a = try attributes(r)
        if !Self.permits(a, credentials, mode) { throw .acces }
    }

    /// Sticky-directory rule for removing or renaming `victim` out of `dir`.
    func checkSticky(_ dir: NCRecord, _ victim: NCRecord) throws(VFSError) {
        let cred = credentials
        if cred.uid == 0 { return }
        let da = try attributes(dir)
        guard da.mode & 0o1000 != 0 else { return }
        let va = try attributes(victim)
        if va.uid != cred.uid && da.uid != cred.uid { throw .perm }
    }
}
