"""Call gates, far RET to an outer privilege level, and LAR/LSL on 16-byte system
descriptors (Intel SDM vol. 2A CALL/JMP, vol. 2B RET, LAR, LSL; vol. 3A 5.8, 7.2.3).

Three references:

* Unicorn (QEMU's TCG core) runs the same bytes for every 32-bit protected-mode
  transfer that completes: a guest sets up its GDT, IDT and TSS, drops to CPL 3 with
  a far RET, calls back up through 32- and 16-bit call gates (with parameters, to
  CPL 0 and CPL 1, to a conforming segment, through a far JMP) and returns with
  RETF imm16; registers, selectors, the stacks and the data area must match.
  Unicorn does not deliver exceptions (tests/unicorn_ref.py, "event-delivery"),
  so the faults are checked against the SDM alone.
* The SDM, worked out by hand next to each test, for the faults (vector and error
  code, and the state the handler sees), for IA-32e mode call gates and RETF, and
  for LAR/LSL.
* The host's KVM for a 64-bit call gate from CPL 3: probed, and skipped with the
  reason when the host cannot run it (a PVM host answers #UD: it runs CPL-3 code on
  its own GDT, which has no such gate).
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from pyqemu.accel.ops import EXCP_DEBUG, EXCP_HLT
from pyqemu.target.i386.cpu_state import (
    DESC_B_MASK,
    DESC_DPL_SHIFT,
    DESC_G_MASK,
    DESC_L_MASK,
    DESC_P_MASK,
    DESC_S_MASK,
    DESC_TYPE_SHIFT,
    R_CS,
    R_DS,
    R_ES,
    R_FS,
    R_GS,
    R_SS,
    SegmentCache,
)
from pyqemu.target.i386.descriptors import TSS16, TSS32, gate_descriptor, segment_descriptor
from tests.accel.interp import prot32_pair
from tests.accel.interp.harness import CODE, Guest, asm

# -- the 32-bit image ----------------------------------------------------------------------

USER, KENTRY, KENTRY16, KENTRY1, CONF = 0x2000, 0x3000, 0x3400, 0x3800, 0x3C00
DATA, USTACK, KSTACK, STACK1 = 0x5000, 0x7000, 0x9000, 0xA000
GDT, IDT, TSS, HANDLERS = 0x10000, 0x11000, 0x12000, 0x13000
PSEUDO = 0x4F00                   # GDTR at +0, IDTR at +8 (for LGDT/LIDT)
BODY = CODE + 0x60                # the scenario, after the prologue


def seg(base: int, limit: int, typ: int, dpl: int, *, s: int = 1, p: int = 1, db: int = 1,
        g: int = 1, lng: int = 0) -> int:
    """A segment descriptor (SDM vol. 3A, 3.4.5, Figure 3-8) as a quadword."""
    flags = (typ << DESC_TYPE_SHIFT | dpl << DESC_DPL_SHIFT | (DESC_S_MASK if s else 0)
             | (DESC_P_MASK if p else 0) | (DESC_L_MASK if lng else 0)
             | (DESC_B_MASK if db else 0) | (DESC_G_MASK if g else 0))
    return segment_descriptor(base, limit, flags)


def gate(sel: int, off: int, typ: int, dpl: int, count: int = 0, p: int = 1) -> int:
    """A call, interrupt, trap or task gate (SDM vol. 3A, 5.8.3, Figure 5-8; 6.11) as a
    quadword."""
    return int.from_bytes(gate_descriptor(sel, off, typ, dpl, present=bool(p),
                                          param_count=count), "little")


def code32(dpl: int, typ: int = 0xB, **kw: int) -> int:
    return seg(0, 0xFFFFF, typ, dpl, **kw)


def data32(dpl: int, typ: int = 0x3, **kw: int) -> int:
    return seg(0, 0xFFFFF, typ, dpl, **kw)


GDT32 = {
    0x08: code32(0), 0x10: data32(0), 0x18: code32(3), 0x20: data32(3),
    0x28: seg(TSS, 0x67, 0x9, 0, s=0, db=0, g=0),        # 32-bit TSS, available
    0x30: gate(0x08, KENTRY, 0xC, 3, count=2),            # 32-bit gate, 2 parameters
    0x38: gate(0x48, KENTRY16, 0x4, 3, count=1),          # 16-bit gate, 1 parameter
    0x40: code32(1),
    0x48: seg(0, 0xFFFF, 0xB, 0, db=0, g=0),              # 16-bit code, DPL 0
    0x50: data32(1),
    0x58: code32(0, typ=0xF),                              # conforming, DPL 0
    0x60: gate(0x08, KENTRY, 0xC, 0),                      # DPL 0: not for CPL 3
    0x68: gate(0x08, KENTRY, 0xC, 3, p=0),                 # not present
    0x70: gate(0xD8, 0, 0x5, 3),                           # task gate to TSS 0xD8
    0x78: data32(3, p=0),
    0x80: data32(3, typ=0x1),                              # read-only
    0x88: gate(0x00, KENTRY, 0xC, 3),                      # null code selector
    0x90: gate(0x10, KENTRY, 0xC, 3),                      # to a data segment
    0x98: gate(0xA0, KENTRY, 0xC, 3),                      # to a code segment not present
    0xA0: code32(0, p=0),
    0xA8: gate(0x40, KENTRY1, 0xC, 3),                     # to CPL 1
    0xB0: gate(0x58, CONF, 0xC, 3),                        # to a conforming segment
    0xB8: gate(0x18, USER, 0xC, 0),                        # to DPL 3 code (from CPL 0)
    0xC0: seg(0, 0xFFF, 0xB, 0, g=0),                      # code, limit 0xFFF
    0xC8: gate(0xC0, 0x2000, 0xC, 3),                      # offset past that limit
    0xD0: seg(TSS + 0x100, 0x67, 0xB, 3, s=0, db=0, g=0),  # busy 32-bit TSS, DPL 3
    0xD8: seg(TSS + 0x200, 0x67, 0x9, 3, s=0, db=0, g=0),  # available 32-bit TSS, DPL 3
    0xE0: gate(0x18, USER, 0xC, 3),                        # to DPL 3 code: same privilege
    0xE8: data32(1, p=0),
    0xF0: seg(TSS + 0x300, 0x2B, 0x1, 0, s=0, db=0, g=0),  # 16-bit TSS, available
}
GDT32_LIMIT = 0xF7
END = 0x2F00                      # a CPL-3 scenario's last address (an interp breakpoint)


def far(op: int, sel: int, off: int, osize: int = 4) -> str:
    """``lcall``/``ljmp`` ptr16:16/32 (9A/EA) as .byte: keystone mis-assembles them."""
    raw = bytes([op]) + off.to_bytes(osize, "little") + sel.to_bytes(2, "little")
    return ".byte " + ", ".join(f"{b:#x}" for b in raw)


def prologue() -> dict[int, bytes]:
    """CPL 0: LGDT, LIDT, far JMP to 08:BODY-0x20, SS=DS=ES=FS=0x10, GS=0x23, ESP=KSTACK,
    LTR 0x28.  The same bytes start Unicorn (flat 32-bit, CS=0) and interp (CS=0x08)."""
    # LGDT/LIDT m (0F 01 /2, /3) as .byte: keystone adds a 66H prefix (a 24-bit base).
    tables_ = ".byte " + ", ".join(f"{b:#x}" for b in bytes([0x0F, 0x01, 0x15])
                                   + PSEUDO.to_bytes(4, "little") + bytes([0x0F, 0x01, 0x1D])
                                   + (PSEUDO + 8).to_bytes(4, "little"))
    part1 = asm(tables_ + "\n" + far(0xEA, 0x08, CODE + 0x20), 32, CODE)
    part2 = asm(f"""
        mov ax, 0x10
        mov ss, ax
        mov esp, {KSTACK:#x}
        mov ds, ax
        mov es, ax
        mov fs, ax
        mov ax, 0x23
        mov gs, ax
        mov ax, 0x28
        ltr ax
    """, 32, CODE + 0x20)
    assert len(part1) <= 0x20 and CODE + 0x20 + len(part2) <= BODY
    part2 += asm("nop", 32) * (BODY - CODE - 0x20 - len(part2))
    return {CODE: part1, CODE + 0x20: part2}


def tables() -> dict[int, bytes]:
    gdt = bytearray(GDT32_LIMIT + 1)
    for sel, d in GDT32.items():
        struct.pack_into("<Q", gdt, sel, d)
    idt = bytearray(32 * 8)
    handlers = bytearray()
    for v in range(32):
        target = HANDLERS + 16 * v
        struct.pack_into("<Q", idt, 8 * v, gate(0x08, target, 0xE, 0))
        handlers += asm(f"mov edi, {v}\nhlt", 32, target).ljust(16, b"\x90")
    tss = TSS32.pack(esp0=KSTACK, ss0=0x10, esp1=STACK1, ss1=0x51)
    pseudo = struct.pack("<HIH", GDT32_LIMIT, GDT, 0) + struct.pack("<HI", 32 * 8 - 1, IDT)
    return {GDT: bytes(gdt), IDT: bytes(idt), HANDLERS: bytes(handlers), TSS: bytes(tss),
            PSEUDO: pseudo}


def to_user(body: str = "") -> str:
    """At CPL 0 after the prologue: ``body``, then a far RET to 1B:USER on 23:USTACK."""
    return body + f"""
        push 0x23
        push {USTACK:#x}
        push 0x1b
        push {USER:#x}
        retf
    """


def image(kernel_body: str, user: str, extra: dict[int, str | bytes] | None = None
          ) -> dict[int, bytes]:
    img = {**prologue(), **tables()}
    img[BODY] = asm(to_user(kernel_body), 32, BODY)
    img[USER] = asm(user, 32, USER)
    for addr, src in (extra or {}).items():
        img[addr] = src if isinstance(src, bytes) else asm(src, 32, addr)
    return img


# -- running an image --------------------------------------------------------------------------

COMPARED = ((DATA, 0x200), (USTACK - 0x100, 0x100), (KSTACK - 0x100, 0x100),
            (STACK1 - 0x100, 0x100), (GDT, GDT32_LIMIT + 1))


def run_interp(img: dict[int, bytes], end: int = END) -> Guest:
    return prot32_pair.run_interp(img, end)


def state_interp(g: Guest) -> dict[str, Any]:
    return prot32_pair.interp_state(g, COMPARED)


def run_unicorn(img: dict[int, bytes], end: int = END) -> dict[str, Any]:
    return prot32_pair.run_unicorn(img, CODE, end, COMPARED)


def both(img: dict[int, bytes], unicorn_differs: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``img`` to END on interp and on Unicorn; they must agree (but on the keys of
    ``unicorn_differs``, where the caller checks interp against the SDM by hand);
    returns interp's state."""
    ours = state_interp(run_interp(img))
    theirs = run_unicorn(img)
    assert ours["eip"] == END, f"interp stopped at {ours['eip']:#x} (vector {ours['edi']:#x})"
    for key in ours:
        if key in unicorn_differs:
            assert ours[key] != theirs[key], f"{key}: Unicorn agrees now: drop the exception"
        elif key == "mem":
            for (addr, _), a, b in zip(COMPARED, ours[key], theirs[key], strict=True):
                assert a == b, f"memory at {addr:#x}: interp {a.hex()} unicorn {b.hex()}"
        else:
            assert ours[key] == theirs[key], f"{key}: interp {ours[key]} unicorn {theirs[key]}"
    return ours


def dwords(raw: bytes, n: int, at: int = 0) -> list[int]:
    return list(struct.unpack_from(f"<{n}I", raw, at))


# -- 32-bit transfers that complete: interp against Unicorn -------------------------------------

def test_far_ret_to_outer_level_nulls_the_data_segments_the_outer_level_cannot_use() -> None:
    # SDM vol. 2B RET, RETURN-TO-OUTER-PRIVILEGE-LEVEL: CS:EIP then ESP, SS are popped;
    # ES, DS, FS (DPL 0 data) become null at CPL 3, GS (DPL 3 data) stays.
    img = image("", f"""
        mov eax, ds
        mov ebx, es
        mov ecx, fs
        mov edx, gs
        mov esi, ss
        mov edi, cs
        jmp {END:#x}
    """)
    s = both(img)
    assert (s["eax"], s["ebx"], s["ecx"], s["edx"]) == (0, 0, 0, 0x23)
    assert (s["esi"], s["edi"], s["esp"]) == (0x23, 0x1B, USTACK)


def test_call_gate_to_cpl0_copies_parameters_and_retf_imm16_returns_to_cpl3() -> None:
    # SDM vol. 3A 5.8.5, Figure 5-13: on the TSS's SS0:ESP0 the gate pushes the caller's
    # SS, ESP, the 2 parameters (kept in order) and CS, EIP; RETF 8 pops them back and
    # releases 8 bytes of parameters on both stacks.
    img = image("", f"""
        push 0x11111111
        push 0x22222222
        {far(0x9A, 0x33, 0xDEAD)}
        mov ss:[{DATA + 0x20:#x}], esp
        mov eax, ds
        mov ebx, es
        mov ecx, cs
        mov edx, ss
        jmp {END:#x}
    """, {KENTRY: f"""
        mov ss:[{DATA:#x}], esp
        mov eax, ss
        mov ss:[{DATA + 4:#x}], eax
        mov eax, cs
        mov ss:[{DATA + 8:#x}], eax
        mov ax, 0x10
        mov ds, ax
        mov ax, 0x23
        mov es, ax
        retf 8
    """})
    s = both(img)
    data = s["mem"][0]
    assert dwords(data, 3) == [KSTACK - 24, 0x10, 0x08]         # CPL 0: SS0:ESP0, CS.RPL 0
    frame = dwords(s["mem"][2], 6, 0x100 - 24)
    assert frame == [USER + 17, 0x1B, 0x22222222, 0x11111111, USTACK - 8, 0x23]
    assert dwords(data, 1, 0x20) == [USTACK]                    # 8 + 8 released
    assert (s["eax"], s["ebx"], s["ecx"], s["edx"]) == (0, 0x23, 0x1B, 0x23)


def test_16_bit_call_gate_pushes_words_and_16_bit_retf_returns() -> None:
    # A 16-bit gate (type 4) to 16-bit DPL-0 code: 2-byte slots for SS, SP, the one
    # parameter, CS, IP (SDM vol. 2A CALL, CallGateSize = 16); RETF 2 (16-bit operand)
    # pops IP, CS, adds 2, pops SP, SS.
    img = image("", f"""
        push 0x4444
        push 0x3333
        {far(0x9A, 0x3B, 0)}
        mov ebx, esp
        mov ecx, cs
        mov edx, ss
        jmp {END:#x}
    """, {KENTRY16: asm("mov bp, sp\nmov ax, cs\n.byte 0xca, 2, 0", 16, KENTRY16)})
    # (RETF 2 as .byte: keystone writes 66 CA, a 32-bit RETF, in 16-bit code.)
    s = both(img)
    frame = struct.unpack_from("<5H", s["mem"][2], 0x100 - 10)
    assert frame == (USER + 17, 0x1B, 0x3333, USTACK - 8, 0x23)
    assert (s["ebx"], s["ecx"], s["edx"]) == (USTACK - 8 + 2, 0x1B, 0x23)
    assert s["eax"] & 0xFFFF == 0x48                           # CS.RPL = new CPL 0


def test_call_gate_with_a_16_bit_tss_takes_sp0_ss0_from_it() -> None:
    # A 16-bit TSS (type 1) holds SPn, SSn as words at 2 + 4n (SDM vol. 3A, 7.6, Figure
    # 7-10; CALL MORE-PRIVILEGE "current TSS is 16-bit"): ESP = the zero-extended SP0.
    sp0 = KSTACK - 0x80
    img = image("mov ax, 0xf0\nltr ax", f"""
        push 0x11111111
        push 0x22222222
        {far(0x9A, 0x33, 0)}
        jmp {END:#x}
    """, {KENTRY: "mov esi, esp\nmov edi, ss\nretf 8",
          TSS + 0x300: TSS16.pack(sp0=sp0, ss0=0x10)[:TSS16.offset("sp1")]})
    s = both(img)
    assert (s["esi"], s["edi"], s["esp"]) == (sp0 - 24, 0x10, USTACK)
    frame = dwords(s["mem"][2], 6, 0x100 - 0x80 - 24)
    assert frame == [USER + 17, 0x1B, 0x22222222, 0x11111111, USTACK - 8, 0x23]


def test_call_gate_to_cpl1_takes_ss1_esp1_and_retf_goes_back_to_cpl3() -> None:
    img = image("", f"""
        {far(0x9A, 0xAB, 0)}
        mov ebx, cs
        mov ecx, ss
        mov edx, esp
        jmp {END:#x}
    """, {KENTRY1: """
        mov eax, ss
        mov esi, cs
        mov edi, esp
        retf
    """})
    s = both(img)
    assert (s["eax"], s["esi"], s["edi"]) == (0x51, 0x41, STACK1 - 16)
    assert dwords(s["mem"][3], 4, 0x100 - 16) == [USER + 7, 0x1B, USTACK, 0x23]
    assert (s["ebx"], s["ecx"], s["edx"]) == (0x1B, 0x23, USTACK)


def test_call_gate_to_conforming_segment_keeps_cpl_and_stack() -> None:
    # A conforming target runs at the caller's CPL: no stack switch, and "CS(RPL) := CPL"
    # ends SAME-PRIVILEGE in SDM vol. 2A CALL (vol. 3A 5.8.2); a same-privilege RETF
    # returns.  Unicorn 2.1 leaves CS = 0x58 there (the gate's selector, RPL 0) while
    # running at CPL 3: the one value (EAX = CS in the conforming code) compared with
    # the SDM only.
    img = image("", f"""
        {far(0x9A, 0xB3, 0)}
        jmp {END:#x}
    """, {CONF: "mov eax, cs\nmov ebx, ss\nmov ecx, esp\nretf"})
    s = both(img, unicorn_differs=("eax",))
    assert (s["eax"], s["ebx"], s["ecx"]) == (0x5B, 0x23, USTACK - 8)
    assert dwords(s["mem"][1], 2, 0x100 - 8) == [USER + 7, 0x1B]
    assert s["esp"] == USTACK


def test_far_jmp_through_call_gate_never_changes_privilege() -> None:
    # JMP through a gate to a conforming DPL-0 segment: CPL stays 3, nothing pushed.
    img = image("", f"""
        {far(0xEA, 0xB3, 0)}
    """, {CONF: f"mov eax, cs\nmov ebx, ss\nmov ecx, esp\njmp {END:#x}"})
    s = both(img)
    assert (s["eax"], s["ebx"], s["ecx"]) == (0x5B, 0x23, USTACK)


def test_call_gate_through_memory_operand_at_cpl0_to_cpl0() -> None:
    # CALL m16:32 through a DPL-0 gate at CPL 0: same privilege, no parameters copied.
    img = image(f"""
        mov dword ptr [{DATA + 0x40:#x}], 0
        mov word ptr [{DATA + 0x44:#x}], 0x60
        mov eax, {DATA + 0x40:#x}
        call fword ptr [eax]
    """.replace("call fword ptr [eax]", ".byte 0xff, 0x18"), f"jmp {END:#x}",
        {KENTRY: "mov esi, esp\nmov edi, cs\nretf"})
    s = both(img)
    assert (s["esi"], s["edi"]) == (KSTACK - 8, 0x08)


# -- 32-bit faults: the SDM by hand ---------------------------------------------------------------

def user_fault(user: str, extra: dict[int, str | bytes] | None = None) -> tuple[int, list[int]]:
    """Run a CPL-3 ``user`` snippet that must fault; returns (vector, frame): the frame
    on the TSS's ESP0 stack is error code, EIP, CS, EFLAGS, ESP, SS."""
    g = run_interp(image("", user, extra))
    vector = g.env.regs[7]
    assert vector != 0xFFFF, f"no fault: stopped at {g.env.rip:#x}"
    assert g.env.regs[4] == KSTACK - 24, "not delivered from CPL 3 with an error code"
    return vector, [g.mem.read(KSTACK - 24 + 4 * i, 4) for i in range(6)]


@pytest.mark.parametrize("sel,vector,error", [
    (0x63, 13, 0x60),     # gate DPL 0 < CPL 3: #GP(gate)
    (0x6B, 11, 0x68),     # gate not present: #NP(gate)
    (0x8B, 13, 0),        # null code selector in the gate: #GP(0)
    (0x93, 13, 0x10),     # gate to a data segment: #GP(code selector)
    (0x9B, 11, 0xA0),     # gate to a code segment not present: #NP(code selector)
    (0xCB, 13, 0),        # offset past the target's limit: #GP(0)
    (0xD3, 13, 0xD0),     # far CALL to a busy TSS: #GP(TSS)
    (0x7B, 13, 0x78),     # far CALL to a data segment: #GP(selector)
    (0xFB, 13, 0xF8),     # past the GDT limit (0xF7): #GP(selector)
])
def test_call_gate_faults_leave_the_caller_state(sel: int, vector: int, error: int) -> None:
    got, frame = user_fault(f"push 0x1234\n{far(0x9A, sel, 0)}\nhlt")
    assert (got, frame[0]) == (vector, error)
    # The handler sees the CALL itself, at CPL 3, its stack untouched (a fault: SDM 6.5).
    assert frame[1:3] == [USER + 5, 0x1B] and frame[4:] == [USTACK - 4, 0x23]


def test_jmp_through_gate_to_more_privileged_nonconforming_code_is_gp() -> None:
    # JMP CALL-GATE: a non-conforming target must have DPL = CPL: #GP(code selector).
    vector, frame = user_fault(far(0xEA, 0x33, 0))
    assert (vector, frame[0], frame[1]) == (13, 0x08, USER)


def test_gate_rpl_above_gate_dpl_is_gp() -> None:
    # At CPL 0, gate DPL 0 through a selector with RPL 3: RPL > DPL, #GP(gate).
    g = run_interp(image(far(0x9A, 0x63, 0), "hlt"))
    assert g.env.regs[7] == 13 and g.mem.read(g.env.regs[4], 4) == 0x60


def test_gate_to_less_privileged_code_is_gp() -> None:
    # At CPL 0, a gate to DPL-3 code: the target's DPL > CPL, #GP(code selector).
    g = run_interp(image(far(0x9A, 0xB8, 0), "hlt"))
    assert g.env.regs[7] == 13 and g.mem.read(g.env.regs[4], 4) == 0x18


@pytest.mark.parametrize("ss1,vector,error", [
    (0x53, 10, 0x50),       # SS1 RPL 3 != new CPL 1: #TS(SS1)
    (0x19, 10, 0x18),       # SS1 DPL 3 != 1: #TS(SS1)
    (0x41, 10, 0x40),       # SS1 is code: #TS(SS1)
    (0x00, 10, 0),          # SS1 null: #TS(0)
    (0x1F9, 10, 0x1F8),     # SS1 past the GDT limit: #TS(SS1)
    (0xE9, 12, 0xE8),       # SS1 not present: #SS(SS1)
])
def test_more_privileged_call_checks_the_tss_stack(ss1: int, vector: int, error: int) -> None:
    # SDM vol. 2A CALL, MORE-PRIVILEGE, through the gate to CPL 1 (SS1 in the TSS at 16;
    # the fault itself is delivered on SS0:ESP0, which stay good).
    got, frame = user_fault(f"{far(0x9A, 0xAB, 0)}\nhlt",
                            {TSS + TSS32.offset("ss1"): ss1.to_bytes(4, "little")})
    assert (got, frame[0]) == (vector, error)
    assert frame[1:3] == [USER, 0x1B] and frame[4:] == [USTACK, 0x23]


def test_tss_too_short_for_the_stack_slot_is_ts_on_the_tss() -> None:
    # TSS limit 0x0F: ESP1:SS1 (offsets 12-17) are past it, SS0:ESP0 (4-9) are not:
    # the call to CPL 1 is #TS(TR selector 0x28), delivered on SS0:ESP0.
    img = image("", f"{far(0x9A, 0xAB, 0)}\nhlt")
    gdt = bytearray(img[GDT])
    struct.pack_into("<Q", gdt, 0x28, seg(TSS, 0x0F, 0x9, 0, s=0, db=0, g=0))
    img[GDT] = bytes(gdt)
    g = run_interp(img)
    assert g.env.regs[7] == 10 and g.env.regs[4] == KSTACK - 24
    assert g.mem.read(KSTACK - 24, 4) == 0x28 and g.mem.read(KSTACK - 20, 4) == USER


# -- RETF to an outer level: the checks on the popped SS -------------------------------------------

def retf_fault(ss: int, cs: int = 0x1B) -> tuple[int, int, int]:
    """At CPL 0 push ``ss``:USTACK, ``cs``:USER and RETF; returns (vector, error, ESP seen
    by the handler relative to KSTACK)."""
    body = f"""
        push {ss:#x}
        push {USTACK:#x}
        push {cs:#x}
        push {USER:#x}
        retf
    """
    g = run_interp(image(body, "hlt"))
    return g.env.regs[7], g.mem.read(g.env.regs[4], 4), g.env.regs[4] - KSTACK


@pytest.mark.parametrize("ss,vector,error", [
    (0x00, 13, 0),          # null SS: #GP(0)
    (0x20, 13, 0x20),       # SS RPL 0 != new CPL 3: #GP(SS)
    (0x13, 13, 0x10),       # SS DPL 0 != 3: #GP(SS)
    (0x83, 13, 0x80),       # read-only data: #GP(SS)
    (0x1B, 13, 0x18),       # code: #GP(SS)
    (0x7B, 12, 0x78),       # not present: #SS(SS)
    (0x1FB, 13, 0x1F8),     # past the GDT limit: #GP(SS)
])
def test_retf_to_outer_level_checks_the_stack_segment(ss: int, vector: int, error: int) -> None:
    # SDM vol. 2B RET, RETURN-TO-OUTER-PRIVILEGE-LEVEL.  The fault is at CPL 0 and
    # leaves the four pushed values on the stack: the frame is below them.
    assert retf_fault(ss) == (vector, error, -16 - 16)


@pytest.mark.parametrize("cs,error", [
    (0x18, 0x18),           # RPL 0 < ... no: RPL 0 = CPL: same level, but DPL 3 != RPL 0
    (0x43, 0x40),           # non-conforming DPL 1 != RPL 3
    (0x2B, 0x28),           # a TSS is not code
    (0x23, 0x20),           # data is not code
])
def test_retf_checks_the_code_segment(cs: int, error: int) -> None:
    vector, err, _ = retf_fault(0x23, cs)
    assert (vector, err) == (13, error)


def test_retf_to_an_inner_level_is_gp() -> None:
    # At CPL 3 a RETF whose CS RPL is 0 < CPL: #GP(CS) (SDM vol. 2B RET).
    vector, frame = user_fault(f"push 0x10\npush {KSTACK:#x}\npush 0x08\npush 0x1000\nretf")
    assert (vector, frame[0]) == (13, 0x08)


# -- IA-32e mode: 64-bit call gates and RETF -------------------------------------------------------

G64 = 0x20000            # GDT
TSS64 = 0x21000
IDT64 = 0x22000
H64 = 0x23000
KRSP0, KRSP1 = 0x90000, 0xA0000
U64, K64 = 0x40000, 0x50000
USTACK64 = 0x70000


def gate64(sel: int, off: int, dpl: int, upper_type: int = 0) -> tuple[int, int]:
    """A 16-byte IA-32e call gate (SDM vol. 3A, 5.8.3.1, Figure 5-9); ``upper_type``: what
    its upper half holds where a descriptor has its type (it must be 0)."""
    raw = gate_descriptor(sel, off, 0xC, dpl, ia32e=True)
    upper = int.from_bytes(raw[8:], "little") | upper_type << (32 + DESC_TYPE_SHIFT)
    return int.from_bytes(raw[:8], "little"), upper


GDT64 = {
    0x08: code32(0, lng=1, db=0), 0x10: data32(0), 0x18: data32(3),
    0x20: code32(3, lng=1, db=0), 0x28: code32(3),       # 64-bit and compat code, DPL 3
    0x30: code32(1, lng=1, db=0), 0x38: data32(1),
    0x40: code32(0),                                     # compat code, DPL 0
    0x48: code32(0, lng=1),                              # L and D both set
}
GATES64 = {
    0x50: gate64(0x08, K64, 3),
    0x60: gate64(0x30, K64, 3),                          # to CPL 1
    0x70: gate64(0x40, K64, 3),                          # to compat code: #GP
    0x80: gate64(0x08, K64, 3, upper_type=0xC),          # upper type not 0: #GP
    0x90: gate64(0x08, K64 | 0x1234 << 48, 3),           # non-canonical offset: #GP(0)
    0xA0: (gate(0x08, K64, 0x4, 3), 0),                  # a 16-bit gate: not in IA-32e
    0xB0: (seg(TSS64, 0x67, 0x9, 3, s=0, db=0, g=0), TSS64 >> 32),   # 64-bit TSS, DPL 3
    0xC0: (seg(0x30000, 0xFFF, 0x2, 3, s=0, db=0, g=0), 0),          # LDT, DPL 3
    0xD0: gate64(0x48, K64, 3),                          # to L+D code
}
GDT64_LIMIT = 0xDF


def guest64(bits: int = 64, cpl: int = 3, gdt_limit: int = GDT64_LIMIT,
            upper: dict[int, tuple[int, int]] | None = None) -> Guest:
    """Long mode with this file's GDT, a 64-bit TSS (RSP0, RSP1) and an IDT whose
    handlers set EDI = vector and halt; CPL 3 (64-bit or compat code) or CPL 0."""
    g = Guest(64)
    for sel, d in GDT64.items():
        g.mem.write(G64 + sel, d, 8)
    for sel, (lo, hi) in {**GATES64, **(upper or {})}.items():
        g.mem.write(G64 + sel, lo, 8)
        g.mem.write(G64 + sel + 8, hi, 8)
    g.mem.write(TSS64 + 4, KRSP0, 8)
    g.mem.write(TSS64 + 12, KRSP1, 8)
    for v in range(32):
        target = H64 + 16 * v
        g.mem.write_bytes(target, asm(f"mov edi, {v}\nhlt", 64, target))
        g.mem.write(IDT64 + 16 * v, gate(0x08, target, 0xE, 0), 8)
        g.mem.write(IDT64 + 16 * v + 8, 0, 8)
    env = g.env
    env.gdt = SegmentCache(0, G64, gdt_limit, 0)
    env.idt = SegmentCache(0, IDT64, 16 * 32 - 1, 0)
    env.tr = SegmentCache(0xB0, TSS64, 0x67, 0x8B00)
    env.regs[7] = 0xFFFF
    if cpl == 3:
        flags = 0xA0FB00 if bits == 64 else 0xC0FB00
        env.segs[R_CS] = SegmentCache(0x23 if bits == 64 else 0x2B, 0, 0xFFFFFFFF, flags | 0x8000)
        for i in (R_SS, R_DS, R_ES, R_FS, R_GS):
            env.segs[i] = SegmentCache(0x1B, 0, 0xFFFFFFFF, 0xC0F300 | 0x8000)
        env.regs[4] = USTACK64
        env.rip = U64
    else:
        env.segs[R_CS] = SegmentCache(0x08, 0, 0xFFFFFFFF, 0xA09B00 | 0x8000)
        for i in (R_SS, R_DS, R_ES, R_FS, R_GS):
            env.segs[i] = SegmentCache(0x10, 0, 0xFFFFFFFF, 0xC09300 | 0x8000)
        env.regs[4] = KRSP0
        env.rip = K64 - 0x1000
    g.core.mode_changed()
    return g


def lcall_m(sel: int, bits: int) -> str:
    """CALL m16:64 (REX.W FF /3) in 64-bit code, CALL m16:32 in compat code, through a far
    pointer placed right after a short jump (keystone cannot write these)."""
    if bits == 64:
        ptr = struct.pack("<QH", 0, sel)
        insn = bytes([0x48, 0xFF, 0x1D, 0x02, 0, 0, 0, 0xEB, len(ptr)]) + ptr
    else:
        ptr = struct.pack("<IH", 0, sel)        # at U64 + 8 (compat mode: no RIP-relative)
        insn = bytes([0xFF, 0x1D]) + (U64 + 8).to_bytes(4, "little") + bytes([0xEB, len(ptr)]) + ptr
    return ".byte " + ", ".join(f"{b:#x}" for b in insn)


def run64(g: Guest, user: str, kernel: str, bits: int = 64, end: int | None = None) -> int:
    """Load ``user`` at U64 (``bits``-bit code) and ``kernel`` at K64 (64-bit code); run to
    the HLT closing ``user`` (CPL 3: #GP, vector 13 at that HLT) or to a fault."""
    g.mem.write_bytes(U64, asm(user, bits, U64))
    g.mem.write_bytes(K64, asm(kernel, 64, K64))
    g.core.tb_flush()
    if end is not None:
        g.core.breakpoints = {end}
    return g.core.run(100_000)


def test_64_bit_call_gate_from_cpl3_switches_to_rsp0_with_a_null_ss() -> None:
    # SDM vol. 2A CALL, MORE-PRIVILEGE, CallGateSize = 64: NewSS = null with RPL = 0,
    # RSP = TSS.RSP0 (no alignment, unlike interrupts), 8-byte pushes of SS, RSP, CS, RIP.
    g = guest64()
    user = lcall_m(0x53, 64) + "\nhlt"
    kernel = "mov rax, ss\nmov rbx, cs\nmov rcx, rsp\nhlt"
    assert run64(g, user, kernel) == EXCP_HLT
    env = g.env
    assert (env.regs[0], env.regs[3], env.regs[1]) == (0, 0x08, KRSP0 - 32)
    assert env.cpl == 0 and env.segs[R_SS].dpl == 0 and env.regs[7] == 0xFFFF
    frame = [g.mem.read(KRSP0 - 32 + 8 * i, 8) for i in range(4)]
    assert frame == [U64 + 7, 0x23, USTACK64, 0x1B]


def run_to(g: Guest, addr: int) -> None:
    g.core.breakpoints = {addr}
    assert g.core.run(100_000) == EXCP_DEBUG and g.env.rip == addr, (
        f"stopped at {g.env.rip:#x}, vector {g.env.regs[7]:#x}")
    g.core.breakpoints = set()


def rex_w_retf(g: Guest, imm: int = 0) -> None:
    """Execute REX.W RETF [imm16] (48 CB / 48 CA iw; capstone calls it ``retfq``) at RIP."""
    code = b"\x48\xcb" if not imm else b"\x48\xca" + imm.to_bytes(2, "little")
    g.mem.write_bytes(g.env.rip, code)          # 64-bit code: CS base 0, identity paging
    g.core.tb_flush()
    g.core.step()


def test_64_bit_call_gate_to_cpl1_and_rex_w_retf_back_to_cpl3() -> None:
    # Through a gate to CPL 1: RSP1, SS = the null selector 1 with SS.DPL 1.  Then REX.W
    # RETF to CPL 3 pops RIP, CS, RSP, SS as 8-byte values (SDM vol. 2B RET,
    # IA-32E-MODE-RETURN-TO-OUTER-PRIVILEGE-LEVEL) and checks ES, FS, GS, DS: DS (DPL-1
    # data loaded at CPL 1) and FS (DPL-0 data) become null, GS (null, with a base from
    # WRMSR) keeps its base, ES (DPL-3 data) stays.
    g = guest64()
    g.env.segs[R_GS] = SegmentCache(0, 0xABC000, 0, 0)
    g.env.segs[R_FS] = SegmentCache(0x10, 0, 0xFFFFFFFF, 0xC09300 | 0x8000)
    user = ("push 1\npush 2\n" + lcall_m(0x63, 64)
            + "\nmov rbx, rsp\nmov rcx, cs\nmov rdx, ss\nmov rsi, ds\nhlt")
    kernel = "mov r8, ss\nmov r9, rsp\nmov ax, 0x39\nmov ds, ax\nnop"
    g.mem.write_bytes(U64, asm(user, 64, U64))
    g.mem.write_bytes(K64, asm(kernel, 64, K64))
    g.core.tb_flush()
    run_to(g, K64 + 13)                                   # the NOP, at CPL 1
    env = g.env
    assert (env.regs[8], env.regs[9], env.cpl) == (1, KRSP1 - 32, 1)
    assert env.segs[R_SS].dpl == 1 and env.segs[R_CS].selector == 0x31
    assert [g.mem.read(KRSP1 - 32 + 8 * i, 8) for i in range(4)] == [
        U64 + 11, 0x23, USTACK64 - 16, 0x1B]
    rex_w_retf(g)
    assert (env.rip, env.cpl, env.regs[4]) == (U64 + 11, 3, USTACK64 - 16)
    assert [s.selector for s in env.segs] == [0x1B, 0x23, 0x1B, 0, 0, 0]
    assert env.segs[R_GS].base == 0xABC000 and env.segs[R_ES].base == 0
    assert g.core.run(1000) == EXCP_HLT
    assert (env.regs[3], env.regs[1], env.regs[2], env.regs[6]) == (USTACK64 - 16, 0x23, 0x1B, 0)
    assert env.regs[7] == 13                              # the closing HLT, at CPL 3


def test_rex_w_retf_imm16_releases_parameters_on_both_stacks() -> None:
    # CPL 0 -> 3 with REX.W RETF 16: RSP := popped RSP, then + 16 (SDM vol. 2B RET).
    g = guest64(cpl=0)
    frame = [U64, 0x23, 0xAAAA, 0xBBBB, USTACK64 - 16, 0x1B]
    for i, v in enumerate(frame):
        g.mem.write(KRSP0 - 48 + 8 * i, v, 8)
    g.env.regs[4] = KRSP0 - 48
    rex_w_retf(g, 16)
    env = g.env
    assert (env.rip, env.regs[4], env.cpl) == (U64, USTACK64, 3)
    assert (env.segs[R_CS].selector, env.segs[R_SS].selector) == (0x23, 0x1B)
    assert [env.segs[i].selector for i in (R_ES, R_DS, R_FS, R_GS)] == [0, 0, 0, 0]


def test_retf_32_bit_operand_in_64_bit_mode_to_outer_level() -> None:
    # RETF 8 without REX.W in 64-bit code: 4-byte EIP, CS, then +8, ESP, SS; 64-bit CS:
    # RSP = the popped ESP (zero-extended) + 8.
    g = guest64(cpl=0)
    kernel = f"""
        sub rsp, 24
        mov dword ptr [rsp], {U64:#x}
        mov dword ptr [rsp + 4], 0x23
        mov dword ptr [rsp + 16], {USTACK64 - 8:#x}
        mov dword ptr [rsp + 20], 0x1b
        retf 8
    """
    g.mem.write_bytes(K64 - 0x1000, asm(kernel, 64, K64 - 0x1000))
    g.mem.write_bytes(U64, asm("mov rbx, rsp\nmov rcx, ss\nmov rdx, cs\nhlt", 64, U64))
    g.core.tb_flush()
    assert g.core.run(1000) == EXCP_HLT
    env = g.env
    assert (env.regs[3], env.regs[1], env.regs[2]) == (USTACK64, 0x1B, 0x23)
    assert env.regs[7] == 13                              # the closing HLT, at CPL 3


def test_64_bit_call_gate_from_compatibility_mode() -> None:
    # A 32-bit caller (compat mode) through the 64-bit gate: 8-byte pushes all the same;
    # REX.W RETF returns to the compat code (32-bit CS), ESP = the popped value.
    g = guest64(bits=32)
    user = lcall_m(0x53, 32) + "\nmov ebx, esp\nmov ecx, cs\nhlt"
    g.mem.write_bytes(U64, asm(user, 32, U64))
    g.mem.write_bytes(K64, asm("mov rsi, rsp\nnop", 64, K64))
    g.core.tb_flush()
    run_to(g, K64 + 3)
    env = g.env
    assert (env.regs[6], env.cpl, env.mode_name) == (KRSP0 - 32, 0, "long64")
    assert [g.mem.read(KRSP0 - 32 + 8 * i, 8) for i in range(4)] == [U64 + 6, 0x2B, USTACK64,
                                                                        0x1B]
    rex_w_retf(g)
    assert (env.rip, env.mode_name, env.regs[4]) == (U64 + 6, "compat32", USTACK64)
    assert g.core.run(1000) == EXCP_HLT
    assert (env.regs[3], env.regs[1], env.regs[7]) == (USTACK64, 0x2B, 13)


@pytest.mark.parametrize("sel,error,why", [
    (0x73, 0x40, "target is compat code"),
    (0xD3, 0x48, "target has L and D set"),
    (0x83, 0x80, "upper half's type field is not 0"),
    (0x93, 0, "non-canonical offset"),
    (0xA3, 0xA0, "16-bit gate in IA-32e mode"),
    (0xB3, 0xB0, "a 64-bit TSS: no task switch in IA-32e mode"),
])
def test_64_bit_call_gate_faults(sel: int, error: int, why: str) -> None:
    g = guest64()
    assert run64(g, lcall_m(sel, 64) + "\nnop\nhlt", "hlt") == EXCP_HLT
    env = g.env
    assert env.regs[7] == 13, why
    assert g.mem.read(env.regs[4], 8) == error, why
    assert g.mem.read(env.regs[4] + 8, 8) == U64, why             # the CALL faulted


def test_64_bit_call_gate_whose_upper_half_is_past_the_gdt_limit_is_gp() -> None:
    g = guest64(gdt_limit=0x57)              # the gate at 0x50 has only its lower 8 bytes
    assert run64(g, lcall_m(0x53, 64) + "\nnop\nhlt", "hlt") == EXCP_HLT
    assert g.env.regs[7] == 13 and g.mem.read(g.env.regs[4], 8) == 0x50


def test_64_bit_retf_with_null_ss_to_rpl3_is_gp_but_to_cpl1_loads_null_ss() -> None:
    # IA-32e RET to an outer level: a null SS is taken only for 64-bit code at RPL < 3.
    def retf_to(cs: int) -> Guest:
        g = guest64(cpl=0)
        kernel = f"""
            sub rsp, 16
            mov dword ptr [rsp], {K64 + 0x100:#x}
            mov dword ptr [rsp + 4], {cs:#x}
            mov dword ptr [rsp + 8], {KRSP1:#x}
            mov dword ptr [rsp + 12], 0
            retf
        """
        g.mem.write_bytes(K64 - 0x1000, asm(kernel, 64, K64 - 0x1000))
        g.mem.write_bytes(K64 + 0x100, asm("mov rax, ss\nmov rbx, rsp\nnop\nhlt", 64,
                                           K64 + 0x100))
        g.core.tb_flush()
        g.core.breakpoints = {K64 + 0x106}                         # the NOP
        assert g.core.run(1000) in (EXCP_DEBUG, EXCP_HLT)
        return g
    g = retf_to(0x31)
    env = g.env
    assert env.rip == K64 + 0x106
    assert (env.regs[0], env.regs[3], env.cpl, env.segs[R_SS].dpl) == (0, KRSP1, 1, 1)
    g = retf_to(0x23)
    assert g.env.regs[7] == 13 and g.mem.read(g.env.regs[4], 8) == 0     # #GP(0)
    assert g.env.cpl == 0 and g.mem.read(g.env.regs[4] + 16, 8) == 0x08  # at CPL 0


# -- LAR / LSL on 16-byte system descriptors -------------------------------------------------------

ZF = 0x40


def lar_lsl(sel: int, bits: int = 64, gdt_limit: int = GDT64_LIMIT) -> tuple[tuple[int, int],
                                                                              tuple[int, int]]:
    """LAR and LSL of ``sel`` at CPL 3; returns ((value, ZF), (value, ZF)) with the
    destinations preset to 0x5A5A."""
    g = guest64(bits=bits, gdt_limit=gdt_limit)
    code = "mov eax, 0x5a5a\nmov edx, 0x5a5a\nlar eax, ebx\npushfq\npop rcx\n"\
           "lsl edx, ebx\npushfq\npop rsi\nhlt"
    if bits == 32:
        code = code.replace("pushfq", "pushfd").replace("pop rcx", "pop ecx").replace(
            "pop rsi", "pop esi")
    g.env.regs[3] = sel
    assert run64(g, code, "hlt", bits=bits) == EXCP_HLT and g.env.regs[7] == 13
    r = g.env.regs
    return (r[0], r[1] & ZF), (r[2], r[6] & ZF)


@pytest.mark.parametrize("bits", [64, 32])
def test_lar_lsl_read_16_byte_system_descriptors_in_ia32e_mode(bits: int) -> None:
    # SDM vol. 2A LAR and LSL, IA-32e mode columns: the 64-bit TSS (9) and the LDT (2)
    # for both, the 64-bit call gate (C) for LAR only.
    assert lar_lsl(0xB3, bits) == ((0x0000E900, ZF), (0x67, ZF))
    assert lar_lsl(0xC3, bits) == ((0x0000E200, ZF), (0xFFF, ZF))
    assert lar_lsl(0x53, bits) == ((0x0000EC00, ZF), (0x5A5A, 0))


@pytest.mark.parametrize("bits", [64, 32])
def test_lar_lsl_fail_when_the_upper_half_is_past_the_table_limit(bits: int) -> None:
    # The 64-bit TSS at 0xB0 with a GDT limit of 0xB7: its first 8 bytes are in the
    # table, its upper half is not.  A code segment's 8 bytes are enough.
    assert lar_lsl(0xB3, bits, gdt_limit=0xB7) == ((0x5A5A, 0), (0x5A5A, 0))
    assert lar_lsl(0xC3, bits, gdt_limit=0xC7) == ((0x5A5A, 0), (0x5A5A, 0))
    assert lar_lsl(0x53, bits, gdt_limit=0x57) == ((0x5A5A, 0), (0x5A5A, 0))
    assert lar_lsl(0x23, bits, gdt_limit=0x27)[0] == (0x00A0FB00, ZF)


def test_lar_lsl_in_legacy_mode_take_an_8_byte_tss_at_the_table_end() -> None:
    # Legacy protected mode: system descriptors are 8 bytes.  With the GDT cut at 0xDF,
    # the available TSS at 0xD8 is the last entry, and LAR/LSL take it.
    img = image("", f"""
        mov ebx, 0xdb
        mov eax, 0x5a5a
        lar eax, ebx
        pushfd
        pop ecx
        lsl edx, ebx
        pushfd
        pop esi
        jmp {END:#x}
    """)
    img[PSEUDO] = struct.pack("<HIH", 0xDF, GDT, 0) + img[PSEUDO][8:]
    g = run_interp(img)
    r = g.env.regs
    assert g.env.rip == END
    assert (r[0], r[1] & ZF, r[2], r[6] & ZF) == (0x0000E900, ZF, 0x67, ZF)


# -- the host's KVM as the oracle for a 64-bit call gate at CPL 3 ----------------------------------

def test_64_bit_call_gate_from_cpl3_matches_kvm() -> None:
    """CPL 3 -> 0 through a 64-bit call gate on the host CPU (the cpl3_oracle image, a
    gate added at 0x48) and on interp: CS, SS, RSP, RIP and the 32-byte frame."""
    from tests.accel.interp.cpl3_oracle import DATA_SIZE, STACK, InterpCpl3, KvmCpl3
    from tests.accel.interp.cpl3_oracle import GDT as OGDT
    from tests.accel.kvm.kvm_support import kvm_usable
    ok, why = kvm_usable()
    if not ok:
        pytest.skip(why)
    target = 0x7800                                   # CPL-0 code: out 0xf1, al; jmp $
    stub = bytes([0xE6, 0xF1, 0xEB, 0xFE])
    lo, hi = gate64(0x08, target, 3)
    code = bytes([0x48, 0xFF, 0x1D, 0x02, 0, 0, 0, 0xEB, 0x0A]) + struct.pack("<QH", 0, 0x4B)
    regs = [0] * 16
    regs[4] = STACK
    kvm = KvmCpl3()
    try:
        struct.pack_into("<QQ", kvm.mm, OGDT + 0x48, lo, hi)
        kvm.mm[target:target + len(stub)] = stub
        kvm.sregs[64].gdt.limit = 0x57
        out = kvm.run(64, code, regs, 2, bytes(DATA_SIZE))
        sregs, kregs = kvm.vcpu.get_sregs(), kvm.vcpu.get_regs()
        kframe = bytes(kvm.mm[kregs.rsp:kregs.rsp + 32])
    finally:
        kvm.close()
    if out.fault is not None or kregs.rip != target + 2:
        pytest.skip(f"the host's KVM does not run a CPL-3 far CALL through a guest call gate "
                    f"(it answered {out.fault or out.other!r} at {out.rip:#x}; a PVM host runs "
                    f"CPL-3 code on its own GDT, which has no such gate)")
    ours = InterpCpl3(budget=1000)
    ours.mem.write(OGDT + 0x48, lo, 8)
    ours.mem.write(OGDT + 0x50, hi, 8)
    ours.mem.write_bytes(target, stub)
    ours.env.gdt.limit = 0x57
    ours.run(64, code, regs, 2, bytes(DATA_SIZE))    # ends spinning on the jmp $
    env = ours.env
    assert (env.rip, env.segs[R_CS].selector, env.segs[R_SS].selector, env.regs[4]) == (
        kregs.rip, sregs.cs.selector, sregs.ss.selector, kregs.rsp)
    assert ours.mem.read_bytes(env.regs[4], 32) == kframe


def test_interrupt_to_a_cpl1_handler_and_iretq_keep_the_null_ss_dpl() -> None:
    """An interrupt gate to a DPL-1 handler from CPL 3 in IA-32e mode loads a null SS with
    RPL 1 (SDM vol. 3A, 6.14.4); the CPL, read from SS.DPL, is 1 in the handler, and
    IRETQ to CPL 1 with that null SS keeps it 1."""
    g = guest64()
    target = K64
    g.mem.write(IDT64 + 16 * 0x21, gate(0x30, target, 0xE, 3), 8)
    g.mem.write(IDT64 + 16 * 0x21 + 8, 0, 8)
    g.env.idt.limit = 16 * 0x22 - 1
    g.mem.write_bytes(U64, asm("int 0x21\nhlt", 64, U64))
    # In the handler (CPL 1): IRETQ to itself at CPL 1 with the null SS it has.
    g.mem.write_bytes(target, asm("""
        mov r8, ss
        mov r9, rsp
        push 1
        push r9
        pushfq
        push 0x31
        lea rax, [rip + back]
        push rax
        iretq
    back:
        nop
    """, 64, target))
    g.core.tb_flush()
    back = target + len(asm("mov r8, ss\nmov r9, rsp\npush 1\npush r9\npushfq\npush 0x31\n"
                            "lea rax, [rip]\npush rax\niretq", 64, target))
    run_to(g, back)
    env = g.env
    assert env.regs[8] == 1 and env.cpl == 1 and env.segs[R_CS].selector == 0x31
    assert env.segs[R_SS].selector == 1 and env.segs[R_SS].dpl == 1
    assert env.regs[4] == env.regs[9] and env.regs[9] == KRSP1 - 40
