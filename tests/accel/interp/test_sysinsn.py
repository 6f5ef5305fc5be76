"""System instructions: LMSW SMSW CLTS, MOV to/from DRn, LAR LSL VERR VERW, SYSENTER
SYSEXIT, BOUND, INTO.  Expected values worked out by hand from the Intel SDM (vol. 2A/2B
instruction pages, "Operation" and the exception lists); faults are observed through
an IDT whose handler for vector v sets EDI = v and halts.
"""

from __future__ import annotations

from pyqemu.accel.ops import EXCP_HLT
from pyqemu.target.i386.cpu_state import CR0_ET, CR0_MP, CR0_PE, CR0_TS, CR4_DE, SegmentCache
from pyqemu.target.i386.descriptors import GATE_INT32, gate_descriptor
from tests.accel.interp.harness import CODE, Guest
from tests.accel.interp.test_exec import put_gdt

IDT = 0x6000
HANDLERS = 0x3000
STACK = 0x8000


def guest(bits: int = 32) -> Guest:
    """A flat 32-bit (or 64-bit) guest whose exception vectors 0-31 each set EDI and halt."""
    g = Guest(bits)
    put_gdt(g)
    for v in range(32):
        target = HANDLERS + 16 * v
        g.load(f"mov edi, {v}\nhlt", addr=target)
        if bits == 64:
            g.mem.write_bytes(IDT + 16 * v, gate_descriptor(0x18, target, GATE_INT32, ia32e=True))
        else:
            g.mem.write_bytes(IDT + 8 * v, gate_descriptor(0x08, target, GATE_INT32))
    g.env.idt.base, g.env.idt.limit = IDT, (16 if bits == 64 else 8) * 32 - 1
    if bits == 64:
        g.env.segs[1].selector = 0x18
    g.env.regs[7] = 0xFFFF
    g.env.regs[4] = STACK
    return g


def user(g: Guest) -> Guest:
    """Drop a 32-bit guest to CPL 3 (CS.RPL, SS.DPL); a 32-bit TSS gives the handlers
    ESP0 = STACK, SS0 = 0x10 (SDM vol. 3A, 6.12.1).  The HLT ending a test is then #GP
    too: tests look at the faulting EIP."""
    g.env.segs[2].flags |= 3 << 13
    g.env.segs[1].selector |= 3
    g.env.regs[4] = 0x7800
    g.env.tr = SegmentCache(0x28, 0x7000, 0x67, 0x8B00)
    g.mem.write(0x7004, STACK, 4)
    g.mem.write(0x7008, 0x10, 4)
    return g


def run(g: Guest, code: str, **regs: int) -> Guest:
    g.load(code + "\nhlt")
    for name, v in regs.items():
        g.env.set_reg(name, v)
    assert g.run() == EXCP_HLT
    return g


def vector(g: Guest) -> int | None:
    """The exception taken (EDI set by its handler), or None."""
    return None if g.env.regs[7] == 0xFFFF else g.env.regs[7]


def frame(g: Guest, index: int) -> int:
    size = 8 if g.bits == 64 else 4
    return g.mem.read(g.env.regs[4] + size * index, size)


# -- LMSW SMSW CLTS (SDM vol. 2A LMSW, CLTS; vol. 2B SMSW) ---------------------------------

def test_lmsw_loads_cr0_low_four_bits_but_cannot_clear_pe() -> None:
    g = run(guest(), "lmsw ax", eax=CR0_MP | CR0_TS | 0xFFF0)     # PE clear in the source
    assert vector(g) is None
    assert g.env.cr[0] == CR0_PE | CR0_ET | CR0_MP | CR0_TS        # PE kept, ET kept, no high bits


def test_lmsw_sets_pe_in_real_mode() -> None:
    g = Guest(16)
    g.load("mov ax, 0x1\nlmsw ax\nsmsw bx\nhlt")
    assert g.run() == EXCP_HLT
    assert g.env.cr[0] & CR0_PE and g.env.regs[3] & 1


def test_lmsw_from_memory_and_smsw_to_memory() -> None:
    g = guest()
    g.mem.write(0x5000, CR0_TS | CR0_MP, 2)
    run(g, "lmsw word ptr [0x5000]\nsmsw word ptr [0x5002]\nsmsw ecx")
    assert g.mem.read(0x5002, 2) == (CR0_PE | CR0_ET | CR0_TS | CR0_MP)
    assert g.env.regs[1] == g.env.cr[0]


def test_lmsw_and_clts_are_privileged() -> None:
    for code in ("lmsw ax", "clts"):
        g = run(user(guest()), code)
        assert vector(g) == 13 and frame(g, 0) == 0 and frame(g, 1) == CODE


def test_smsw_at_cpl3_is_allowed_unless_umip() -> None:
    g = run(user(guest()), "smsw eax")
    assert vector(g) == 13 and frame(g, 1) == CODE + 3     # the HLT after it faulted
    assert g.env.regs[0] == g.env.cr[0]
    g = user(guest())
    g.env.cr[4] |= 1 << 11                               # CR4.UMIP
    run(g, "smsw eax")
    assert vector(g) == 13 and frame(g, 1) == CODE


def test_clts_clears_ts() -> None:
    g = guest()
    g.env.cr[0] |= CR0_TS
    run(g, "clts")
    assert not g.env.cr[0] & CR0_TS


# -- MOV DRn (SDM vol. 2A, MOV-Move to/from Debug Registers; vol. 3B, 18.2) ----------------

def test_mov_dr_round_trip_and_fixed_bits() -> None:
    g = run(guest(), """
        mov dr0, eax
        mov ebx, dr0
        mov dr6, ecx
        mov esi, dr6
        mov dr7, edx
        mov ebp, dr7
    """, eax=0x12345678, ecx=0, edx=0xFFFFFFFF & ~0x2000)
    assert vector(g) is None
    assert g.env.regs[3] == 0x12345678
    assert g.env.regs[6] == 0xFFFF0FF0            # DR6 reserved bits 4-11, 16-31 read 1
    # DR7: bit 10 reads 1; bits 11, 12, 14, 15 read 0; 13 (GD) was written 0.
    assert g.env.regs[5] == 0xFFFF07FF


def test_mov_dr4_dr5_alias_dr6_dr7_without_cr4_de() -> None:
    g = guest()
    g.env.dr[7] = 0x401
    run(g, "mov eax, dr5\nmov dr4, ebx", ebx=0x1)
    assert vector(g) is None and g.env.regs[0] == 0x401
    assert g.env.dr[6] == 0xFFFF0FF1


def test_mov_dr4_is_ud_with_cr4_de() -> None:
    g = guest()
    g.env.cr[4] |= CR4_DE
    run(g, "mov eax, dr4")
    assert vector(g) == 6


def test_mov_dr_at_cpl3_is_gp() -> None:
    g = run(user(guest()), "mov eax, dr0")
    assert vector(g) == 13 and frame(g, 1) == CODE


def test_mov_dr_with_dr7_gd_is_db_fault() -> None:
    g = guest()
    g.env.dr[7] = 0x2400
    run(g, "mov eax, dr0")
    assert vector(g) == 1
    assert frame(g, 0) == CODE                    # a fault: EIP of the MOV
    assert g.env.dr[6] & 0x2000 and not g.env.dr[7] & 0x2000


def test_mov_dr7_high_bits_in_64_bit_mode_is_gp() -> None:
    g = run(guest(64), "mov dr7, rax", rax=1 << 32)
    assert vector(g) == 13
    g = run(guest(64), "mov dr0, rax\nmov rbx, dr0", rax=0xFFFF800000001000)
    assert vector(g) is None and g.env.regs[3] == 0xFFFF800000001000


# -- LAR LSL VERR VERW (SDM vol. 2A LAR, LSL; vol. 2B VERR, VERW) ----------------------------

EXTRA_GDT = {
    0x20: 0x00CFF2000000FFFF,     # data RW, DPL 3, 4 GiB (G)
    0x28: 0x0000100000001234,     # data read-only, DPL 0, not present, byte limit 0x1234
    0x30: 0x004098000000FFFF,     # code execute-only, DPL 0
    0x38: 0x00409E000000FFFF,     # code conforming readable, DPL 0
    0x40: 0x00008C0000080000,     # 32-bit call gate, DPL 0
    0x48: 0x0000810000000067,     # 16-bit TSS available, DPL 0, limit 0x67
    0x50: 0x0000800000000000,     # type 0: reserved
}
ZF = 0x40


def sel_guest(bits: int = 32) -> Guest:
    g = guest(bits)
    for sel, d in EXTRA_GDT.items():
        g.mem.write(0x1700 + sel, d, 8)
    g.env.gdt.limit = 0x57
    return g


def check(code: str, sel: int, bits: int = 32, cpl3: bool = False,
          before: int = 0xDEADBEEF) -> tuple[int, int]:
    """Run ``code`` with EBX = sel, EAX = before and ZF set; returns (RAX, ZF)."""
    g = sel_guest(bits)
    if cpl3:
        user(g)
    g.env.eflags = 2 | ZF
    run(g, code, rax=before, rbx=sel)
    assert vector(g) == (13 if cpl3 else None)       # at CPL 3, only the closing HLT faults
    return g.env.regs[0], g.env.eflags & ZF


def test_lar_access_rights() -> None:
    assert check("lar eax, ebx", 0x20) == (0x00C0F200, ZF)
    assert check("lar eax, ebx", 0x28) == (0x00001000, ZF)       # not present: still loaded
    assert check("lar eax, ebx", 0x40) == (0x00008C00, ZF)       # call gate: valid for LAR
    assert check("lar eax, ebx", 0x48) == (0x00008100, ZF)
    assert check("lar ax, bx", 0x20) == (0xDEADF200, ZF)         # 16-bit: bytes 5 only
    assert check("lar eax, ebx", 0x50) == (0xDEADBEEF, 0)        # reserved type
    assert check("lar eax, ebx", 0x0) == (0xDEADBEEF, 0)         # null selector
    assert check("lar eax, ebx", 0x58) == (0xDEADBEEF, 0)        # past the GDT limit: no #GP
    assert check("lar eax, ebx", 0x2C) == (0xDEADBEEF, 0)        # LDT with LDTR null
    assert check("lar eax, ebx", 0x2B) == (0xDEADBEEF, 0)        # RPL 3 > DPL 0


def test_lar_privilege_at_cpl3() -> None:
    assert check("lar eax, ebx", 0x23, cpl3=True) == (0x00C0F200, ZF)
    assert check("lar eax, ebx", 0x10, cpl3=True) == (0xDEADBEEF, 0)    # DPL 0 < CPL 3
    assert check("lar eax, ebx", 0x38, cpl3=True) == (0x00409E00, ZF)   # conforming: no check


def test_lar_from_memory() -> None:
    g = sel_guest()
    g.mem.write(0x5000, 0x20, 2)
    run(g, "lar eax, word ptr [0x5000]")
    assert g.env.regs[0] == 0x00C0F200 and g.env.eflags & ZF


def test_lsl_segment_limit() -> None:
    assert check("lsl eax, ebx", 0x20) == (0xFFFFFFFF, ZF)       # G: (limit << 12) | 0xFFF
    assert check("lsl eax, ebx", 0x28) == (0x1234, ZF)
    assert check("lsl ax, bx", 0x20) == (0xDEADFFFF, ZF)
    assert check("lsl eax, ebx", 0x48) == (0x67, ZF)             # TSS: valid for LSL
    assert check("lsl eax, ebx", 0x40) == (0xDEADBEEF, 0)        # call gate: not for LSL
    assert check("lsl eax, ebx", 0x10, cpl3=True) == (0xDEADBEEF, 0)


def test_lar_lsl_in_64_bit_mode() -> None:
    rex_w_lar = ".byte 0x48, 0x0f, 0x02, 0xc3"                   # lar rax, bx
    assert check(rex_w_lar, 0x20, bits=64, before=1 << 63) == (0x00C0F200, ZF)
    assert check("lsl eax, ebx", 0x20, bits=64, before=1 << 63) == (0xFFFFFFFF, ZF)
    # IA-32e mode takes only LDT, 64-bit TSS and 64-bit call gate system descriptors.
    assert check(rex_w_lar, 0x48, bits=64, before=5) == (5, 0)


def test_verr_verw() -> None:
    assert check("verr bx", 0x20)[1] == ZF
    assert check("verw bx", 0x20)[1] == ZF
    assert check("verr bx", 0x28)[1] == ZF          # read-only data, not present
    assert check("verw bx", 0x28)[1] == 0
    assert check("verr bx", 0x30)[1] == 0           # execute-only code
    assert check("verr bx", 0x08)[1] == ZF          # readable code
    assert check("verw bx", 0x08)[1] == 0           # code is never writable
    assert check("verr bx", 0x40)[1] == 0           # system descriptor
    assert check("verr bx", 0x00)[1] == 0
    assert check("verr bx", 0x58)[1] == 0
    assert check("verw bx", 0x10, cpl3=True)[1] == 0
    assert check("verw bx", 0x23, cpl3=True)[1] == ZF
    assert check("verr bx", 0x38, cpl3=True)[1] == ZF   # conforming readable code


def test_verw_memory_operand_keeps_other_flags() -> None:
    g = sel_guest()
    g.mem.write(0x5000, 0x20, 2)
    run(g, "stc\nverw word ptr [0x5000]\nsetc cl\nsetz dl")
    assert g.env.regs[1] & 0xFF == 1 and g.env.regs[2] & 0xFF == 1


def test_lar_and_verr_are_ud_in_real_mode() -> None:
    for code in ("lar ax, bx", "verr bx"):
        g = Guest(16)
        g.mem.write(6 * 4, 0x3000, 4)                  # IVT[6] = 0000:3000
        g.load("mov di, 0x6\nhlt", addr=0x3000)
        g.load(code + "\nhlt")
        assert g.run() == EXCP_HLT
        assert g.env.regs[7] & 0xFFFF == 6 and g.mem.read(0x8000 - 6, 2) == CODE


# -- SYSENTER SYSEXIT (SDM vol. 2B, SYSENTER, SYSEXIT) -------------------------------------

def test_sysenter_and_sysexit_32_bit() -> None:
    g = user(guest())
    g.env.sysenter_cs, g.env.sysenter_esp, g.env.sysenter_eip = 0x08, 0x9000, 0x2000
    g.env.eflags = 2 | 0x200 | 0x10000                  # IF RF
    g.load("mov eax, 0x7\nsysenter")
    g.load("mov ebx, esp\nmov ecx, 0x7000\nmov edx, 0x2100\nsysexit", addr=0x2000)
    g.load("mov esi, 0x1\nl: jmp l", addr=0x2100)
    g.run(max_insns=20)
    env = g.env
    assert vector(g) is None
    assert env.regs[3] == 0x9000                        # ESP = IA32_SYSENTER_ESP at CPL 0
    assert env.segs[1].selector == 0x1B and env.segs[2].selector == 0x23   # SYSENTER_CS+16|3, +24|3
    assert env.cpl == 3 and env.regs[4] == 0x7000 and env.regs[6] == 1
    assert env.segs[1].flags & (3 << 13) == 3 << 13 and not env.segs[1].flags & (1 << 21)
    assert not env.eflags & 0x200                       # SYSENTER cleared IF; SYSEXIT keeps it


def test_sysenter_lands_at_cpl0() -> None:
    g = user(guest())
    g.env.sysenter_cs, g.env.sysenter_esp, g.env.sysenter_eip = 0x08, 0x9000, 0x2000
    g.load("sysenter")
    g.load("l: jmp l", addr=0x2000)
    g.run(max_insns=5)
    env = g.env
    assert env.cpl == 0 and env.segs[1].selector == 0x08 and env.segs[2].selector == 0x10
    assert env.regs[4] == 0x9000 and env.rip == 0x2000
    assert env.segs[1].flags & (1 << 22) and env.segs[2].flags & (1 << 22)    # D/B = 1


def test_sysenter_with_null_cs_msr_and_sysexit_at_cpl3_are_gp() -> None:
    g = run(user(guest()), "sysenter")
    assert vector(g) == 13 and frame(g, 0) == 0 and frame(g, 1) == CODE
    g = user(guest())
    g.env.sysenter_cs = 0x08
    run(g, "sysexit")
    assert vector(g) == 13 and frame(g, 1) == CODE


def test_sysexit_with_null_cs_msr_is_gp() -> None:
    g = run(guest(), "sysexit")
    assert vector(g) == 13


def test_sysenter_and_sysexitq_64_bit() -> None:
    g = guest(64)
    g.env.sysenter_cs, g.env.sysenter_esp, g.env.sysenter_eip = 0x10, 0xFFFF800000009000, 0x2000
    g.mem.write(0x1700 + 0x10, 0x00AF9A000000FFFF, 8)   # a 64-bit code descriptor (not read)
    g.load("sysenter")
    g.load("mov rbx, rsp\nmov rcx, 0x7000\nmov rdx, 0x2100\nsysexit", addr=0x2000)   # REX.W
    g.load("mov esi, 0x1\nl: jmp l", addr=0x2100)
    g.run(max_insns=20)
    env = g.env
    assert vector(g) is None
    assert env.regs[3] == 0xFFFF800000009000             # 64-bit RSP from the MSR
    assert env.segs[1].selector == 0x33 and env.segs[2].selector == 0x3B   # +32|3, +40|3
    assert env.segs[1].flags & (1 << 21) and env.regs[6] == 1 and env.cpl == 3


def test_sysexit_to_compatibility_mode_and_noncanonical_rdx() -> None:
    g = guest(64)
    g.env.sysenter_cs = 0x10
    g.load(".byte 0x0f, 0x35")                          # SYSEXIT without REX.W
    g.load("l: jmp l", addr=0x2100)
    g.env.regs[1], g.env.regs[2] = 0xAAAA00007000, 0xBBBB00002100
    g.run(max_insns=5)
    env = g.env
    assert env.segs[1].selector == 0x23 and not env.segs[1].flags & (1 << 21)
    assert env.regs[4] == 0x7000 and env.rip == 0x2100    # ECX/EDX zero-extended
    g = guest(64)
    g.env.sysenter_cs = 0x10
    run(g, "sysexit", rcx=0x7000, rdx=0x0000800000000000)
    assert vector(g) == 13 and frame(g, 1) == CODE


# -- BOUND INTO (SDM vol. 2A, BOUND; INT n/INTO/INT3/INT1) -------------------------------------

def test_bound_in_range_and_out_of_range() -> None:
    for index, expect in ((5, None), (-3, None), (10, None), (-4, 5), (11, 5)):
        g = guest()
        g.mem.write(0x5000, -3 & 0xFFFFFFFF, 4)            # signed lower bound
        g.mem.write(0x5004, 10, 4)
        run(g, "bound eax, qword ptr [ebx]", eax=index & 0xFFFFFFFF, ebx=0x5000)
        assert vector(g) == expect, index
        if expect is not None:
            assert frame(g, 0) == CODE                      # a fault: no error code, EIP of BOUND


def test_bound_16_bit_operands() -> None:
    for ax, expect in ((0xFFFF8000, None), (0x10, None), (0x11, 5), (0x7FFF, 5)):
        g = guest()
        g.mem.write(0x5000, 0x8000, 2)                      # lower -32768
        g.mem.write(0x5002, 0x0010, 2)
        run(g, "bound ax, dword ptr [ebx]", eax=ax, ebx=0x5000)
        assert vector(g) == expect, hex(ax)


def test_into_traps_only_with_of() -> None:
    g = run(guest(), "into\nmov ecx, 0x1")
    assert vector(g) is None and g.env.regs[1] == 1
    g = guest()
    g.env.eflags = 2 | 0x800                                # OF
    run(g, "into")
    assert vector(g) == 4 and frame(g, 0) == CODE + 1       # a trap: EIP after INTO


def test_into_is_ud_in_64_bit_mode() -> None:
    g = guest(64)
    g.env.eflags = 2 | 0x800
    run(g, ".byte 0xce")
    assert vector(g) == 6 and frame(g, 0) == CODE


def test_into_at_cpl3_through_a_dpl0_gate_is_gp() -> None:
    """INTO checks the gate DPL like INT n: #GP(vector * 8 + 2) (SDM vol. 2A, INT n)."""
    g = user(guest())
    g.env.eflags = 2 | 0x800
    run(g, "into")
    assert vector(g) == 13 and frame(g, 0) == 4 * 8 + 2 and frame(g, 1) == CODE


def test_bound_in_real_mode() -> None:
    g = Guest(16)
    g.mem.write(5 * 4, 0x3000, 4)                          # IVT[5] = 0000:3000
    g.load("mov di, 0x5\nhlt", addr=0x3000)
    g.mem.write(0x5000, 0x00200010, 4)                     # bounds 0x10 .. 0x20
    g.load("mov bx, 0x5000\nmov ax, 0x20\nbound ax, dword ptr [bx]\ninc ax\n"
           "bound ax, dword ptr [bx]\nhlt")
    assert g.run() == EXCP_HLT
    assert g.env.regs[7] & 0xFFFF == 5 and g.env.regs[0] & 0xFFFF == 0x21
    assert g.mem.read(0x8000 - 6, 2) == CODE + 9           # the second BOUND (3+3+2+1 bytes on)
