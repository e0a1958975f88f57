/// A packet buffer: a slab chunk with a control block, headroom for headers to be
/// prepended, and optionally more buffers chained behind it.
///
/// `Mbuf` is a plain pointer wrapper, copyable like a C pointer; exactly one holder owns
/// a packet at a time and that holder frees it (``free()``) on whatever CPU it finishes;
/// the slab returns the memory to the CPU that allocated it. Nothing here allocates.
public struct Mbuf: @unchecked Sendable, Equatable {
    @usableFromInline let h: UnsafeMutablePointer<MbufHeader>

    @usableFromInline init(_ h: UnsafeMutablePointer<MbufHeader>) { self.h = h }

    /// Rebuilds an mbuf from ``opaque`` (an IPI argument).
    @inlinable public init(opaque: UnsafeMutableRawPointer) {
        h = opaque.assumingMemoryBound(to: MbufHeader.self)
    }

    /// The pointer, for handing the mbuf through an IPI or a queue.
    @inlinable public var opaque: UnsafeMutableRawPointer { UnsafeMutableRawPointer(h) }

    /// Flags carried by a packet.
    public struct Flags: OptionSet, Sendable {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }
        /// The buffer is a large (64 KiB) cluster.
        public static let cluster = Flags(rawValue: 1 << 0)
        /// ``Mbuf/hash`` is valid.
        public static let hashValid = Flags(rawValue: 1 << 1)
        /// The transport checksum was verified by the device (or need not be).
        public static let checksumVerified = Flags(rawValue: 1 << 2)
        /// The transport checksum holds only the pseudo-header sum; the device completes it.
        public static let checksumPartial = Flags(rawValue: 1 << 3)
        /// The packet was forwarded to this CPU by another one.
        public static let forwarded = Flags(rawValue: 1 << 4)
        /// A big TCP segment the device will cut (TSO/GSO).
        public static let segmentationOffload = Flags(rawValue: 1 << 5)
    }

    /// Why a packet travels between CPUs.
    public enum Kind: UInt8, Sendable {
        /// A frame as read from an interface.
        case frame = 0
        /// An IPv4 packet whose header starts at `word0` (after reassembly).
        case ipv4 = 1
        /// An outgoing UDP payload: destination address in `word0`, destination port and
        /// source port in `word1` (high and low half), source address in `word2`.
        case udpOutput = 2
        /// An outgoing transport segment, complete with its checksum: destination in
        /// `word0`, protocol in `word1`.
        case ipOutput = 3
        /// An ARP cache update for this CPU: address in `word0`, hardware address in
        /// `word1` (high 16 bits) and `word2` (low 32 bits).
        case arpUpdate = 4
        /// A request (to CPU 0) to resolve the address in `word0` for CPU `word1`.
        case arpResolve = 5
    }

    // MARK: Data

    /// First valid byte of this buffer.
    @inlinable public var data: UnsafeMutableRawPointer { h.pointee.storage + Int(h.pointee.offset) }
    /// Valid bytes in this buffer.
    @inlinable public var length: Int {
        get { Int(h.pointee.length) }
        nonmutating set { h.pointee.length = Int32(newValue) }
    }
    /// Free bytes in front of the data.
    @inlinable public var headroom: Int { Int(h.pointee.offset) }
    /// Free bytes behind the data.
    @inlinable public var tailroom: Int { Int(h.pointee.capacity - h.pointee.offset - h.pointee.length) }
    /// Size of this buffer's data area.
    @inlinable public var capacity: Int { Int(h.pointee.capacity) }
    /// The bytes of this buffer.
    @inlinable public var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: data, count: length) }

    /// The next buffer of this packet.
    @inlinable public var next: Mbuf? {
        get { h.pointee.next.map(Mbuf.init) }
        nonmutating set { h.pointee.next = newValue?.h }
    }
    /// The next packet in a queue.
    @inlinable public var nextPacket: Mbuf? {
        get { h.pointee.nextPacket.map(Mbuf.init) }
        nonmutating set { h.pointee.nextPacket = newValue?.h }
    }

    /// Bytes in the whole chain.
    @inlinable public var packetLength: Int {
        var n = 0
        var m: UnsafeMutablePointer<MbufHeader>? = h
        while let c = m { n += Int(c.pointee.length); m = c.pointee.next }
        return n
    }

    @inlinable public var flags: Flags {
        get { Flags(rawValue: h.pointee.flags) }
        nonmutating set { h.pointee.flags = newValue.rawValue }
    }
    @inlinable public var kind: Kind {
        get { Kind(rawValue: h.pointee.kind) ?? .frame }
        nonmutating set { h.pointee.kind = newValue.rawValue }
    }
    /// The flow hash (see ``Flags/hashValid``).
    @inlinable public var hash: UInt32 {
        get { h.pointee.hash }
        nonmutating set { h.pointee.hash = newValue }
    }
    /// Index of the interface the packet arrived on.
    @inlinable public var interfaceIndex: Int {
        get { Int(h.pointee.interface) }
        nonmutating set { h.pointee.interface = UInt8(truncatingIfNeeded: newValue) }
    }
    /// Hand-off words.
    @inlinable public var words: (UInt32, UInt32, UInt32, UInt32) {
        get { (h.pointee.word0, h.pointee.word1, h.pointee.word2, h.pointee.word3) }
        nonmutating set {
            h.pointee.word0 = newValue.0; h.pointee.word1 = newValue.1
            h.pointee.word2 = newValue.2; h.pointee.word3 = newValue.3
        }
    }
    /// The stack a packet handed between CPUs belongs to (unretained).
    @inlinable public var stack: UnsafeMutableRawPointer? {
        get { h.pointee.stack }
        nonmutating set { h.pointee.stack = newValue }
    }
    /// Hand-off context pointer.
    @inlinable public var context: UnsafeMutableRawPointer? {
        get { h.pointee.context }
        nonmutating set { h.pointee.context = newValue }
    }

    // MARK: Editing

    /// Grows the data by `count` bytes at the front; returns the new start, or nil when
    /// the headroom is too small.
    @inlinable public func prepend(_ count: Int) -> UnsafeMutableRawPointer? {
        guard count >= 0, count <= headroom else { return nil }
        h.pointee.offset -= Int32(count)
        h.pointee.length += Int32(count)
        return data
    }

    /// Grows the data by `count` bytes at the back; returns where they start, or nil.
    @inlinable public func append(_ count: Int) -> UnsafeMutableRawPointer? {
        guard count >= 0, count <= tailroom else { return nil }
        let p = data + length
        h.pointee.length += Int32(count)
        return p
    }

    /// Copies `bytes` to the back of this buffer; false when they do not fit.
    @inlinable @discardableResult
    public func append(bytes: UnsafeRawBufferPointer) -> Bool {
        guard let p = append(bytes.count) else { return false }
        if let b = bytes.baseAddress, bytes.count > 0 { p.copyMemory(from: b, byteCount: bytes.count) }
        return true
    }

    /// Drops `count` bytes from the front of this buffer (false when it holds fewer).
    @inlinable @discardableResult
    public func trimFront(_ count: Int) -> Bool {
        guard count >= 0, count <= length else { return false }
        h.pointee.offset += Int32(count)
        h.pointee.length -= Int32(count)
        return true
    }

    /// Cuts the packet to `total` bytes, freeing buffers past the end.
    public func truncate(to total: Int) {
        var left = max(0, total)
        var m: Mbuf? = self
        var prev: Mbuf? = nil
        while let c = m {
            if left >= c.length { left -= c.length; prev = c; m = c.next; continue }
            c.length = left
            left = 0
            if c.length == 0, let p = prev {
                p.next = nil
                c.free()
                return
            }
            if let rest = c.next { c.next = nil; rest.free() }
            return
        }
    }

    /// Resets data to an empty buffer with `headroom` bytes in front.
    @inlinable public func reset(headroom: Int) {
        h.pointee.offset = Int32(min(max(0, headroom), capacity))
        h.pointee.length = 0
    }

    /// Links `tail` behind the last buffer of this packet.
    public func appendChain(_ tail: Mbuf) {
        var m = self
        while let n = m.next { m = n }
        m.next = tail
    }

    /// Copies `count` bytes starting at `offset` of the packet into `dest`; false when the
    /// packet is shorter.
    public func copy(from offset: Int, count: Int, into dest: UnsafeMutableRawPointer) -> Bool {
        guard offset >= 0, count >= 0 else { return false }
        var skip = offset
        var left = count
        var out = dest
        var m: Mbuf? = self
        while let c = m, left > 0 {
            if skip >= c.length { skip -= c.length; m = c.next; continue }
            let n = min(c.length - skip, left)
            out.copyMemory(from: c.data + skip, byteCount: n)
            out += n; left -= n; skip = 0
            m = c.next
        }
        return left == 0
    }

    /// The whole packet as an array (tests and diagnostics; allocates).
    public var array: [UInt8] {
        var a = [UInt8](repeating: 0, count: packetLength)
        a.withUnsafeMutableBytes { b in
            if let base = b.baseAddress { _ = copy(from: 0, count: b.count, into: base) }
        }
        return a
    }

    /// Frees every buffer of the packet (not the packets queued behind it).
    public func free() {
        var m: UnsafeMutablePointer<MbufHeader>? = h
        while let c = m {
            m = c.pointee.next
            Unmanaged<MbufPool>.fromOpaque(c.pointee.pool)._withUnsafeGuaranteedRef { $0.release(c) }
        }
    }
}

extension Mbuf {
    /// A copy of the whole packet in one new buffer from the same pool (nil when none is left).
    public func duplicate() -> Mbuf? {
        let pool = Unmanaged<MbufPool>.fromOpaque(h.pointee.pool).takeUnretainedValue()
        let n = packetLength
        guard let c = pool.allocate(forBytes: n, headroom: headroom < MbufPool.defaultHeadroom ? headroom : MbufPool.defaultHeadroom),
              let p = c.append(n) else { return nil }
        _ = copy(from: 0, count: n, into: p)
        c.h.pointee.flags = h.pointee.flags & ~Flags.cluster.rawValue | (c.h.pointee.flags & Flags.cluster.rawValue)
        c.h.pointee.kind = h.pointee.kind
        c.h.pointee.hash = h.pointee.hash
        c.words = words
        return c
    }
}
