import Foundation
import LibellulaTestSupport
import Testing

/// Mounting HostFS over FUSE, using it from host tools and unmounting gives back every
/// descriptor: the FUSE session and channels, the LWKT CPUs' epoll instances and eventfds,
/// HostFS's per-name host descriptors and its inotify watcher.
@Suite("FUSE mount descriptor teardown", .serialized)
struct MountDescriptorTests {
    static func cycle() throws {
        guard let rig = try MountRig.make(hostBacked: true) else { return }
        defer { rig.close() }
        let r = try shell("""
            mkdir -p d1 d2 && for i in $(seq 1 40); do echo $i > d1/f$i; done && cp d1/* d2/ \
            && ls -lR . > /dev/null && cat d2/f7
            """, in: rig.path, timeout: 60)
        #expect(r.status == 0 && r.output == "7\n", "\(r.output)")
    }

    @Test("Mount, use and unmount HostFS three times: no descriptor stays behind")
    func mountCyclesLeaveNothingBehind() async throws {
        if let why = MountRig.skipReason() { print(why); return }
        try Self.cycle()   // whatever opens once per process
        let baseline = FDCensus.take()
        for _ in 0..<3 { try Self.cycle() }
        var after = FDCensus.take()
        for _ in 0..<40 where after.total > baseline.total + 2 {
            try await Task.sleep(for: .milliseconds(50))
            after = FDCensus.take()
        }
        #expect(after.total <= baseline.total + 2,
                "before \(baseline), after 3 HostFS mounts: \(after), grew \(after.growth(since: baseline))")
    }
}
