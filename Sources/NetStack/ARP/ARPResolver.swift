/// CPU 0's outstanding ARP requests: which addresses are being resolved, how many
/// requests went out and when the last did.
struct ARPResolver {
    struct Pending { var requests: Int; var lastSent: UInt64 }
    var pending: [UInt32: Pending] = [:]
    /// Bound on addresses resolved at once, so a scan of the network cannot grow it.
    let limit = 256
}
