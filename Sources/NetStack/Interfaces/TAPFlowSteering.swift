import CLibellula
import Glibc

/// Whether a ``TAPInterface`` steers the frames the kernel sends it to their owner CPUs'
/// queues (``TAPInterface/installFlowSteering(cpus:)``).
public enum TAPFlowSteering: Sendable, Equatable, CustomStringConvertible {
    /// No program installed: the kernel picks queues by its own flow table, which learns a
    /// flow from the queue our replies leave on, so a connection's first SYN lands on any
    /// CPU and is forwarded to its owner.
    case off
    /// The ``TAPSteeringProgram`` for `cpus` CPUs (`instructions` long) chooses every queue.
    case ebpf(cpus: Int, instructions: Int)
    /// Installing the program failed; `reason` says why (forwarding as with ``off``).
    case unavailable(String)

    /// Whether the kernel steers by the stack's hash.
    public var isActive: Bool { if case .ebpf = self { true } else { false } }

    public var description: String {
        switch self {
        case .off: "off (the kernel's own queue choice; first packets of a flow are forwarded between CPUs)"
        case .ebpf(let cpus, let n): "eBPF Toeplitz steering over \(cpus) queues (\(n) instructions)"
        case .unavailable(let why): "unavailable (\(why)); first packets of a flow are forwarded between CPUs"
        }
    }
}

extension TAPInterface {
    /// Loads the ``TAPSteeringProgram`` for a stack of `cpus` CPUs into the kernel and
    /// makes it choose the queue of every frame sent to this TAP, so each frame arrives on
    /// the queue of the CPU that owns it. Needs root (CAP_BPF or CAP_SYS_ADMIN, and
    /// CAP_NET_ADMIN) and Linux 4.16 or later; on failure the TAP keeps the kernel's own
    /// choice and the result says why. The program stays until ``removeFlowSteering()`` or
    /// ``close()``.
    @discardableResult
    public func installFlowSteering(cpus: Int) -> TAPFlowSteering {
        let result = loadSteering(cpus: cpus)
        setFlowSteering(result)
        return result
    }

    private func loadSteering(cpus: Int) -> TAPFlowSteering {
        guard cpus >= 1, cpus <= queueCount, cpus <= 128 else {
            return .unavailable("\(cpus) CPUs for \(queueCount) queues")
        }
        guard let fd = queueDescriptor(0) else { return .unavailable("the TAP is closed") }
        let program = TAPSteeringProgram.instructions(cpus: cpus)
        let words = program.map(\.encoded)
        var log = [CChar](repeating: 0, count: 1 << 16)
        let prog = words.withUnsafeBufferPointer { w in
            log.withUnsafeMutableBufferPointer { l in
                lb_bpf_load_socket_filter(w.baseAddress, Int32(w.count), l.baseAddress, UInt32(l.count))
            }
        }
        if prog < 0 {
            let e = -prog
            if e == EPERM || e == EACCES { return .unavailable("loading an eBPF program needs root (CAP_BPF): \(Self.errorText(e))") }
            if e == ENOSYS { return .unavailable("this kernel has no bpf() system call") }
            let verifier = log.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                .split(separator: "\n").suffix(3).joined(separator: " / ")
            return .unavailable("the kernel refused the steering program: \(Self.errorText(e))\(verifier.isEmpty ? "" : ": \(verifier)")")
        }
        let r = lb_tap_set_steering_ebpf(fd, prog)
        _ = lb_close(prog)
        if r < 0 {
            let e = -r
            if e == ENOTTY || e == EINVAL { return .unavailable("this kernel's TAP has no TUNSETSTEERINGEBPF (Linux 4.16+): \(Self.errorText(e))") }
            return .unavailable("TUNSETSTEERINGEBPF: \(Self.errorText(e))")
        }
        return .ebpf(cpus: cpus, instructions: program.count)
    }

    /// Removes any steering program from the device (also one a previous process left on a
    /// persistent TAP), so the kernel picks queues itself.
    public func removeFlowSteering() {
        if let fd = queueDescriptor(0) { _ = lb_tap_set_steering_ebpf(fd, -1) }
        setFlowSteering(.off)
    }

    static func errorText(_ e: Int32) -> String { "\(String(cString: strerror(e))) (errno \(e))" }
}
