"""Far JMP, CALL, RET and IRET check the new instruction pointer against the new CS
limit (SDM vol. 2A JMP/CALL/IRET, vol. 2B RET: "IF tempEIP not within code segment
limits THEN #GP(0)"), before the stack or any register changes; IRET to an outer level
checks the SS it pops as RET does (#GP(SS selector) for an RPL or DPL that is not the
new CPL).  Expected outcomes worked out from those pages; faults are observed through
the IDT of test_sysinsn.guest (vector in EDI, frame on the stack).
"""

from __future__ import annotations

from pyqemu.accel.ops import EXCP_HLT
from pyqemu.target.i386.cpu_state import SegmentCache
from tests.accel.interp.harness import CODE, Guest
from tests.accel.interp.test_sysinsn import STACK, frame, guest, run, vector

GP = 13
EXTRA = {
    0x20: 0x00409A0000001FFF,     # code, DPL 0, 32-bit, byte-granular limit 0x1FFF
    0x30: 0x00CFFA000000FFFF,     # code, DPL 3, 4 GiB
    0x38: 0x00CF92000000FFFF,     # data, DPL 0, 4 GiB
}


def far_guest() -> Guest:
    g = guest(32)
    for sel, d in EXTRA.items():
        g.mem.write(0x1700 + sel, d, 8)
    g.env.gdt.limit = 0x3F
    return g


def test_far_jmp_past_the_new_cs_limit() -> None:
    g = far_guest()
    run(g, "ljmp 0x20:0x2000")
    assert (vector(g), frame(g, 0), frame(g, 1), frame(g, 2)) == (GP, 0, CODE, 0x08)
    g = far_guest()
    g.load("hlt", addr=0x1FF0)
    g.load("ljmp 0x20:0x1ff0")
    assert g.run() == EXCP_HLT and vector(g) is None and g.env.segs[1].selector == 0x20


def test_far_call_past_the_limit_pushes_nothing() -> None:
    g = far_guest()
    run(g, "lcall 0x20:0x2000")
    assert (vector(g), frame(g, 0), frame(g, 1)) == (GP, 0, CODE)
    assert g.env.regs[4] == STACK - 16          # the #GP frame alone: no CS:EIP pushed


def test_retf_past_the_limit_pops_nothing() -> None:
    g = far_guest()
    run(g, "push 0x20\npush 0x2000\nretf")
    assert (vector(g), frame(g, 0), frame(g, 1)) == (GP, 0, CODE + 7)
    assert g.env.regs[4] == STACK - 8 - 16      # the far pointer is still on the stack


def test_iretd_past_the_limit_pops_nothing() -> None:
    g = far_guest()
    run(g, "pushfd\npush 0x20\npush 0x2000\niretd")
    assert (vector(g), frame(g, 0), frame(g, 1)) == (GP, 0, CODE + 8)
    assert g.env.regs[4] == STACK - 12 - 16


def test_iretd_to_ring_3_checks_the_popped_ss() -> None:
    """SS 0x3B: RPL 3 but DPL 0 data: #GP(0x38) at the IRETD, CS still ring 0."""
    g = far_guest()
    run(g, "push 0x3b\npush 0x7000\npushfd\npush 0x33\npush 0x3000\niretd")
    assert (vector(g), frame(g, 0), frame(g, 2)) == (GP, 0x38, 0x08)
    g = far_guest()                             # a DPL-3 SS is taken
    g.mem.write(0x1700 + 0x28, 0x00CFF2000000FFFF, 8)
    g.load("mov ebx, 1\nhlt", addr=0x3000)    # HLT at CPL 3: #GP, from ring 3
    g.env.tr = SegmentCache(0x48, 0x6000, 0x67, 0x8B00)   # ESP0 = STACK, SS0 = 0x10
    g.mem.write(0x6004, STACK, 4)
    g.mem.write(0x6008, 0x10, 4)
    run(g, "push 0x2b\npush 0x7000\npushfd\npush 0x33\npush 0x3000\niretd")
    assert g.env.regs[3] == 1 and vector(g) == GP
    assert (frame(g, 1), frame(g, 2), frame(g, 4), frame(g, 5)) == (0x3005, 0x33, 0x7000, 0x2B)


def test_real_mode_far_jump_past_ffff_is_gp() -> None:
    """Real mode: JMP ptr16:32 to offset 10000H is past CS's 64 KiB limit: #GP through
    IVT[13], IP of the JMP pushed."""
    g = Guest(16)
    g.mem.write(13 * 4, 0x0000_2000, 4)
    g.load("mov dx, 0x6666\nhlt", addr=0x2000)
    g.load("mov sp, 0x7000\n.byte 0x66, 0xea, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00\nhlt")
    assert g.run() == EXCP_HLT
    assert g.env.regs[2] & 0xFFFF == 0x6666 and g.mem.read(0x7000 - 6, 2) == CODE + 3


def test_instruction_crossing_the_cs_limit_is_gp() -> None:
    """Real mode: MOV AX, imm16 at FFFEH has its last byte at 10000H, past CS's limit:
    #GP through IVT[13] with IP FFFEH pushed (SDM vol. 3A, 20.1.4 and 5.3: code fetches
    are limit-checked too); the same instruction one byte lower runs, and IP wraps to
    0000H after it (where a HLT waits)."""
    for ip, faults in ((0xFFFE, True), (0xFFFD, False)):
        g = Guest(16)
        g.mem.write(13 * 4, 0x0000_2000, 4)
        g.load("mov dx, 0x6666\nhlt", addr=0x2000)
        g.mem.write_bytes(ip, bytes([0xB8, 0x34, 0x12]))
        g.mem.write_bytes(0, bytes([0xF4]))         # IVT[0]: not used here
        g.env.rip = ip
        g.env.regs[4] = 0x7000
        g.core.tb_flush()
        assert g.run() == EXCP_HLT
        if faults:
            assert g.env.regs[2] & 0xFFFF == 0x6666 and g.mem.read(0x7000 - 6, 2) == ip
        else:
            assert g.env.regs[0] & 0xFFFF == 0x1234 and g.env.regs[2] & 0xFFFF == 0
