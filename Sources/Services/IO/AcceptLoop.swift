import LWKT

/// The one accept loop every service runs, one per listener on the listener's CPU: it
/// accepts until the thread is cancelled or the listener closes, backs off 10 ms after a
/// failing accept (one that is not merely "nothing yet", so a broken listener cannot spin
/// its CPU), and hands each connection to the service, which starts its thread.
///
/// Rules: runs on `listener`'s CPU; `handle` runs there too and must not block it (it
/// spawns the connection's thread and returns). The listener is closed when the loop ends.
public enum AcceptLoop {
    /// Runs the loop; `onError` hears each failing accept before the back-off.
    public static func run<L: StreamListener>(_ listener: L, onError: (SocketError) -> Void = { _ in },
                                              handle: (L.Connection) async -> Void) async {
        defer { listener.close() }
        while !Task.isCancelled {
            let conn: L.Connection
            do {
                conn = try await listener.accept()
            } catch {
                if error == .cancelled || error == .closed || Task.isCancelled { return }
                onError(error)
                do { try await LWKT.sleep(for: .milliseconds(10)) } catch { return }
                continue
            }
            await handle(conn)
        }
    }
}
