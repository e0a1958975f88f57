import CLibellula

// Ownership checks (DragonFly's KKASSERT): owner-only entry points state their rule with
// `assertCurrent()` / `CPU.assertInCritical()`. They are `assert`s: active in debug
// builds, compiled out of release builds.

extension CPU {
    /// Stops a debug build unless the caller runs on this CPU's thread. Free in release.
    @inlinable @inline(__always)
    public func assertCurrent(_ what: @autoclosure () -> String = "owner-only call",
                              file: StaticString = #fileID, line: UInt = #line) {
        assert(lb_current_cpu() == UnsafeMutableRawPointer(local),
               "\(what()) on \(CPU.current?.name ?? "a thread that is not a CPU"), but \(name) owns it",
               file: file, line: line)
    }

    /// Stops a debug build unless the caller runs on some CPU inside a critical section.
    @inlinable @inline(__always)
    public static func assertInCritical(_ what: @autoclosure () -> String = "call",
                                        file: StaticString = #fileID, line: UInt = #line) {
        assert(CPU.currentLocal.map { $0.pointee.critCount > 0 } ?? false,
               "\(what()) must run inside a critical section on a CPU", file: file, line: line)
    }

    /// Stops a debug build unless the caller runs on one of some system's CPUs.
    @inlinable @inline(__always)
    public static func assertOnCPU(_ what: @autoclosure () -> String = "call",
                                   file: StaticString = #fileID, line: UInt = #line) {
        assert(lb_current_cpu() != nil, "\(what()) must run on an LWKT CPU", file: file, line: line)
    }
}

/// The owner check for per-CPU objects that keep the address of their CPU's globaldata
/// (what `lb_current_cpu()` returns on that CPU's thread).
@inlinable @inline(__always)
func assertOwner(_ owner: UnsafeMutableRawPointer?, _ what: @autoclosure () -> String,
                 file: StaticString = #fileID, line: UInt = #line) {
    assert(owner == nil || lb_current_cpu() == owner, "\(what()) called off its owning CPU", file: file, line: line)
}

/// A value that belongs to one CPU (DragonFly's per-CPU data): it can be stored anywhere
/// and passed between threads, but only code running on its CPU may read or change it.
/// Debug builds check that on every access; release builds check nothing.
///
/// Use it instead of an ad-hoc `@unchecked Sendable` box around per-CPU state.
public struct CPUBound<Value>: @unchecked Sendable {
    // Sendable is sound because every access is confined to the owning CPU's thread.
    @usableFromInline final class Storage {
        @usableFromInline var value: Value
        init(_ value: Value) { self.value = value }
    }

    /// The CPU that owns the value.
    public let cpu: CPU
    @usableFromInline let storage: Storage
    @usableFromInline let owner: UnsafeMutableRawPointer

    /// Binds `value` to `cpu`. Creating it anywhere is fine; only access is checked.
    public init(_ value: Value, on cpu: CPU) {
        self.cpu = cpu
        storage = Storage(value)
        owner = UnsafeMutableRawPointer(cpu.local)
    }

    /// The value; read or write it only on ``cpu``.
    @inlinable
    public var value: Value {
        get {
            assert(lb_current_cpu() == owner, "CPUBound value of \(cpu.name) read on another thread")
            return storage.value
        }
        nonmutating set {
            assert(lb_current_cpu() == owner, "CPUBound value of \(cpu.name) written on another thread")
            storage.value = newValue
        }
    }

    /// Runs `body` with the value in place; only on ``cpu``.
    @inlinable
    public func withValue<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        assert(lb_current_cpu() == owner, "CPUBound value of \(cpu.name) used on another thread")
        return try body(&storage.value)
    }

    /// Whether the caller may access the value (it runs on ``cpu``).
    @inlinable public var isAccessible: Bool { lb_current_cpu() == owner }

    /// The storage as a retained opaque pointer, to carry the value in an IPI to its own
    /// CPU; the receiver takes it back with ``init(takingRetained:on:)``.
    func retainedOpaque() -> UnsafeMutableRawPointer { Unmanaged.passRetained(storage).toOpaque() }

    /// Takes back a pointer made by ``retainedOpaque()`` (once), on the owning `cpu`.
    init(takingRetained raw: UnsafeMutableRawPointer, on cpu: CPU) {
        self.cpu = cpu
        storage = Unmanaged<Storage>.fromOpaque(raw).takeRetainedValue()
        owner = UnsafeMutableRawPointer(cpu.local)
    }
}
