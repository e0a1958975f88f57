/// The retransmission timeout of RFC 6298: smoothed RTT and variance from samples, the
/// timeout with a configurable floor and ceiling, and exponential backoff. Times in ns.
struct TCPRTTEstimator {
    private(set) var srtt: UInt64 = 0
    private(set) var rttvar: UInt64 = 0
    private(set) var rto: UInt64
    let minimum: UInt64
    let maximum: UInt64
    private(set) var samples = 0

    init(initial: UInt64, minimum: UInt64, maximum: UInt64) {
        self.minimum = minimum
        self.maximum = max(maximum, minimum)
        rto = min(max(initial, minimum), self.maximum)
    }

    /// Clock granularity G.
    static let granularity: UInt64 = 1_000_000

    /// Takes an RTT sample (RFC 6298 §2.2–2.3).
    mutating func sample(_ r: UInt64) {
        let r = max(r, 1)
        if samples == 0 {
            srtt = r
            rttvar = r / 2
        } else {
            let diff = srtt > r ? srtt - r : r - srtt
            rttvar = (3 * rttvar + diff) / 4
            srtt = (7 * srtt + r) / 8
        }
        samples += 1
        rto = min(max(srtt + max(Self.granularity, 4 * rttvar), minimum), maximum)
    }

    /// The timeout after `backoff` expiries (doubling, at most the maximum).
    func timeout(backoff: Int) -> UInt64 {
        let shift = min(backoff, 16)
        let (v, overflow) = rto.multipliedReportingOverflow(by: UInt64(1) << UInt64(shift))
        return overflow ? maximum : min(v, maximum)
    }
}
