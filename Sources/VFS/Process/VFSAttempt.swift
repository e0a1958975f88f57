import Glibc
import LWKT

/// A non-blocking attempt at a synchronous VFS operation on an LWKT CPU: the parking API's
/// way of running the one implementation of each operation without ever making the CPU wait.
///
/// Rules of this file:
/// 1. While an attempt is active on a thread, every point where the operation could wait
///    gives up instead: a record lock (or open-file offset lock) that is taken gives up with
///    `contended(lock)`, a file-system call that would enter the host kernel gives up with
///    `needsHost`. Giving up throws (the thrown error does not matter: the attempt's
///    `outcome` says what happened, even if a caller on the way swallowed or mapped it).
/// 2. An operation gives up only before its first change: every VFS operation takes its
///    locks before it changes anything, and a host file system's changes are host calls,
///    so an operation that gave up can be run again from the start. A body made of several
///    operations must keep that property (nothing unrepeatable before its last wait point).
/// 3. Attempts do not nest, and the body is synchronous, so the state lives in the CPU
///    thread's thread-local slot for exactly the duration of `run`.
final class VFSAttempt {
    /// Why an attempt gave up.
    enum Outcome {
        case finished
        case contended(RecordLock)
        case needsHost
    }

    private(set) var active = false
    private(set) var outcome: Outcome = .finished

    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k) { p in
            if let p { Unmanaged<VFSAttempt>.fromOpaque(p).release() }
        }
        return k
    }()

    /// The calling thread's attempt object (made once per thread).
    private static var mine: VFSAttempt {
        if let p = pthread_getspecific(key) { return Unmanaged<VFSAttempt>.fromOpaque(p).takeUnretainedValue() }
        let a = VFSAttempt()
        pthread_setspecific(key, Unmanaged.passRetained(a).toOpaque())
        return a
    }

    /// The attempt running on the calling thread, if any.
    @inline(__always)
    static var current: VFSAttempt? {
        guard let p = pthread_getspecific(key) else { return nil }
        let a = Unmanaged<VFSAttempt>.fromOpaque(p).takeUnretainedValue()
        return a.active ? a : nil
    }

    /// Runs `body` as a non-blocking attempt. Returns its result, or nil with the reason it
    /// gave up.
    static func run<R>(_ body: () throws(VFSError) -> R) -> (Result<R, VFSError>?, Outcome) {
        let a = mine
        assert(!a.active, "VFSAttempt rule 3: attempts do not nest")
        a.active = true
        a.outcome = .finished
        defer { a.active = false }
        let result: Result<R, VFSError>
        do throws(VFSError) { result = .success(try body()) } catch { result = .failure(error) }
        let o = a.outcome
        a.outcome = .finished
        if case .finished = o { return (result, o) }
        return (nil, o)
    }

    /// A host call is about to be made: in an attempt, give up (rule 1).
    @inline(__always)
    static func hostCall() throws(VFSError) {
        guard let a = current else { return }
        a.outcome = .needsHost
        throw .again
    }

    /// `lock` could not be taken at once: in an attempt, give up (rule 1); outside one,
    /// return (the caller then waits as usual).
    @inline(__always)
    static func giveUp(contending lock: RecordLock) throws(VFSError) {
        guard let a = current else { return }
        if case .finished = a.outcome { a.outcome = .contended(lock) }
        throw .again
    }
}
