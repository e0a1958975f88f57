import Synchronization

/// Counter sections that modules above LWKT (the network stack, a service) add to
/// ``LWKTSnapshot``: a module registers a named provider that returns one dictionary of
/// counters per CPU, and every snapshot calls it. LWKT knows nothing of the module's
/// types; the provider reads the module's own per-CPU counter blocks (lock-free loads).
///
/// Rules of this file: the registry is touched only by registration, removal and
/// snapshots (never on a hot path), under its own mutex; providers must not block.
public struct StatSectionRegistration: Sendable, Hashable {
    let id: Int
}

/// One system's registered providers.
final class StatSectionRegistry: Sendable {
    typealias Provider = @Sendable () -> [[String: Int64]]
    private let entries = Mutex<[(id: Int, name: String, provider: Provider)]>([])
    private let nextID = Atomic<Int>(1)

    func add(_ name: String, _ provider: @escaping Provider) -> StatSectionRegistration {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        entries.withLock { $0.append((id, name, provider)) }
        return StatSectionRegistration(id: id)
    }

    func remove(_ r: StatSectionRegistration) {
        entries.withLock { $0.removeAll { $0.id == r.id } }
    }

    /// Every section, by name (a later registration of a name replaces an earlier one).
    func collect() -> [String: [[String: Int64]]] {
        let list = entries.withLock { $0.map { ($0.name, $0.provider) } }
        var out: [String: [[String: Int64]]] = [:]
        for (name, p) in list { out[name] = p() }
        return out
    }
}

extension LWKTSystem {
    /// Adds a section `name` to this system's snapshots: `provider` returns one counter
    /// dictionary per CPU (index = CPU id). Keep the returned value to remove it.
    public func registerStatSection(_ name: String,
                                    _ provider: @escaping @Sendable () -> [[String: Int64]]) -> StatSectionRegistration {
        statSections.add(name, provider)
    }

    /// Removes a section added with ``registerStatSection(_:_:)``.
    public func unregisterStatSection(_ registration: StatSectionRegistration) {
        statSections.remove(registration)
    }

    /// The registered sections' counters now (what ``LWKTSnapshot/sections`` holds).
    public func statSectionCounters() -> [String: [[String: Int64]]] { statSections.collect() }
}
