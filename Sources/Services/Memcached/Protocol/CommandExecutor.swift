/// Runs one ``KeyOp`` against the shard that owns its key and writes memcached's response
/// to an output buffer. It runs on the owner CPU, whether the connection lives there or
/// sent the operation over as a message.
enum CommandExecutor {
    static func execute(_ op: inout KeyOp, store: ItemStore, out: OutputBuffer) {
        guard let key = op.key else { return }
        let now = op.now
        switch op.kind {
        case .get, .gets, .gat, .gats:
            store.counters.cmdGet += 1
            let found: Item?
            if op.kind == .gat || op.kind == .gats {
                found = store.touch(key: key, keyLength: op.keyLength, hash: op.hash, expiry: op.expiry, now: now)
            } else {
                found = store.find(key, op.keyLength, hash: op.hash, now: now)
            }
            if _slowPath(store.detail.on.load(ordering: .relaxed)) {
                store.recordPrefix(key, op.keyLength, get: true, hit: found != nil)
            }
            guard let it = found else { store.counters.getMisses += 1; return }
            store.counters.getHits += 1
            store.bump(it, now: now)
            out.reserve(it.keyLength + it.valueLength + 64)
            out.append("VALUE ")
            out.append(it.key, it.keyLength)
            out.append(byte: 0x20)
            out.append(decimal: UInt64(it.flags))
            out.append(byte: 0x20)
            out.append(decimal: UInt64(it.valueLength))
            if op.kind == .gets || op.kind == .gats {
                out.append(byte: 0x20)
                out.append(decimal: it.cas)
            }
            out.appendCRLF()
            out.append(it.value, it.valueLength)
            out.appendCRLF()

        case .set, .add, .replace, .append, .prepend, .cas:
            if op.tooLarge {
                // memcached drops the old value of a `set` rather than keep stale data.
                store.counters.storeTooLarge += 1
                if op.kind == .set, let old = store.find(key, op.keyLength, hash: op.hash, now: now) { store.remove(old) }
                if !op.noreply { out.append("SERVER_ERROR object too large for cache\r\n") }
                return
            }
            if _slowPath(store.detail.on.load(ordering: .relaxed)) { store.recordPrefix(key, op.keyLength, set: true) }
            let mode: StoreMode
            switch op.kind {
            case .add: mode = .add
            case .replace: mode = .replace
            case .append: mode = .append
            case .prepend: mode = .prepend
            case .cas: mode = .cas
            default: mode = .set
            }
            let (r, _) = store.store(mode: mode, key: key, keyLength: op.keyLength, hash: op.hash, flags: op.flags,
                                     expiry: op.expiry, value: op.value ?? UnsafeRawPointer(key), valueLength: op.valueLength,
                                     casIn: op.kind == .cas ? op.cas : 0, now: now)
            if op.noreply { return }
            switch r {
            case .stored: out.append("STORED\r\n")
            case .notStored: out.append("NOT_STORED\r\n")
            case .exists: out.append("EXISTS\r\n")
            case .notFound: out.append("NOT_FOUND\r\n")
            case .tooLarge: out.append("SERVER_ERROR object too large for cache\r\n")
            case .outOfMemory: out.append("SERVER_ERROR out of memory storing object\r\n")
            }

        case .delete:
            if _slowPath(store.detail.on.load(ordering: .relaxed)) { store.recordPrefix(key, op.keyLength, delete: true) }
            let r = store.delete(key: key, keyLength: op.keyLength, hash: op.hash, now: now)
            if op.noreply { return }
            out.append(r == .stored ? "DELETED\r\n" : "NOT_FOUND\r\n")

        case .incr, .decr:
            let r = store.delta(key: key, keyLength: op.keyLength, hash: op.hash, incr: op.kind == .incr, by: op.delta, now: now)
            if op.noreply { return }
            switch r {
            case .notFound: out.append("NOT_FOUND\r\n")
            case .nonNumeric: out.append("CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")
            case .outOfMemory: out.append("SERVER_ERROR out of memory\r\n")
            case .exists: out.append("EXISTS\r\n")
            case .value(let v, _): out.append(decimal: v); out.appendCRLF()
            }

        case .touch:
            let it = store.touch(key: key, keyLength: op.keyLength, hash: op.hash, expiry: op.expiry, now: now)
            if op.noreply { return }
            out.append(it != nil ? "TOUCHED\r\n" : "NOT_FOUND\r\n")

        case .metaGet: metaGet(&op, store: store, out: out)
        case .metaSet: metaSet(&op, store: store, out: out)
        case .metaDelete: metaDelete(&op, store: store, out: out)
        case .metaArithmetic: metaArithmetic(&op, store: store, out: out)
        case .metaDebug: metaDebug(&op, store: store, out: out)
        }
    }

    // MARK: - Meta commands

    /// Flag letters each meta reply may echo (the rest are accepted and not echoed).
    static let mgHitLetters = MetaFlags.mask("stcflhOk")
    static let keyLetters = MetaFlags.mask("Ok")
    static let msLetters = MetaFlags.mask("Okc")
    static let maLetters = MetaFlags.mask("Oktc")

    /// Appends the flags the client asked to have returned, in the order it asked, limited
    /// to `letters`. `h` and `l` report `fetched` and `lastAccess` (as before this access).
    static func returnFlags(_ op: KeyOp, item: Item?, now: Int64, out: OutputBuffer, letters: UInt64,
                            binaryKey: Bool, cas: UInt64? = nil, fetched: Bool = false, lastAccess: Int64 = 0) {
        guard let t = op.meta.text else { return }
        var i = 0
        let n = op.meta.textLength
        while i < n {
            while i < n && t.load(fromByteOffset: i, as: UInt8.self) == 0x20 { i += 1 }
            if i >= n { break }
            let start = i
            while i < n && t.load(fromByteOffset: i, as: UInt8.self) != 0x20 { i += 1 }
            let c = t.load(fromByteOffset: start, as: UInt8.self)
            guard letters & MetaFlags.bit(c) != 0 else { continue }
            switch c {
            case UInt8(ascii: "O"):
                out.append(byte: 0x20)
                out.append(t + start, i - start)
            case UInt8(ascii: "k"):
                guard let k = op.key else { break }
                out.append(" k")
                if binaryKey {
                    Base64.encode(k, op.keyLength, to: out)
                    out.append(" b")
                } else {
                    out.append(k, op.keyLength)
                }
            case UInt8(ascii: "c"):
                if let v = cas ?? item?.cas { out.append(" c"); out.append(decimal: v) }
            case UInt8(ascii: "f"):
                if let item { out.append(" f"); out.append(decimal: UInt64(item.flags)) }
            case UInt8(ascii: "s"):
                if let item { out.append(" s"); out.append(decimal: UInt64(item.valueLength)) }
            case UInt8(ascii: "t"):
                if let item {
                    out.append(" t")
                    let e = item.expiry
                    out.append(signed: e == 0 ? -1 : max(0, e - now))
                }
            case UInt8(ascii: "h"):
                if item != nil { out.append(fetched ? " h1" : " h0") }
            case UInt8(ascii: "l"):
                if item != nil { out.append(" l"); out.append(decimal: UInt64(max(0, now - lastAccess))) }
            default: break
            }
        }
    }

    static func metaGet(_ op: inout KeyOp, store: ItemStore, out: OutputBuffer) {
        guard let key = op.key else { return }
        let now = op.now
        let m = op.meta
        let touching = m.has("T")
        if touching { store.counters.cmdTouch += 1 } else { store.counters.cmdGet += 1 }
        var created = false
        var found = store.find(key, op.keyLength, hash: op.hash, now: now)
        if found == nil && m.has("N") {
            // Autovivify: an empty item, and this client wins the right to fill it.
            let (r, _) = store.store(mode: .add, key: key, keyLength: op.keyLength, hash: op.hash, flags: 0,
                                     expiry: absoluteExpiry(m.vivifyTTL, now: now), value: key, valueLength: 0,
                                     casIn: 0, now: now, binaryKey: m.has("b"))
            store.counters.cmdSet -= 1
            if r == .stored { found = store.findRaw(key, op.keyLength, hash: op.hash); created = found != nil }
        }
        guard let it = found else {
            if touching { store.counters.touchMisses += 1 } else { store.counters.getMisses += 1 }
            if op.noreply { return }
            out.append("EN")
            returnFlags(op, item: nil, now: now, out: out, letters: keyLetters, binaryKey: m.has("b"))
            out.appendCRLF()
            return
        }
        if touching { store.counters.touchHits += 1 } else { store.counters.getHits += 1 }
        let fetchedBefore = it.fetched
        let lastBefore = it.lastAccess
        var won = created
        if touching { it.expiry = absoluteExpiry(m.ttl, now: now) }
        if m.has("R") && !it.tokenSent && !created && it.expiry != 0 && it.expiry < absoluteExpiry(m.recache, now: now) {
            won = true
        }
        let withValue = m.has("v")
        out.reserve(it.valueLength + 64)
        if withValue {
            out.append("VA ")
            out.append(decimal: UInt64(it.valueLength))
        } else {
            out.append("HD")
        }
        returnFlags(op, item: it, now: now, out: out, letters: mgHitLetters, binaryKey: it.binaryKey,
                    fetched: fetchedBefore, lastAccess: lastBefore)
        if it.tokenSent { out.append(" Z") }
        if it.stale {
            out.append(" X")
            if !it.tokenSent { won = true }
        }
        if won {
            out.append(" W")
            it.tokenSent = true
        }
        out.appendCRLF()
        if withValue {
            out.append(it.value, it.valueLength)
            out.appendCRLF()
        }
        if !m.has("u") { store.bump(it, now: now) }
    }

    static func metaSet(_ op: inout KeyOp, store: ItemStore, out: OutputBuffer) {
        guard let key = op.key else { return }
        let m = op.meta
        if op.tooLarge {
            store.counters.storeTooLarge += 1
            if let old = store.find(key, op.keyLength, hash: op.hash, now: op.now) { store.remove(old) }
            out.append("SERVER_ERROR object too large for cache\r\n")
            return
        }
        var mode: StoreMode
        switch m.mode {
        case UInt8(ascii: "E"): mode = .add
        case UInt8(ascii: "A"): mode = .append
        case UInt8(ascii: "P"): mode = .prepend
        case UInt8(ascii: "R"): mode = .replace
        default: mode = .set
        }
        // A CAS turns set and replace into cas (memcached's rule).
        let hasCAS = m.has("C")
        if hasCAS && (mode == .set || mode == .replace) { mode = .cas }
        let (r, cas) = store.store(mode: mode, key: key, keyLength: op.keyLength, hash: op.hash, flags: m.clientFlags,
                                   expiry: m.has("T") ? absoluteExpiry(m.ttl, now: op.now) : 0,
                                   value: op.value ?? UnsafeRawPointer(key), valueLength: op.valueLength,
                                   casIn: hasCAS ? m.cas : 0, now: op.now, binaryKey: m.has("b"), allowStale: m.has("I"))
        let binary = m.has("b")
        switch r {
        case .stored:
            if op.noreply { return }
            out.append("HD")
            returnFlags(op, item: nil, now: op.now, out: out, letters: msLetters, binaryKey: binary, cas: cas)
            out.appendCRLF()
        case .notStored, .exists, .notFound:
            out.append(r == .notStored ? "NS" : r == .exists ? "EX" : "NF")
            returnFlags(op, item: nil, now: op.now, out: out, letters: keyLetters, binaryKey: binary)
            out.appendCRLF()
        case .tooLarge:
            store.counters.storeTooLarge += 1
            out.append("SERVER_ERROR object too large for cache\r\n")
        case .outOfMemory: out.append("SERVER_ERROR out of memory storing object\r\n")
        }
    }

    static func metaDelete(_ op: inout KeyOp, store: ItemStore, out: OutputBuffer) {
        guard let key = op.key else { return }
        let m = op.meta
        let binary = m.has("b")
        guard let it = store.find(key, op.keyLength, hash: op.hash, now: op.now) else {
            store.counters.deleteMisses += 1
            out.append("NF")
            returnFlags(op, item: nil, now: op.now, out: out, letters: keyLetters, binaryKey: binary)
            out.appendCRLF()
            return
        }
        if m.has("C") && it.cas != m.cas {
            store.counters.deleteMisses += 1
            out.append("EX")
            returnFlags(op, item: nil, now: op.now, out: out, letters: keyLetters, binaryKey: binary)
            out.appendCRLF()
            return
        }
        if m.has("I") {
            // Invalidate: keep the item, mark it stale, new CAS, let the next reader win.
            if m.has("T") { it.expiry = absoluteExpiry(m.ttl, now: op.now) }
            it.stale = true
            it.tokenSent = false
            it.cas = store.nextCAS()
        } else {
            store.counters.deleteHits += 1
            store.remove(it)
        }
        if op.noreply { return }
        out.append("HD")
        returnFlags(op, item: nil, now: op.now, out: out, letters: keyLetters, binaryKey: binary)
        out.appendCRLF()
    }

    static func metaArithmetic(_ op: inout KeyOp, store: ItemStore, out: OutputBuffer) {
        guard let key = op.key else { return }
        let m = op.meta
        let binary = m.has("b")
        let incr = !(m.mode == UInt8(ascii: "D") || m.mode == UInt8(ascii: "-"))
        var r = store.delta(key: key, keyLength: op.keyLength, hash: op.hash, incr: incr, by: m.delta, casIn: m.cas, now: op.now)
        var created = false
        if case .notFound = r, m.has("N") {
            var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
            let len = withUnsafeMutableBytes(of: &digits) { formatUInt64(m.initial, into: $0.baseAddress.unsafelyUnwrapped) }
            let (sr, cas) = withUnsafeBytes(of: &digits) { b in
                store.store(mode: .add, key: key, keyLength: op.keyLength, hash: op.hash, flags: 0,
                            expiry: absoluteExpiry(m.vivifyTTL, now: op.now), value: b.baseAddress.unsafelyUnwrapped,
                            valueLength: len, casIn: 0, now: op.now, binaryKey: binary)
            }
            if sr == .stored { r = .value(m.initial, cas); created = true }
        }
        switch r {
        case .notFound:
            out.append("NF"); returnFlags(op, item: nil, now: op.now, out: out, letters: keyLetters, binaryKey: binary); out.appendCRLF()
        case .exists:
            out.append("EX"); returnFlags(op, item: nil, now: op.now, out: out, letters: keyLetters, binaryKey: binary); out.appendCRLF()
        case .nonNumeric: out.append("CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")
        case .outOfMemory: out.append("SERVER_ERROR out of memory\r\n")
        case .value(let v, _):
            if op.noreply && !created { return }
            let it = store.findRaw(key, op.keyLength, hash: op.hash)
            if m.has("v") {
                var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
                let len = withUnsafeMutableBytes(of: &digits) { formatUInt64(v, into: $0.baseAddress.unsafelyUnwrapped) }
                out.append("VA ")
                out.append(decimal: UInt64(len))
                returnFlags(op, item: it, now: op.now, out: out, letters: maLetters, binaryKey: binary)
                out.appendCRLF()
                withUnsafeBytes(of: &digits) { out.append($0.baseAddress.unsafelyUnwrapped, len) }
                out.appendCRLF()
            } else {
                out.append("HD")
                returnFlags(op, item: it, now: op.now, out: out, letters: maLetters, binaryKey: binary)
                out.appendCRLF()
            }
        }
    }

    /// `me <key>`: memcached's debug line, sizes and slab class as memcached counts them.
    static func metaDebug(_ op: inout KeyOp, store: ItemStore, out: OutputBuffer) {
        guard let key = op.key else { return }
        guard let it = store.find(key, op.keyLength, hash: op.hash, now: op.now) else {
            out.append("EN\r\n")
            return
        }
        out.append("ME ")
        if it.binaryKey { Base64.encode(key, op.keyLength, to: out) } else { out.append(key, op.keyLength) }
        out.append(" exp=")
        out.append(signed: it.expiry == 0 ? -1 : it.expiry - op.now)
        out.append(" la=")
        out.append(decimal: UInt64(max(0, op.now - it.lastAccess)))
        out.append(" cas=")
        out.append(decimal: it.cas)
        out.append(it.fetched ? " fetch=yes cls=" : " fetch=no cls=")
        let size = MemcachedCommandParser.itemSize(keyLength: it.keyLength, valueLength: it.valueLength, flags: it.flags)
        out.append(decimal: UInt64(MemcachedSlabClasses.classID(forSize: size)))
        out.append(" size=")
        out.append(decimal: UInt64(size))
        out.appendCRLF()
    }
}

/// memcached's default slab classes (`-n 48 -f 1.25`, 1 MiB pages): the class an item of a
/// given size lands in, for `me` and the stats that name classes.
enum MemcachedSlabClasses {
    static let chunkMax = 512 * 1024
    static let sizes: [Int] = {
        var s: [Int] = []
        var size = 96
        while size < Int(Double(chunkMax) / 1.25) {
            if size % 8 != 0 { size += 8 - size % 8 }
            s.append(size)
            size = Int(Double(size) * 1.25)
        }
        s.append(chunkMax)
        return s
    }()

    /// The 1-based class id for an item of `size` bytes (the largest class for bigger ones).
    static func classID(forSize size: Int) -> Int { index(forSize: size) + 1 }

    /// The 0-based class index for an item of `size` bytes (binary search).
    static func index(forSize size: Int) -> Int {
        var lo = 0
        var hi = sizes.count - 1
        if size >= sizes[hi] { return hi }
        while lo < hi {
            let mid = (lo + hi) / 2
            if sizes[mid] >= size { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }

    /// What an item of `size` bytes takes from memcached's memory: its chunk, or for an
    /// item larger than the largest chunk, whole largest chunks and a chunk for the rest.
    static func charge(forSize size: Int) -> Int {
        if size <= chunkMax { return sizes[index(forSize: size)] }
        let rest = size % chunkMax
        return (size / chunkMax) * chunkMax + (rest == 0 ? 0 : sizes[index(forSize: rest)])
    }
}
