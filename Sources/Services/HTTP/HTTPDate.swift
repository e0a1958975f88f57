/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the one date format HTTP servers send.
public enum HTTPDate {
    static let days: [StaticString] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
    static let months: [StaticString] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// Formats seconds since the epoch.
    public static func format(_ seconds: Int64) -> String {
        var bytes = [UInt8](repeating: 0, count: 29)
        bytes.withUnsafeMutableBytes { write(seconds, into: $0.baseAddress!) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Writes the 29 bytes of the date for `seconds` at `p`.
    static func write(_ seconds: Int64, into p: UnsafeMutableRawPointer) {
        let day = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let secs = Int(seconds - day * 86400)
        let (y, m, d) = civil(fromDays: day)
        var o = 0
        func put(_ s: StaticString) {
            for k in 0..<s.utf8CodeUnitCount { p.storeBytes(of: s.utf8Start[k], toByteOffset: o + k, as: UInt8.self) }
            o += s.utf8CodeUnitCount
        }
        func two(_ v: Int) {
            p.storeBytes(of: UInt8(48 + v / 10 % 10), toByteOffset: o, as: UInt8.self)
            p.storeBytes(of: UInt8(48 + v % 10), toByteOffset: o + 1, as: UInt8.self)
            o += 2
        }
        let wd = Int(((day % 7) + 7) % 7)
        put(days[wd]); put(", "); two(d); put(" "); put(months[m - 1]); put(" ")
        two(y / 100); two(y % 100); put(" ")
        two(secs / 3600); put(":"); two(secs / 60 % 60); put(":"); two(secs % 60); put(" GMT")
    }

    /// Parses an IMF-fixdate; nil for any other format.
    public static func parse(_ text: String) -> Int64? {
        let b = Array(text.utf8)
        guard b.count == 29, b[3] == 44, b[4] == 32, b[7] == 32, b[11] == 32, b[16] == 32, b[19] == 58, b[22] == 58,
              b[25] == 32, b[26] == 71, b[27] == 77, b[28] == 84 else { return nil }
        func num(_ r: Range<Int>) -> Int? {
            var v = 0
            for i in r {
                guard b[i] >= 48 && b[i] <= 57 else { return nil }
                v = v * 10 + Int(b[i] - 48)
            }
            return v
        }
        guard let d = num(5..<7), let y = num(12..<16), let hh = num(17..<19), let mm = num(20..<22), let ss = num(23..<25),
              hh < 24, mm < 60, ss < 61, d >= 1, d <= 31 else { return nil }
        let mon = b[8..<11]
        guard let m = months.firstIndex(where: { s in
            s.utf8CodeUnitCount == 3 && (0..<3).allSatisfy { s.utf8Start[$0] == mon[mon.startIndex + $0] }
        }) else { return nil }
        // An impossible date (30 February, 29 February 2100) is no date at all.
        guard d <= daysInMonth(y, m + 1) else { return nil }
        return days(fromCivil: y, m + 1, d) * 86400 + Int64(hh * 3600 + mm * 60 + ss)
    }

    /// The number of days in month `m` (1–12) of year `y` (Gregorian).
    static func daysInMonth(_ y: Int, _ m: Int) -> Int {
        switch m {
        case 2: (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    static func days(fromCivil y0: Int, _ m: Int, _ d: Int) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return Int64(era * 146097 + doe - 719468)
    }

    static func civil(fromDays z0: Int64) -> (Int, Int, Int) {
        let z = Int(z0) + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}
