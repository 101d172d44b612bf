//! The stream-verdict program, hand-encoded: twelve instruction slots, each one commented, so that
//! nothing beyond crates.io is needed to build edgefwd (no clang, no libbpf).

/// Helper numbers (`enum bpf_func_id`).
const BPF_FUNC_GET_SOCKET_COOKIE: i32 = 46;
const BPF_FUNC_SK_REDIRECT_HASH: i32 = 72;
/// `enum sk_action`.
const SK_PASS: i32 = 1;

/// One BPF instruction, laid out as `struct bpf_insn`: opcode, destination and source registers in one
/// byte (dst in the low nibble on little-endian machines), a signed offset and a signed immediate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    pub(super) const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        }
    }
}

/// Opcodes: class | operation | source (include/uapi/linux/bpf_common.h and bpf.h).
const MOV64_REG: u8 = 0x07 | 0xb0 | 0x08; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_IMM: u8 = 0x07 | 0xb0; // BPF_ALU64 | BPF_MOV | BPF_K
const ADD64_IMM: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
const STX_DW: u8 = 0x03 | 0x60 | 0x18; // BPF_STX | BPF_MEM | BPF_DW
const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW, two instruction slots
const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
pub(super) const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
/// `src_reg` of an `LD_IMM64` whose immediate is a map fd the kernel turns into the map's address.
const PSEUDO_MAP_FD: u8 = 1;

/// Registers: r0 return value, r1-r5 arguments (clobbered by calls), r6 callee-saved, r10 frame pointer.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R6: u8 = 6;
const R10: u8 = 10;

/// Instructions in [`verdict_program`] (the 64-bit load takes two).
const PROGRAM_LEN: usize = 12;

/// The stream-verdict program for `map_fd`. In C it reads:
///
/// ```c
/// int verdict(struct __sk_buff *skb) {
///     __u64 key = bpf_get_socket_cookie(skb);          // this socket's cookie
///     bpf_sk_redirect_hash(skb, &peers, &key, 0);       // to the peer's egress (flags 0)
///     return SK_PASS;                                    // redirected, or kept if no peer
/// }
/// ```
pub(super) fn verdict_program(map_fd: i32) -> [Insn; PROGRAM_LEN] {
    [
        // r6 = r1: keep the skb, r1 is clobbered by the first call.
        Insn::new(MOV64_REG, R6, R1, 0, 0),
        // r0 = bpf_get_socket_cookie(r1 = skb)
        Insn::new(CALL, 0, 0, 0, BPF_FUNC_GET_SOCKET_COOKIE),
        // *(u64 *)(r10 - 8) = r0: the key, on the stack.
        Insn::new(STX_DW, R10, R0, -8, 0),
        // r1 = skb
        Insn::new(MOV64_REG, R1, R6, 0, 0),
        // r2 = &map (the loader replaces the fd with the map), two slots.
        Insn::new(LD_IMM64, R2, PSEUDO_MAP_FD, 0, map_fd),
        Insn::new(0, 0, 0, 0, 0),
        // r3 = r10 - 8: the key's address.
        Insn::new(MOV64_REG, R3, R10, 0, 0),
        Insn::new(ADD64_IMM, R3, 0, 0, -8),
        // r4 = 0: flags; 0 means the peer's egress (BPF_F_INGRESS would queue to its receive side).
        Insn::new(MOV64_IMM, R4, 0, 0, 0),
        // bpf_sk_redirect_hash(skb, map, &key, 0): marks the skb for the peer; SK_DROP if no peer.
        Insn::new(CALL, 0, 0, 0, BPF_FUNC_SK_REDIRECT_HASH),
        // return SK_PASS: with the mark, the skb goes to the peer; without it, it stays here.
        Insn::new(MOV64_IMM, R0, 0, 0, SK_PASS),
        Insn::new(EXIT, 0, 0, 0, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_keeps_the_map_fd_in_its_64_bit_load() {
        let program = verdict_program(7);
        assert_eq!(program[4].code, LD_IMM64);
        assert_eq!(program[4].regs, R2 | (PSEUDO_MAP_FD << 4));
        assert_eq!(program[4].imm, 7);
        assert_eq!(program[5], Insn::new(0, 0, 0, 0, 0));
        assert_eq!(program[PROGRAM_LEN - 1].code, EXIT);
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }
}
