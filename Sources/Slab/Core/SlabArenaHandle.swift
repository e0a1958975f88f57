/// One arena of a ``SlabAllocator``, addressed explicitly.
///
/// For hosts that run their own per-CPU threads (and for tests): the thread that owns
/// arena `index` calls these instead of relying on the current-CPU lookup. Using one
/// handle from two threads at once corrupts the arena.
public struct SlabArenaHandle: @unchecked Sendable {
    /// The allocator this arena belongs to.
    public let allocator: SlabAllocator
    /// The arena (CPU) index.
    public let index: Int

    /// Allocates as this arena; see ``SlabAllocator/allocate(_:type:flags:)``.
    @inline(__always)
    public func allocate(_ size: Int, type: MallocType? = nil, flags: SlabFlags = []) -> UnsafeMutableRawPointer? {
        allocator.allocate(size, type: type, flags: flags, arenaIndex: index)
    }

    /// Frees as this arena: a local free for its own chunks, a remote free otherwise.
    @inline(__always)
    public func free(_ p: UnsafeMutableRawPointer, type: MallocType? = nil) {
        allocator.free(p, type: type, arenaIndex: index)
    }

    /// Takes back the zones other threads posted to this arena's mailbox.
    public func poll() {
        allocator.arena(at: index).drainMailbox()
    }

    /// Gives every parked free zone of this arena back to the OS.
    public func trim() {
        allocator.arena(at: index).drainMailbox()
        allocator.arena(at: index).releaseAllFreeZones()
    }
}
