"""Per-family semantics with expectations worked out by hand from the Intel SDM.

Each case: mode, code, initial registers (and CF), then the registers and the
arithmetic flags expected (a flag mask limits the comparison to the flags the
SDM defines for the last flag-writing instruction).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pyqemu.accel.ops import EXCP_HLT
from pyqemu.target.i386.cpu_state import CC_A, CC_C, CC_O, CC_P, CC_S, CC_Z, DF_MASK
from tests.accel.interp.harness import Guest

ALL = CC_C | CC_P | CC_A | CC_Z | CC_S | CC_O


def run(bits: int, code: str, regs: dict[str, int] | None = None, eflags: int = 0,
        setup: Callable[[Guest], object] | None = None) -> Guest:
    g = Guest(bits)
    g.load(code + "\nhlt")
    for name, v in (regs or {}).items():
        g.env.set_reg(name, v)
    g.env.eflags = eflags | 2
    if setup is not None:
        setup(g)
    assert g.run() == EXCP_HLT
    return g


CASES = [
    # ALU (SDM vol. 2A ADD/ADC/SUB/SBB, vol. 1 3.4.3.1)
    ("add 0x7f+1: OF SF AF", 32, "add al, bl", {"al": 0x7F, "bl": 1}, 0,
     {"al": 0x80}, CC_O | CC_S | CC_A, ALL),
    ("add wraps: CF ZF PF AF", 32, "add al, bl", {"al": 0xFF, "bl": 1}, 0,
     {"al": 0}, CC_C | CC_Z | CC_P | CC_A, ALL),
    ("adc adds CF", 32, "adc eax, ebx", {"eax": 0xFFFFFFFF, "ebx": 0}, CC_C,
     {"eax": 0}, CC_C | CC_Z | CC_P | CC_A, ALL),
    ("sbb subtracts CF", 16, "sbb ax, bx", {"ax": 0, "bx": 0}, CC_C,
     {"ax": 0xFFFF}, CC_C | CC_S | CC_P | CC_A, ALL),
    ("sub 0x80-1 overflows", 32, "sub al, 0x1", {"al": 0x80}, 0,
     {"al": 0x7F}, CC_O | CC_A, ALL),
    ("neg 0: CF=0", 32, "neg eax", {"eax": 0}, CC_C, {"eax": 0}, CC_Z | CC_P, ALL),
    ("neg 0x80: OF", 32, "neg bl", {"bl": 0x80}, 0, {"bl": 0x80}, CC_C | CC_O | CC_S, ALL & ~CC_A),
    ("inc keeps CF", 32, "inc eax", {"eax": 0x7FFFFFFF}, CC_C,
     {"eax": 0x80000000}, CC_C | CC_O | CC_S | CC_A | CC_P, ALL),
    ("dec 16-bit high byte reg", 16, "dec ah", {"ax": 0x0012}, 0,
     {"ax": 0xFF12}, CC_S | CC_P | CC_A, ALL),
    ("xor clears CF OF", 64, "xor rax, rbx", {"rax": 5, "rbx": 5}, CC_C | CC_O,
     {"rax": 0}, CC_Z | CC_P, ALL & ~CC_A),
    ("32-bit op zero-extends", 64, "add eax, ebx", {"rax": 0xFFFFFFFF00000001, "rbx": 1}, 0,
     {"rax": 2}, 0, CC_C | CC_Z),
    # shifts and rotates (SDM vol. 2B SAL/SAR/SHL/SHR, RCL/RCR/ROL/ROR)
    ("shl by 1: OF = MSB^CF", 32, "shl al, 0x1", {"al": 0xC0}, 0, {"al": 0x80}, CC_C | CC_S,
     CC_C | CC_O | CC_S | CC_Z | CC_P),
    ("shr count masked to 5 bits", 32, "shr eax, cl", {"eax": 0x80, "cl": 0x21}, 0,
     {"eax": 0x40}, 0, CC_C | CC_O | CC_Z | CC_S),
    ("sar keeps the sign", 16, "sar ax, 0x4", {"ax": 0x8000}, 0, {"ax": 0xF800}, CC_S | CC_P,
     CC_C | CC_S | CC_Z | CC_P),
    ("shift by 0 keeps flags", 32, "shl eax, cl", {"eax": 1, "cl": 0}, CC_Z | CC_C,
     {"eax": 1}, CC_Z | CC_C, ALL),
    ("rcl 8-bit through CF mod 9", 32, "rcl al, cl", {"al": 0x81, "cl": 9}, CC_C,
     {"al": 0x81}, CC_C, CC_C),
    ("rcr by 1 moves CF in", 32, "rcr al, 0x1", {"al": 0x01}, CC_C, {"al": 0x80}, CC_C | CC_O,
     CC_C | CC_O),
    ("rol 64-bit", 64, "rol rax, 0x4", {"rax": 0xF000000000000001}, 0,
     {"rax": 0x1F}, CC_C, CC_C),
    ("ror sets CF from MSB", 32, "ror eax, 0x1", {"eax": 1}, 0, {"eax": 0x80000000}, CC_C | CC_O,
     CC_C | CC_O),
    # multiply and divide (SDM vol. 2A MUL IMUL, DIV IDIV)
    ("mul 8-bit into AX", 32, "mul bl", {"al": 0x80, "bl": 2}, 0, {"ax": 0x100}, CC_C | CC_O,
     CC_C | CC_O),
    ("mul 32-bit no overflow", 32, "mul ebx", {"eax": 3, "ebx": 4, "edx": 9}, 0,
     {"eax": 12, "edx": 0}, 0, CC_C | CC_O),
    ("imul 3-op sign", 32, "imul ecx, ebx, -2", {"ebx": 3}, 0, {"ecx": 0xFFFFFFFA}, 0,
     CC_C | CC_O),
    ("imul 2-op overflow", 16, "imul ax, bx", {"ax": 0x4000, "bx": 2}, 0, {"ax": 0x8000},
     CC_C | CC_O, CC_C | CC_O),
    ("div 64-bit", 64, "div rbx", {"rdx": 1, "rax": 0, "rbx": 2}, 0,
     {"rax": 1 << 63, "rdx": 0}, 0, 0),
    ("idiv truncates toward zero", 32, "idiv ebx", {"edx": 0xFFFFFFFF, "eax": 0xFFFFFFF9,
                                                      "ebx": 2}, 0,
     {"eax": 0xFFFFFFFD, "edx": 0xFFFFFFFF}, 0, 0),
    # bit operations (SDM vol. 2A BT BTS BSF BSR)
    ("bts sets CF from old bit", 32, "bts eax, 0x3", {"eax": 8}, 0, {"eax": 8}, CC_C, CC_C),
    ("btr clears", 32, "btr eax, ecx", {"eax": 0xFF, "ecx": 36}, 0, {"eax": 0xEF}, CC_C, CC_C),
    ("bsf finds lowest", 32, "bsf ecx, eax", {"eax": 0x50, "ecx": 7}, CC_Z, {"ecx": 4}, 0, CC_Z),
    ("bsr of zero sets ZF, keeps dest", 32, "bsr ecx, eax", {"eax": 0, "ecx": 7}, 0,
     {"ecx": 7}, CC_Z, CC_Z),
    ("popcnt", 64, "popcnt rax, rbx", {"rbx": 0xF0F0_0000_0000_0001}, CC_C | CC_O,
     {"rax": 9}, 0, ALL),
    ("popcnt of 0", 32, "popcnt eax, ebx", {"ebx": 0, "eax": 5}, 0, {"eax": 0}, CC_Z, ALL),
    ("bswap", 32, "bswap eax", {"eax": 0x11223344}, 0, {"eax": 0x44332211}, 0, 0),
    # moves and conversions
    ("movsx byte", 32, "movsx eax, bl", {"bl": 0x80}, 0, {"eax": 0xFFFFFF80}, 0, 0),
    ("movzx word", 64, "movzx rax, bx", {"rbx": 0xFFFF8001, "rax": -1}, 0, {"rax": 0x8001}, 0, 0),
    ("movsxd", 64, "movsxd rax, ebx", {"rbx": 0x80000000}, 0, {"rax": 0xFFFFFFFF80000000}, 0, 0),
    ("cwd (opcode 99, capstone calls it cdq)", 16, "cwd", {"ax": 0x8000, "dx": 0}, 0,
     {"dx": 0xFFFF, "edx": 0xFFFF}, 0, 0),
    ("cbw (opcode 98, capstone calls it cwde)", 16, "cbw", {"eax": 0x12340080}, 0,
     {"eax": 0x1234FF80}, 0, 0),
    ("cdqe", 64, "cdqe", {"rax": 0x80000000}, 0, {"rax": 0xFFFFFFFF80000000}, 0, 0),
    ("lea 16-bit wraps", 16, "lea ax, [bx + si + 0x10]", {"bx": 0xFFF0, "si": 0x8}, 0,
     {"ax": 0x8}, 0, 0),
    ("cmov 32-bit false still zero-extends", 64, "cmovz eax, ebx",
     {"rax": 0xFFFFFFFF00000005, "rbx": 9}, 0, {"rax": 5}, 0, 0),
    ("setcc from signed compare", 32, "cmp eax, ebx\nsetl cl\nsetg dl",
     {"eax": 0xFFFFFFFF, "ebx": 1, "ecx": 0, "edx": 0}, 0, {"cl": 1, "dl": 0}, 0, 0),
    ("lahf", 32, "stc\nlahf", {"eax": 0}, CC_Z, {"ah": 0x43}, 0, 0),
    ("sahf keeps OF", 32, "sahf", {"ah": 0xD5}, CC_O, {}, ALL, ALL),
    ("cmc", 32, "cmc", {}, CC_C, {}, 0, CC_C),
    ("xadd", 32, "xadd eax, ebx", {"eax": 1, "ebx": 2}, 0, {"eax": 3, "ebx": 1}, 0, CC_C | CC_Z),
    ("cmpxchg equal", 32, "cmpxchg ecx, ebx", {"eax": 5, "ecx": 5, "ebx": 7}, 0,
     {"ecx": 7, "eax": 5}, CC_Z | CC_P, ALL),
    ("cmpxchg not equal", 32, "cmpxchg ecx, ebx", {"eax": 5, "ecx": 6, "ebx": 7}, 0,
     {"ecx": 6, "eax": 6}, CC_C | CC_S | CC_A | CC_P, ALL),
    ("daa", 16, "daa", {"al": 0x1B}, 0, {"al": 0x21}, CC_A | CC_P, CC_C | CC_A | CC_Z | CC_P),
    ("aam", 16, "aam", {"ax": 0x0023}, 0, {"ax": 0x0305}, CC_P, CC_Z | CC_S | CC_P),
]


@pytest.mark.parametrize("name,bits,code,regs,eflags,expect,flags,mask", CASES,
                         ids=[c[0] for c in CASES])
def test_instruction(name: str, bits: int, code: str, regs: dict[str, int], eflags: int,
                     expect: dict[str, int], flags: int, mask: int) -> None:
    g = run(bits, code, regs, eflags)
    for reg, v in expect.items():
        assert g.env.reg(reg) == v & ((1 << 64) - 1), f"{name}: {reg}"
    assert g.env.eflags & mask == flags & mask, f"{name}: flags {g.env.eflags:#x}"


def test_stack_16_bit_push_pop_pusha_popa() -> None:
    g = run(16, "mov sp, 0x7000\n.byte 0x68, 0x34, 0x12\npusha\nmov ax, 0x0\npopa\npop bx\n"
                "pushf\npop cx",
            {"ax": 0xAAAA, "di": 0x5555})
    assert g.env.reg("bx") == 0x1234 and g.env.reg("ax") == 0xAAAA
    assert g.env.reg("di") == 0x5555 and g.env.reg("sp") == 0x7000
    assert g.mem.read(0x7000 - 2, 2) == 2               # PUSHF's image reused the slot
    assert g.mem.read(0x7000 - 12, 2) == 0x7000 - 2     # PUSHA stored the original SP


def test_enter_leave_nested_frame() -> None:
    """ENTER 8, 2 pushes EBP, the one outer frame pointer, then the new frame (SDM ENTER)."""
    g = run(32, "mov esp, 0x8000\nmov ebp, 0x9000\nenter 0x8, 0x2\nmov esi, ebp\nmov edi, esp\n"
                "leave", setup=lambda g: g.mem.write(0x9000 - 4, 0xCAFE, 4))
    assert g.env.reg("esi") == 0x8000 - 4
    assert g.env.reg("edi") == 0x8000 - 12 - 8
    assert g.mem.read(0x8000 - 8, 4) == 0xCAFE and g.mem.read(0x8000 - 12, 4) == 0x8000 - 4
    assert g.env.reg("ebp") == 0x9000 and g.env.reg("esp") == 0x8000


def test_string_ops_backwards_with_df() -> None:
    g = Guest(32)
    g.mem.write_bytes(0x3000, b"abcd")
    g.load("std\nmov esi, 0x3003\nmov edi, 0x4003\nmov ecx, 0x4\nrep movsb\nlodsb\ncld\nhlt")
    g.mem.write(0x2FFF, 0x7A, 1)
    assert g.run() == EXCP_HLT
    assert g.mem.read_bytes(0x4000, 4) == b"abcd"
    assert g.env.reg("esi") == 0x2FFE and g.env.reg("al") == 0x7A
    assert not g.env.eflags & DF_MASK


def test_repe_cmpsb_stops_at_first_difference() -> None:
    g = Guest(32)
    g.mem.write_bytes(0x3000, b"same-A")
    g.mem.write_bytes(0x4000, b"same-B")
    g.load("mov esi, 0x3000\nmov edi, 0x4000\nmov ecx, 0x6\nrepe cmpsb\nhlt")
    assert g.run() == EXCP_HLT
    assert g.env.reg("ecx") == 0 and g.env.reg("esi") == 0x3006
    assert g.env.eflags & CC_Z == 0 and g.env.eflags & CC_C        # 'A' < 'B'


def test_xlat_with_segment_override_in_real_mode() -> None:
    g = Guest(16)
    g.mem.write(0x20005, 0x99, 1)
    g.load("mov ax, 0x2000\nmov es, ax\nxor bx, bx\nmov al, 0x5\n.byte 0x26, 0xd7\nhlt")
    assert g.run() == EXCP_HLT
    assert g.env.reg("al") == 0x99


def test_legacy_32_bit_paging_4k_and_4m_pages() -> None:
    """32-bit paging (SDM 4.3): PDE[1] -> PT mapping 0x400000 -> 0x200000; PDE[2] is a
    4 MiB page (CR4.PSE) at 0; accessed and dirty bits are set by the walk."""
    g = Guest(32)
    pd, pt = 0x10000, 0x11000
    g.mem.write(pd + 4, pt | 3, 4)
    g.mem.write(pt, 0x200000 | 3, 4)
    g.mem.write(pd + 8, 0x83, 4)                     # P RW PS, base 0
    g.mem.write(pd, 0x83, 4)                         # identity 4 MiB for the code
    g.mem.write(0x200010, 0x12345678, 4)
    g.load("""
        mov eax, cr4
        or eax, 0x10
        mov cr4, eax
        mov eax, 0x10000
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
        mov ebx, [0x400010]
        mov dword ptr [0x800000 + 0x5000], 0x77
        hlt
    """)
    assert g.run() == EXCP_HLT
    assert g.env.reg("ebx") == 0x12345678
    assert g.mem.read(0x5000, 4) == 0x77
    assert g.mem.read(pt, 4) & 0x60 == 0x20           # accessed, not dirty (read only)
    assert g.mem.read(pd + 8, 4) & 0x60 == 0x60       # accessed and dirty


def test_rep_stos_and_movs_across_pages_and_overlap() -> None:
    """Long REP STOSD/MOVSB cross page boundaries (bulk path) and an overlapping forward
    MOVSB replicates its first byte, as the one-element-at-a-time definition says."""
    g = Guest(32)
    g.mem.write_bytes(0x30000, b"xyz")
    g.load("""
        mov edi, 0x10ff0
        mov eax, 0x11223344
        mov ecx, 0x1000
        rep stosd
        mov esi, 0x10ff0
        mov edi, 0x20ffd
        mov ecx, 0x4000
        rep movsb
        mov esi, 0x30000
        mov edi, 0x30001
        mov ecx, 0x10
        rep movsb
        hlt
    """)
    assert g.run() == EXCP_HLT
    assert g.mem.read_bytes(0x10FF0, 0x4000) == bytes.fromhex("44332211") * 0x1000
    assert g.mem.read_bytes(0x20FFD, 0x4000) == bytes.fromhex("44332211") * 0x1000
    assert g.mem.read_bytes(0x30000, 0x11) == b"x" * 0x11
    assert g.env.reg("ecx") == 0 and g.env.reg("edi") == 0x30011


def test_les_loads_offset_and_segment_in_real_mode() -> None:
    g = Guest(16)
    g.mem.write(0x500, 0x1234 | (0x2000 << 16), 4)       # far pointer 2000:1234
    g.load("les bx, [0x500]\nmov al, byte ptr es:[bx]\nhlt")
    g.mem.write(0x21234, 0x5A, 1)
    assert g.run() == EXCP_HLT
    assert g.env.reg("bx") == 0x1234 and g.env.segs[0].selector == 0x2000
    assert g.env.segs[0].base == 0x20000 and g.env.reg("al") == 0x5A


def test_swapgs_rdtscp_and_tzcnt_as_bsf() -> None:
    """TZCNT's encoding runs as BSF on a CPU without BMI1 (which we do not report)."""
    g = Guest(64)
    g.env.kernelgsbase = 0x1000
    g.env.tsc_aux = 0x7
    g.load("swapgs\nrdtscp\nmov rsi, 0x8\ntzcnt rdi, rsi\nhlt")
    assert g.run() == EXCP_HLT
    assert g.env.segs[5].base == 0x1000 and g.env.kernelgsbase == 0
    assert g.env.reg("ecx") == 7
    assert g.env.reg("rdi") == 3
