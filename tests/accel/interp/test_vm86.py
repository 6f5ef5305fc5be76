"""Virtual-8086 mode (Intel SDM vol. 3A, 20.2-20.3; vol. 2A IRET, INT n, CLI; vol. 2B STI,
PUSHF, POPF and each instruction's "Virtual-8086 Mode Exceptions").

A 32-bit kernel (the prologue and descriptor helpers of test_gates.py) builds its GDT,
IDT and TSS, pushes a VM86 frame (GS, FS, DS, ES, SS, ESP, EFLAGS with VM=1, CS, EIP)
and IRETDs into 8086 code at 0200:0000 (linear 0x2000).

Two references:

* Unicorn (QEMU's TCG core) for what completes without an event: the IRET into VM86,
  real-mode style segment loads and far transfers, the IOPL-3 forms of PUSHF/POPF/CLI/
  STI/IRET (what POPF and IRET may not change).  Unicorn delivers
  no exception or INT n through the IDT (tests/unicorn_ref.py, "event-delivery").
* The SDM by hand for everything that delivers an event from VM86: the #GP(0) of the
  IOPL-sensitive instructions, the #UD of the instructions VM86 does not recognise,
  the gate and stack checks of 20.3.1.1, the 9/10-slot frame on the ring-0 stack and
  the null data segments the handler sees, the IRET from that handler back to VM86,
  paging at CPL 3, the I/O bit map, the 0FFFFH segment limits, SYSENTER out of VM86
  (Unicorn 2.1 answers it with #UD) and CR4.VME (not implemented: InterpError).

A KVM through the PVM module (no VMX/SVM) is no reference here: it refuses legacy
paging and runs CPL-0 protected-mode code through its instruction emulator, which
cannot enter virtual-8086 mode (README.md, "The KVM on our machines").
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from pyqemu.accel.interp.errors import InterpError
from pyqemu.target.i386.cpu_state import (
    DESC_P_MASK,
    IF_MASK,
    NT_MASK,
    R_CS,
    R_DS,
    R_ES,
    R_FS,
    R_GS,
    R_SS,
    RF_MASK,
    TF_MASK,
    VM_MASK,
)
from pyqemu.target.i386.descriptors import TSS32
from tests.accel.interp import prot32_pair
from tests.accel.interp.harness import Guest, asm
from tests.accel.interp.test_gates import (
    BODY,
    CODE,
    GDT,
    HANDLERS,
    IDT,
    KSTACK,
    PSEUDO,
    TSS,
    code32,
    data32,
    gate,
    prologue,
    seg,
)

# -- the image -----------------------------------------------------------------------------------

V86_CS, V86_SS, V86_SP = 0x0200, 0x0600, 0x1000          # code at 0x2000, stack top 0x7000
V86_DS, V86_ES, V86_FS, V86_GS = 0x0500, 0x0510, 0x0520, 0x0530
END_IP = 0x0F00                                           # linear 0x2F00: where a run ends
V86_BASE = V86_CS << 4
DATA = V86_DS << 4                                        # 0x5000
IOMAP = 0x68                                              # I/O bit map offset in the TSS
TSS_LIMIT = IOMAP + 0x80                                  # ports 0-3FFH, then the FFH byte
PD, PT = 0x20000, 0x21000                                 # 32-bit paging structures
NVEC = 0x30
SEG16 = HANDLERS & ~0xFFFF                                # base of the 16-bit handler code

GDT_V86 = {
    0x08: code32(0), 0x10: data32(0), 0x18: code32(3), 0x20: data32(3),
    0x28: seg(TSS, TSS_LIMIT, 0x9, 0, s=0, db=0, g=0),   # 32-bit TSS with an I/O bit map
    0x30: code32(0, typ=0xF),                             # conforming, DPL 0
    0x40: seg(SEG16, 0xFFFF, 0xB, 0, db=0, g=0),          # 16-bit code, DPL 0
    0x48: code32(0, p=0),                                 # not present
    0x50: data32(0, typ=0x1),                             # read-only data: not a stack
    0x58: code32(1),                                      # DPL 1
}
GDT_LIMIT = 0x5F

#: IDT entries other than the default (32-bit interrupt gate, DPL 0, to 08:handler).
SPECIAL_GATES = {
    3: gate(0x08, HANDLERS + 16 * 3, 0xE, 3),             # INT3 from CPL 3
    0x20: gate(0x08, HANDLERS + 16 * 0x20, 0xE, 3),       # 32-bit interrupt gate
    0x21: gate(0x08, HANDLERS + 16 * 0x21, 0xF, 3),       # 32-bit trap gate
    0x22: gate(0x40, HANDLERS + 16 * 0x22 - SEG16, 0x6, 3),  # 16-bit interrupt gate
    0x23: gate(0x30, HANDLERS + 16 * 0x23, 0xE, 3),       # to a conforming segment
    0x24: gate(0x18, HANDLERS + 16 * 0x24, 0xE, 3),       # to DPL-3 code
    0x25: gate(0x08, HANDLERS + 16 * 0x25, 0xE, 0),       # DPL 0: not for INT n at CPL 3
    0x26: gate(0x08, HANDLERS + 16 * 0x26, 0xE, 3),       # returns to VM86 (handler below)
    0x27: gate(0x48, 0, 0xE, 3),                          # code segment not present
    0x28: gate(0x58, 0, 0xE, 3),                          # to DPL-1 code
}


def tables(ss0: int = 0x10) -> dict[int, bytes]:
    gdt = bytearray(GDT_LIMIT + 1)
    for sel, d in GDT_V86.items():
        struct.pack_into("<Q", gdt, sel, d)
    idt = bytearray(NVEC * 8)
    handlers = bytearray()
    for v in range(NVEC):
        target = HANDLERS + 16 * v
        struct.pack_into("<Q", idt, 8 * v, SPECIAL_GATES.get(v, gate(0x08, target, 0xE, 0)))
        if v == 0x22:
            code = asm(f"mov di, {v:#x}\nhlt", 16, target - SEG16)
        elif v == 0x26:
            # Rewrite the DS slot of the frame, then IRETD back into VM86.
            code = asm(f"mov edi, {v:#x}\nmov dword ptr [esp + 24], 0x570\niretd", 32, target)
        else:
            code = asm(f"mov edi, {v:#x}\nhlt", 32, target)
        handlers += code.ljust(16, b"\x90")
    tss = bytearray(TSS32.pack(esp0=KSTACK, ss0=ss0, iomap_base=IOMAP).ljust(TSS_LIMIT + 1,
                                                                              b"\0"))
    tss[IOMAP:IOMAP + 0x80] = bytes(0x80)
    tss[IOMAP + 0x10] = 0x02                     # port 0x81 denied, 0x80 allowed
    tss[TSS_LIMIT] = 0xFF
    pseudo = struct.pack("<HIH", GDT_LIMIT, GDT, 0) + struct.pack("<HI", NVEC * 8 - 1, IDT)
    return {GDT: bytes(gdt), IDT: bytes(idt), HANDLERS: bytes(handlers), TSS: bytes(tss),
            PSEUDO: pseudo}


def enter_v86(iopl: int, flags: int = 0) -> str:
    """CPL-0 code: push the VM86 frame and IRETD to 0200:0000 (SDM vol. 2A IRET,
    RETURN-TO-VIRTUAL-8086-MODE: EIP, CS, EFLAGS, then ESP, SS, ES, DS, FS, GS)."""
    eflags = VM_MASK | iopl << 12 | 2 | flags
    return f"""
        push {V86_GS:#x}
        push {V86_FS:#x}
        push {V86_DS:#x}
        push {V86_ES:#x}
        push {V86_SS:#x}
        push {V86_SP:#x}
        push {eflags:#x}
        push {V86_CS:#x}
        push 0
        iretd
    """


def image(v86: str | bytes, iopl: int = 3, kernel: str = "", flags: int = 0,
          ss0: int = 0x10, extra: dict[int, bytes] | None = None) -> dict[int, bytes]:
    img = {**prologue(), **tables(ss0)}
    img[BODY] = asm(kernel + enter_v86(iopl, flags), 32, BODY)
    img[V86_BASE] = v86 if isinstance(v86, bytes) else asm(v86, 16, 0)
    img.update(extra or {})
    return img


COMPARED = ((DATA, 0x100), (V86_SS * 16 + V86_SP - 0x40, 0x40), (KSTACK - 0x40, 0x40),
            (GDT, GDT_LIMIT + 1))


def run_interp(img: dict[int, bytes], end: int = END_IP) -> Guest:
    return prot32_pair.run_interp(img, end)


def state(g: Guest) -> dict[str, Any]:
    return prot32_pair.interp_state(g, COMPARED)


def run_unicorn(img: dict[int, bytes], until: int = V86_BASE + END_IP) -> dict[str, Any]:
    return prot32_pair.run_unicorn(img, CODE, until, COMPARED)


#: Unicorn 2.1 leaves VM set in the image PUSHFD stores in VM86; the SDM (vol. 2B PUSHF,
#: "VM and RF EFLAG bits are cleared in image stored on the stack") clears it.
UNICORN_PUSHFD_KEEPS_VM = "pushfd-vm"


def both(img: dict[int, bytes], pushfd_images: tuple[int, ...] = (),
         until: int = V86_BASE + END_IP, end: int = END_IP) -> dict[str, Any]:
    """Run to ``end`` (interp: RIP; Unicorn: the linear ``until``) on both: everything
    compared must agree, but the doublewords at DATA + each of ``pushfd_images`` (PUSHFD
    images stored there), where Unicorn must differ in VM alone
    (:data:`UNICORN_PUSHFD_KEEPS_VM`)."""
    ours = state(run_interp(img, end))
    theirs = run_unicorn(img, until)
    assert ours["eip"] == end, f"interp stopped at {ours['eip']:#x} (vector {ours['edi']:#x})"
    for key in ours:
        if key == "mem":
            for (addr, _), a, b in zip(COMPARED, ours[key], theirs[key], strict=True):
                if addr == DATA:
                    b = bytearray(b)
                    for off in pushfd_images:
                        mine = struct.unpack_from("<I", a, off)[0]
                        uc_image = struct.unpack_from("<I", b, off)[0]
                        assert uc_image == mine | VM_MASK, f"{UNICORN_PUSHFD_KEEPS_VM} at +{off:#x}"
                        struct.pack_into("<I", b, off, mine)
                    b = bytes(b)
                assert a == b, f"memory at {addr:#x}: interp {a.hex()} unicorn {b.hex()}"
        else:
            assert ours[key] == theirs[key], f"{key}: interp {ours[key]} unicorn {theirs[key]}"
    return ours


def words(raw: bytes, n: int, at: int = 0) -> list[int]:
    return list(struct.unpack_from(f"<{n}H", raw, at))


# -- entering VM86 and running there: interp against Unicorn ---------------------------------------

def test_iret_enters_vm86_with_real_mode_segments_and_cpl3() -> None:
    g = run_interp(image(f"jmp {END_IP:#x}"))
    env = g.env
    assert env.mode_name == "vm86" and env.cpl == 3
    assert env.regs[4] == V86_SP and env.eflags & VM_MASK
    for i, sel in ((R_ES, V86_ES), (R_CS, V86_CS), (R_SS, V86_SS), (R_DS, V86_DS),
                   (R_FS, V86_FS), (R_GS, V86_GS)):
        s = env.segs[i]
        # base = selector * 16, limit FFFFH, present DPL-3 16-bit read/write data (F3H).
        assert (s.selector, s.base, s.limit, s.flags) == (sel, sel << 4, 0xFFFF, 0xF300)
    mode = g.core.mode
    assert (mode.code, mode.stack, mode.cpl, mode.vm86) == (16, 16, 3, True)


def test_vm86_code_agrees_with_unicorn_loads_far_transfers_and_iopl3_flag_rules() -> None:
    # Real-mode segment loads and far CALL/RET/JMP; the IOPL-3 forms of PUSHF/POPF/CLI/
    # STI and a 16-bit IRET stay in VM86; POPFD cannot change IOPL or VM (SDM vol. 2B
    # POPF: "IOPL, RF, VM, and all reserved bits are unaffected"); PUSHF(D) images have
    # VM and RF clear.  (keystone makes PUSH imm and RETF 32-bit in 16-bit code: the
    # 16-bit forms are .byte; its PUSH imm is a doubleword here.)
    v86 = f"""
        mov word ptr [0x10], 0x1234
        mov ax, 0x0540
        mov es, ax
        mov word ptr es:[0], ax
        mov bx, ds
        mov ss:[0xFF0], bx
        pushf
        pop word ptr [0x20]
        cli
        pushfd
        pop dword ptr [0x24]
        sti
        push 0x0CD5
        popfd
        pushfd
        pop dword ptr [0x28]
        push dword ptr [0x24]
        popfd
        .byte 0x9a, 0x00, 0x08, 0x00, 0x02
        .byte 0xea, 0x00, 0x0a, 0x00, 0x02
        .org 0x800
        mov cx, cs
        mov word ptr [0x30], cx
        .byte 0xcb
        .org 0xa00
        pushf
        push cs
        .byte 0x68, 0x20, 0x0a
        iret
        .org 0xa20
        mov dx, 0x0580
        mov fs, dx
        mov word ptr fs:[2], sp
        jmp {END_IP:#x}
    """
    s = both(image(v86, 3), pushfd_images=(0x24, 0x28))
    data = s["mem"][0]
    assert words(data, 1, 0x10) == [0x1234]
    assert words(data, 1, 0x20)[0] & 0x3000 == 0x3000                    # IOPL 3 in the image
    img24, img28 = struct.unpack_from("<II", data, 0x24)
    assert img24 & (VM_MASK | RF_MASK | IF_MASK) == 0 and img24 & 0x3000 == 0x3000
    assert img28 & (VM_MASK | 0x3000) == 0x3000                          # IOPL, VM kept
    assert s["eflags"] & (VM_MASK | 0x3000) == VM_MASK | 0x3000
    assert s["sregs"] == [0x540, V86_CS, V86_SS, V86_DS, 0x580, V86_GS]
    assert words(data, 1, 0x30) == [V86_CS]


def test_iretd_in_vm86_cannot_clear_vm_or_change_iopl() -> None:
    # SDM vol. 2A IRET, RETURN-FROM-VIRTUAL-8086-MODE: "VM, IOPL, VIP and VIF EFLAGS
    # bits are not modified by pop"; IF and the arithmetic flags are.
    v86 = f"""
        push 0x08D7
        push {V86_CS:#x}
        push {END_IP:#x}
        iretd
    """
    s = both(image(v86, 3))
    assert s["eflags"] & 0x3FFFFF == VM_MASK | 0x3000 | 0x8D7


def test_sysenter_leaves_vm86_for_flat_cpl0() -> None:
    # SDM vol. 2B SYSENTER: VM, IF, RF cleared; CS = IA32_SYSENTER_CS, SS = CS + 8.
    kernel = """
        mov ecx, 0x174
        mov eax, 0x8
        xor edx, edx
        wrmsr
        mov ecx, 0x175
        mov eax, 0x8f00
        wrmsr
        mov ecx, 0x176
        mov eax, 0xf80
        wrmsr
    """
    # (Unicorn 2.1 raises #UD for SYSENTER here: the SDM by hand.)
    s = state(run_interp(image("sysenter", 3, kernel, flags=IF_MASK), end=0xF80))
    assert (s["eip"], s["esp"]) == (0xF80, 0x8F00)
    assert s["sregs"][1:3] == [0x08, 0x10]
    assert s["eflags"] & (VM_MASK | IF_MASK | 0x3000) == 0x3000


# -- events from VM86: the SDM by hand -------------------------------------------------------------

def v86_event(v86: str | bytes, iopl: int = 3, **kw: Any) -> Guest:
    """Run ``v86`` until a CPL-0 handler stops (EDI = its vector)."""
    g = run_interp(image(v86, iopl, **kw))
    assert g.env.regs[7] != 0xFFFF, f"no event: stopped at {g.env.rip:#x}"
    return g


def frame(g: Guest, n: int, slot: int = 4) -> list[int]:
    sp = g.env.regs[4]
    return [g.mem.read(sp + slot * i, slot) for i in range(n)]


V86_FRAME_TAIL = [V86_SP, V86_SS, V86_ES, V86_DS, V86_FS, V86_GS]


def assert_handler_state(g: Guest, vector: int, frame_bytes: int, cs: int = 0x08) -> None:
    env = g.env
    assert env.regs[7] & 0xFFFF == vector
    assert env.regs[4] == KSTACK - frame_bytes
    assert env.segs[R_CS].selector == cs and env.segs[R_SS].selector == 0x10
    assert env.cpl == 0 and env.mode_name != "vm86"
    assert not env.eflags & (VM_MASK | TF_MASK | RF_MASK | NT_MASK)
    for i in (R_ES, R_DS, R_FS, R_GS):
        # Null selectors, unusable (SDM vol. 2A INT n: "GS <- 0; FS <- 0; DS <- 0; ES <- 0").
        assert env.segs[i].selector == 0 and not env.segs[i].flags & DESC_P_MASK


@pytest.mark.parametrize("code", [
    "cli", "sti", "pushf", "popf", "int 0x20", "iret",
    b"\x66\x9c", b"\x66\x9d", b"\x66\xcf",               # PUSHFD, POPFD, IRETD
])
@pytest.mark.parametrize("iopl", [0, 2])
def test_iopl_sensitive_instructions_are_gp0_below_iopl3(code: str | bytes, iopl: int) -> None:
    # SDM vol. 3A 20.2.7: at IOPL < 3 (no CR4.VME) #GP(0), delivered through the IDT from
    # VM86 with the 10-dword frame: error code, EIP (the instruction), CS, EFLAGS (VM=1,
    # RF=1 as for any fault), ESP, SS, ES, DS, FS, GS.
    v86 = asm("nop", 16, 0) + (code if isinstance(code, bytes) else asm(code, 16, 1))
    g = v86_event(v86, iopl, flags=IF_MASK)
    assert_handler_state(g, 13, 40)
    f = frame(g, 10)
    assert f[:3] == [0, 1, V86_CS]
    assert f[3] == VM_MASK | RF_MASK | IF_MASK | iopl << 12 | 2
    assert f[4:] == V86_FRAME_TAIL
    assert not g.env.eflags & IF_MASK                       # through an interrupt gate


def test_int_n_at_iopl3_pushes_the_nine_slot_frame_on_ss0_esp0() -> None:
    g = v86_event("mov ax, 0x1111\nint 0x20", 3, flags=IF_MASK)
    assert_handler_state(g, 0x20, 36)
    f = frame(g, 9)
    assert f[:3] == [5, V86_CS, VM_MASK | IF_MASK | 0x3000 | 2]
    assert f[3:] == V86_FRAME_TAIL
    assert not g.env.eflags & IF_MASK and g.env.rip == HANDLERS + 16 * 0x20 + 6


def test_trap_gate_keeps_if_and_sixteen_bit_gate_pushes_words() -> None:
    g = v86_event("int 0x21", 3, flags=IF_MASK)
    assert_handler_state(g, 0x21, 36)
    assert g.env.eflags & IF_MASK
    g = v86_event("int 0x22", 3, flags=IF_MASK)
    assert_handler_state(g, 0x22, 18, cs=0x40)
    assert frame(g, 9, 2) == [2, V86_CS, (IF_MASK | 0x3000 | 2) & 0xFFFF] + V86_FRAME_TAIL


def test_int3_is_not_iopl_sensitive_and_into_checks_the_gate_dpl() -> None:
    # SDM vol. 2A INT n: only INT n is IOPL-sensitive; INT3/INTO check the gate DPL.
    g = v86_event("nop\nint3", 0)
    assert_handler_state(g, 3, 36)
    assert frame(g, 3) == [2, V86_CS, VM_MASK | 2]
    g = v86_event("mov al, 0x7f\nadd al, 1\ninto", 0)       # OF=1; gate 4 has DPL 0
    assert_handler_state(g, 13, 40)
    assert frame(g, 2) == [4 * 8 + 2, 4]


@pytest.mark.parametrize("vector,error", [
    (0x23, 0x30),            # conforming code segment: #GP(selector)
    (0x24, 0x18),            # DPL-3 code segment: #GP(selector)
    (0x28, 0x58),            # DPL-1 code segment: #GP(selector)
    (0x25, 0x25 * 8 + 2),    # gate DPL 0 < CPL 3: #GP(vector * 8 + 2)
])
def test_int_n_to_a_target_other_than_dpl0_nonconforming_code_is_gp(vector: int,
                                                                   error: int) -> None:
    g = v86_event(f"int {vector:#x}", 3)
    assert_handler_state(g, 13, 40)
    assert frame(g, 3) == [error, 0, V86_CS]


def test_int_n_to_a_not_present_code_segment_is_np() -> None:
    g = v86_event("int 0x27", 3)
    assert_handler_state(g, 11, 40)
    assert frame(g, 2) == [0x48, 0]


@pytest.mark.parametrize("ss0,vector,error", [
    (0x50, 10, 0x50),        # SS0 read-only data: #TS(SS0)
    (0x13, 10, 0x10),        # SS0 with RPL 3: #TS(SS0)
    (0x00, 10, 0),           # null SS0: #TS(0)
])
def test_a_bad_ring0_stack_in_the_tss_is_ts_and_then_double_fault(ss0: int, vector: int,
                                                                  error: int) -> None:
    # The #TS is raised delivering INT 20H; delivering the #TS from VM86 needs the same
    # stack, so it becomes #DF (SDM vol. 3A 6.15, Table 6-5: contributory then
    # contributory), whose delivery needs it again: triple fault.
    g = Guest(32)
    for addr, raw in image("int 0x20", 3, ss0=ss0).items():
        g.mem.write_bytes(addr, raw)
    g.core.tb_flush()
    from pyqemu.accel.ops import EXCP_SHUTDOWN
    assert g.core.run(10_000) == EXCP_SHUTDOWN
    assert g.env.mode_name == "vm86" and g.env.rip == 0       # nothing was delivered


def test_handler_iretd_returns_to_vm86_with_the_frames_segments() -> None:
    # The handler rewrites the DS slot and IRETDs: RETURN-TO-VIRTUAL-8086-MODE again.
    g = run_interp(image(f"int 0x26\nmov ax, ds\nmov bx, sp\njmp {END_IP:#x}", 3))
    env = g.env
    assert env.regs[7] & 0xFF == 0x26 and env.rip == END_IP and env.mode_name == "vm86"
    assert env.regs[0] & 0xFFFF == 0x570 and env.segs[R_DS].base == 0x5700
    assert env.regs[3] & 0xFFFF == V86_SP and env.segs[R_FS].selector == V86_FS


@pytest.mark.parametrize("code", [
    "lar ax, bx", "lsl ax, bx", "verr ax", "verw ax", "arpl ax, bx", "lldt ax", "sldt ax",
    "ltr ax", "str ax",
])
def test_instructions_not_recognized_in_vm86_are_ud(code: str) -> None:
    g = v86_event(code, 3)
    assert_handler_state(g, 6, 36)
    assert frame(g, 2) == [0, V86_CS]


@pytest.mark.parametrize("code", [
    "hlt", "mov eax, cr0", "mov cr3, eax", "mov eax, dr7", "rdmsr", "wrmsr", "clts",
    "lgdt [0x100]", "lidt [0x100]", "invlpg [0]", "lmsw ax", "wbinvd",
])
def test_privileged_instructions_are_gp0_at_cpl3(code: str) -> None:
    g = v86_event(code, 3)
    assert_handler_state(g, 13, 40)
    assert frame(g, 2) == [0, 0]


def test_io_in_vm86_follows_the_bit_map_whatever_the_iopl() -> None:
    # SDM vol. 1 19.5.2 / vol. 3A 20.2.8.1: VM86 always consults the bit map.
    g = v86_event("mov al, 0x5a\nout 0x80, al\nout 0x81, al", 3)
    assert_handler_state(g, 13, 40)
    assert frame(g, 2) == [0, 4]
    assert ("out", 0x80, 1, 0x5A) in g.io_log
    assert not any(port == 0x81 for _, port, _, _ in g.io_log)


def test_segment_limit_is_ffff_in_vm86() -> None:
    # SDM vol. 3A 20.1.1 / 20.2: a word at offset FFFFH is past the 0FFFFH limit: #GP(0);
    # through SS (BP-based) it is #SS(0).
    g = v86_event("mov ax, word ptr [0xffff]", 3)
    assert_handler_state(g, 13, 40)
    g = v86_event("mov bp, 0xffff\nmov ax, word ptr [bp]", 3)
    assert_handler_state(g, 12, 40)
    assert frame(g, 2) == [0, 3]


def test_paging_applies_with_user_permissions() -> None:
    # 32-bit paging, the data page 0x5000 supervisor-only: a VM86 write is #PF with
    # error code P|W|U = 7 and CR2 = 0x5000 (SDM vol. 3A 4.6, 4.7; 20.2: CPL 3).
    pt = bytearray(4096)
    for i in range(1024):
        struct.pack_into("<I", pt, 4 * i, i << 12 | (3 if i == 5 else 7))
    pd = struct.pack("<I", PT | 7)
    kernel = f"""
        mov eax, {PD:#x}
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
    """
    g = v86_event("mov word ptr [0x40], 0x1", 3, kernel=kernel, extra={PD: pd, PT: bytes(pt)})
    assert_handler_state(g, 14, 40)
    assert frame(g, 2) == [7, 0] and g.env.cr[2] == DATA + 0x40


def test_cr4_vme_with_vm86_stops_with_an_interp_error() -> None:
    kernel = "mov eax, cr4\nor eax, 1\nmov cr4, eax"
    with pytest.raises(InterpError, match=r"CR4\.VME"):
        run_interp(image(f"jmp {END_IP:#x}", 3, kernel=kernel))
