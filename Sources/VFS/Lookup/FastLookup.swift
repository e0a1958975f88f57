import Synchronization
/// The outcome of a lock-free lookup attempt.
enum FastOutcome {
    case found(FileAttributes)
    case type(FileType)
    case error(VFSError)
    case fallback
}

extension VFSProcess {
    /// The lock-free walk over cached records. It runs inside one namecache read section, takes
    /// no lock, allocates nothing and touches no reference count: it follows the plain-memory
    /// `NCHot` mirrors of the records. It answers only when every component is cached and
    /// simple (positive directories, `.`, `..`, mount crossings, a positive or negative last
    /// record); anything else — symlinks, unresolved records, file systems that revalidate,
    /// directories that are not world-searchable for a non-root caller, syntax errors —
    /// returns `.fallback`, and the locked `nlookup` takes over with the same rules.
    ///
    /// With `wantAttributes` the attributes of a MemFS result are read in the same section.
    @inline(__always)
    func fastLookup(_ path: String, follow: Bool, wantAttributes: Bool) -> FastOutcome {
        let outcome: FastOutcome? = path.utf8.withContiguousStorageIfAvailable {
            fastLookup(bytes: $0, follow: follow, wantAttributes: wantAttributes)
        }
        return outcome ?? .fallback
    }

    /// ``fastLookup(_:follow:wantAttributes:)`` of a path given as bytes (no `String` made).
    @inline(__always)
    func fastLookup(bytes buf: UnsafeBufferPointer<UInt8>, follow: Bool, wantAttributes: Bool) -> FastOutcome {
        vfs.settleStrictMounts()
        guard let p = buf.baseAddress, buf.count > 0, buf.count < PathLimits.pathMax else { return .fallback }
        let gate = gateView
        let slot = gate.enterRead()
        defer { gate.exitRead(slot) }
        return fastWalk(p, buf.count, follow: follow, wantAttributes: wantAttributes, gate: gate, slot: slot)
    }

    @inline(__always)
    private func fastWalk(_ p: UnsafePointer<UInt8>, _ n: Int, follow: Bool, wantAttributes: Bool,
                          gate: ReadGateView, slot: Int) -> FastOutcome {
        let slash = UInt8(ascii: "/"), dot = UInt8(ascii: ".")
        var cur = p[0] == slash ? fastRoot : fastCwd
        let root = fastRoot, jail = fastJail
        let superuser = fastUID == 0
        let table = self.table
        var i = 0
        var hits = 0
        while true {
            while i < n && p[i] == slash { i += 1 }
            if i == n { break }
            let start = i
            while i < n && p[i] != slash { i += 1 }
            let len = i - start
            if len > PathLimits.nameMax { return .fallback }
            let end = i
            while i < n && p[i] == slash { i += 1 }
            let trailing = i > end && i == n
            let isLast = i == n

            let flags = cur.pointee.flags
            guard cur.pointee.state == .positive, flags & NCRecord.isDirectory != 0 else { return .fallback }
            if !superuser && flags & NCRecord.worldSearchable == 0 { return .fallback }

            if len == 1 && p[start] == dot {
                if isLast { break }
                continue
            }
            if len == 2 && p[start] == dot && p[start + 1] == dot {
                if cur == root || cur == jail {
                    // `..` stays at the process root and the jail root
                } else if flags & NCRecord.isMountRoot != 0 {
                    return .fallback
                } else if let up = cur.pointee.parent {
                    cur = up
                } else {
                    return .fallback
                }
                if isLast { break }
                continue
            }
            let h = Namecache.hash(parentID: cur.pointee.id, p + start, len)
            guard var child = Namecache.probe(table, cur, p + start, len, hash: h) else { return .fallback }
            let state = child.pointee.state
            // Pairs with the writer's fence before the state (Namecache rule 3).
            atomicMemoryFence(ordering: .acquiring)
            if child.pointee.revalidates {
                // A host name: usable only while its directory has not changed since it was
                // checked (Namecache rule 7).
                let stamp = child.pointee.validStamp
                guard stamp != 0, let word = child.pointee.validity,
                      word.pointee.load(ordering: .acquiring) == stamp else { return .fallback }
            }
            switch state {
            case .unresolved:
                return .fallback
            case .negative:
                gate.count(.hits, slot: slot, by: hits)
                gate.count(.negativeHits, slot: slot)
                gate.count(.fastLookups, slot: slot)
                return .error(.noent)
            case .positive:
                break
            }
            hits += 1
            if child.pointee.flags & NCRecord.isSymlink != 0 && (!isLast || follow || trailing) { return .fallback }
            var depth = 0
            while let r = child.pointee.mountedRoot, depth < 16 {
                child = r
                depth += 1
            }
            if isLast && trailing && child.pointee.flags & NCRecord.isDirectory == 0 { return .fallback }
            cur = child
            if isLast { break }
        }
        gate.count(.hits, slot: slot, by: hits)
        gate.count(.fastLookups, slot: slot)
        guard wantAttributes else { return .type(cur.pointee.nodeType) }
        let device = cur.pointee.device
        guard let mem = cur.pointee.memNode else {
            // A host node: its cached attributes, while its directory has not changed.
            guard let host = cur.pointee.hostNode,
                  let a = Unmanaged<HostFSNode>.fromOpaque(host)._withUnsafeGuaranteedRef({ HostFS.currentAttributes($0, device: device) })
            else { return .fallback }
            return .found(a)
        }
        return .found(Unmanaged<MemFSNode>.fromOpaque(mem)._withUnsafeGuaranteedRef { $0.attributes(device: device) })
    }
}
