/// The eBPF program a multi-queue TAP runs (`TUNSETSTEERINGEBPF`) to choose the queue of
/// every frame the kernel sends to it: the CPU ``NetStack`` would dispatch the frame to, so
/// no frame, the first SYN of a connection included, lands on a CPU that must forward it.
///
/// It computes what `NetStack.classify` does, on the frame the kernel is about to queue:
/// - IPv4 TCP or UDP, not a fragment, with its ports in the frame: the Toeplitz hash of
///   (source, destination, source port, destination port);
/// - other IPv4 (fragments, ICMP, short transport headers): the hash of the address pair;
/// - then the CPU is `(hash & 127) % cpus`, as ``ToeplitzHash/cpu(for:cpus:)`` does;
/// - ARP, frames too short or not IPv4, bad IPv4 headers: queue 0 (the stack sends ARP to
///   CPU 0 and handles the rest wherever it is read).
///
/// The program is straight-line code plus forward jumps (the bit loops are unrolled at
/// emission), so the verifier walks it once. Packet bytes are read with the classic
/// `LD_ABS`/`LD_IND` loads (which return them in host order, as `NetworkBytes` does), after
/// checking the frame's length from `__sk_buff.len`, so no load can fail.
///
/// Two forms, chosen by the key: when the key's 32-bit windows repeat every 16 bits (the
/// symmetric key, 0x6d5a repeated), the hash of the 4-tuple is the hash of the XOR of its
/// six 16-bit halves, so the program folds them and mixes only 16 bits; otherwise it mixes
/// all 96 input bits one by one.
public enum TAPSteeringProgram {
    /// Registers: r1 the context on entry, r6 the context (the packet loads need it there),
    /// r7 the hash (or the folded input), r8 the IP header length, r9 the frame length,
    /// r0 what a load returned, r1 and r2 scratch.
    static let r0: UInt8 = 0, r1: UInt8 = 1, r2: UInt8 = 2, r6: UInt8 = 6, r7: UInt8 = 7, r8: UInt8 = 8, r9: UInt8 = 9

    /// The program for a stack of `cpus` CPUs hashing with `key` (the dispatcher's key by
    /// default).
    public static func instructions(cpus: Int, key: [UInt8] = ToeplitzHash.symmetricKey) -> [BPFInstruction] {
        precondition(cpus >= 1 && cpus <= 128, "steering needs 1 to 128 CPUs")
        precondition(key.count >= ToeplitzHash.inputBytes + 4, "Toeplitz key too short")
        let windows = (0..<(ToeplitzHash.inputBytes * 8)).map { ToeplitzHash.window(key, bitOffset: $0) }
        let folds = windows.indices.allSatisfy { windows[$0] == windows[$0 % 16] }
        var a = Assembler()
        let zero = a.label(), finish = a.label(), ports = a.label()
        let eth = EthernetHeader.size

        a.alu64(BPFInstruction.opMOV, r6, reg: r1)
        a.emit(.init(code: BPFInstruction.classLDX | BPFInstruction.modeMEM | BPFInstruction.sizeW, dst: r9, src: r6, offset: 0))
        a.alu64(BPFInstruction.opMOV, r7, 0)
        // Ethernet + the smallest IPv4 header, or queue 0.
        a.jump(BPFInstruction.opJLT, r9, Int32(eth + 20), to: zero)
        a.loadAbsolute(BPFInstruction.sizeH, 12)
        a.jump(BPFInstruction.opJNE, r0, Int32(EthernetHeader.typeIPv4), to: zero)
        // Version 4, header length 20 or more and inside the frame.
        a.loadAbsolute(BPFInstruction.sizeB, eth)
        a.alu64(BPFInstruction.opMOV, r8, reg: r0)
        a.alu64(BPFInstruction.opAND, r8, 0xf)
        a.alu64(BPFInstruction.opLSH, r8, 2)
        a.alu64(BPFInstruction.opRSH, r0, 4)
        a.jump(BPFInstruction.opJNE, r0, 4, to: zero)
        a.jump(BPFInstruction.opJLT, r8, 20, to: zero)
        a.alu64(BPFInstruction.opMOV, r1, reg: r8)
        a.alu64(BPFInstruction.opADD, r1, Int32(eth))
        a.jumpRegister(BPFInstruction.opJGT, r1, r9, to: zero)
        // The addresses.
        a.loadAbsolute(BPFInstruction.sizeW, eth + 12)
        if folds {
            a.alu64(BPFInstruction.opMOV, r7, reg: r0)
            a.alu64(BPFInstruction.opRSH, r7, 16)
            a.alu64(BPFInstruction.opXOR, r7, reg: r0)
        } else {
            a.mix(r0, bits: 32, at: 0, windows)
        }
        a.loadAbsolute(BPFInstruction.sizeW, eth + 16)
        if folds {
            a.alu64(BPFInstruction.opXOR, r7, reg: r0)
            a.alu64(BPFInstruction.opRSH, r0, 16)
            a.alu64(BPFInstruction.opXOR, r7, reg: r0)
        } else {
            a.mix(r0, bits: 32, at: 32, windows)
        }
        // Fragments and protocols without ports hash the address pair only.
        a.loadAbsolute(BPFInstruction.sizeH, eth + 6)
        a.alu64(BPFInstruction.opAND, r0, 0x3fff)
        a.jump(BPFInstruction.opJNE, r0, 0, to: finish)
        a.loadAbsolute(BPFInstruction.sizeB, eth + 9)
        a.jump(BPFInstruction.opJEQ, r0, Int32(IPv4Header.protocolUDP), to: ports)
        a.jump(BPFInstruction.opJNE, r0, Int32(IPv4Header.protocolTCP), to: finish)
        a.place(ports)
        a.alu64(BPFInstruction.opMOV, r1, reg: r8)
        a.alu64(BPFInstruction.opADD, r1, Int32(eth + 4))
        a.jumpRegister(BPFInstruction.opJGT, r1, r9, to: finish)
        for (i, byte) in [(0, 8), (1, 10)] {
            a.emit(.init(code: BPFInstruction.classLD | BPFInstruction.modeIND | BPFInstruction.sizeH, src: r8,
                         immediate: Int32(eth + 2 * i)))
            if folds {
                a.alu64(BPFInstruction.opXOR, r7, reg: r0)
            } else {
                a.mix(r0, bits: 16, at: byte * 8, windows)
            }
        }
        a.place(finish)
        if folds {
            // Mix the folded 16 bits: bit 15 - t of the fold stands for input bit t (mod 16).
            a.alu64(BPFInstruction.opAND, r7, 0xffff)
            a.alu64(BPFInstruction.opMOV, r2, 0)
            for t in 0..<16 { a.mixBit(of: r7, bit: 15 - t, window: windows[t], into: r2) }
            a.alu64(BPFInstruction.opMOV, r0, reg: r2)
        } else {
            a.alu64(BPFInstruction.opMOV, r0, reg: r7)
        }
        a.alu64(BPFInstruction.opAND, r0, 127)
        if cpus > 1 {
            a.emit(.init(code: BPFInstruction.classALU | BPFInstruction.opMOD | BPFInstruction.sourceK, dst: r0, immediate: Int32(cpus)))
        } else {
            a.alu64(BPFInstruction.opMOV, r0, 0)
        }
        a.exit()
        a.place(zero)
        a.alu64(BPFInstruction.opMOV, r0, 0)
        a.exit()
        return a.finished()
    }

    /// A one-pass assembler with forward labels.
    struct Assembler {
        var code: [BPFInstruction] = []
        var targets: [Int?] = []
        var fixups: [(at: Int, label: Int)] = []

        mutating func label() -> Int { targets.append(nil); return targets.count - 1 }
        mutating func place(_ l: Int) { targets[l] = code.count }
        mutating func emit(_ i: BPFInstruction) { code.append(i) }

        mutating func alu64(_ op: UInt8, _ dst: UInt8, _ imm: Int32) {
            emit(.init(code: BPFInstruction.classALU64 | op | BPFInstruction.sourceK, dst: dst, immediate: imm))
        }
        mutating func alu64(_ op: UInt8, _ dst: UInt8, reg src: UInt8) {
            emit(.init(code: BPFInstruction.classALU64 | op | BPFInstruction.sourceX, dst: dst, src: src))
        }
        mutating func alu32(_ op: UInt8, _ dst: UInt8, _ imm: Int32) {
            emit(.init(code: BPFInstruction.classALU | op | BPFInstruction.sourceK, dst: dst, immediate: imm))
        }
        mutating func alu32(_ op: UInt8, _ dst: UInt8, reg src: UInt8) {
            emit(.init(code: BPFInstruction.classALU | op | BPFInstruction.sourceX, dst: dst, src: src))
        }
        mutating func loadAbsolute(_ size: UInt8, _ offset: Int) {
            emit(.init(code: BPFInstruction.classLD | BPFInstruction.modeABS | size, immediate: Int32(offset)))
        }
        mutating func jump(_ op: UInt8, _ dst: UInt8, _ imm: Int32, to l: Int) {
            fixups.append((code.count, l))
            emit(.init(code: BPFInstruction.classJMP | op | BPFInstruction.sourceK, dst: dst, immediate: imm))
        }
        mutating func jumpRegister(_ op: UInt8, _ dst: UInt8, _ src: UInt8, to l: Int) {
            fixups.append((code.count, l))
            emit(.init(code: BPFInstruction.classJMP | op | BPFInstruction.sourceX, dst: dst, src: src))
        }
        mutating func exit() { emit(.init(code: BPFInstruction.classJMP | BPFInstruction.opEXIT)) }

        /// XORs `window` into `acc` when bit `bit` of `value` is set, without a branch:
        /// the bit is shifted to the top and spread over the word by an arithmetic shift.
        mutating func mixBit(of value: UInt8, bit: Int, window: UInt32, into acc: UInt8) {
            guard window != 0 else { return }
            alu64(BPFInstruction.opMOV, TAPSteeringProgram.r1, reg: value)
            if bit != 63 { alu64(BPFInstruction.opLSH, TAPSteeringProgram.r1, Int32(63 - bit)) }
            alu64(BPFInstruction.opARSH, TAPSteeringProgram.r1, 63)
            alu32(BPFInstruction.opAND, TAPSteeringProgram.r1, Int32(bitPattern: window))
            alu32(BPFInstruction.opXOR, acc, reg: TAPSteeringProgram.r1)
        }

        /// Mixes the `bits` low bits of `value` (most significant first), which are input
        /// bits `at`... of the hash, into r7.
        mutating func mix(_ value: UInt8, bits: Int, at: Int, _ windows: [UInt32]) {
            for t in 0..<bits { mixBit(of: value, bit: bits - 1 - t, window: windows[at + t], into: TAPSteeringProgram.r7) }
        }

        func finished() -> [BPFInstruction] {
            var out = code
            for f in fixups {
                guard let target = targets[f.label] else { preconditionFailure("unplaced label") }
                out[f.at].offset = Int16(target - f.at - 1)
            }
            return out
        }
    }
}
