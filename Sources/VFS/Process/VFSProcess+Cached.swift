extension VFSProcess {
    /// Attributes of the object at `path` (following a final symlink) when the namecache alone
    /// can answer: every component cached and, for a host file system, still valid. Never calls
    /// into the host and never blocks, so an LWKT CPU may call it directly; nil means "not
    /// cached", and the caller takes the slow way (``stat(_:)`` off the CPU). A cached negative
    /// entry anywhere on the path throws `ENOENT`.
    public func cachedStat(_ path: String) throws(VFSError) -> FileAttributes? {
        switch fastLookup(path, follow: true, wantAttributes: true) {
        case .found(let a): return a
        case .error(let e): throw e
        case .type, .fallback: return nil
        }
    }

    /// ``cachedStat(_:)`` of a path given as bytes (a slice of a request, say): the same
    /// answer, and no `String` is made, so it allocates nothing.
    public func cachedStat(bytes path: UnsafeBufferPointer<UInt8>) throws(VFSError) -> FileAttributes? {
        switch fastLookup(bytes: path, follow: true, wantAttributes: true) {
        case .found(let a): return a
        case .error(let e): throw e
        case .type, .fallback: return nil
        }
    }
}
