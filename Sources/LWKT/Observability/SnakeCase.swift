/// The key style of every statistics document (`/_stats.json`, `/metrics`): snake_case.
public enum SnakeCase {
    /// `busyNanos` → `busy_nanos`, `ipiSentActive` → `ipi_sent_active`.
    public static func from(camel s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count + 4)
        for ch in s {
            if ch.isUppercase {
                if !out.isEmpty { out.append("_") }
                out.append(contentsOf: ch.lowercased())
            } else {
                out.append(ch)
            }
        }
        return out
    }

    /// `busy_nanos` → `busyNanos` (the inverse of ``from(camel:)`` for names without acronyms).
    public static func toCamel(_ s: String) -> String {
        guard s.contains("_") else { return s }
        let parts = s.split(separator: "_", omittingEmptySubsequences: true)
        guard let first = parts.first else { return s }
        return String(first) + parts.dropFirst().map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
    }
}
