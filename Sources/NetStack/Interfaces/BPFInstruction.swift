/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`: an opcode, a
/// destination and a source register, a signed 16-bit offset and a signed 32-bit immediate.
///
/// Only what ``TAPSteeringProgram`` emits is named here: 32- and 64-bit ALU operations with
/// an immediate or a register, context loads, the classic packet loads (`LD_ABS`,
/// `LD_IND`), conditional jumps and `exit`.
public struct BPFInstruction: Equatable, Sendable, CustomStringConvertible {
    /// Opcode: class | size/mode or operation | source.
    public var code: UInt8
    /// Destination register (0 to 10).
    public var dst: UInt8
    /// Source register (0 to 10).
    public var src: UInt8
    /// Jump distance (in instructions, from the next one) or memory offset.
    public var offset: Int16
    /// Immediate operand.
    public var immediate: Int32

    public init(code: UInt8, dst: UInt8 = 0, src: UInt8 = 0, offset: Int16 = 0, immediate: Int32 = 0) {
        self.code = code
        self.dst = dst
        self.src = src
        self.offset = offset
        self.immediate = immediate
    }

    /// The instruction as the 8 bytes the kernel reads, packed in a little-endian word.
    public var encoded: UInt64 {
        UInt64(code) | UInt64(dst & 0xf | (src & 0xf) << 4) << 8 | UInt64(UInt16(bitPattern: offset)) << 16
            | UInt64(UInt32(bitPattern: immediate)) << 32
    }

    public var description: String {
        "code=0x\(String(code, radix: 16)) dst=r\(dst) src=r\(src) off=\(offset) imm=\(immediate)"
    }

    // MARK: - Opcode parts

    /// Instruction classes.
    public static let classLD: UInt8 = 0x00, classLDX: UInt8 = 0x01, classALU: UInt8 = 0x04
    public static let classJMP: UInt8 = 0x05, classALU64: UInt8 = 0x07
    /// Access sizes.
    public static let sizeW: UInt8 = 0x00, sizeH: UInt8 = 0x08, sizeB: UInt8 = 0x10
    /// Load modes.
    public static let modeABS: UInt8 = 0x20, modeIND: UInt8 = 0x40, modeMEM: UInt8 = 0x60
    /// Operand source: the immediate (K) or the source register (X).
    public static let sourceK: UInt8 = 0x00, sourceX: UInt8 = 0x08
    /// ALU operations.
    public static let opADD: UInt8 = 0x00, opAND: UInt8 = 0x50, opLSH: UInt8 = 0x60, opRSH: UInt8 = 0x70
    public static let opMOD: UInt8 = 0x90, opXOR: UInt8 = 0xa0, opMOV: UInt8 = 0xb0, opARSH: UInt8 = 0xc0
    /// Jump operations.
    public static let opJA: UInt8 = 0x00, opJEQ: UInt8 = 0x10, opJGT: UInt8 = 0x20, opJNE: UInt8 = 0x50
    public static let opEXIT: UInt8 = 0x90, opJLT: UInt8 = 0xa0
}
