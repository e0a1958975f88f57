import CLibellula

/// Cross-CPU messages published on one ring of the crossbar and not yet run by the
/// target: for debugging a stuck system (which CPU is not draining, and what waits).
public struct PendingRing: Codable, Sendable, Equatable {
    /// The sending CPU.
    public var source: Int
    /// The target CPU.
    public var target: Int
    /// Messages published and not yet consumed.
    public var count: Int
    /// The functions of the oldest of them (at most 32 looked at), by name, with counts.
    public var functions: [String: Int]
}

extension LWKTSystem {
    /// Every ring with messages waiting, with the functions they carry. Reads the rings
    /// without stopping anyone (a slot being overwritten at that moment may be named
    /// wrongly); symbol lookup may open files, so call it from an observability thread,
    /// not from a CPU.
    public func pendingMessages(examine: Int = 32) -> [PendingRing] {
        var out: [PendingRing] = []
        for s in 0..<cpuCount {
            for t in 0..<cpuCount where s != t {
                let r = ring(from: s, to: t)
                let w = r.pointee.windex.load(ordering: .acquiring)
                let rd = r.pointee.rindex.load(ordering: .acquiring)
                let n = w &- rd
                guard n > 0 else { continue }
                var names: [String: Int] = [:]
                for k in 0..<min(n, examine, IPIRing.capacity) {
                    let slot = r.pointee.consumerSlots + ((rd &+ k) & IPIRing.mask)
                    let bits = UnsafeRawPointer(slot).load(as: UInt.self)
                    names[Self.functionName(bits), default: 0] += 1
                }
                out.append(PendingRing(source: s, target: t, count: n, functions: names))
            }
        }
        return out
    }

    static func functionName(_ address: UInt) -> String {
        guard address != 0 else { return "(empty slot)" }
        var buffer = [CChar](repeating: 0, count: 512)
        guard lb_symbolize(address, &buffer, Int32(buffer.count)) == 1 else { return "0x" + String(address, radix: 16) }
        return StallWatchdog.demangle(buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress.unsafelyUnwrapped) })
    }
}
