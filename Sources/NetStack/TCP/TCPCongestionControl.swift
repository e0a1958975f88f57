#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Congestion window control: slow start and congestion avoidance by NewReno
/// (RFC 5681 with appropriate byte counting, RFC 3465) or CUBIC (RFC 9438), and the
/// reactions to a fast-retransmit loss and to a retransmission timeout. Sizes in bytes.
struct TCPCongestionControl {
    let algorithm: TCPConfiguration.CongestionControl
    var mss: Int
    var cwnd: Int
    var ssthresh: Int = .max
    /// Bytes acknowledged in congestion avoidance not yet turned into window (NewReno).
    private var avoidanceBytes = 0
    /// CUBIC state: the window before the last reduction (segments), the time to reach it
    /// again, the epoch start (ns, 0 = none), the Reno-friendly estimate and a fractional
    /// growth accumulator.
    private(set) var wMax: Double = 0
    private var k: Double = 0
    private var epochStart: UInt64 = 0
    private var origin: Double = 0
    private var wEst: Double = 0
    private var grow: Double = 0

    static let beta = 0.7
    static let c = 0.4

    init(algorithm: TCPConfiguration.CongestionControl, mss: Int, initialWindow: Int) {
        self.algorithm = algorithm
        self.mss = mss
        cwnd = max(2, initialWindow) * mss
    }

    var inSlowStart: Bool { cwnd < ssthresh }

    /// New data was acknowledged outside loss recovery.
    mutating func onAck(acked: Int, nowNs: UInt64, srttNs: UInt64) {
        guard acked > 0 else { return }
        if inSlowStart {
            cwnd += min(acked, 2 * mss)
            return
        }
        switch algorithm {
        case .newReno:
            avoidanceBytes += acked
            if avoidanceBytes >= cwnd {
                avoidanceBytes -= cwnd
                cwnd += mss
            }
        case .cubic:
            cubicAck(acked: acked, nowNs: nowNs, srttNs: srttNs)
        }
    }

    private mutating func cubicAck(acked: Int, nowNs: UInt64, srttNs: UInt64) {
        let seg = Double(mss)
        let w = Double(cwnd) / seg
        if epochStart == 0 {
            epochStart = max(1, nowNs)
            if w < wMax {
                k = cbrt((wMax - w) / Self.c)
                origin = wMax
            } else {
                k = 0
                origin = w
            }
            wEst = w
        }
        let t = Double(nowNs &- epochStart) / 1e9 + Double(srttNs) / 1e9
        var target = Self.c * pow(t - k, 3) + origin
        target = min(max(target, w), 1.5 * w)
        // The Reno-friendly estimate (RFC 9438 §4.3).
        let alpha = 3 * (1 - Self.beta) / (1 + Self.beta)
        wEst += alpha * (Double(acked) / seg) / w
        if wEst > target { target = wEst }
        grow += (target - w) / w * Double(acked)
        if grow >= 1 {
            let add = Int(grow)
            cwnd += add
            grow -= Double(add)
        }
    }

    /// A loss detected by duplicate ACKs or SACK: sets ssthresh and the window to use
    /// in recovery (RFC 5681 §3.2 step 2; RFC 9438 §4.6).
    mutating func onFastLoss(flight: Int) {
        reduce(flight: flight)
        cwnd = ssthresh
    }

    /// The retransmission timer expired: back to one segment and slow start.
    mutating func onTimeout(flight: Int) {
        reduce(flight: flight)
        cwnd = mss
    }

    private mutating func reduce(flight: Int) {
        avoidanceBytes = 0
        grow = 0
        switch algorithm {
        case .newReno:
            ssthresh = max(flight / 2, 2 * mss)
        case .cubic:
            let w = Double(cwnd) / Double(mss)
            wMax = w < wMax ? w * (1 + Self.beta) / 2 : w
            epochStart = 0
            ssthresh = max(Int(Double(min(flight, cwnd)) * Self.beta), 2 * mss)
        }
    }

    /// Loss recovery ended (the recovery point was acknowledged).
    mutating func onRecoveryEnd(flight: Int) {
        cwnd = max(min(ssthresh, flight + mss), 2 * mss)
    }
}
