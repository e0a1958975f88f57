import Foundation
import Testing
@testable import Services

/// `serve --net`: malformed settings are usage errors (status 64) that say what is wrong,
/// before anything is opened.
@Suite(.serialized) struct ServeNetOptionTests {
    @Test func badNetSettingsAreUsageErrors() async throws {
        guard libellulaBinary != nil else {
            print("skipping: the libellula binary is not built (swift build)")
            return
        }
        let cases: [([String], String)] = [
            (["--net", "wifi"], "--net wants host or tap:NAME"),
            (["--net", "tap:"], "a device name of 1 to 15 bytes"),
            (["--net", "tap:abcdefghijklmnop"], "a device name of 1 to 15 bytes"),
            (["--net", "tap:t0,address=10.0.0.300/24"], "address wants A or A/P"),
            (["--net", "tap:t0,address=10.0.0.1/33"], "the prefix length must be 1 to 32"),
            (["--net", "tap:t0,gateway=10.9.9.9"], "gateway 10.9.9.9 is not on 10.200.2.1/24"),
            (["--net", "tap:t0,mtu=9000"], "unknown setting 'mtu'"),
            (["--net", "tap:t0,steering=rss"], "steering wants ebpf or off"),
            (["--net", "tap:t0", "--http", "127.0.0.1:8080"], "is not an address of the own stack"),
            (["--net", "tap:t0,address=10.1.0.5/16,gateway=none", "--memcached", "[::1]:11211"], "is not an address of the own stack"),
        ]
        try await blocking {
            for (args, says) in cases {
                let r = try runLibellula(["serve"] + args)
                #expect(r?.status == 64, "\(args): \(r?.output ?? "")")
                #expect(r?.output.contains(says) == true, "\(args): \(r?.output ?? "")")
            }
        }
    }
}
