import Glibc

/// An IPv4 address and TCP port, in host byte order.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    /// The IPv4 address, host byte order (`0x7f000001` is 127.0.0.1).
    public var ipv4: UInt32
    /// The TCP port (0 asks the stack to pick one).
    public var port: UInt16

    /// An address from its parts.
    public init(ipv4: UInt32, port: UInt16) {
        self.ipv4 = ipv4
        self.port = port
    }

    /// 127.0.0.1 on `port`.
    public static func loopback(port: UInt16) -> SocketAddress { SocketAddress(ipv4: 0x7f00_0001, port: port) }

    /// Parses `ADDR:PORT`, where ADDR is a dotted IPv4 address, `localhost`, `*` or empty
    /// (all addresses). Returns nil for anything else.
    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        let host = text[..<colon]
        guard let port = UInt16(text[text.index(after: colon)...]) else { return nil }
        var value: UInt32 = 0
        switch host {
        case "", "*", "0.0.0.0": value = 0
        case "localhost": value = 0x7f00_0001
        default:
            let parts = host.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 4 else { return nil }
            for p in parts {
                guard p.count <= 3, let b = UInt8(p) else { return nil }
                value = value << 8 | UInt32(b)
            }
        }
        self.init(ipv4: value, port: port)
    }

    /// `a.b.c.d:port`.
    public var description: String {
        "\(ipv4 >> 24).\(ipv4 >> 16 & 0xff).\(ipv4 >> 8 & 0xff).\(ipv4 & 0xff):\(port)"
    }

    var sockaddr: sockaddr_in {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr = in_addr(s_addr: ipv4.bigEndian)
        return sin
    }

    init(_ sin: sockaddr_in) {
        self.init(ipv4: UInt32(bigEndian: sin.sin_addr.s_addr), port: UInt16(bigEndian: sin.sin_port))
    }
}
