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
        }
    }

    // MARK: - Meta commands

    /// Appends the flags the client asked to have returned, in the order it asked.
    static func returnFlags(_ op: KeyOp, item: Item?, now: Int64, out: OutputBuffer, value: Bool) {
        guard let t = op.meta.text else { return }
        var i = 0
        let n = op.meta.textLength
        while i < n {
            while i < n && t.load(fromByteOffset: i, as: UInt8.self) == 0x20 { i += 1 }
            if i >= n { break }
            let start = i
            while i < n && t.load(fromByteOffset: i, as: UInt8.self) != 0x20 { i += 1 }
            let c = t.load(fromByteOffset: start, as: UInt8.self)
            switch c {
            case UInt8(ascii: "O"), UInt8(ascii: "k"):
                out.append(byte: 0x20)
                if c == UInt8(ascii: "k") {
                    out.append(byte: c)
                    if let k = op.key { out.append(k, op.keyLength) }
                } else {
                    out.append(t + start, i - start)
                }
            case UInt8(ascii: "c"):
                if let item { out.append(" c"); out.append(decimal: item.cas) }
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
                if let item { out.append(item.fetched ? " h1" : " h0") }
            case UInt8(ascii: "l"):
                if let item { out.append(" l"); out.append(decimal: UInt64(max(0, now - item.lastAccess))) }
            default: break
            }
        }
        _ = value
    }

    static func metaGet(_ op: inout KeyOp, store: ItemStore, out: OutputBuffer) {
        guard let key = op.key else { return }
        let now = op.now
        store.counters.cmdGet += 1
        var found = store.find(key, op.keyLength, hash: op.hash, now: now)
        if found == nil && op.meta.has("N") {
            // Autovivify: create an empty item and report a miss-with-win ("W").
            let exp = absoluteExpiry(op.meta.vivifyTTL, now: now)
            _ = store.store(mode: .add, key: key, keyLength: op.keyLength, hash: op.hash, flags: 0, expiry: exp,
                            value: key, valueLength: 0, casIn: 0, now: now)
            store.counters.getMisses += 1
            if let it = store.find(key, op.keyLength, hash: op.hash, now: now) {
                writeMetaHit(op, it: it, now: now, out: out, extra: " W")
            } else {
                out.append("EN\r\n")
            }
            return
        }
        guard let it = found else {
            store.counters.getMisses += 1
            if !op.meta.has("q") { out.append("EN\r\n") }
            return
        }
        store.counters.getHits += 1
        let hitBefore = it.fetched
        if op.meta.has("T") {
            store.counters.cmdTouch += 1
            store.counters.touchHits += 1
            it.expiry = absoluteExpiry(op.meta.ttl, now: now)
        }
        let last = it.lastAccess
        // Report h and l as they were before this access.
        it.fetched = hitBefore
        writeMetaHit(op, it: it, now: now, out: out, extra: "", lastAccess: last)
        store.bump(it, now: now)
        found = nil
    }

    static func writeMetaHit(_ op: KeyOp, it: Item, now: Int64, out: OutputBuffer, extra: StaticString, lastAccess: Int64? = nil) {
        let withValue = op.meta.has("v")
        out.reserve(it.valueLength + 64)
        if withValue {
            out.append("VA ")
            out.append(decimal: UInt64(it.valueLength))
        } else {
            out.append("HD")
        }
        returnFlags(op, item: it, now: now, out: out, value: withValue)
        out.append(extra)
        out.appendCRLF()
        if withValue {
            out.append(it.value, it.valueLength)
            out.appendCRLF()
        }
    }

    static func metaSet(_ op: inout KeyOp, store: ItemStore, out: OutputBuffer) {
        guard let key = op.key else { return }
        let m = op.meta
        let mode: StoreMode
        switch m.mode {
        case UInt8(ascii: "E"), UInt8(ascii: "e"): mode = .add
        case UInt8(ascii: "A"), UInt8(ascii: "a"): mode = .append
        case UInt8(ascii: "P"), UInt8(ascii: "p"): mode = .prepend
        case UInt8(ascii: "R"), UInt8(ascii: "r"): mode = .replace
        default: mode = .set
        }
        let (r, cas) = store.store(mode: mode, key: key, keyLength: op.keyLength, hash: op.hash, flags: m.clientFlags,
                                   expiry: absoluteExpiry(m.ttl, now: op.now), value: op.value ?? UnsafeRawPointer(key),
                                   valueLength: op.valueLength, casIn: m.cas, now: op.now)
        switch r {
        case .stored:
            if m.has("q") { return }
            out.append("HD")
            if m.has("c") || m.has("k") || m.has("O") {
                let it = store.findRaw(key, op.keyLength, hash: op.hash)
                _ = cas
                returnFlags(op, item: it, now: op.now, out: out, value: false)
            }
            out.appendCRLF()
        case .notStored: out.append("NS"); returnFlags(op, item: nil, now: op.now, out: out, value: false); out.appendCRLF()
        case .exists: out.append("EX"); returnFlags(op, item: nil, now: op.now, out: out, value: false); out.appendCRLF()
        case .notFound: out.append("NF"); returnFlags(op, item: nil, now: op.now, out: out, value: false); out.appendCRLF()
        case .tooLarge: out.append("SERVER_ERROR object too large for cache\r\n")
        case .outOfMemory: out.append("SERVER_ERROR out of memory storing object\r\n")
        }
    }

    static func metaDelete(_ op: inout KeyOp, store: ItemStore, out: OutputBuffer) {
        guard let key = op.key else { return }
        let r = store.delete(key: key, keyLength: op.keyLength, hash: op.hash, casIn: op.meta.cas, now: op.now)
        switch r {
        case .stored:
            if op.meta.has("q") { return }
            out.append("HD")
        case .exists: out.append("EX")
        default:
            out.append("NF")
        }
        returnFlags(op, item: nil, now: op.now, out: out, value: false)
        out.appendCRLF()
    }

    static func metaArithmetic(_ op: inout KeyOp, store: ItemStore, out: OutputBuffer) {
        guard let key = op.key else { return }
        let m = op.meta
        let incr = !(m.mode == UInt8(ascii: "D") || m.mode == UInt8(ascii: "d") || m.mode == UInt8(ascii: "-"))
        var r = store.delta(key: key, keyLength: op.keyLength, hash: op.hash, incr: incr, by: m.delta, casIn: m.cas, now: op.now)
        if case .notFound = r, m.has("N") {
            var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
            let len = withUnsafeMutableBytes(of: &digits) { formatUInt64(m.initial, into: $0.baseAddress.unsafelyUnwrapped) }
            let (sr, cas) = withUnsafeBytes(of: &digits) { b in
                store.store(mode: .add, key: key, keyLength: op.keyLength, hash: op.hash, flags: 0,
                            expiry: absoluteExpiry(m.vivifyTTL, now: op.now), value: b.baseAddress.unsafelyUnwrapped,
                            valueLength: len, casIn: 0, now: op.now)
            }
            if sr == .stored { r = .value(m.initial, cas) }
        }
        switch r {
        case .notFound:
            out.append("NF"); returnFlags(op, item: nil, now: op.now, out: out, value: false); out.appendCRLF()
        case .exists:
            out.append("EX"); returnFlags(op, item: nil, now: op.now, out: out, value: false); out.appendCRLF()
        case .nonNumeric: out.append("CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")
        case .outOfMemory: out.append("SERVER_ERROR out of memory\r\n")
        case .value(let v, _):
            let it = store.findRaw(key, op.keyLength, hash: op.hash)
            if m.has("v") {
                var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
                let len = withUnsafeMutableBytes(of: &digits) { formatUInt64(v, into: $0.baseAddress.unsafelyUnwrapped) }
                out.append("VA ")
                out.append(decimal: UInt64(len))
                returnFlags(op, item: it, now: op.now, out: out, value: true)
                out.appendCRLF()
                withUnsafeBytes(of: &digits) { out.append($0.baseAddress.unsafelyUnwrapped, len) }
                out.appendCRLF()
            } else {
                if m.has("q") { return }
                out.append("HD")
                returnFlags(op, item: it, now: op.now, out: out, value: false)
                out.appendCRLF()
            }
        }
    }
}
