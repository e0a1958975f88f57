import CFUSE
import FUSE
import Foundation
import Glibc
import LWKT
import Services
import Testing

/// The FUSE channels' counters: requests and errors by operation, service time, per CPU
/// channel, and how a running `libellula mount --stats` shows them on `/_stats`,
/// `/_stats.json`, `/metrics` and in `libellula stat`.
@Suite(.serialized) struct MountStatisticsTests {
    static let binary = MountLifecycleTests.binary

    /// Operations done through the mount are counted under their names, the failed ones as
    /// errors of their operation, and every answered request is timed on its channel's CPU
    /// (MemFS: the reader answers; HostFS: host calls go to the channel's workers).
    @Test(arguments: [false, true]) func requestsAndErrorsByOperationAndServiceTime(hostBacked: Bool) throws {
        guard let rig = try MountRig.make(hostBacked: hostBacked) else { return }
        defer { rig.close() }
        let m = rig.path
        let r = try shell("""
            set -e
            mkdir '\(m)/d1' '\(m)/d2' '\(m)/d3'
            echo hello > '\(m)/d1/f'
            cat '\(m)/d1/f' >/dev/null
            # Three RMDIRs of a non-empty directory: ENOTEMPTY errors.
            for i in 1 2 3; do rmdir '\(m)/d1' 2>/dev/null && exit 1; done
            stat '\(m)/missing' 2>/dev/null && exit 1
            echo done
            """, timeout: 60)
        #expect(r.status == 0 && r.output.hasSuffix("done\n"), "\(r.output)")
        let s = rig.server.fullStatistics
        let ops = s.requestsByOpcode, errors = s.errorsByOpcode
        #expect((ops["mkdir"] ?? 0) >= 3, "\(ops)")
        #expect((ops["rmdir"] ?? 0) >= 3 && (errors["rmdir"] ?? 0) >= 3, "requests \(ops) errors \(errors)")
        #expect((ops["lookup"] ?? 0) >= 1 && (ops["write"] ?? 0) >= 1, "\(ops)")
        #expect(errors["mkdir"] == nil, "\(errors)")
        // Totals agree with the per-operation counts on every channel.
        for c in s.channels {
            #expect(c.requests == c.requestsByOpcode.values.reduce(0, +), "cpu\(c.cpu): \(c)")
            #expect(c.errors == c.errorsByOpcode.values.reduce(0, +), "cpu\(c.cpu): \(c)")
        }
        let timed = s.channels.reduce(Int64(0)) { $0 + ($1.latency?.count ?? 0) }
        #expect(timed > 0)
        #expect(rig.system.latencies.fuseRequest.merged().count == timed)
        // The JSON form round-trips (what --stats-file writes and /_stats.json carries).
        let back = try JSONDecoder().decode(FUSEStatistics.self, from: JSONEncoder().encode(s))
        #expect(back == s)
    }

    /// `libellula mount --stats ADDR`: the mount's statistics pages and `libellula stat`
    /// show the channels while it runs.
    @Test func mountServesStatisticsPages() throws {
        if let why = MountRig.skipReason() { print(why); return }
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            print("skipping: \(Self.binary) not built")
            return
        }
        guard have("curl") else { print("skipping: curl missing (Scripts/test.sh installs Scripts/test-deps.txt)"); return }
        let base = "/tmp/libellula-fuse-stats-\(getpid())"
        try FileManager.default.createDirectory(atPath: base + "/mnt", withIntermediateDirectories: true)
        defer {
            _ = lb_fuse_kernel_unmount(base + "/mnt", 1)
            try? FileManager.default.removeItem(atPath: base)
        }
        let r = try shell("""
            '\(Self.binary)' mount '\(base)/mnt' --memfs --cpus 2 --stats 127.0.0.1:0 > '\(base)/log' 2>&1 & pid=$!
            i=0; until grep -q 'statistics on' '\(base)/log' && grep -q ' \(base)/mnt ' /proc/mounts; do
              i=$((i+1)); [ $i -lt 300 ] || { cat '\(base)/log'; kill $pid; exit 3; }; sleep 0.05
            done
            url=$(sed -n 's|.*statistics on \\(http://[0-9.:]*\\)/_stats.*|\\1|p' '\(base)/log')
            mkdir '\(base)/mnt/a'; echo x > '\(base)/mnt/a/f'; rmdir '\(base)/mnt/a' 2>/dev/null
            curl -sf "$url/_stats.json" > '\(base)/stats.json' || echo "json failed"
            curl -sf "$url/metrics" > '\(base)/metrics.txt' || echo "metrics failed"
            curl -sf "$url/_stats" > '\(base)/page.html' || echo "page failed"
            '\(Self.binary)' stat --url "$url" > '\(base)/stat.txt' 2>&1 || echo "stat failed"
            '\(Self.binary)' stat --url "$url" --watch --interval 0.3 --iterations 2 > '\(base)/watch.txt' 2>&1 || echo "watch failed"
            kill -TERM $pid; wait $pid; echo "exit $?"
            """, timeout: 60)
        #expect(!r.timedOut && r.output.hasSuffix("exit 0\n"), "\(r.output)")
        let json = FileManager.default.contents(atPath: base + "/stats.json") ?? Data()
        let doc = try? ServerStatistics.decoder().decode(ServerStatistics.self, from: json)
        #expect(doc?.fuse?.mountPoint == base + "/mnt")
        #expect(doc?.fuse?.channels.count == 2)
        #expect((doc?.fuse?.requestsByOpcode["mkdir"] ?? 0) >= 1)
        #expect((doc?.fuse?.errorsByOpcode["rmdir"] ?? 0) >= 1, "\(String(describing: doc?.fuse))")
        #expect(doc?.latency["fuse_request"].map { $0.count > 0 } == true)
        let metrics = String(decoding: FileManager.default.contents(atPath: base + "/metrics.txt") ?? Data(), as: UTF8.self)
        #expect(metrics.contains("# TYPE libellula_fuse_requests_total counter"))
        #expect(metrics.contains("libellula_fuse_requests_total{cpu=\"0\",op=\"mkdir\"}") || metrics.contains("libellula_fuse_requests_total{cpu=\"1\",op=\"mkdir\"}"), "\(metrics)")
        #expect(metrics.contains("libellula_fuse_errors_total{"))
        #expect(metrics.contains("# TYPE libellula_fuse_request_seconds histogram"))
        let page = String(decoding: FileManager.default.contents(atPath: base + "/page.html") ?? Data(), as: UTF8.self)
        #expect(page.contains("FUSE mount") && page.contains("Requests by operation"))
        let stat = String(decoding: FileManager.default.contents(atPath: base + "/stat.txt") ?? Data(), as: UTF8.self)
        #expect(stat.contains("FUSE mount \(base)/mnt") && stat.contains("mkdir") && stat.contains("rmdir"), "\(stat)")
        let watch = String(decoding: FileManager.default.contents(atPath: base + "/watch.txt") ?? Data(), as: UTF8.self)
        #expect(watch.contains("FUSE \(base)/mnt") && watch.contains("err/s"), "\(watch)")
    }
}
