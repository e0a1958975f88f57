import CLibellula
import Glibc
import Synchronization

/// Tells HostFS when its host directories change behind its back, through one inotify
/// instance. Every directory node that HostFS hands out is watched; each event in a
/// directory advances that directory's *generation* word. A namecache record of a HostFS
/// name remembers the generation of its directory at the moment the name was last checked
/// against the host; while the word still holds that value, nothing in the directory has
/// changed since, and the record is used without asking the host (the lock-free walk takes
/// it). The first lookup after a change checks the name with the host again.
///
/// Rules of this file:
/// 1. A generation word is 0 while its directory is not watched (inotify refused the watch,
///    or the watch is gone). Such a directory's names are stamped with the `clock` word
///    instead, which the reader thread advances every `validity` (time-bounded validity,
///    like nginx's `open_file_cache_valid`); with no validity they are checked with the
///    host on every use. Records are never stamped with 0.
/// 2. A queue overflow (`IN_Q_OVERFLOW`) advances every watched directory's generation, so
///    every cached name below the mount is checked again, and then (outside `lock`) calls
///    the overflow handlers: the namecache drops the mount's positive entries, since events
///    were lost and nothing cached below the mount can be trusted (`Namecache.dropPositives`).
/// 3. `table` and `buffer` are touched only with `lock` held: by the reader thread and by
///    `settle` (which read the descriptor and apply what they read under it, so events are
///    applied in the kernel's order), by `watch` (a resolution) and by a node's `deinit`; a
///    node leaves the table before it is freed, so no event touches a freed node. The lock
///    is a `NamespaceLock`: a CPU that waits for it keeps answering IPIs.
final class HostFSWatcher: @unchecked Sendable {
    /// Events that can change which names a directory holds or what they are.
    static let nameEvents = UInt32(IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB
                                   | IN_DELETE_SELF | IN_MOVE_SELF | IN_MODIFY | IN_CLOSE_WRITE)

    let fd: Int32
    /// The pipe whose write end wakes the reader thread to stop (both ends close-on-exec).
    let stopPipe: (read: Int32, write: Int32)
    private let lock = NamespaceLock()
    private var table: [Int32: [ObjectIdentifier: Unmanaged<HostFSNode>]] = [:]
    private static let bufferSize = 64 * 1024
    private let buffer = UnsafeMutableRawPointer.allocate(byteCount: HostFSWatcher.bufferSize, alignment: 8)
    /// Events read, overflows seen, watches refused (for tests and statistics).
    let events = Atomic<Int>(0)
    let overflows = Atomic<Int>(0)
    let refusals = Atomic<Int>(0)
    /// Advanced every `validity` by the reader thread: the validity word of unwatched directories.
    let clock: UnsafeMutablePointer<Atomic<UInt64>>
    /// How long a name in an unwatched directory is trusted (nil: never).
    let validity: Duration?
    /// For tests: refuse every watch, as inotify does at its limits.
    var refuseWatches = false
    /// Called after a queue overflow has been applied (rule 2); guarded by `lock`.
    private var overflowHandlers: [@Sendable () -> Void] = []
    /// Overflows applied under `lock` whose handlers have not run yet.
    private let overflowPending = Atomic<Bool>(false)

    /// Adds a handler to run after each queue overflow (outside the watcher's lock).
    func onOverflow(_ handler: @escaping @Sendable () -> Void) {
        lock.withLock { () in overflowHandlers.append(handler) }
    }

    /// Runs the overflow handlers if an overflow was applied (never with `lock` held).
    private func runOverflowHandlers() {
        guard overflowPending.exchange(false, ordering: .acquiringAndReleasing) else { return }
        let handlers = lock.withLock { () in overflowHandlers }
        for h in handlers { h() }
    }

    /// Starts the reader thread; nil when inotify is not available.
    init?(validity: Duration?) {
        self.validity = validity
        clock = .allocate(capacity: 1)
        clock.initialize(to: Atomic(1))
        let ifd = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard ifd >= 0 else { return nil }
        var p: [Int32] = [0, 0]
        guard lb_pipe_cloexec(&p) == 0 else { Glibc.close(ifd); return nil }
        fd = ifd
        stopPipe = (p[0], p[1])
        var tid = pthread_t()
        let me = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&tid, nil, { arg in
            guard let arg else { return nil }
            Unmanaged<HostFSWatcher>.fromOpaque(arg).takeRetainedValue().readLoop()
            return nil
        }, me)
        if rc == 0 { pthread_detach(tid) } else { Unmanaged<HostFSWatcher>.fromOpaque(me).release() }
    }

    deinit {
        clock.deinitialize(count: 1)
        clock.deallocate()
        buffer.deallocate()
        Glibc.close(fd)
        Glibc.close(stopPipe.read)
        Glibc.close(stopPipe.write)
    }

    /// Ends the reader thread (the watcher is freed once it has left).
    func stop() {
        var b: UInt8 = 1
        _ = Glibc.write(stopPipe.write, &b, 1)
    }

    /// Watches the directory `node` and sets its generation word to a live value; leaves it
    /// at 0 when inotify refuses (watch limit, a file system without inotify).
    func watch(_ node: HostFSNode) {
        let wd = refuseWatches ? -1 : inotify_add_watch(fd, node.procPath, Self.nameEvents | UInt32(IN_ONLYDIR))
        guard wd >= 0 else {
            refusals.wrappingAdd(1, ordering: .relaxed)
            return
        }
        lock.withLock { () in
            table[wd, default: [:]][ObjectIdentifier(node)] = Unmanaged.passUnretained(node)
            node.watchDescriptor = wd
            node.generation.pointee.store(1, ordering: .releasing)
        }
    }

    /// Forgets `node` (from its deinit); removes the watch when no other node shares it.
    func forget(_ node: HostFSNode) {
        let wd = node.watchDescriptor
        guard wd >= 0 else { return }
        let last = lock.withLock { () -> Bool in
            table[wd]?[ObjectIdentifier(node)] = nil
            if table[wd]?.isEmpty == true {
                table[wd] = nil
                return true
            }
            return false
        }
        if last { _ = inotify_rm_watch(fd, wd) }
    }

    /// Applies every event the kernel has queued so far, on the calling thread. The kernel
    /// queues an event before the system call that caused it returns, so after `settle()`
    /// every host change made before it is visible to the next lookup.
    func settle() {
        lock.withLock { () in
            while true {
                let got = Glibc.read(fd, buffer, Self.bufferSize)
                if got <= 0 { break }
                apply(buffer, got)
            }
        }
        runOverflowHandlers()
    }

    /// Handles a queue overflow as if the kernel had reported one (for tests: a real
    /// overflow needs more than `max_queued_events` unread events).
    func injectOverflow() {
        let size = MemoryLayout<inotify_event>.size
        let event = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
        defer { event.deallocate() }
        event.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        event.storeBytes(of: Int32(-1), toByteOffset: 0, as: Int32.self)
        event.storeBytes(of: UInt32(IN_Q_OVERFLOW), toByteOffset: 4, as: UInt32.self)
        lock.withLock { () in apply(event, size) }
        runOverflowHandlers()
    }

    private func readLoop() {
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: stopPipe.read, events: Int16(POLLIN), revents: 0)]
        while true {
            fds[0].revents = 0
            fds[1].revents = 0
            let timeout: Int32 = validity.map { Int32(clamping: max(1, $0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000)) } ?? -1
            let n = poll(&fds, 2, timeout)
            if n == 0 {
                // A validity period has passed: names in unwatched directories are checked again.
                let next = clock.pointee.load(ordering: .relaxed) &+ 1
                clock.pointee.store(next == 0 ? 1 : next, ordering: .releasing)
                continue
            }
            if n < 0 { if errno == EINTR { continue } else { return } }
            if fds[1].revents != 0 { return }
            settle()
        }
    }

    /// Advances the generations named by a batch of events (with `lock` held).
    private func apply(_ buffer: UnsafeMutableRawPointer, _ count: Int) {
        var offset = 0
        let header = MemoryLayout<inotify_event>.size
        do {
            while offset + header <= count {
                let wd = buffer.load(fromByteOffset: offset, as: Int32.self)
                let mask = buffer.load(fromByteOffset: offset + 4, as: UInt32.self)
                let nameLength = Int(buffer.load(fromByteOffset: offset + 12, as: UInt32.self))
                offset += header + nameLength
                events.wrappingAdd(1, ordering: .relaxed)
                if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                    overflows.wrappingAdd(1, ordering: .relaxed)
                    for (_, nodes) in table { for (_, n) in nodes { n._withUnsafeGuaranteedRef { $0.advance() } } }
                    overflowPending.store(true, ordering: .releasing)
                    continue
                }
                guard let nodes = table[wd] else { continue }
                let gone = mask & UInt32(IN_IGNORED) != 0
                for (_, n) in nodes {
                    n._withUnsafeGuaranteedRef { node in
                        if gone {
                            node.generation.pointee.store(0, ordering: .releasing)
                            node.watchDescriptor = -1
                        } else {
                            node.advance()
                        }
                    }
                }
                if gone { table[wd] = nil }
            }
        }
    }
}
