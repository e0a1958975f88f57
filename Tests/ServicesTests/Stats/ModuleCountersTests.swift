@testable import Services
import Testing

/// The module counter sections' names and rows (what the page, `/metrics` and `stat` show).
@Suite struct ModuleCountersTests {
    @Test func namesBecomeSnakeCaseWhicheverWayTheyArrive() {
        #expect(ModuleCounters.snakeCase("tcpSACKRecoveries") == "tcp_sack_recoveries")
        #expect(ModuleCounters.snakeCase("tcpSackRecoveries") == "tcp_sack_recoveries")
        #expect(ModuleCounters.snakeCase("tcpRTOExpiries") == "tcp_rto_expiries")
        #expect(ModuleCounters.snakeCase("ipv4Received") == "ipv4_received")
        #expect(ModuleCounters.snakeCase("tcp_segments_sent") == "tcp_segments_sent")
        #expect(ModuleCounters.snakeCase("tcpFinWait1") == "tcp_fin_wait1")
        #expect(ModuleCounters.snakeCase("tcpChallengeACKs") == "tcp_challenge_acks")
        #expect(ModuleCounters.snakeCase("tcpDelayedACKs") == "tcp_delayed_acks")
        #expect(ModuleCounters.snakeCase("tcpChallengeAcks") == "tcp_challenge_acks")
        #expect(ModuleCounters.snakeCase("tcpTSOSegmentsSent") == "tcp_tso_segments_sent")
    }

    /// What `libellula stat` reads back from `/_stats.json` names each counter as the page does.
    @Test func namesSurviveTheJSONRoundTrip() throws {
        let raw: [String: [[String: Int64]]] = ["net 10.0.0.1": [["tcpChallengeACKs": 4, "tcpSACKRecoveries": 1, "ipv4Received": 9]]]
        let published = try #require(ModuleCounters.normalized(raw))
        let data = try ServerStatistics.encoder().encode(published)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("\"tcp_challenge_acks\":4") && text.contains("\"tcp_sack_recoveries\":1"))
        let back = try ServerStatistics.decoder().decode([String: [[String: Int64]]].self, from: data)
        let names = ModuleCounters.rows(try #require(back["net 10.0.0.1"])).map(\.name)
        #expect(names == ModuleCounters.rows(try #require(raw["net 10.0.0.1"])).map(\.name))
        #expect(names == ["ipv4_received", "tcp_challenge_acks", "tcp_sack_recoveries"])
    }

    @Test func rowsAreSortedAndAllZeroRowsLeftOut() {
        let rows = ModuleCounters.rows([["tcpRetransmits": 0, "framesSent": 3, "dropTruncated": 0],
                                        ["tcpRetransmits": 2, "framesSent": 0]])
        #expect(rows.map(\.name) == ["frames_sent", "tcp_retransmits"])
        #expect(rows.map(\.values) == [[3, 0], [0, 2]])
    }

    @Test func pageAndMetricsShowEachSection() {
        let sections: [String: [[String: Int64]]] = ["net 10.0.0.1": [["tcpChallengeACKs": 4], ["tcpChallengeACKs": 1]]]
        let html = ModuleCounters.html(sections)
        #expect(html.contains("Counters: net 10.0.0.1") && html.contains("<td>tcp_challenge_acks</td><td>4</td><td>1</td>"))
        var w = PrometheusExposition.Writer()
        ModuleCounters.prometheus(sections, into: &w)
        #expect(w.text.contains("# TYPE libellula_module_counter untyped"))
        #expect(w.text.contains("libellula_module_counter{section=\"net 10.0.0.1\",counter=\"tcp_challenge_acks\",cpu=\"1\"} 1"))
        #expect(ModuleCounters.html(nil).isEmpty)
    }
}
