/// The outcome of a lock-free lookup attempt.
enum FastOutcome {
    case found(FileAttributes)
    case type(FileType)
    case error(VFSError)
    case fallback
}

extension VFSProcess {
    /// The lock-free walk over cached records. It runs inside one namecache read section, takes
    /// no lock and allocates nothing. It answers only when every component is cached and
    /// simple (positive directories, `.`, `..`, mount crossings, a positive or negative last
    /// record); anything else — symlinks, unresolved records, file systems that revalidate,
    /// directories that are not world-searchable for a non-root caller, errors of syntax —
    /// returns `.fallback` and the locked `nlookup` takes over with the same rules.
    ///
    /// With `wantAttributes` the attributes of the result are read in the same section.
    @inline(__always)
    func fastLookup(_ path: String, follow: Bool, wantAttributes: Bool) -> FastOutcome {
        let outcome: FastOutcome? = path.utf8.withContiguousStorageIfAvailable { buf -> FastOutcome in
            guard let p = buf.baseAddress, buf.count > 0, buf.count < PathLimits.pathMax else { return .fallback }
            let gate = namecache.gate
            let slot = gate.enterRead()
            defer { gate.exitRead(slot) }
            return fastWalk(p, buf.count, follow: follow, wantAttributes: wantAttributes, slot: slot)
        }
        return outcome ?? .fallback
    }

    @inline(__always)
    private func fastWalk(_ p: UnsafePointer<UInt8>, _ n: Int, follow: Bool, wantAttributes: Bool, slot: Int) -> FastOutcome {
        let slash = UInt8(ascii: "/"), dot = UInt8(ascii: ".")
        unowned(unsafe) var cur: NCRecord = p[0] == slash ? fastRoot : fastCwd
        unowned(unsafe) let root = fastRoot
        unowned(unsafe) let jail = fastJail
        let superuser = fastUID == 0
        let gate = namecache.gate
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

            let flags = cur.flags
            guard cur.state == .positive, flags & NCRecord.isDirectory != 0, !cur.mount.revalidates else { return .fallback }
            if !superuser && flags & NCRecord.worldSearchable == 0 { return .fallback }

            if len == 1 && p[start] == dot {
                if isLast { break }
                continue
            }
            if len == 2 && p[start] == dot && p[start + 1] == dot {
                if cur === root || cur === jail {
                    // stays put
                } else if flags & NCRecord.isMountRoot != 0 {
                    return .fallback
                } else if let up = cur.fastParent {
                    cur = up
                } else {
                    return .fallback
                }
                if isLast { break }
                continue
            }
            let h = Namecache.hash(parentID: cur.id, p + start, len)
            guard let u = namecache.probe(cur, p + start, len, hash: h) else { return .fallback }
            unowned(unsafe) var child = u.takeUnretainedValue()
            switch child.state {
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
            if child.flags & NCRecord.isSymlink != 0 && (!isLast || follow || trailing) { return .fallback }
            var depth = 0
            while let m = child.fastMountedHere, depth < 16, let r = m.fastRoot {
                child = r
                depth += 1
            }
            if isLast && trailing && child.flags & NCRecord.isDirectory == 0 { return .fallback }
            cur = child
            if isLast { break }
        }
        gate.count(.hits, slot: slot, by: hits)
        gate.count(.fastLookups, slot: slot)
        if wantAttributes {
            guard let node = cur.fastNode else { return .fallback }
            do {
                var a = try cur.mount.fileSystem.attributes(of: node)
                a.device = cur.mount.deviceID
                return .found(a)
            } catch {
                return .error(error)
            }
        }
        guard let node = cur.fastNode else { return .fallback }
        return .type(node.type)
    }
}
