import Foundation
import Testing
import LWKT
@testable import Services

@Suite(.serialized) struct BasicHTTPTests {
    @Test func servesDemoIndexAndHead() async throws {
        let s = try TestServer()
        let port = s.port
        let (get, head) = try await blocking {
            let c = try RawClient(port: port)
            c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\nHEAD /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            return (c.response(), c.response(head: true))
        }
        #expect(get?.status == 200)
        #expect(get?.text.contains("Libellula") == true)
        #expect(get?.headers["content-type"] == "text/html; charset=utf-8")
        #expect(head?.status == 200)
        #expect(head?.headers["content-length"] == "6")
        #expect(head?.body.isEmpty == true)
        let report = try await s.shutdown()
        #expect(report.leakedThreads == 0)
    }
}
