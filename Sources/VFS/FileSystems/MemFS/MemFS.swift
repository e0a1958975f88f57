import Glibc
import Synchronization

/// An in-memory file system: regular files, directories, symbolic links and hard links, with
/// modes, owners and times.
///
/// Lock rules:
/// 1. Each node has its own lock (`MemFSNode.lock`), guarding its contents (entries, bytes,
///    link target) and its attribute updates; attributes are read without it.
/// 2. An operation locks every node it changes, in ascending inode order (`locked(_:_:)`);
///    node locks come after the namecache's record locks and are never held across a call
///    out of MemFS. There is no file-system-wide lock.
public final class MemFS: FileSystem, @unchecked Sendable {
    private static let deviceCounter = Atomic<UInt64>(0x4D46_0000)
    private let nextInode = Atomic<UInt64>(2)
    private let root: MemFSNode
    public let deviceID: UInt64
    public var rootNode: any FSNode { root }
    public var changesBehindCache: Bool { false }

    /// An empty file system whose root directory has `rootMode` and belongs to `owner`.
    public init(rootMode: UInt32 = 0o755, owner: Credentials = .root) {
        deviceID = Self.deviceCounter.wrappingAdd(1, ordering: .relaxed).newValue
        root = MemFSNode(type: .directory, inode: 1, mode: rootMode, uid: owner.uid, gid: owner.gid, now: .now())
    }

    @inline(__always)
    func mem(_ node: any FSNode) throws(VFSError) -> MemFSNode {
        guard ObjectIdentifier(type(of: node)) == ObjectIdentifier(MemFSNode.self) else { throw .xdev }
        return unsafeDowncast(node as AnyObject, to: MemFSNode.self)
    }

    /// Runs `body` with the distinct nodes of `nodes` locked in ascending inode order (rule 2).
    private func locked<R>(_ nodes: [MemFSNode], _ body: () throws(VFSError) -> R) throws(VFSError) -> R {
        var order: [MemFSNode] = []
        for n in nodes where !order.contains(where: { $0 === n }) { order.append(n) }
        order.sort { $0.inode < $1.inode }
        for n in order { n.lock.lock() }
        defer { for n in order.reversed() { n.lock.unlock() } }
        return try body()
    }

    /// One node locked (the common case, without building an array).
    @inline(__always)
    private func locked<R>(_ n: MemFSNode, _ body: () throws(VFSError) -> R) throws(VFSError) -> R {
        n.lock.lock()
        defer { n.lock.unlock() }
        return try body()
    }

    private func newNode(_ type: FileType, mode: UInt32, _ cred: Credentials, dir: MemFSNode, now: Timespec) -> MemFSNode {
        let ino = nextInode.wrappingAdd(1, ordering: .relaxed).oldValue
        var gid = cred.gid
        let da = dir.attributes(device: deviceID)
        var m = mode
        if da.mode & 0o2000 != 0 {
            gid = da.gid
            if type == .directory { m |= 0o2000 }
        }
        return MemFSNode(type: type, inode: ino, mode: m, uid: cred.uid, gid: gid, now: now)
    }

    private func directory(_ node: any FSNode) throws(VFSError) -> MemFSNode {
        let d = try mem(node)
        guard d.type == .directory else { throw .notdir }
        return d
    }

    public func resolve(_ name: [UInt8], in directory: any FSNode) throws(VFSError) -> (any FSNode)? {
        let d = try self.directory(directory)
        d.lock.lock()
        defer { d.lock.unlock() }
        return d.entries[name]
    }

    public func revalidate(_ name: [UInt8], in directory: any FSNode, cached: (any FSNode)?) -> Bool { true }

    public func attributes(of node: any FSNode) throws(VFSError) -> FileAttributes {
        try mem(node).attributes(device: deviceID)
    }

    public func setAttributes(of node: any FSNode, _ change: AttributeChange) throws(VFSError) {
        let n = try mem(node)
        try locked(n) { () throws(VFSError) in
            let now = Timespec.now()
            if let size = change.size {
                guard n.type == .regular else { throw n.type == .directory ? .isdir : .inval }
                let newSize = Int(size)
                if newSize < n.data.count { n.data.removeSubrange(newSize...) } else { n.data.append(contentsOf: repeatElement(0, count: newSize - n.data.count)) }
                n.update(size: size, mtime: now, ctime: now)
            }
            if change.mode != nil || change.uid != nil || change.gid != nil || change.atime != nil || change.mtime != nil {
                n.update(mode: change.mode, uid: change.uid, gid: change.gid, atime: change.atime, mtime: change.mtime, ctime: now)
            }
        }
    }

    private func insert(_ name: [UInt8], _ node: MemFSNode, in d: MemFSNode, now: Timespec) throws(VFSError) {
        if d.removed { throw .noent }
        if d.entries[name] != nil { throw .exist }
        d.entries[name] = node
        d.update(nlinkDelta: node.type == .directory ? 1 : 0, mtime: now, ctime: now)
    }

    public func create(_ name: [UInt8], in directory: any FSNode, mode: UInt32, credentials: Credentials) throws(VFSError) -> any FSNode {
        let d = try self.directory(directory)
        return try locked(d) { () throws(VFSError) -> MemFSNode in
            let now = Timespec.now()
            let n = newNode(.regular, mode: mode, credentials, dir: d, now: now)
            try insert(name, n, in: d, now: now)
            return n
        }
    }

    public func makeDirectory(_ name: [UInt8], in directory: any FSNode, mode: UInt32, credentials: Credentials) throws(VFSError) -> any FSNode {
        let d = try self.directory(directory)
        return try locked(d) { () throws(VFSError) -> MemFSNode in
            let now = Timespec.now()
            let n = newNode(.directory, mode: mode, credentials, dir: d, now: now)
            try insert(name, n, in: d, now: now)
            return n
        }
    }

    public func makeSymlink(_ name: [UInt8], in directory: any FSNode, target: [UInt8], credentials: Credentials) throws(VFSError) -> any FSNode {
        let d = try self.directory(directory)
        return try locked(d) { () throws(VFSError) -> MemFSNode in
            let now = Timespec.now()
            let n = newNode(.symlink, mode: 0o777, credentials, dir: d, now: now)
            n.target = target
            n.update(size: Int64(target.count))
            try insert(name, n, in: d, now: now)
            return n
        }
    }

    public func link(_ node: any FSNode, as name: [UInt8], in directory: any FSNode) throws(VFSError) {
        let d = try self.directory(directory)
        let n = try mem(node)
        guard n.type != .directory else { throw .perm }
        try locked([d, n]) { () throws(VFSError) in
            if n.nlink == 0 { throw .noent }
            let now = Timespec.now()
            try insert(name, n, in: d, now: now)
            n.update(nlinkDelta: 1, ctime: now)
        }
    }

    private func detach(_ n: MemFSNode, now: Timespec) {
        if n.type == .directory {
            n.removed = true
            n.update(nlinkDelta: -Int32(n.nlink), ctime: now)
        } else {
            n.update(nlinkDelta: -1, ctime: now)
        }
    }

    public func unlink(_ name: [UInt8], in directory: any FSNode, node: any FSNode) throws(VFSError) {
        let d = try self.directory(directory)
        try locked([d, try mem(node)]) { () throws(VFSError) in
            guard let n = d.entries[name] else { throw .noent }
            guard n === node as AnyObject else { throw .stale }
            guard n.type != .directory else { throw .isdir }
            let now = Timespec.now()
            d.entries[name] = nil
            d.update(mtime: now, ctime: now)
            detach(n, now: now)
        }
    }

    public func removeDirectory(_ name: [UInt8], in directory: any FSNode, node: any FSNode) throws(VFSError) {
        let d = try self.directory(directory)
        try locked([d, try mem(node)]) { () throws(VFSError) in
            guard let n = d.entries[name] else { throw .noent }
            guard n === node as AnyObject else { throw .stale }
            guard n.type == .directory else { throw .notdir }
            guard n.entries.isEmpty else { throw .notempty }
            let now = Timespec.now()
            d.entries[name] = nil
            d.update(nlinkDelta: -1, mtime: now, ctime: now)
            detach(n, now: now)
        }
    }

    public func rename(_ name: [UInt8], in directory: any FSNode, to newName: [UInt8], in newDirectory: any FSNode) throws(VFSError) {
        let d = try self.directory(directory)
        let nd = try self.directory(newDirectory)
        // The nodes involved are found first, then locked together in order and checked again
        // (the namecache's record locks already keep other VFS operations off these names).
        for _ in 0..<1_000 {
            let moving = try locked([d, nd]) { () throws(VFSError) -> (MemFSNode?, MemFSNode?) in (d.entries[name], nd.entries[newName]) }
            guard let source = moving.0 else { throw .noent }
            let done = try locked([d, nd, source] + (moving.1.map { [$0] } ?? [])) { () throws(VFSError) -> Bool in
                guard d.entries[name] === source, nd.entries[newName] === moving.1 else { return false }
                try renameLocked(source, name, in: d, to: newName, in: nd)
                return true
            }
            if done { return }
        }
        throw .again
    }

    private func renameLocked(_ n: MemFSNode, _ name: [UInt8], in d: MemFSNode, to newName: [UInt8], in nd: MemFSNode) throws(VFSError) {
        do {
            if nd.removed { throw .noent }
            let now = Timespec.now()
            if let victim = nd.entries[newName] {
                if victim === n { return }
                if n.type == .directory && victim.type != .directory { throw .notdir }
                if n.type != .directory && victim.type == .directory { throw .isdir }
                if victim.type == .directory && !victim.entries.isEmpty { throw .notempty }
                nd.entries[newName] = nil
                if victim.type == .directory { nd.update(nlinkDelta: -1) }
                detach(victim, now: now)
            }
            d.entries[name] = nil
            nd.entries[newName] = n
            if n.type == .directory && d !== nd {
                d.update(nlinkDelta: -1)
                nd.update(nlinkDelta: 1)
            }
            d.update(mtime: now, ctime: now)
            nd.update(mtime: now, ctime: now)
            n.update(ctime: now)
        }
    }

    public func readSymlink(_ node: any FSNode) throws(VFSError) -> [UInt8] {
        let n = try mem(node)
        guard n.type == .symlink else { throw .inval }
        n.lock.lock()
        defer { n.lock.unlock() }
        return n.target
    }

    public func open(_ node: any FSNode, name: [UInt8], in directory: (any FSNode)?, read: Bool, write: Bool) throws(VFSError) -> any FSOpenFile {
        MemFSOpenFile(fs: self, node: try mem(node))
    }

    // MARK: data, used by MemFSOpenFile

    func read(_ n: MemFSNode, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(VFSError) -> Int {
        guard n.type == .regular else { throw n.type == .directory ? .isdir : .inval }
        if offset < 0 { throw .inval }
        n.lock.lock()
        defer { n.lock.unlock() }
        do {
            let start = Int(offset)
            guard start < n.data.count else { return 0 }
            let count = min(buffer.count, n.data.count - start)
            n.data.withUnsafeBytes { src in
                if let b = buffer.baseAddress, let s = src.baseAddress { b.copyMemory(from: s + start, byteCount: count) }
            }
            return count
        }
    }

    func write(_ n: MemFSNode, _ buffer: UnsafeRawBufferPointer, at offset: Int64, append: Bool) throws(VFSError) -> (count: Int, end: Int64) {
        guard n.type == .regular else { throw n.type == .directory ? .isdir : .inval }
        if offset < 0 { throw .inval }
        return try locked(n) { () throws(VFSError) -> (count: Int, end: Int64) in
            let start = append ? n.data.count : Int(offset)
            if start > (1 << 40) { throw .fbig }
            let end = start + buffer.count
            if end > n.data.count { n.data.append(contentsOf: repeatElement(0, count: end - n.data.count)) }
            n.data.withUnsafeMutableBytes { dst in
                if let d = dst.baseAddress, let s = buffer.baseAddress, buffer.count > 0 { (d + start).copyMemory(from: s, byteCount: buffer.count) }
            }
            let now = Timespec.now()
            n.update(size: Int64(n.data.count), mtime: now, ctime: now)
            return (buffer.count, Int64(end))
        }
    }

    func list(_ n: MemFSNode) throws(VFSError) -> [DirectoryEntry] {
        guard n.type == .directory else { throw .notdir }
        n.lock.lock()
        defer { n.lock.unlock() }
        do {
            return n.entries.map { DirectoryEntry(name: String(decoding: $0.key, as: UTF8.self), inode: $0.value.inode, type: $0.value.type) }
        }
    }

    /// Swaps the objects named `name` in `directory` and `otherName` in `otherDirectory`
    /// (`RENAME_EXCHANGE`); both must exist.
    func exchangeNames(_ name: [UInt8], in directory: any FSNode, with otherName: [UInt8], in otherDirectory: any FSNode) throws(VFSError) {
        let d = try self.directory(directory)
        let nd = try self.directory(otherDirectory)
        // As in `rename`: find the two nodes, lock all four in inode order, check again.
        for _ in 0..<1_000 {
            let pair = try locked([d, nd]) { () throws(VFSError) -> (MemFSNode?, MemFSNode?) in (d.entries[name], nd.entries[otherName]) }
            guard let a = pair.0, let b = pair.1 else { throw .noent }
            let done = try locked([d, nd, a, b]) { () throws(VFSError) -> Bool in
                guard d.entries[name] === a, nd.entries[otherName] === b else { return false }
                exchangeLocked(a, name, in: d, with: b, otherName, in: nd)
                return true
            }
            if done { return }
        }
        throw .again
    }

    private func exchangeLocked(_ a: MemFSNode, _ name: [UInt8], in d: MemFSNode, with b: MemFSNode, _ otherName: [UInt8], in nd: MemFSNode) {
        do {
            if a === b { return }
            let now = Timespec.now()
            d.entries[name] = b
            nd.entries[otherName] = a
            if d !== nd {
                let delta = Int32(b.type == .directory ? 1 : 0) - Int32(a.type == .directory ? 1 : 0)
                d.update(nlinkDelta: delta)
                nd.update(nlinkDelta: -delta)
            }
            d.update(mtime: now, ctime: now)
            nd.update(mtime: now, ctime: now)
            a.update(ctime: now)
            b.update(ctime: now)
        }
    }

    // MARK: FIFOs and extended attributes (used through the `FileSystem` extension in
    // VFSProcess+Handles.swift)

    /// Creates a FIFO (a node of type `.other`; whoever serves it provides the pipe).
    func makeFIFONode(_ name: [UInt8], in directory: any FSNode, mode: UInt32, credentials: Credentials) throws(VFSError) -> any FSNode {
        let d = try self.directory(directory)
        return try locked(d) { () throws(VFSError) -> MemFSNode in
            let now = Timespec.now()
            let n = newNode(.other, mode: mode, credentials, dir: d, now: now)
            try insert(name, n, in: d, now: now)
            return n
        }
    }

    func extendedAttribute(_ name: [UInt8], of node: any FSNode) throws(VFSError) -> [UInt8] {
        let n = try mem(node)
        return try locked(n) { () throws(VFSError) -> [UInt8] in
            guard let v = n.extendedAttributes[name] else { throw .nodata }
            return v
        }
    }

    func extendedAttributeNames(of node: any FSNode) throws(VFSError) -> [[UInt8]] {
        let n = try mem(node)
        n.lock.lock()
        defer { n.lock.unlock() }
        return n.extendedAttributes.keys.sorted { $0.lexicographicallyPrecedes($1) }
    }

    func setExtendedAttribute(_ name: [UInt8], _ value: [UInt8], of node: any FSNode, create: Bool, replace: Bool) throws(VFSError) {
        let n = try mem(node)
        try locked(n) { () throws(VFSError) in
            let exists = n.extendedAttributes[name] != nil
            if create && exists { throw .exist }
            if replace && !exists { throw .nodata }
            n.extendedAttributes[name] = value
            n.update(ctime: .now())
        }
    }

    func removeExtendedAttribute(_ name: [UInt8], of node: any FSNode) throws(VFSError) {
        let n = try mem(node)
        try locked(n) { () throws(VFSError) in
            guard n.extendedAttributes.removeValue(forKey: name) != nil else { throw .nodata }
            n.update(ctime: .now())
        }
    }
}
