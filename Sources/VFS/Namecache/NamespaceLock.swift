import Glibc
import LWKT
import Synchronization

/// An exclusive lock that records its owner and waits with `VFSWait` (never blocks a CPU in
/// the kernel). Used for the namecache's writer section, a mount's rename serialisation,
/// MemFS's state and an open file's offset. Held only for short, non-blocking work.
final class NamespaceLock: @unchecked Sendable {
    private let word = Atomic<UInt>(0)

    init() {}

    /// Takes the lock, waiting as `VFSWait` describes.
    @inline(__always)
    func lock() {
        let me = VFSWait.owner
        if word.compareExchange(expected: 0, desired: me, ordering: .acquiring).exchanged { return }
        var spins = 0
        while true {
            if word.load(ordering: .relaxed) == 0,
               word.compareExchange(expected: 0, desired: me, ordering: .acquiring).exchanged { return }
            VFSWait.relax(&spins)
        }
    }

    /// Takes the lock if it is free.
    @inline(__always)
    func tryLock() -> Bool {
        word.compareExchange(expected: 0, desired: VFSWait.owner, ordering: .acquiring).exchanged
    }

    /// Releases the lock; the caller must own it (checked in debug builds).
    @inline(__always)
    func unlock() {
        assert(word.load(ordering: .relaxed) == VFSWait.owner, "namespace lock released by a thread that does not own it")
        word.store(0, ordering: .releasing)
    }

    /// Whether the calling thread owns the lock.
    var isOwnedByCaller: Bool { word.load(ordering: .relaxed) == VFSWait.owner }

    /// Runs `body` with the lock held.
    @inline(__always)
    func withLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        lock()
        defer { unlock() }
        return try body()
    }
}
