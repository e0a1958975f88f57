import Foundation

/// One row of a benchmark suite: a measured value, optionally beside the baseline it is
/// compared with in the same run.
struct BenchResult: Codable, Sendable {
    var name: String
    var unit: String
    var value: Double
    var baseline: String?
    var baselineValue: Double?

    enum CodingKeys: String, CodingKey {
        case name, unit, value, baseline
        case baselineValue = "baseline_value"
    }

    init(_ name: String, unit: String, value: Double, baseline: String? = nil, baselineValue: Double? = nil) {
        self.name = name
        self.unit = unit
        self.value = value
        self.baseline = baseline
        self.baselineValue = baselineValue
    }
}

/// Prints benchmark rows as a table, or as one JSON object per line with `--json`.
final class BenchReporter: @unchecked Sendable {
    let json: Bool
    private var rows: [BenchResult] = []
    private let lock = NSLock()

    init(json: Bool) { self.json = json }

    /// Records a row; in JSON mode it is printed at once.
    func report(_ result: BenchResult) {
        lock.lock()
        defer { lock.unlock() }
        rows.append(result)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            if let data = try? encoder.encode(result), let line = String(data: data, encoding: .utf8) {
                print(line)
                flushStandardOutput()
            }
        } else {
            print(Self.format(result))
            flushStandardOutput()
        }
    }

    /// Convenience for a row with a baseline.
    func report(_ name: String, unit: String, value: Double, baseline: String? = nil, baselineValue: Double? = nil) {
        report(BenchResult(name, unit: unit, value: value, baseline: baseline, baselineValue: baselineValue))
    }

    static func format(_ r: BenchResult) -> String {
        var line = "\(r.name.padding(toLength: 48, withPad: " ", startingAt: 0)) \(fmt(r.value)) \(r.unit)"
        if let b = r.baseline, let bv = r.baselineValue {
            let ratio = bv == 0 ? 0 : r.value / bv
            line += "   | \(b): \(fmt(bv)) \(r.unit)  (ratio \(String(format: "%.2f", ratio)))"
        }
        return line
    }

    static func fmt(_ v: Double) -> String {
        if v >= 1_000_000 { return String(format: "%12.0f", v) }
        if v >= 100 { return String(format: "%12.1f", v) }
        return String(format: "%12.3f", v)
    }
}

/// Flushes standard output (so rows appear while a long suite runs).
func flushStandardOutput() {
    _ = FileHandle.standardOutput
    fflush(nil)
}
