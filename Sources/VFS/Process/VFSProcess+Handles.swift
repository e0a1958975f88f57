import Glibc

/// Operations addressed by namecache record instead of by path, for servers that hand out
/// handles to objects (the FUSE server: the kernel walks paths itself and asks for one name
/// in one directory at a time).
///
/// Rules of this file:
/// - Every name operation takes the entry's record lock and its directory's (child before
///   parent, through `lockAll`), re-checks that the entry is still the directory's child and
///   current, then asks the file system, then updates the namecache — the same protocol as
///   the path operations in `VFSProcess+Namespace.swift`.
/// - Permission checks are the caller's: these calls act with the file system's full rights
///   and use `credentials` only as the owner of what they create. (The FUSE mount lets the
///   kernel check modes with the caller's full credentials: `default_permissions`.)
/// - A record returned to the caller is not held; call `hold(_:)` to keep it from eviction.
extension VFSProcess {
    /// Keeps `record` in the namecache (and its mount busy) until `release(_:)`.
    public func hold(_ record: NCRecord) { record.hold() }

    /// Releases a hold taken with `hold(_:)`.
    public func release(_ record: NCRecord) { record.drop() }

    /// Whether `record` names a directory.
    public func isDirectory(_ record: NCRecord) -> Bool { namecache.gate.read { record.isDirectory } }

    /// The attributes of the object `record` names.
    public func attributes(of record: NCRecord) throws(VFSError) -> FileAttributes {
        guard let node = namecache.gate.read({ record.node }) else { throw .noent }
        var a = try record.mount.fileSystem.attributes(of: node)
        a.device = record.mount.deviceID
        return a
    }

    /// The attributes of the object `record` names and, where the file system knows it, the
    /// space it takes in 512-byte blocks (`st_blocks`: less than the size for a sparse host
    /// file). For HostFS, one host `fstat` unless the node's cached copy is current.
    public func attributesAndBlocks(of record: NCRecord) throws(VFSError) -> (FileAttributes, blocks: Int64?) {
        guard let node = namecache.gate.read({ record.node }) else { throw .noent }
        if let h = node as? HostFSNode {
            if let (a, blocks) = h.currentAttributesAndBlocks(), blocks >= 0 {
                var c = a
                c.device = record.mount.deviceID
                return (c, blocks)
            }
            try VFSAttempt.hostCall()
            let stamp = h.parentGeneration
            let st = try HostFS.hostStat(h)
            let a = HostFS.attributes(st, device: record.mount.deviceID)
            h.remember(a, blocks: Int64(st.st_blocks), stamp: stamp)
            return (a, Int64(st.st_blocks))
        }
        var a = try record.mount.fileSystem.attributes(of: node)
        a.device = record.mount.deviceID
        return (a, nil)
    }

    /// Looks one name up in the directory `directory`: the positive record (mounts crossed), or
    /// `nil` when the name does not exist.
    public func lookup(_ name: [UInt8], in directory: NCRecord) throws(VFSError) -> NCRecord? {
        try checkName(name)
        guard isDirectory(directory) else { throw .notdir }
        let (child, state, _) = try resolvedChild(directory, name)
        guard state == .positive else { return nil }
        return crossMounts(child)
    }

    /// `lookup(_:in:)` for callers in LWKT threads: the same as `parking.lookup(_:in:)`.
    public func lookupParking(_ name: [UInt8], in directory: NCRecord) async throws(VFSError) -> NCRecord? {
        try await parking.lookup(name, in: directory)
    }

    private func checkName(_ name: [UInt8]) throws(VFSError) {
        if name.isEmpty { throw .noent }
        if name.count > PathLimits.nameMax { throw .nametoolong }
        if name.contains(UInt8(ascii: "/")) || name.contains(0) { throw .inval }
        if name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] { throw .inval }
    }

    /// Runs `body` with the record of `name` in `directory` and the directory locked and current.
    private func withLockedChild<R>(_ name: [UInt8], in directory: NCRecord,
                                    _ body: (NCRecord, any FSNode) throws(VFSError) -> R) throws(VFSError) -> R {
        try checkName(name)
        guard isDirectory(directory) else { throw .notdir }
        for _ in 0..<10_000 {
            if directory.isDestroyed { throw .noent }
            let (child, _, _) = try resolvedChild(directory, name)
            let done = try lockedIfCurrent(child, in: directory) { () throws(VFSError) -> R in
                guard let dnode = directory.node else { throw .noent }
                return try body(child, dnode)
            }
            if let done { return done }
        }
        throw .again
    }

    /// Creates a regular file `name` in `directory`. An existing object is returned as it is
    /// (`created` false) unless `exclusive`, which makes it EEXIST.
    public func create(_ name: [UInt8], in directory: NCRecord, mode: UInt32, exclusive: Bool,
                       credentials cred: Credentials) throws(VFSError) -> (record: NCRecord, created: Bool) {
        try withLockedChild(name, in: directory) { (e, dnode) throws(VFSError) -> (record: NCRecord, created: Bool) in
            if e.state == .positive {
                if exclusive { throw .exist }
                return (crossMounts(e), false)
            }
            let node = try directory.mount.fileSystem.create(name, in: dnode, mode: mode & 0o7777, credentials: cred)
            namecache.setResolved(e, node: node, worldSearchable: false)
            return (e, true)
        }
    }

    /// Creates the directory `name` in `directory`.
    public func makeDirectory(_ name: [UInt8], in directory: NCRecord, mode: UInt32,
                              credentials cred: Credentials) throws(VFSError) -> NCRecord {
        try withLockedChild(name, in: directory) { (e, dnode) throws(VFSError) -> NCRecord in
            if e.state == .positive { throw .exist }
            let node = try directory.mount.fileSystem.makeDirectory(name, in: dnode, mode: mode & 0o7777, credentials: cred)
            namecache.setResolved(e, node: node, worldSearchable: mode & 0o001 != 0)
            return e
        }
    }

    /// Creates the symbolic link `name` in `directory`, holding `target`.
    public func makeSymlink(_ name: [UInt8], in directory: NCRecord, target: [UInt8],
                            credentials cred: Credentials) throws(VFSError) -> NCRecord {
        if target.isEmpty { throw .noent }
        if target.count >= PathLimits.pathMax { throw .nametoolong }
        return try withLockedChild(name, in: directory) { (e, dnode) throws(VFSError) -> NCRecord in
            if e.state == .positive { throw .exist }
            let node = try directory.mount.fileSystem.makeSymlink(name, in: dnode, target: target, credentials: cred)
            namecache.setResolved(e, node: node, worldSearchable: false)
            return e
        }
    }

    /// Adds the name `name` in `directory` for the non-directory `source`.
    public func link(_ source: NCRecord, as name: [UInt8], in directory: NCRecord) throws(VFSError) -> NCRecord {
        guard let node = namecache.gate.read({ source.node }) else { throw .noent }
        if node.type == .directory { throw .perm }
        return try withLockedChild(name, in: directory) { (e, dnode) throws(VFSError) -> NCRecord in
            if e.state == .positive { throw .exist }
            if directory.mount !== source.mount { throw .xdev }
            try directory.mount.fileSystem.link(node, as: name, in: dnode)
            namecache.setResolved(e, node: node, worldSearchable: false)
            return e
        }
    }

    /// Removes the name `name` (not a directory) from `directory`.
    public func unlink(_ name: [UInt8], in directory: NCRecord) throws(VFSError) {
        try withLockedChild(name, in: directory) { (e, dnode) throws(VFSError) in
            guard e.state == .positive, let node = e.node else { throw .noent }
            if e.isDirectory { throw .isdir }
            try directory.mount.fileSystem.unlink(name, in: dnode, node: node)
            namecache.replace(e, negative: true)
        }
    }

    /// Removes the empty directory `name` from `directory`.
    public func removeDirectory(_ name: [UInt8], in directory: NCRecord) throws(VFSError) {
        try withLockedChild(name, in: directory) { (e, dnode) throws(VFSError) in
            guard e.state == .positive, let node = e.node else { throw .noent }
            guard e.isDirectory else { throw .notdir }
            if e.mountedHere != nil { throw .busy }
            try directory.mount.fileSystem.removeDirectory(name, in: dnode, node: node)
            namecache.replace(e, negative: true)
        }
    }

    /// How `rename(_:in:to:in:mode:)` treats an existing target.
    public enum RenameMode: Sendable {
        /// Replace the target (plain `rename`).
        case replace
        /// Fail with EEXIST when the target exists (`RENAME_NOREPLACE`).
        case noReplace
        /// Swap source and target, both of which must exist (`RENAME_EXCHANGE`).
        case exchange
    }

    /// Renames `name` in `directory` to `newName` in `newDirectory` through the namecache's
    /// rename (the source record moves, so handles below it stay valid).
    public func rename(_ name: [UInt8], in directory: NCRecord, to newName: [UInt8], in newDirectory: NCRecord,
                       mode: RenameMode = .replace) throws(VFSError) {
        try checkName(name)
        try checkName(newName)
        guard isDirectory(directory), isDirectory(newDirectory) else { throw .notdir }
        if directory.mount !== newDirectory.mount { throw .xdev }
        let mount = directory.mount
        for _ in 0..<10_000 {
            if directory.isDestroyed || newDirectory.isDestroyed { throw .noent }
            let (src, _, _) = try resolvedChild(directory, name)
            let (dst, _, _) = try resolvedChild(newDirectory, newName)
            let done: Void? = try withRenameLocks(src, in: directory, dst, in: newDirectory) { () throws(VFSError) in
                guard src.state == .positive, let srcNode = src.node, let sdNode = directory.node, let ddNode = newDirectory.node else { throw .noent }
                if src === dst { return }
                if src.isDirectory && isAncestor(src, of: newDirectory) { throw .inval }
                if src.mountedHere != nil || dst.mountedHere != nil { throw .busy }
                switch mode {
                case .exchange:
                    guard dst.state == .positive else { throw .noent }
                    if dst.isDirectory && isAncestor(dst, of: directory) { throw .inval }
                    try mount.fileSystem.moving { () throws(VFSError) in
                        try mount.fileSystem.exchange(name, in: sdNode, with: newName, in: ddNode)
                        mount.fileSystem.nodeMoved(srcNode, to: newName, in: ddNode)
                        if let dstNode = dst.node { mount.fileSystem.nodeMoved(dstNode, to: name, in: sdNode) }
                    }
                    namecache.exchange(src, dst)
                    return
                case .noReplace:
                    if dst.state == .positive { throw .exist }
                case .replace:
                    if dst.state == .positive {
                        if let dn = dst.node, dn === srcNode { return }
                        if isAncestor(dst, of: directory) { throw .notempty }
                        if src.isDirectory && !dst.isDirectory { throw .notdir }
                        if !src.isDirectory && dst.isDirectory { throw .isdir }
                    }
                }
                if dst.state == .positive, let dn = dst.node { try mount.fileSystem.nodeWillBeReplaced(dn) }
                try mount.fileSystem.moving { () throws(VFSError) in
                    try mount.fileSystem.rename(name, in: sdNode, to: newName, in: ddNode)
                    mount.fileSystem.nodeMoved(srcNode, to: newName, in: ddNode)
                }
                namecache.move(src, over: dst)
            }
            if done != nil { return }
        }
        throw .again
    }

    /// Creates the FIFO `name` in `directory` (its node has type `.other`).
    public func makeFIFO(_ name: [UInt8], in directory: NCRecord, mode: UInt32,
                         credentials cred: Credentials) throws(VFSError) -> NCRecord {
        try withLockedChild(name, in: directory) { (e, dnode) throws(VFSError) -> NCRecord in
            if e.state == .positive { throw .exist }
            let fs = directory.mount.fileSystem
            let node: any FSNode
            if let m = fs as? MemFS {
                node = try m.makeFIFONode(name, in: dnode, mode: mode & 0o7777, credentials: cred)
            } else if let h = fs as? HostFS {
                node = try h.makeFIFONode(name, in: dnode, mode: mode & 0o7777, credentials: cred)
            } else {
                throw .perm
            }
            namecache.setResolved(e, node: node, worldSearchable: false)
            return e
        }
    }

    /// The value of the extended attribute `name` of the object `record` names (MemFS only;
    /// other file systems give EOPNOTSUPP).
    public func extendedAttribute(_ name: [UInt8], of record: NCRecord) throws(VFSError) -> [UInt8] {
        try memFS(record).fs.extendedAttribute(name, of: try memFS(record).node)
    }

    /// The names of the object's extended attributes, sorted.
    public func extendedAttributeNames(of record: NCRecord) throws(VFSError) -> [[UInt8]] {
        let (fs, node) = try memFS(record)
        return try fs.extendedAttributeNames(of: node)
    }

    /// Sets an extended attribute; `create` fails with EEXIST on an existing one, `replace`
    /// with ENODATA on a missing one. Names in the `system.` namespace (POSIX ACLs) are not
    /// stored (EOPNOTSUPP), so tools fall back to the mode bits.
    public func setExtendedAttribute(_ name: [UInt8], _ value: [UInt8], of record: NCRecord,
                                     create: Bool = false, replace: Bool = false) throws(VFSError) {
        if name.starts(with: Array("system.".utf8)) { throw .notsup }
        let (fs, node) = try memFS(record)
        try fs.setExtendedAttribute(name, value, of: node, create: create, replace: replace)
    }

    /// Removes an extended attribute (ENODATA when it does not exist).
    public func removeExtendedAttribute(_ name: [UInt8], of record: NCRecord) throws(VFSError) {
        let (fs, node) = try memFS(record)
        try fs.removeExtendedAttribute(name, of: node)
    }

    private func memFS(_ record: NCRecord) throws(VFSError) -> (fs: MemFS, node: any FSNode) {
        guard let node = namecache.gate.read({ record.node }) else { throw .noent }
        guard let fs = record.mount.fileSystem as? MemFS else { throw .notsup }
        return (fs, node)
    }

    /// The target of the symbolic link `record` names.
    public func readSymlink(_ record: NCRecord) throws(VFSError) -> [UInt8] {
        guard let node = namecache.gate.read({ record.node }) else { throw .noent }
        guard node.type == .symlink else { throw .inval }
        return try record.mount.fileSystem.readSymlink(node)
    }

    /// Changes attributes of the object `record` names (no ownership or permission checks).
    public func setAttributes(of record: NCRecord, _ change: AttributeChange) throws(VFSError) {
        guard let node = namecache.gate.read({ record.node }) else { throw .noent }
        if change.size != nil && node.type == .directory { throw .isdir }
        try record.mount.fileSystem.setAttributes(of: node, change)
        if let m = change.mode, node.type == .directory { namecache.setWorldSearchable(record, m & 0o001 != 0) }
    }

    /// Opens the object `record` names for data operations (a directory: for listing).
    public func openFile(_ record: NCRecord, read: Bool, write: Bool) throws(VFSError) -> any FSOpenFile {
        let (node, dir) = namecache.gate.read { (record.node, record.parent?.node) }
        guard let node else { throw .noent }
        if node.type == .directory && write { throw .isdir }
        if node.type == .symlink { throw .loop }
        return try record.mount.fileSystem.open(node, name: record.name, in: dir, read: read, write: write)
    }
}

extension FileSystem {
    /// Runs a move of names (`body`: the rename or exchange and the nodes' new places) so
    /// that HostFS's lookups by place can tell it is in flight (`HostFS.moves`).
    func moving(_ body: () throws(VFSError) -> Void) throws(VFSError) {
        guard let h = self as? HostFS else { return try body() }
        h.moves.add(1, ordering: .sequentiallyConsistent)
        defer { h.moves.add(1, ordering: .sequentiallyConsistent) }
        try body()
    }

    /// Tells a file system whose nodes remember their name (HostFS) that a rename is about
    /// to give `node`'s name to another object, so a holder of `node` keeps reaching it.
    func nodeWillBeReplaced(_ node: any FSNode) throws(VFSError) {
        try (self as? HostFS)?.willLoseName(node)
    }

    /// Tells a file system whose nodes remember their name (HostFS) that a rename or an
    /// exchange moved `node` to `name` in `directory`.
    func nodeMoved(_ node: any FSNode, to name: [UInt8], in directory: any FSNode) {
        (self as? HostFS)?.moved(node, to: name, in: directory)
    }

    /// Swaps two names (`RENAME_EXCHANGE`). File systems that cannot do it atomically throw EINVAL.
    public func exchange(_ name: [UInt8], in directory: any FSNode, with otherName: [UInt8], in otherDirectory: any FSNode) throws(VFSError) {
        if let h = self as? HostFS { return try h.exchangeNames(name, in: directory, with: otherName, in: otherDirectory) }
        if let m = self as? MemFS { return try m.exchangeNames(name, in: directory, with: otherName, in: otherDirectory) }
        throw .inval
    }
}

extension FSOpenFile {
    /// Flushes the file's data to stable storage (`fsync`); a file system without stable
    /// storage has nothing to do.
    public func sync() throws(VFSError) {
        guard let h = self as? HostFSOpenFile else { return }
        try VFSAttempt.hostCall()
        if fsync(h.fd) != 0 { throw .current }
    }
}
