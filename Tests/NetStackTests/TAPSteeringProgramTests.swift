import Foundation
import Testing
import LWKT
@testable import NetStack
import LibellulaTestSupport

/// A small interpreter for the eBPF subset ``TAPSteeringProgram`` emits, with the kernel's
/// semantics for socket filters: `LD_ABS`/`LD_IND` read big-endian packet bytes (and end
/// the program with 0 when out of bounds) and clobber r1 to r5; 32-bit ALU operations
/// zero-extend; jumps compare 64-bit unsigned values. It rejects what the verifier would:
/// reading a register that holds nothing, backward jumps, unknown opcodes, falling off the end.
struct BPFInterpreter {
    enum Fault: Error, CustomStringConvertible {
        case uninitialised(pc: Int, register: UInt8)
        case badOpcode(pc: Int, BPFInstruction)
        case backwardJump(pc: Int)
        case fellOffEnd
        var description: String {
            switch self {
            case .uninitialised(let pc, let r): "pc \(pc): reads r\(r), which holds nothing"
            case .badOpcode(let pc, let i): "pc \(pc): unknown instruction \(i)"
            case .backwardJump(let pc): "pc \(pc): backward jump"
            case .fellOffEnd: "ran past the last instruction"
            }
        }
    }

    let program: [BPFInstruction]

    /// Runs the program on `frame` (what `__sk_buff.len` and the packet loads see).
    func run(_ frame: [UInt8]) throws(Fault) -> UInt32 {
        var regs = [UInt64?](repeating: nil, count: 11)
        regs[1] = 0xc0ffee  // the context
        var pc = 0
        func read(_ r: UInt8, _ pc: Int) throws(Fault) -> UInt64 {
            guard let v = regs[Int(r)] else { throw .uninitialised(pc: pc, register: r) }
            return v
        }
        func load(_ at: Int, size: Int) -> UInt64? {
            guard at >= 0, at + size <= frame.count else { return nil }
            var v: UInt64 = 0
            for i in 0..<size { v = v << 8 | UInt64(frame[at + i]) }
            return v
        }
        while pc < program.count {
            let i = program[pc]
            let cls = i.code & 0x07
            let imm64 = UInt64(bitPattern: Int64(i.immediate))
            switch cls {
            case BPFInstruction.classLDX:
                guard i.code == BPFInstruction.classLDX | BPFInstruction.modeMEM | BPFInstruction.sizeW,
                      try read(i.src, pc) == 0xc0ffee, i.offset == 0 else { throw .badOpcode(pc: pc, i) }
                regs[Int(i.dst)] = UInt64(frame.count)  // __sk_buff.len
            case BPFInstruction.classLD:
                let size: Int
                switch i.code & 0x18 {
                case BPFInstruction.sizeW: size = 4
                case BPFInstruction.sizeH: size = 2
                case BPFInstruction.sizeB: size = 1
                default: throw .badOpcode(pc: pc, i)
                }
                guard try read(6, pc) == 0xc0ffee else { throw .badOpcode(pc: pc, i) }
                let base: Int
                switch i.code & 0xe0 {
                case BPFInstruction.modeABS: base = Int(i.immediate)
                case BPFInstruction.modeIND: base = Int(Int32(truncatingIfNeeded: try read(i.src, pc))) + Int(i.immediate)
                default: throw .badOpcode(pc: pc, i)
                }
                guard let v = load(base, size: size) else { return 0 }
                for r in 1...5 { regs[r] = nil }
                regs[0] = v
            case BPFInstruction.classALU, BPFInstruction.classALU64:
                let op = i.code & 0xf0
                let wide = cls == BPFInstruction.classALU64
                let operand = i.code & BPFInstruction.sourceX != 0 ? try read(i.src, pc) : imm64
                let old = op == BPFInstruction.opMOV ? 0 : try read(i.dst, pc)
                var a = wide ? old : old & 0xffff_ffff
                let b = wide ? operand : operand & 0xffff_ffff
                let bits: UInt64 = wide ? 64 : 32
                switch op {
                case BPFInstruction.opMOV: a = b
                case BPFInstruction.opADD: a = a &+ b
                case BPFInstruction.opAND: a &= b
                case BPFInstruction.opXOR: a ^= b
                case BPFInstruction.opLSH: a = a << (b % bits)
                case BPFInstruction.opRSH: a = a >> (b % bits)
                case BPFInstruction.opARSH:
                    a = wide ? UInt64(bitPattern: Int64(bitPattern: a) >> Int64(b % 64))
                        : UInt64(UInt32(bitPattern: Int32(truncatingIfNeeded: a) >> Int32(b % 32)))
                case BPFInstruction.opMOD:
                    guard b != 0 else { throw .badOpcode(pc: pc, i) }
                    a = a % b
                default: throw .badOpcode(pc: pc, i)
                }
                regs[Int(i.dst)] = wide ? a : a & 0xffff_ffff
            case BPFInstruction.classJMP:
                let op = i.code & 0xf0
                if op == BPFInstruction.opEXIT { return UInt32(truncatingIfNeeded: try read(0, pc)) }
                guard i.offset >= 0 else { throw .backwardJump(pc: pc) }
                let a = try read(i.dst, pc)
                let b = i.code & BPFInstruction.sourceX != 0 ? try read(i.src, pc) : imm64
                let taken: Bool
                switch op {
                case BPFInstruction.opJA: taken = true
                case BPFInstruction.opJEQ: taken = a == b
                case BPFInstruction.opJNE: taken = a != b
                case BPFInstruction.opJGT: taken = a > b
                case BPFInstruction.opJLT: taken = a < b
                default: throw .badOpcode(pc: pc, i)
                }
                if taken { pc += Int(i.offset) }
            default:
                throw .badOpcode(pc: pc, i)
            }
            pc += 1
        }
        throw .fellOffEnd
    }
}

/// Random frames of every shape the classifier tells apart.
enum SteeringFrames {
    static func make(_ rng: inout SeededRandom) -> [UInt8] {
        var f = (0..<12).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let kind = Int.random(in: 0..<12, using: &rng)
        switch kind {
        case 9: f += [0x08, 0x06]  // ARP
        case 10: f += [0x86, 0xdd]  // IPv6
        default: f += [0x08, 0x00]
        }
        let hl = kind == 4 ? Int.random(in: 6...15, using: &rng) * 4 : 20
        var ip = [UInt8](repeating: 0, count: hl)
        ip[0] = UInt8(kind == 8 ? 0x60 : 0x40) | UInt8(hl / 4)
        if kind == 11 { ip[0] = 0x40 | UInt8.random(in: 0...4, using: &rng) }  // header length under 20
        for i in 1..<hl { ip[i] = UInt8.random(in: 0...255, using: &rng) }
        // Not a fragment unless asked for: flags DF or none, offset 0.
        ip[6] = kind == 3 ? (Bool.random(using: &rng) ? 0x20 : UInt8.random(in: 0...0x1f, using: &rng) | 0x01) : (Bool.random(using: &rng) ? 0x40 : 0)
        ip[7] = kind == 3 ? UInt8.random(in: 0...255, using: &rng) : 0
        switch kind {
        case 2: ip[9] = 1  // ICMP
        case 1, 7: ip[9] = 17
        case 6: ip[9] = UInt8.random(in: 0...255, using: &rng)
        default: ip[9] = 6
        }
        f += ip
        f += (0..<20).map { _ in UInt8.random(in: 0...255, using: &rng) }
        if kind == 5 || kind == 7 || Int.random(in: 0..<8, using: &rng) == 0 {
            f = Array(f.prefix(Int.random(in: 0...f.count, using: &rng)))  // truncated anywhere
        }
        return f
    }
}

/// The TAP steering program computes the dispatcher's CPU: run in an interpreter over
/// random frames of every shape (TCP, UDP, ICMP, fragments, IP options, truncations, ARP,
/// IPv6, bad headers) and compared with `NetStack.classify` of a real stack; then, as
/// root, loaded into the kernel and attached to a TAP (the verifier accepts it).
@Suite struct TAPSteeringProgramTests {
    @Test(arguments: [2, 3, 4])
    func programMatchesTheDispatcher(cpus: Int) async throws {
        let program = TAPSteeringProgram.instructions(cpus: cpus)
        // The symmetric key folds: a short program.
        #expect(program.count < 200, "\(program.count) instructions")
        let vm = BPFInterpreter(program: program)
        try await withSimPair(cpus: cpus) { pair in
            var rng = SeededRandom(seed: 0x5eed_0000 &+ UInt64(cpus))
            var shapes = Set<Int>()
            for _ in 0..<3000 {
                let frame = SteeringFrames.make(&rng)
                guard let m = pair.a.pool.allocate(headroom: 64) else { Issue.record("no mbuf"); return }
                frame.withUnsafeBytes { _ = m.append(bytes: $0) }
                let owner = pair.a.classify(m)
                m.free()
                let queue: UInt32
                do { queue = try vm.run(frame) } catch { Issue.record("\(error) on \(frame)"); return }
                // Frames the stack cannot place (-1) are handled wherever they are read: queue 0.
                #expect(Int(queue) == max(owner, 0), "frame \(frame): program \(queue), dispatcher \(owner)")
                shapes.insert(owner)
            }
            // Every CPU and the "anywhere" case came up.
            #expect(shapes == Set(-1..<cpus), "\(shapes)")
        }
    }

    /// A key whose windows do not repeat every 16 bits takes the bit-by-bit form; it must
    /// equal ``ToeplitzHash`` with that key.
    @Test func unfoldedFormMatchesTheTables() throws {
        var rng = SeededRandom(seed: 77)
        let key = (0..<40).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let hasher = ToeplitzHash(key: key)
        let program = TAPSteeringProgram.instructions(cpus: 4, key: key)
        #expect(program.count > 400, "\(program.count) instructions")
        let vm = BPFInterpreter(program: program)
        for n in 0..<2000 {
            let src = IPv4Address(UInt32.random(in: 0...UInt32.max, using: &rng))
            let dst = IPv4Address(UInt32.random(in: 0...UInt32.max, using: &rng))
            let sp = UInt16.random(in: 0...UInt16.max, using: &rng), dp = UInt16.random(in: 0...UInt16.max, using: &rng)
            var f = [UInt8](repeating: 0, count: 14 + 20 + 20)
            f[12] = 0x08; f[14] = 0x45
            f[23] = n % 2 == 0 ? 6 : 17
            let fragment = n % 5 == 0
            if fragment { f[20] = 0x20 }
            for (i, v) in [(26, src.value), (30, dst.value)] { for b in 0..<4 { f[i + b] = UInt8(truncatingIfNeeded: v >> (24 - 8 * b)) } }
            f[34] = UInt8(sp >> 8); f[35] = UInt8(sp & 0xff); f[36] = UInt8(dp >> 8); f[37] = UInt8(dp & 0xff)
            let h = fragment ? hasher.hash(src, dst) : hasher.hash(src, dst, sp, dp)
            #expect(try vm.run(f) == UInt32(ToeplitzHash.cpu(for: h, cpus: 4)))
        }
    }

    /// The interpreter is strict enough to catch a broken program.
    @Test func interpreterCatchesBrokenPrograms() {
        let good = TAPSteeringProgram.instructions(cpus: 4)
        var broken = good
        broken[broken.count - 2] = BPFInstruction(code: BPFInstruction.classALU64 | BPFInstruction.opMOV | BPFInstruction.sourceX, dst: 0, src: 3)
        let frame = [UInt8](repeating: 0, count: 10)
        #expect(throws: BPFInterpreter.Fault.self) { _ = try BPFInterpreter(program: broken).run(frame) }
        #expect(throws: BPFInterpreter.Fault.self) { _ = try BPFInterpreter(program: Array(good.dropLast())).run(frame) }
    }

    /// As root: the kernel's verifier accepts the program and the TAP takes it.
    @Test(.enabled(if: getuid() == 0 && FileManager.default.fileExists(atPath: "/dev/net/tun"), "needs root and /dev/net/tun"))
    func kernelAcceptsTheProgram() throws {
        let tap = try TAPInterface(name: "lbsteer\(getpid() % 100000)", queues: 4)
        defer { tap.close() }
        let result = tap.installFlowSteering(cpus: 4)
        #expect(result == .ebpf(cpus: 4, instructions: TAPSteeringProgram.instructions(cpus: 4).count), "\(result)")
        #expect(tap.flowSteering.isActive)
        tap.removeFlowSteering()
        #expect(tap.flowSteering == .off)
        // More CPUs than queues cannot be steered.
        if case .unavailable = tap.installFlowSteering(cpus: 5) {} else { Issue.record("5 CPUs on 4 queues steered") }
    }
}
