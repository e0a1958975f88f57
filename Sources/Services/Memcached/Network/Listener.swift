import LWKT

/// Errors from starting the memcached listeners.
public enum MemcachedNetworkError: Error, CustomStringConvertible {
    case badAddress(String)
    case socket(SocketError)

    public var description: String {
        switch self {
        case .badAddress(let a): return "not an IPv4 address: \(a)"
        case .socket(let e): return "cannot listen: \(e)"
        }
    }
}

/// The memcached service's accept side, on the shared socket layer (``StreamSocketStack``):
/// one listener per CPU, each accepting on its own CPU the connections the stack hashed to
/// it, and serving each on that CPU.
enum Listener {
    /// Accepts connections on the listener's CPU until cancelled, spawning one LWKT thread per
    /// connection on the same CPU.
    static func acceptLoop<L: StreamListener>(_ listener: L, service: MemcachedService) async {
        let cpu = listener.cpuID
        await AcceptLoop.run(listener) { conn in
            let store = service.stores[cpu]
            // memcached's maxconns_fast: over the limit, say so and close at once.
            if service.openConnections.add(1, ordering: .relaxed).newValue > service.maxConnections {
                service.openConnections.subtract(1, ordering: .relaxed)
                service.rejectedConnections.add(1, ordering: .relaxed)
                let refusal: StaticString = "ERROR Too many open connections\r\n"
                try? await conn.write(UnsafeRawBufferPointer(start: refusal.utf8Start, count: refusal.utf8CodeUnitCount),
                                      timeout: .milliseconds(100))
                await conn.close(linger: .milliseconds(10))
                return
            }
            store.counters.totalConnections += 1
            store.counters.currConnections += 1
            let holder = ThreadHolder()
            let box = ConnectionBox(conn)
            let t = LWKTThread.spawn(on: service.system.cpus[cpu], priority: .kernel, name: "memcached-conn") {
                var stream = ConnectionStream(connection: box.connection)
                let session = MemcachedSession(service: service, cpu: cpu, peer: "\(box.connection.peer)")
                await session.serve(&stream)
                await box.connection.close(linger: .milliseconds(100))
                store.counters.currConnections -= 1
                service.openConnections.subtract(1, ordering: .relaxed)
                if let me = holder.thread { service.untrack(me) }
            }
            holder.thread = t
            service.track(t)
            if service.stopping.load(ordering: .acquiring) { t.cancel() }
        }
    }
}

/// Moves a connection into the thread that serves it (its only user from then on).
final class ConnectionBox<C: StreamConnection>: @unchecked Sendable {
    let connection: C
    init(_ c: C) { connection = c }
}

/// Lets a connection thread find its own `LWKTThread` to untrack itself.
final class ThreadHolder: @unchecked Sendable {
    var thread: LWKTThread?
}
