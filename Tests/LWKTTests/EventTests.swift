import Testing
import Synchronization
import Foundation
@testable import LWKT

@Suite("Descriptor events")
struct EventTests {
    @Test func readinessWakesTheWaitingThreadOnItsCPU() async throws {
        try await withSystem(cpus: 2) { system in
            var fds: [Int32] = [0, 0]
            #expect(pipe(&fds) == 0)
            let (r, w) = (fds[0], fds[1])
            defer { close(r); close(w) }
            _ = fcntl(r, F_SETFL, O_NONBLOCK)
            let res = Results()
            let t = LWKTThread.spawn(on: system.cpus[1], name: "reader") {
                do {
                    let ev = try await LWKT.wait(for: .readable, on: r)
                    if ev.contains(.readable) && CPU.current?.id == 1 { res.ready.add(1, ordering: .relaxed) }
                    var buf = [UInt8](repeating: 0, count: 16)
                    let n = read(r, &buf, 16)
                    res.items.store(n, ordering: .relaxed)
                    try LWKT.unregister(fd: r)
                } catch {}
            }
            try await Task.sleep(for: .milliseconds(20))
            #expect(res.ready.load(ordering: .relaxed) == 0)
            let msg: [UInt8] = [1, 2, 3]
            #expect(write(w, msg, 3) == 3)
            await t.join()
            #expect(res.ready.load(ordering: .relaxed) == 1)
            #expect(res.items.load(ordering: .relaxed) == 3)
            #expect(system.cpus[1].counter(.ioEvents) >= 1)
        }
    }

    @Test func cancellingADescriptorWaitThrows() async throws {
        try await withSystem(cpus: 1) { system in
            var fds: [Int32] = [0, 0]
            #expect(pipe(&fds) == 0)
            let rfd = fds[0], wfd = fds[1]
            defer { close(rfd); close(wfd) }
            let res = Results()
            let t = LWKTThread.spawn(on: system.cpus[0], name: "reader") {
                do { _ = try await LWKT.wait(for: .readable, on: rfd) } catch is CancellationError {
                    res.cancelled.add(1, ordering: .relaxed)
                } catch {}
            }
            try await Task.sleep(for: .milliseconds(10))
            t.cancel()
            await t.join()
            #expect(res.cancelled.load(ordering: .relaxed) == 1)
        }
    }

    @Test func badDescriptorGivesAClearError() async throws {
        try await withSystem(cpus: 1) { system in
            let msg = try await system.run(on: 0) { () -> String in
                do { _ = try await LWKT.wait(for: .readable, on: 987_654); return "no error" } catch { return "\(error)" }
            }
            #expect(msg.contains("epoll_ctl"))
        }
    }

    @Test func callsThatNeedACPUThrowOffOne() async {
        await #expect(throws: LWKTError.self) { try await LWKT.sleep(for: .milliseconds(1)) }
        await #expect(throws: LWKTError.self) { _ = try await LWKT.tsleep(on: WaitChannel(Results())) }
    }
}
