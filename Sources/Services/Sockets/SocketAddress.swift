import Glibc

/// An IPv4 or IPv6 address and a TCP port, in host byte order.
///
/// An IPv4 peer that reaches a dual-stack (`[::]`) listener arrives as an IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`); it is stored, compared and printed as the IPv4 address it is.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    /// The IPv4 address, host byte order (`0x7f000001` is 127.0.0.1); 0 for IPv6.
    public var ipv4: UInt32
    /// Whether this is an IPv6 address (``ipv6High`` and ``ipv6Low`` hold it).
    public var isIPv6: Bool
    /// The first 8 bytes of an IPv6 address, big-endian as written (`0` for `::1`).
    public var ipv6High: UInt64
    /// The last 8 bytes of an IPv6 address (`1` for `::1`).
    public var ipv6Low: UInt64
    /// The TCP port (0 asks the stack to pick one).
    public var port: UInt16

    /// An IPv4 address from its parts.
    public init(ipv4: UInt32, port: UInt16) {
        self.ipv4 = ipv4
        isIPv6 = false
        ipv6High = 0
        ipv6Low = 0
        self.port = port
    }

    /// An IPv6 address from its two halves (an IPv4-mapped one becomes IPv4).
    public init(ipv6High: UInt64, ipv6Low: UInt64, port: UInt16) {
        let mapped = ipv6High == 0 && ipv6Low >> 32 == 0xffff
        ipv4 = mapped ? UInt32(truncatingIfNeeded: ipv6Low) : 0
        isIPv6 = !mapped
        self.ipv6High = mapped ? 0 : ipv6High
        self.ipv6Low = mapped ? 0 : ipv6Low
        self.port = port
    }

    /// 127.0.0.1 on `port`.
    public static func loopback(port: UInt16) -> SocketAddress { SocketAddress(ipv4: 0x7f00_0001, port: port) }

    /// Parses `ADDR:PORT`, where ADDR is a dotted IPv4 address, `localhost`, `*` or empty
    /// (all IPv4 addresses), or an IPv6 address in brackets (`[::1]:8080`; `[::]` listens on
    /// every IPv6 and IPv4 address: dual stack). Returns nil for anything else.
    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        let host = text[..<colon]
        let portText = text[text.index(after: colon)...]
        guard !portText.isEmpty, portText.allSatisfy({ $0.isASCII && $0.isNumber }), let port = UInt16(portText) else {
            return nil
        }
        if host.hasPrefix("[") {
            guard host.hasSuffix("]"), host.count > 2, host.count <= 48 else { return nil }
            var a6 = in6_addr()
            let inner = String(host.dropFirst().dropLast())
            guard inet_pton(AF_INET6, inner, &a6) == 1 else { return nil }
            let (h, l) = Self.halves(a6)
            self.init(ipv6High: h, ipv6Low: l, port: port)
            return
        }
        var value: UInt32 = 0
        switch host {
        case "", "*", "0.0.0.0": value = 0
        case "localhost": value = 0x7f00_0001
        default:
            let parts = host.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 4 else { return nil }
            for p in parts {
                guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0.isASCII && $0.isNumber }), let b = UInt8(p) else { return nil }
                value = value << 8 | UInt32(b)
            }
        }
        self.init(ipv4: value, port: port)
    }

    /// The address without the port: `a.b.c.d`, or `[v6]` (so `host + ":" + port` parses).
    public var host: String {
        guard isIPv6 else { return "\(ipv4 >> 24).\(ipv4 >> 16 & 0xff).\(ipv4 >> 8 & 0xff).\(ipv4 & 0xff)" }
        var a6 = in6_addr()
        withUnsafeMutableBytes(of: &a6) { b in
            b.storeBytes(of: ipv6High.bigEndian, toByteOffset: 0, as: UInt64.self)
            b.storeBytes(of: ipv6Low.bigEndian, toByteOffset: 8, as: UInt64.self)
        }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        guard inet_ntop(AF_INET6, &a6, &text, socklen_t(text.count)) != nil else { return "[?]" }
        return "[" + String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) + "]"
    }

    /// `a.b.c.d:port` or `[v6]:port`.
    public var description: String { "\(host):\(port)" }

    /// The address family for `socket(2)`.
    var family: Int32 { isIPv6 ? AF_INET6 : AF_INET }

    /// Calls `body` with the `sockaddr` form of the address and its length.
    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        if isIPv6 {
            var s6 = sockaddr_in6()
            s6.sin6_family = sa_family_t(AF_INET6)
            s6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &s6.sin6_addr) { b in
                b.storeBytes(of: ipv6High.bigEndian, toByteOffset: 0, as: UInt64.self)
                b.storeBytes(of: ipv6Low.bigEndian, toByteOffset: 8, as: UInt64.self)
            }
            return withUnsafePointer(to: &s6) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr = in_addr(s_addr: ipv4.bigEndian)
        return withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }

    /// The address in a `sockaddr_storage` a call such as `accept` or `getsockname` filled
    /// in; nil for a family other than IPv4 and IPv6.
    init?(_ storage: sockaddr_storage) {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            let sin = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in.self) }
            self.init(ipv4: UInt32(bigEndian: sin.sin_addr.s_addr), port: UInt16(bigEndian: sin.sin_port))
        case AF_INET6:
            let s6 = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in6.self) }
            let (h, l) = Self.halves(s6.sin6_addr)
            self.init(ipv6High: h, ipv6Low: l, port: UInt16(bigEndian: s6.sin6_port))
        default:
            return nil
        }
    }

    /// The local address of socket `fd` (nil if the kernel does not say).
    static func local(of fd: Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return rc == 0 ? SocketAddress(storage) : nil
    }

    static func halves(_ a6: in6_addr) -> (UInt64, UInt64) {
        var a6 = a6
        return withUnsafeBytes(of: &a6) {
            (UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
             UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        }
    }
}
