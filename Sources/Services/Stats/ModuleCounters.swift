import LWKT

/// Counter sections that modules above LWKT register with their system (the network
/// stack's `net ADDRESS` section: segments, retransmits, SACK recoveries, challenge ACKs,
/// cookies, drops by reason, connections by state), as ``LWKTSnapshot/sections`` carries
/// them: one dictionary per CPU. This file turns them into the page's tables, the
/// Prometheus families and `libellula stat`'s tables, with the same names everywhere.
///
/// Rules: read side only (rendering a snapshot); nothing here runs on a hot path.
public enum ModuleCounters {
    /// `name` in snake_case, the one key style of `/_stats.json`: `tcpSACKRecoveries` and
    /// its JSON round trip `tcpSackRecoveries` both become `tcp_sack_recoveries`.
    public static func snakeCase(_ name: String) -> String {
        let chars = Array(name)
        var out = ""
        for (i, c) in chars.enumerated() {
            if c.isUppercase, i > 0 {
                let previous = chars[i - 1]
                let nextIsLower = i + 1 < chars.count && chars[i + 1].isLowercase
                // A plural acronym ("ACKs") stays one word: its "s" does not start a new one.
                let pluralS = i + 1 < chars.count && chars[i + 1] == "s"
                    && (i + 2 == chars.count || !chars[i + 2].isLowercase)
                if previous.isLowercase || previous.isNumber || (previous.isUppercase && nextIsLower && !pluralS) { out += "_" }
            }
            out += c.lowercased()
        }
        return out
    }

    /// `sections` with every counter name in snake_case, as the snapshot is published: the
    /// JSON keeps these names as they are and its decoder's camel-casing maps back to them.
    public static func normalized(_ sections: [String: [[String: Int64]]]?) -> [String: [[String: Int64]]]? {
        sections?.mapValues { perCPU in
            perCPU.map { d in Dictionary(d.map { (snakeCase($0.key), $0.value) }, uniquingKeysWith: +) }
        }
    }

    /// One section's rows: counter name (snake_case) and its value per CPU, sorted by
    /// name; rows that are zero on every CPU are left out.
    public static func rows(_ perCPU: [[String: Int64]]) -> [(name: String, values: [Int64])] {
        var names = Set<String>()
        for d in perCPU { names.formUnion(d.keys) }
        var rows: [(name: String, values: [Int64])] = []
        for key in names {
            let values = perCPU.map { $0[key] ?? 0 }
            if values.allSatisfy({ $0 == 0 }) { continue }
            rows.append((snakeCase(key), values))
        }
        return rows.sorted { $0.name < $1.name }
    }

    /// The page's tables, one per section (empty when no module registered one).
    static func html(_ sections: [String: [[String: Int64]]]?) -> String {
        guard let sections, !sections.isEmpty else { return "" }
        var h = ""
        for (name, perCPU) in sections.sorted(by: { $0.key < $1.key }) {
            let rows = rows(perCPU)
            h += "</div><h2>Counters: \(StatsPage.esc(name))</h2><div>"
            if rows.isEmpty { h += "<p>All zero.</p>"; continue }
            h += "<table class=counters><tr><th>counter</th>"
            for cpu in perCPU.indices { h += "<th>cpu\(cpu)</th>" }
            h += "</tr>"
            for row in rows {
                h += "<tr><td>\(StatsPage.esc(row.name))</td>"
                for v in row.values { h += "<td>\(v)</td>" }
                h += "</tr>"
            }
            h += "</table>"
        }
        return h
    }

    /// One Prometheus family for every section: `libellula_module_counter{section,counter,cpu}`
    /// (untyped: a section mixes counters and gauges such as connections by state).
    static func prometheus(_ sections: [String: [[String: Int64]]]?, into w: inout PrometheusExposition.Writer) {
        guard let sections else { return }
        let family = "libellula_module_counter"
        for (name, perCPU) in sections.sorted(by: { $0.key < $1.key }) {
            for row in rows(perCPU) {
                w.family(family, "untyped", "Per-CPU counters that modules (the network stack) register, by section and name.")
                for (cpu, v) in row.values.enumerated() {
                    w.sample(family, [("section", name), ("counter", row.name), ("cpu", "\(cpu)")], Double(v))
                }
            }
        }
    }
}
