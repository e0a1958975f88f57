import Foundation
import LibellulaTestSupport
import Testing
@testable import Slab

/// The debug checks abort the process, so each case runs in a child: this test binary
/// re-executed with a filter naming ``DebugModeTests/crashScenarioHelper()`` and the
/// scenario in an environment variable.
@Suite("Debug mode reports misuse and aborts")
struct DebugModeTests {
    static let scenarioVariable = "LIBELLULA_SLAB_TEST_SCENARIO"

    /// Does nothing in a normal run; in a child, performs the misuse it is told to.
    @Test func crashScenarioHelper() throws {
        guard let name = ProcessInfo.processInfo.environment[Self.scenarioVariable] else { return }
        // Debug mode comes from LIBELLULA_SLAB_DEBUG, as it would in production.
        let slab = SlabAllocator(cpuCount: 1, configuration: .init(zoneRegionBytes: 64 << 20))
        let cpu = slab.arena(0)
        switch name {
        case "doubleFree":
            let p = try #require(cpu.allocate(48))
            cpu.free(p)
            cpu.free(p)
        case "remoteDoubleFree":
            let slab2 = SlabAllocator(cpuCount: 2, configuration: .init(zoneRegionBytes: 64 << 20))
            let p = try #require(slab2.arena(0).allocate(48))
            slab2.arena(1).free(p)
            slab2.arena(1).free(p)
        case "interiorPointer":
            let p = try #require(cpu.allocate(64))
            cpu.free(p + 8)
        case "neverAllocated":
            let p = try #require(cpu.allocate(64))
            // A chunk boundary past everything this zone has handed out.
            cpu.free(p + 64 * 100)
        case "foreignPointer":
            let p = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 16)
            cpu.free(p)
        case "writeAfterFree":
            let p = try #require(cpu.allocate(256))
            cpu.free(p)
            p.storeBytes(of: 0x41, toByteOffset: 100, as: UInt8.self)
            _ = cpu.allocate(256)
        case "limitExceeded":
            let t = slab.makeType(name: "tiny", limit: 4096)
            for _ in 0..<100 { _ = cpu.allocate(1024, type: t) }
        default:
            break
        }
        print("scenario \(name) did not abort")
    }

    struct Outcome {
        var signal: Int32?
        var stderr: String
    }

    func runScenario(_ name: String, debug: Bool = true) throws -> Outcome {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        var env = ProcessInfo.processInfo.environment
        env[Self.scenarioVariable] = name
        env[SlabConfiguration.debugEnvironmentVariable] = debug ? "1" : "0"
        // posix_spawn (LibellulaTestSupport), not Foundation's Process.
        let r = try Subprocess.run(executable, ["--testing-library", "swift-testing", "--filter", "crashScenarioHelper"],
                                   environment: env, output: .stderrOnly, timeout: 300)
        return Outcome(signal: r.signal, stderr: r.output)
    }

    @Test(arguments: [
        ("doubleFree", "libellula slab: double free"),
        ("remoteDoubleFree", "libellula slab: double free"),
        ("interiorPointer", "libellula slab: free of a pointer the allocator never handed out"),
        ("neverAllocated", "libellula slab: free of a pointer the allocator never handed out"),
        ("foreignPointer", "libellula slab: free of a pointer the allocator never handed out"),
        ("writeAfterFree", "libellula slab: write after free"),
        ("limitExceeded", "libellula slab: malloc limit exceeded"),
    ])
    func misuseIsReportedAndAborts(scenario: String, report: String) throws {
        let outcome = try runScenario(scenario)
        #expect(outcome.signal == SIGABRT, "scenario \(scenario): \(outcome.stderr)")
        #expect(outcome.stderr.contains(report), "scenario \(scenario) printed: \(outcome.stderr)")
    }

    @Test func writeAfterFreeReportNamesTheOffset() throws {
        let outcome = try runScenario("writeAfterFree")
        #expect(outcome.stderr.contains("byte offset 96"))
    }

    @Test func foreignPointersAreRejectedEvenWithoutDebugMode() throws {
        let outcome = try runScenario("foreignPointer", debug: false)
        #expect(outcome.signal == SIGABRT)
        #expect(outcome.stderr.contains("neither a zone chunk nor a live big allocation"))
    }

    @Test func debugModePoisonsFreedChunks() throws {
        let slab = SlabAllocator(cpuCount: 1, configuration: .init(zoneRegionBytes: 64 << 20, debug: true))
        let cpu = slab.arena(0)
        let p = try #require(cpu.allocate(128))
        let q = try #require(cpu.allocate(128))
        cpu.free(p)
        #expect(p.load(fromByteOffset: 8, as: UInt64.self) == SlabDebug.poisonWord)
        #expect(p.load(fromByteOffset: 120, as: UInt64.self) == SlabDebug.poisonWord)
        let r = try #require(cpu.allocate(128))   // passes the poison check
        #expect(r == p)
        cpu.free(q)
        cpu.free(r)
        #expect(slab.statistics().debug)
    }
}
