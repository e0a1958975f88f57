import Foundation
import Testing
@testable import Services

/// HTTP conformance with real clients: Python's http.client and curl.
@Suite(.serialized) struct ConformanceTests {
    static let scriptPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Scripts/http_conformance.py").path

    @Test func pythonHTTPClient() async throws {
        guard let python = findTool(["/usr/bin/python3", "/usr/local/bin/python3", "/root/.pyenv/shims/python3"]) else {
            print("skipping: python3 not installed (Scripts/test.sh installs it)")
            return
        }
        let s = try TestServer()
        let port = s.port
        let result = try await blocking { runTool(python, [Self.scriptPath, String(port)]) }
        try await s.shutdown()
        #expect(result?.0 == 0, "\(result?.1 ?? "did not run")")
        #expect(result?.1.contains("checks passed") == true)
    }

    @Test func curlKeepAliveAndConditional() async throws {
        guard let curl = findTool(["/usr/bin/curl", "/usr/local/bin/curl"]) else {
            print("skipping: curl not installed (Scripts/test.sh installs it)")
            return
        }
        let s = try TestServer()
        let base = "http://127.0.0.1:\(s.port)"
        // Three URLs in one curl run: it reuses the connection (num_connects 0 after the first).
        let r = try await blocking {
            runTool(curl, ["-s", "--max-time", "10", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
                           "-w", "%{http_code} %{num_connects}\\n",
                           "\(base)/hello.txt", "\(base)/style.css", "\(base)/docs/"])
        }
        #expect(r?.0 == 0)
        let lines = r?.1.split(separator: "\n").map(String.init) ?? []
        #expect(lines == ["200 1", "200 0", "200 0"])
        // Range and a conditional request by date, as curl sends them.
        let range = try await blocking { runTool(curl, ["-s", "--max-time", "10", "-r", "0-3", "\(base)/hello.txt"]) }
        #expect(range?.1 == "hell")
        let cond = try await blocking {
            runTool(curl, ["-s", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "-z", "Sat, 01 Jan 2050 00:00:00 GMT",
                           "\(base)/hello.txt"])
        }
        #expect(cond?.1 == "304")
        let report = try await s.shutdown()
        #expect(report.leakedThreads == 0)
    }
}
