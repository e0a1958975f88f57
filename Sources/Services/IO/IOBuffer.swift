import Slab
#if canImport(Glibc)
import Glibc
#endif

/// A byte buffer with a read index and a write index, for a connection's input or output.
/// Bytes in `readIndex..<writeIndex` are readable; writes go at `writeIndex`.
///
/// Writes never truncate: they make room by moving the readable bytes to the front, then by
/// growing (a bigger chunk, the bytes copied, the old chunk freed). When the buffer may not
/// grow that far (``maxCapacity``) or memory runs out, the write is refused as a whole and
/// ``failed`` is set; it stays set until ``clear()``, so the owner sees it and closes the
/// connection rather than send a cut response.
///
/// Rules: one owner at a time (a connection's thread, or a CPU it handed the buffer to for
/// the length of a message, which the IPI rings order). Its chunks come from a
/// ``SlabAllocator`` when one is given (a chunk freed on another CPU is a remote free), from
/// `malloc` otherwise.
public final class IOBuffer: @unchecked Sendable {
    /// The indexes and chunk, behind a pointer: Swift checks exclusive access to a class's
    /// stored `var`s at run time wherever it cannot prove it (`swift_beginAccess` on every
    /// append), and never checks a pointer's pointee.
    struct State {
        var baseAddress: UnsafeMutableRawPointer
        var capacity: Int
        var readIndex = 0
        var writeIndex = 0
        var failed = false
    }
    private let state: UnsafeMutablePointer<State>

    /// Start of the bytes (moves when the buffer grows or shrinks).
    public private(set) var baseAddress: UnsafeMutableRawPointer {
        @inline(__always) get { state.pointee.baseAddress }
        @inline(__always) set { state.pointee.baseAddress = newValue }
    }
    /// Bytes the current chunk holds.
    public private(set) var capacity: Int {
        @inline(__always) get { state.pointee.capacity }
        @inline(__always) set { state.pointee.capacity = newValue }
    }
    /// The first readable byte.
    public var readIndex: Int {
        @inline(__always) get { state.pointee.readIndex }
        @inline(__always) set { state.pointee.readIndex = newValue }
    }
    /// Where the next write goes (one past the last readable byte).
    public var writeIndex: Int {
        @inline(__always) get { state.pointee.writeIndex }
        @inline(__always) set { state.pointee.writeIndex = newValue }
    }
    /// A write was refused (limit or memory); cleared by ``clear()``.
    public private(set) var failed: Bool {
        @inline(__always) get { state.pointee.failed }
        @inline(__always) set { state.pointee.failed = newValue }
    }
    /// The capacity it starts with and shrinks back to.
    public let initialCapacity: Int
    /// The most it may grow to.
    public let maxCapacity: Int
    let allocator: SlabAllocator?
    let type: MallocType?

    /// A buffer of `capacity` bytes from `allocator` (or `malloc` when none is given, or
    /// when the slab cannot give the first chunk: the buffer is never left without one).
    public init(capacity: Int, maxCapacity: Int = 1 << 30, allocator: SlabAllocator? = nil, type: MallocType? = nil) {
        let c = max(16, capacity)
        self.allocator = allocator
        self.type = type
        let base = IOBuffer.allocate(c, allocator, type)
            ?? malloc(c) ?? UnsafeMutableRawPointer.allocate(byteCount: c, alignment: 16)
        state = .allocate(capacity: 1)
        state.initialize(to: State(baseAddress: base, capacity: c))
        initialCapacity = c
        self.maxCapacity = max(c, maxCapacity)
    }

    /// A buffer whose first chunk must come from `allocator` (so a limit on `type` holds):
    /// nil when the slab cannot give it.
    public init?(slabCapacity capacity: Int, maxCapacity: Int, allocator: SlabAllocator, type: MallocType?) {
        let c = max(16, capacity)
        guard let p = allocator.allocate(c, type: type, flags: .mayReturnNil) else { return nil }
        self.allocator = allocator
        self.type = type
        state = .allocate(capacity: 1)
        state.initialize(to: State(baseAddress: p, capacity: c))
        initialCapacity = c
        self.maxCapacity = max(c, maxCapacity)
    }

    deinit {
        IOBuffer.free(baseAddress, allocator, type)
        state.deinitialize(count: 1)
        state.deallocate()
    }

    static func allocate(_ n: Int, _ allocator: SlabAllocator?, _ type: MallocType?) -> UnsafeMutableRawPointer? {
        if let allocator { return allocator.allocate(n, type: type, flags: .mayReturnNil) }
        return malloc(n)
    }

    /// Frees a chunk to whichever allocator it came from (the slab knows its own chunks).
    static func free(_ p: UnsafeMutableRawPointer, _ allocator: SlabAllocator?, _ type: MallocType?) {
        if let allocator, allocator.usableSize(p) != nil { allocator.free(p, type: type) } else { Glibc.free(p) }
    }

    /// Readable bytes.
    @inline(__always) public var readableBytes: Int { writeIndex &- readIndex }

    /// Room after `writeIndex` without moving or growing.
    @inline(__always) public var writableBytes: Int { capacity &- writeIndex }

    /// The readable bytes.
    @inline(__always) public var readable: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: baseAddress + readIndex, count: readableBytes)
    }

    /// The room after `writeIndex`, for a read from a socket (then ``didWrite(_:)``).
    @inline(__always) public var writable: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: baseAddress + writeIndex, count: writableBytes)
    }

    /// Counts `n` bytes written into ``writable``.
    @inline(__always) public func didWrite(_ n: Int) { writeIndex &+= n }

    /// Drops `n` readable bytes (at most the readable ones).
    @inline(__always) public func consume(_ n: Int) {
        readIndex &+= min(n, readableBytes)
        if readIndex == writeIndex { readIndex = 0; writeIndex = 0 }
    }

    /// Records a failure found elsewhere (a part of this buffer's content that could not be
    /// held whole).
    public func markFailed() { failed = true }

    /// Empties the buffer and forgets a failure.
    @inline(__always) public func clear() {
        readIndex = 0
        writeIndex = 0
        failed = false
    }

    /// Makes room for `n` more bytes after `writeIndex`: moves the readable bytes to the
    /// front, then grows (doubling). Returns false, changing nothing but ``failed``, when
    /// that would pass ``maxCapacity`` or memory runs out.
    @inline(__always) @discardableResult
    public func reserve(_ n: Int) -> Bool {
        if _fastPath(writeIndex &+ n <= capacity) { return true }
        return makeRoom(n)
    }

    @inline(never)
    func makeRoom(_ n: Int) -> Bool {
        let live = readableBytes
        if readIndex > 0 && live + n <= capacity {
            if live > 0 { memmove(baseAddress, baseAddress + readIndex, live) }
            readIndex = 0
            writeIndex = live
            return true
        }
        guard n <= maxCapacity - live else { failed = true; return false }
        var c = capacity
        while c < live + n { c = min(maxCapacity, c * 2) }
        guard let p = IOBuffer.allocate(c, allocator, type) else { failed = true; return false }
        if live > 0 { p.copyMemory(from: baseAddress + readIndex, byteCount: live) }
        IOBuffer.free(baseAddress, allocator, type)
        baseAddress = p
        capacity = c
        readIndex = 0
        writeIndex = live
        return true
    }

    /// Shrinks an empty buffer that grew past `limit` back to its initial capacity.
    public func trim(limit: Int = 1 << 20) {
        guard capacity > limit, readableBytes == 0, let p = IOBuffer.allocate(initialCapacity, allocator, type) else { return }
        IOBuffer.free(baseAddress, allocator, type)
        baseAddress = p
        capacity = initialCapacity
        readIndex = 0
        writeIndex = 0
    }

    // MARK: - Writes (each whole or refused, never cut)

    /// Appends `n` bytes from `p`.
    @inline(__always) public func append(_ p: UnsafeRawPointer, _ n: Int) {
        guard reserve(n) else { return }
        (baseAddress + writeIndex).copyMemory(from: p, byteCount: n)
        writeIndex &+= n
    }

    @inline(__always) public func append(_ s: StaticString) {
        append(s.utf8Start, s.utf8CodeUnitCount)
    }

    @inline(__always) public func append(byte b: UInt8) {
        guard reserve(1) else { return }
        baseAddress.storeBytes(of: b, toByteOffset: writeIndex, as: UInt8.self)
        writeIndex &+= 1
    }

    /// Appends `v` in decimal.
    @inline(__always) public func append(decimal v: UInt64) {
        guard reserve(20) else { return }
        var n = 1
        var x = v
        while x >= 10 { x /= 10; n += 1 }
        var i = writeIndex + n
        x = v
        repeat {
            i -= 1
            baseAddress.storeBytes(of: UInt8(0x30 + x % 10), toByteOffset: i, as: UInt8.self)
            x /= 10
        } while x > 0
        writeIndex &+= n
    }

    /// Appends `v` in decimal, with a minus sign when negative.
    @inline(__always) public func append(signed v: Int64) {
        if v < 0 { append(byte: 0x2D); append(decimal: v.magnitude) } else { append(decimal: UInt64(v)) }
    }

    @inline(__always) public func appendCRLF() {
        guard reserve(2) else { return }
        baseAddress.storeBytes(of: 0x0A0D as UInt16, toByteOffset: writeIndex, as: UInt16.self)
        writeIndex &+= 2
    }

    /// Appends a Swift string's UTF-8 (slow paths).
    public func append(string: String) {
        var s = string
        s.withUTF8 { b in if let a = b.baseAddress { append(a, b.count) } }
    }

    /// Appends bytes.
    public func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { b in if let a = b.baseAddress { append(a, b.count) } }
    }
}
