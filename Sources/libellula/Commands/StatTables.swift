import LWKT

/// Prints an LWKT snapshot as terminal tables.
enum StatTables {
    static func print(_ snap: LWKTSnapshot) {
        let rows: [(String, CPUCounter)] = [
            ("jobs (kernel)", .jobsKernel), ("jobs (user)", .jobsUser), ("jobs (interrupt)", .jobsInterrupt),
            ("actor jobs", .actorJobs), ("IPIs received", .ipiReceived), ("IPIs sent active", .ipiSentActive),
            ("IPIs sent passive", .ipiSentPassive), ("passive→active", .ipiPassivePromoted),
            ("ring publishes", .ipiPublishes), ("wakeups sent", .ipiWakeups), ("wakeups avoided", .ipiWakeupsAvoided),
            ("sender stalls", .ipiSenderStalls), ("nested drains", .ipiNestedDrains), ("inbox received", .inboxReceived),
            ("critical deferrals", .criticalDeferrals), ("sleeps", .sleeps), ("timers fired", .timerFired),
            ("I/O events", .ioEvents), ("tsleeps", .tsleeps), ("wakeup IPIs", .wakeupIPIs),
            ("yields (switched)", .yieldSwitches), ("token contention", .tokenContended),
            ("threads spawned", .threadsSpawned), ("cpusyncs", .cpusyncs),
        ]
        var header = "counter".padding(toLength: 22, withPad: " ", startingAt: 0)
        for c in snap.cpus { header += c.name.leftPad(12) }
        Swift.print("Per-CPU statistics")
        Swift.print(header)
        for (label, counter) in rows {
            var line = label.padding(toLength: 22, withPad: " ", startingAt: 0)
            for c in snap.cpus { line += String(c.counters[counter.name] ?? 0).leftPad(12) }
            Swift.print(line)
        }
        Swift.print("")
        Swift.print("IPI matrix (messages, row = source, column = target)")
        var mh = "".padding(toLength: 8, withPad: " ", startingAt: 0)
        for c in snap.cpus { mh += c.name.leftPad(12) }
        Swift.print(mh)
        for (s, row) in snap.ipiMatrix.enumerated() {
            var line = "cpu\(s)".padding(toLength: 8, withPad: " ", startingAt: 0)
            for v in row { line += String(v).leftPad(12) }
            Swift.print(line)
        }
        if !snap.giant.isEmpty {
            Swift.print("")
            Swift.print("Giant coverage (token \(snap.giantToken.name): \(snap.giantToken.acquisitions) acquisitions, \(snap.giantToken.contentions) contended)")
            for g in snap.giant {
                Swift.print("  \(g.name.padding(toLength: 30, withPad: " ", startingAt: 0)) \(g.mpSafe ? "MP-safe    " : "needs Giant") calls \(g.calls), Giant taken \(g.giantAcquisitions), contended \(g.contended), held \(g.holdNanos / 1000) µs")
            }
        }
    }
}

extension String {
    func leftPad(_ n: Int) -> String {
        count >= n ? self : String(repeating: " ", count: n - count) + self
    }
}
