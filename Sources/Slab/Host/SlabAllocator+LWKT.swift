import LWKT
import Synchronization

extension SlabAllocator {
    /// The name under which a system keeps its slab (``LWKTSystem/attachment(_:as:orMake:)``).
    static let attachmentKey = "slab"

    /// The slab of `system`: one per system, made on the first call (with
    /// `configuration`; later calls return the same allocator and ignore theirs), with its
    /// arena pointers in the CPUs' globaldata. Services create ``MallocType``s on it
    /// (``makeType(name:limit:)``) rather than allocators of their own. The system holds it
    /// weakly: keep a reference while you use it.
    public static func shared(for system: LWKTSystem, configuration: SlabConfiguration = .init()) -> SlabAllocator {
        let slab = system.attachment(attachmentKey, as: SlabAllocator.self) {
            SlabAllocator(unregisteredFor: system, configuration: configuration)
        }
        slab.installInGlobaldata()
        return slab
    }

    /// Creates an allocator for an LWKT system: one arena per CPU, used without locks by
    /// that CPU's thread, and a locked shared pool for every other thread (the fallback
    /// for threads that are not the system's CPUs: plain threads, tasks on the global
    /// executor, CPUs of another system).
    ///
    /// If the system has no slab yet, this one becomes it (as with
    /// ``shared(for:configuration:)``) and its arenas go into the CPUs' globaldata; if it
    /// has one, this is a private allocator (for tests and benchmarks) whose CPUs find
    /// their arena by CPU index, one compare slower.
    ///
    /// A remote free that finds its zone off the owner's list posts the zone to the
    /// owner's mailbox, and the post that finds the mailbox empty sends the owner a
    /// passive IPI, which drains it. Keep the allocator alive while chunks of it are still
    /// being freed.
    public convenience init(system: LWKTSystem, configuration: SlabConfiguration = .init()) {
        self.init(unregisteredFor: system, configuration: configuration)
        if system.attach(SlabAllocator.attachmentKey, self) { installInGlobaldata() }
    }

    convenience init(unregisteredFor system: LWKTSystem, configuration: SlabConfiguration) {
        self.init(cpuCount: system.cpuCount, system: system, configuration: configuration,
                  notify: SlabAllocator.notifyByPassiveIPI,
                  wake: { type in LWKT.wakeup(WaitChannel(type), in: system) })
    }

    /// Whether this allocator is its system's slab, reached through the globaldata.
    public var isSystemSlab: Bool { installed.load(ordering: .acquiring) }

    /// Sends the passive IPI that makes CPU `index` drain its mailbox.
    static let notifyByPassiveIPI: @convention(c) (UnsafeMutableRawPointer?, Int) -> Void = { ctx, index in
        guard let ctx, let sys = SlabControl(raw: ctx).system else { return }
        let system = Unmanaged<LWKTSystem>.fromOpaque(sys).takeUnretainedValue()
        guard index >= 0 && index < system.cpus.count else { return }
        system.cpus[index].sendPassiveIPI(SlabAllocator.notificationHandler, ctx, index)
    }

    /// Allocates, and with ``SlabFlags/waitUntilFreed`` sleeps (an LWKT `tsleep`, not a
    /// spin) while `type` is at its limit, until frees bring it back under. Off an LWKT
    /// thread it polls with short task sleeps instead. Throws `CancellationError` when the
    /// task is cancelled while waiting; returns nil under the same conditions as the
    /// synchronous call otherwise.
    public func allocateWaiting(_ size: Int, type: MallocType? = nil, flags: SlabFlags = [.waitUntilFreed],
                                waitTimeout: Duration? = nil) async throws -> UnsafeMutableRawPointer? {
        let t = type ?? defaultType
        let attempt = flags.union(.mayReturnNil)
        if let p = allocate(size, type: t, flags: attempt) { return p }
        guard flags.contains(.waitUntilFreed) else {
            return allocate(size, type: t, flags: flags)
        }
        let deadline = waitTimeout.map { ContinuousClock.now + $0 }
        let channel = WaitChannel(t)
        while true {
            try Task.checkCancellation()
            if let deadline, ContinuousClock.now >= deadline { return nil }
            t.waiters.enter()
            defer { t.waiters.leave() }
            if CPU.current != nil {
                // The interlock re-checks the limit once we are visible to wakers, so a
                // free between our failed attempt and the sleep is not lost. The timeout
                // bounds any wakeup a non-CPU freer might still race past.
                _ = try await LWKT.tsleep(on: channel, timeout: .milliseconds(50)) { t.exactBytes() < t.limit }
            } else {
                try await Task.sleep(for: .milliseconds(1))
            }
            if let p = allocate(size, type: t, flags: attempt) { return p }
        }
    }
}
