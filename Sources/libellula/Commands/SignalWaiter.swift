import Dispatch
import Glibc
import Synchronization

/// Catches SIGINT and SIGTERM from the moment it is made (so a signal that arrives while
/// the CPUs boot is kept, not lost), and lets a command wait for the first of them.
final class SignalWaiter: Sendable {
    private let queue = DispatchQueue(label: "libellula.signals")
    private let state = Mutex<(signal: Int32?, waiter: CheckedContinuation<Int32, Never>?)>((nil, nil))
    private nonisolated(unsafe) var sources: [DispatchSourceSignal] = []

    /// Starts catching SIGINT and SIGTERM (their default action, ending the process at once,
    /// is turned off while the waiter lives).
    init() {
        Glibc.signal(SIGINT, SIG_IGN)
        Glibc.signal(SIGTERM, SIG_IGN)
        for sig in [SIGINT, SIGTERM] {
            let s = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            s.setEventHandler { [weak self] in self?.received(sig) }
            s.resume()
            sources.append(s)
        }
    }

    deinit { for s in sources { s.cancel() } }

    private func received(_ sig: Int32) {
        let resume = state.withLock { s -> CheckedContinuation<Int32, Never>? in
            guard s.signal == nil else { return nil }
            s.signal = sig
            defer { s.waiter = nil }
            return s.waiter
        }
        resume?.resume(returning: sig)
    }

    /// Ends the wait as if `sig` had arrived (for a time limit such as `--seconds`).
    func fire(_ sig: Int32) { queue.async { self.received(sig) } }

    /// The first signal caught, waiting for it if none came yet.
    func wait() async -> Int32 {
        await withCheckedContinuation { c in
            let now = state.withLock { s -> Int32? in
                if let sig = s.signal { return sig }
                s.waiter = c
                return nil
            }
            if let now { c.resume(returning: now) }
        }
    }
}
