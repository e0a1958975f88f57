/// The stack's TCP secret and what is derived from it: initial sequence numbers per
/// RFC 6528 (a 4 µs clock plus a keyed hash of the connection's 4-tuple) and SYN cookies.
/// The keyed hash is SipHash-2-4 over 64-bit words. Immutable after creation, so every
/// CPU may use it.
struct TCPSecrets: Sendable {
    let k0: UInt64
    let k1: UInt64

    init(_ key: (UInt64, UInt64)?) {
        if let key { (k0, k1) = key } else {
            var g = SystemRandomNumberGenerator()
            k0 = g.next(); k1 = g.next()
        }
    }

    @inline(__always) private static func rotl(_ x: UInt64, _ b: UInt64) -> UInt64 { (x << b) | (x >> (64 - b)) }

    @inline(__always)
    private static func round(_ v0: inout UInt64, _ v1: inout UInt64, _ v2: inout UInt64, _ v3: inout UInt64) {
        v0 &+= v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32)
        v2 &+= v3; v3 = rotl(v3, 16); v3 ^= v2
        v0 &+= v3; v3 = rotl(v3, 21); v3 ^= v0
        v2 &+= v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32)
    }

    /// SipHash-2-4 of three 64-bit words.
    func hash(_ a: UInt64, _ b: UInt64, _ c: UInt64) -> UInt64 {
        var v0 = k0 ^ 0x736f_6d65_7073_6575, v1 = k1 ^ 0x646f_7261_6e64_6f6d
        var v2 = k0 ^ 0x6c79_6765_6e65_7261, v3 = k1 ^ 0x7465_6462_7974_6573
        @inline(__always) func compress(_ m: UInt64) {
            v3 ^= m
            Self.round(&v0, &v1, &v2, &v3); Self.round(&v0, &v1, &v2, &v3)
            v0 ^= m
        }
        compress(a); compress(b); compress(c); compress(UInt64(24) << 56)
        v2 ^= 0xff
        for _ in 0..<4 { Self.round(&v0, &v1, &v2, &v3) }
        return v0 ^ v1 ^ v2 ^ v3
    }

    /// RFC 6528: ISN = M + F(4-tuple, secret), M a clock ticking every 4 µs.
    func initialSequence(_ key: TCPFlowKey, nowNs: UInt64) -> UInt32 {
        let f = hash(key.addresses, key.ports, 0x1553)
        return UInt32(truncatingIfNeeded: nowNs / 4000) &+ UInt32(truncatingIfNeeded: f)
    }

    /// MSS values a cookie can name (three bits).
    static let cookieMSS: [UInt16] = [216, 536, 1024, 1200, 1380, 1440, 1460, 8960]

    /// The cookie time counter: 64-second steps.
    static func cookieTime(_ nowNs: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: nowNs / 64_000_000_000) }

    /// A SYN cookie (the ISN of a stateless SYN-ACK): 5 bits of time, 3 bits of MSS index,
    /// 24 bits of keyed hash over the 4-tuple, the time and the peer's ISN.
    func cookie(_ key: TCPFlowKey, peerISN: UInt32, mss: UInt16, nowNs: UInt64) -> UInt32 {
        let t = Self.cookieTime(nowNs)
        var idx = 0
        for (i, v) in Self.cookieMSS.enumerated() where v <= mss { idx = i }
        return cookie(key, peerISN: peerISN, time: t, index: UInt32(idx))
    }

    private func cookie(_ key: TCPFlowKey, peerISN: UInt32, time t: UInt32, index: UInt32) -> UInt32 {
        let h = UInt32(truncatingIfNeeded: hash(key.addresses, key.ports, UInt64(t) << 32 | UInt64(peerISN) ^ UInt64(index) << 40))
        return (t & 31) << 27 | (index & 7) << 24 | (h & 0xff_ffff)
    }

    /// Checks a returned cookie (the ACK number minus one) made within the last two
    /// periods; returns the MSS it names, or nil when it is forged or stale.
    func validate(cookie c: UInt32, _ key: TCPFlowKey, peerISN: UInt32, nowNs: UInt64) -> UInt16? {
        let now = Self.cookieTime(nowNs)
        let index = (c >> 24) & 7
        for age in UInt32(0)...1 {
            let t = now &- age
            guard t & 31 == c >> 27 else { continue }
            if cookie(key, peerISN: peerISN, time: t, index: index) == c { return Self.cookieMSS[Int(index)] }
        }
        return nil
    }
}
