import ArgumentParser
import NetStack

/// What `serve --net` takes: `host` (the host kernel's sockets) or
/// `tap:NAME[,address=A/P][,gateway=G][,steering=ebpf|off]` (Libellula's own TCP/IP stack
/// on a multi-queue TAP device, one queue per CPU; `steering=ebpf`, the default, installs
/// the TAP's eBPF flow-steering program so every frame arrives on its owner CPU's queue).
enum NetBackend: Equatable, CustomStringConvertible {
    case host
    case tap(name: String, address: IPv4Address, prefixLength: Int, gateway: IPv4Address?, steering: Bool)

    /// The address `Scripts/netrig.sh up` gives the stack, and its router.
    static let rigAddress = IPv4Address(10, 200, 2, 1)
    static let rigGateway = IPv4Address(10, 200, 2, 254)

    /// Parses the option's text; throws a `ValidationError` that names what is wrong.
    init(parsing text: String) throws {
        if text == "host" { self = .host; return }
        guard text.hasPrefix("tap:") else {
            throw ValidationError("--net wants host or tap:NAME[,address=A/P][,gateway=G][,steering=ebpf|off], got '\(text)'")
        }
        let fields = text.dropFirst(4).split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let name = fields[0]
        guard !name.isEmpty, name.utf8.count <= 15, !name.contains("/"), !name.contains(" ") else {
            throw ValidationError("--net tap:NAME wants a device name of 1 to 15 bytes without '/' or spaces, got '\(name)'")
        }
        var address = Self.rigAddress, prefix = 24
        var gateway: IPv4Address? = Self.rigGateway
        var steering = true
        for field in fields.dropFirst() {
            let kv = field.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw ValidationError("--net: '\(field)' is not KEY=VALUE (address=A/P, gateway=G or steering=ebpf|off)") }
            switch kv[0] {
            case "address":
                let parts = kv[1].split(separator: "/", omittingEmptySubsequences: false)
                guard parts.count <= 2, let a = IPv4Address(String(parts[0])), a != .any, !a.isMulticast else {
                    throw ValidationError("--net: address wants A or A/P (10.200.2.1/24), got '\(kv[1])'")
                }
                address = a
                if parts.count == 2 {
                    guard let p = Int(parts[1]), (1...32).contains(p) else {
                        throw ValidationError("--net: the prefix length must be 1 to 32, got '\(parts[1])'")
                    }
                    prefix = p
                }
            case "gateway":
                if kv[1] == "none" { gateway = nil; continue }
                guard let g = IPv4Address(kv[1]) else { throw ValidationError("--net: gateway wants an IPv4 address or none, got '\(kv[1])'") }
                gateway = g
            case "steering":
                guard kv[1] == "ebpf" || kv[1] == "off" else { throw ValidationError("--net: steering wants ebpf or off, got '\(kv[1])'") }
                steering = kv[1] == "ebpf"
            default:
                throw ValidationError("--net: unknown setting '\(kv[0])' (address=A/P, gateway=G or steering=ebpf|off)")
            }
        }
        if let g = gateway, !g.sameNetwork(as: address, prefix: prefix) {
            throw ValidationError("--net: gateway \(g) is not on \(address)/\(prefix)")
        }
        self = .tap(name: name, address: address, prefixLength: prefix, gateway: gateway, steering: steering)
    }

    var description: String {
        switch self {
        case .host: "host sockets"
        case .tap(let name, let a, let p, let g, _): "Libellula's TCP/IP on TAP \(name) (\(a)/\(p)\(g.map { " via \($0)" } ?? ""))"
        }
    }
}
