"""Hardware task switching (Intel SDM vol. 3A chapter 7; vol. 2A JMP, CALL, IRET, INT n).

References:

* Unicorn (QEMU's TCG core, its ``switch_tss``) runs the same 32-bit protected-mode
  program for every switch between 32-bit TSSs started by an instruction: far JMP to
  a TSS, far CALL through a task gate, IRET with NT = 1 back through the link, a
  CPL-3 task calling a CPL-0 one.  Registers, selectors, EFLAGS, CR0.TS, TR, both TSS
  images and the GDT (busy bits) must match.
* The SDM by hand for the rest, next to each test: every #TS/#NP/#GP/#SS condition of
  Table 7-1 / Table 6-6 (before the commit point in the old task, after it in the
  new one), interrupts and exceptions through task gates (Unicorn does not deliver
  events through the IDT: tests/unicorn_ref.py "event-delivery"), the T flag, DR7,
  16-bit TSSs, CR3, IA-32e mode.  Unicorn 2.1's QEMU also saves the old task in the
  layout of the *new* TSS and reads a 16-bit TSS's selectors 4 bytes apart (the SDM,
  Figure 7-10: 2 apart), so no 16-bit TSS is compared with it.
* Not KVM: a host whose KVM is the PVM module cannot run a 32-bit protected-mode
  kernel with its own GDT at CPL 3 and emulates CPL-0 code in its own instruction
  emulator, so it is no reference for task switches (README.md, "The KVM on our
  machines").
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from pyqemu.accel.interp import excp
from pyqemu.accel.interp.errors import Fault
from pyqemu.target.i386.cpu_state import CR0_PG, CR0_TS, NT_MASK, R_CS, R_SS, SegmentCache
from pyqemu.target.i386.descriptors import TSS16, TSS32
from tests.accel.interp import prot32_pair
from tests.accel.interp.harness import CODE, Guest, asm
from tests.accel.interp.test_gates import (
    BODY,
    HANDLERS,
    IDT,
    KSTACK,
    PSEUDO,
    TSS,
    USER,
    USTACK,
    code32,
    data32,
    far,
    gate,
    prologue,
    seg,
)

# -- the image: the prologue of test_gates (LGDT, LIDT, CS=08, data 10, GS=23, LTR 28) ----

GDT = 0x10000
TSS_B, TSS_C, TSS_D = 0x14000, 0x14100, 0x14200       # 32-bit, 32-bit, 16-bit
TASK_B, TASK_C, TASK_D = 0x6000, 0x6400, 0x6800       # their code
STACK_B, STACK_C, STACK_D = 0xB000, 0xC000, 0xD000
LDT_AT = 0x15000
END = 0x2F00                  # the scenario's last address (interp breakpoint, Unicorn end)


def tss_desc(base: int, limit: int, *, is32: bool = True, busy: bool = False, dpl: int = 0,
             p: int = 1) -> int:
    """A TSS descriptor (SDM vol. 3A, 7.2.2, Figure 7-3): type 9/B (32-bit), 1/3 (16-bit)."""
    typ = (0x9 if is32 else 0x1) | (0x2 if busy else 0)
    return seg(base, limit, typ, dpl, s=0, db=0, g=0, p=p)


GDT_ENTRIES = {
    0x08: code32(0), 0x10: data32(0), 0x18: code32(3), 0x20: data32(3),
    0x28: tss_desc(TSS, 0x67),                               # task A (LTR in the prologue)
    0x30: tss_desc(TSS_B, 0x67),                             # task B
    0x38: gate(0x30, 0, 0x5, 3),                             # task gate to B, DPL 3
    0x40: tss_desc(TSS_C, 0x67, dpl=3),                      # task C, DPL 3
    0x48: tss_desc(TSS_D, 0x2B, is32=False),                 # task D, 16-bit
    0x50: seg(LDT_AT, 0x17, 0x2, 0, s=0, db=0, g=0),         # an LDT (3 entries)
    0x58: seg(0, 0xFFFF, 0xB, 0, db=0, g=0),                 # 16-bit code, DPL 0
    0x60: seg(0, 0xFFFF, 0x3, 0, db=0, g=0),                 # 16-bit data, DPL 0
    0x68: gate(0x48, 0, 0x5, 0),                             # task gate to D
    0x70: code32(0, p=0),                                    # code, not present
    0x78: data32(0, p=0),                                    # data, not present
    0x80: code32(0, typ=0x9),                                # execute-only code
    0x88: tss_desc(TSS_B + 0x80, 0x66),                      # 32-bit TSS one byte short
    0x90: tss_desc(TSS_D + 0x80, 0x2A, is32=False),          # 16-bit TSS one byte short
    0x98: tss_desc(TSS_B, 0x67, p=0),                        # TSS not present
    0xA0: tss_desc(TSS_C, 0x67, busy=True),                  # busy TSS
    0xA8: gate(0x2C, 0, 0x5, 0),                             # task gate naming an LDT TSS
    0xB0: gate(0x10, 0, 0x5, 0),                             # task gate naming a data seg
    0xB8: gate(0x30, 0, 0x5, 0, p=0),                        # task gate not present
    0xC0: seg(0, 0xFFF, 0xB, 0, g=0),                        # code, limit 0xFFF
    0xC8: seg(LDT_AT, 0x17, 0x2, 0, s=0, db=0, g=0, p=0),    # LDT not present
    0xD0: code32(1), 0xD8: data32(1),                        # CPL 1
    0xE0: tss_desc(TSS, 0x0B),                               # task A's TSS, cut after SS0
    0xE8: gate(0x28, 0, 0x5, 0),                             # task gate to A (busy)
    0xF0: tss_desc(TSS_B, 0x67, busy=True, p=0),             # busy TSS, not present
}
GDT_LIMIT = 0x1FF
LDT_ENTRIES = {0x00: 0, 0x08: data32(0), 0x10: code32(0)}


GPRS32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
GPRS16 = tuple(r[1:] for r in GPRS32)
SEGS = ("es", "cs", "ss", "ds", "fs", "gs")


def tss32(*, eip: int, esp: int, eflags: int = 0x2, regs: tuple[int, ...] | None = None,
          segs: tuple[int, ...] = (0x10, 0x08, 0x10, 0x10, 0x10, 0x10), ldt: int = 0,
          cr3: int = 0, trap: int = 0, link: int = 0) -> bytes:
    """A 32-bit TSS image (SDM vol. 3A, 7.2.1, Figure 7-2); segs in ES CS SS DS FS GS order."""
    regs = regs or (0xA0A0A0A0, 0xC1C1C1C1, 0xD2D2D2D2, 0xB3B3B3B3, esp, 0xB5B5B5B5,
                    0x51515151, 0xD7D7D7D7)
    regs = regs[:4] + (esp,) + regs[5:]
    return TSS32.pack(link=link, esp0=KSTACK - 0x400, ss0=0x10, cr3=cr3, eip=eip,
                      eflags=eflags, **dict(zip(GPRS32, regs, strict=True)),
                      **dict(zip(SEGS, segs, strict=True)), ldt=ldt, trap=trap,
                      iomap_base=TSS32.size)


def tss16(*, ip: int, sp: int, flags: int = 0x2, segs: tuple[int, ...] = (0x60, 0x58, 0x60, 0x60),
          ldt: int = 0, link: int = 0) -> bytes:
    """A 16-bit TSS image (SDM vol. 3A, 7.6, Figure 7-10); segs in ES CS SS DS order."""
    regs = (0x1A1A, 0x2C2C, 0x3D3D, 0x4B4B, sp, 0x6B6B, 0x75E5, 0x8D1D)
    return TSS16.pack(link=link, sp0=KSTACK - 0x600, ss0=0x10, ip=ip, flags=flags,
                      **dict(zip(GPRS16, regs, strict=True)),
                      **dict(zip(SEGS[:4], segs, strict=True)), ldt=ldt)


def tables(gdt_entries: dict[int, int] | None = None) -> dict[int, bytes]:
    gdt = bytearray(GDT_LIMIT + 1)
    for sel, d in (gdt_entries or GDT_ENTRIES).items():
        struct.pack_into("<Q", gdt, sel, d)
    ldt = bytearray(0x18)
    for sel, d in LDT_ENTRIES.items():
        struct.pack_into("<Q", ldt, sel, d)
    idt = bytearray(0x50 * 8)
    handlers = bytearray()
    for v in range(32):
        target = HANDLERS + 16 * v
        struct.pack_into("<Q", idt, 8 * v, gate(0x08, target, 0xE, 0))
        handlers += asm(f"mov edi, {v}\nhlt", 32, target).ljust(16, b"\x90")
    tss_a = TSS32.pack(esp0=KSTACK, ss0=0x10, iomap_base=TSS32.size)
    pseudo = struct.pack("<HIH", GDT_LIMIT, GDT, 0) + struct.pack("<HI", len(idt) - 1, IDT)
    return {GDT: bytes(gdt), LDT_AT: bytes(ldt), IDT: bytes(idt), HANDLERS: bytes(handlers),
            TSS: bytes(tss_a), PSEUDO: pseudo}


def image(kernel: str, extra: dict[int, str | bytes] | None = None,
          gdt_entries: dict[int, int] | None = None) -> dict[int, bytes]:
    """CPL 0 after the prologue: ``kernel`` at BODY; ``extra``: more code (assembled
    at its address) or raw bytes (TSS images)."""
    img = {**prologue(), **tables(gdt_entries)}
    img[BODY] = asm(kernel, 32, BODY)
    for addr, src in (extra or {}).items():
        img[addr] = src if isinstance(src, bytes) else asm(src, 32, addr)
    return img


def jmp_end() -> str:
    return f"mov ebp, {END:#x}\njmp ebp"


# -- running: interp and Unicorn ------------------------------------------------------------------

COMPARED = ((TSS, 0x68), (TSS_B, 0x68), (TSS_C, 0x68), (GDT, 0x100),
            (STACK_B - 0x40, 0x40), (KSTACK - 0x40, 0x40), (0x5000, 0x40))


def run_interp(img: dict[int, bytes], end: int = END, budget: int = 100_000) -> Guest:
    """The scenario with a HLT at END (a task that runs off its end stops there)."""
    hlt = asm("hlt", 32, END)
    img = {**img, END: hlt + img.get(END, b"")[len(hlt):]}
    return prot32_pair.run_interp(img, end, budget)


def state_interp(g: Guest) -> dict[str, Any]:
    return prot32_pair.interp_state(g, COMPARED, system=True)


def run_unicorn(img: dict[int, bytes], end: int = END) -> dict[str, Any]:
    return prot32_pair.run_unicorn(img, CODE, end, COMPARED, system=True)


def both(img: dict[int, bytes]) -> dict[str, Any]:
    """Run ``img`` to END on interp and on Unicorn; every compared item must agree."""
    ours = state_interp(run_interp(img))
    theirs = run_unicorn(img)
    assert ours["eip"] == END, f"interp stopped at {ours['eip']:#x} (vector {ours['edi']:#x})"
    for key in ours:
        if key == "mem":
            for (addr, _), a, b in zip(COMPARED, ours[key], theirs[key], strict=True):
                assert a == b, f"memory at {addr:#x}: interp {a.hex()} unicorn {b.hex()}"
        else:
            assert ours[key] == theirs[key], f"{key}: interp {ours[key]} unicorn {theirs[key]}"
    return ours


def busy(mem: bytes, sel: int) -> bool:
    """The busy bit of the TSS descriptor ``sel`` in a GDT image."""
    return bool(mem[sel + 5] & 0x2)


def d32(raw: bytes, at: int) -> int:
    return int.from_bytes(raw[at:at + 4], "little")


def w16(raw: bytes, at: int) -> int:
    return int.from_bytes(raw[at:at + 2], "little")


KERNEL_REGS = """
    mov eax, 0x11111111
    mov ecx, 0x22222222
    mov edx, 0x33333333
    mov ebx, 0x44444444
    mov ebp, 0x55555555
    mov esi, 0x66666666
    mov edi, 0x77777777
"""
TASK_B_BODY = """
    mov dword ptr [0x5000], eax
    mov dword ptr [0x5004], esp
    add eax, 0x100
    mov esi, 0x12345678
    push 0xCAFE
"""


# -- switches that complete: interp against Unicorn ------------------------------------------------

def test_far_jmp_to_a_tss_and_back_saves_both_tasks_and_moves_the_busy_bit() -> None:
    # SDM vol. 3A 7.3 and Table 7-2, JMP column: the old task's busy bit is cleared, the
    # new one's set, no link and no NT; the old task's EIP is the one after the JMP.
    kernel = KERNEL_REGS + f"stc\n{far(0xEA, 0x30, 0)}\nmov dword ptr [0x5010], eax\n" + jmp_end()
    back = asm(KERNEL_REGS + "stc\n" + far(0xEA, 0x30, 0), 32, BODY)   # the bytes up to it
    img = image(kernel, {TASK_B: TASK_B_BODY + far(0xEA, 0x28, 0),
                         TSS_B: tss32(eip=TASK_B, esp=STACK_B, eflags=0x82)})
    ours = both(img)
    tss_a, tss_b, gdt = ours["mem"][0], ours["mem"][1], ours["mem"][3]
    assert ours["tr"] == 0x28 and ours["ts"] is True
    assert busy(gdt, 0x28) and not busy(gdt, 0x30)
    # Task A, saved by its JMP: EIP after it, CF set, its registers and selectors.
    assert d32(tss_a, 0x20) == BODY + len(back) and d32(tss_a, 0x24) == 0x3
    assert [d32(tss_a, 0x28 + 4 * i) for i in (0, 4, 7)] == [0x11111111, KSTACK, 0x77777777]
    assert [w16(tss_a, 0x48 + 4 * i) for i in range(6)] == [0x10, 0x08, 0x10, 0x10, 0x10, 0x23]
    # Task B ran with its TSS's registers and was saved by its own JMP.
    assert ours["mem"][6][:8] == struct.pack("<II", 0xA0A0A0A0, STACK_B)
    b_len = len(asm(TASK_B_BODY + far(0xEA, 0x28, 0), 32, TASK_B))
    assert d32(tss_b, 0x20) == TASK_B + b_len and d32(tss_b, 0x24) & NT_MASK == 0
    assert d32(tss_b, 0x28) == 0xA0A0A1A0 and d32(tss_b, 0x38) == STACK_B - 4
    assert w16(tss_b, 0) == 0                                # a JMP writes no link
    assert ours["eax"] == 0x11111111 and ours["esp"] == KSTACK


def test_call_through_a_task_gate_nests_and_iret_returns_through_the_link() -> None:
    # CALL: the new task gets NT = 1 and the old TSS's selector in its link; the old
    # task stays busy.  IRET with NT = 1 (TASK-RETURN): the task left is saved with NT
    # cleared and its busy bit cleared; the linked task resumes after its CALL.
    kernel = KERNEL_REGS + f"{far(0x9A, 0x38, 0)}\nmov dword ptr [0x5010], eax\n" + jmp_end()
    task_b = TASK_B_BODY + "pushfd\npop dword ptr [0x5008]\niretd\nhlt"
    img = image(kernel, {TASK_B: task_b, TSS_B: tss32(eip=TASK_B, esp=STACK_B, eflags=0x202)})
    ours = both(img)
    tss_a, tss_b, gdt = ours["mem"][0], ours["mem"][1], ours["mem"][3]
    data = ours["mem"][6]
    # B ran nested: NT set; IF from its TSS; SF and PF from its ADD.
    assert d32(data, 8) == 0x4286
    assert w16(tss_b, 0) == 0x28                     # the back link
    assert d32(tss_b, 0x24) == 0x286                 # saved by IRET: NT cleared
    iret_at = TASK_B + len(asm(TASK_B_BODY + "pushfd\npop dword ptr [0x5008]", 32, TASK_B))
    assert d32(tss_b, 0x20) == iret_at + 1           # EIP after the IRET
    assert busy(gdt, 0x28) and not busy(gdt, 0x30)
    assert ours["tr"] == 0x28 and ours["eflags"] & NT_MASK == 0
    assert d32(data, 0x10) == 0x11111111 and d32(tss_a, 0x24) & NT_MASK == 0


def test_cpl3_task_calls_a_cpl0_task_through_its_tss_and_iret_resumes_it_at_cpl3() -> None:
    # CALL TASK-STATE-SEGMENT from CPL 3 (TSS DPL 3): the new task's CPL is its CS RPL
    # (0); the IRET back reloads CS 1B, SS 23 and the null DS/ES/FS the RETF to CPL 3 left.
    kernel = f"""
        push 0x23
        push {USTACK:#x}
        push 0x1b
        push {USER:#x}
        retf
    """
    user = f"mov eax, 0xAAAA\n{far(0x9A, 0x43, 0)}\nmov ebx, eax\n" + jmp_end()
    task_c = "mov eax, cs\nmov dword ptr [0x5030], eax\nmov ecx, 0xC0C0\niretd\nhlt"
    img = image(kernel, {USER: user, TASK_C: task_c,
                         TSS_C: tss32(eip=TASK_C, esp=STACK_C, eflags=0x2)})
    ours = both(img)
    assert ours["sregs"] == [0, 0x1B, 0x23, 0, 0, 0x23]
    assert ours["ebx"] == 0xAAAA and ours["esp"] == USTACK
    assert ours["mem"][6][0x30:0x34] == struct.pack("<I", 0x08)
    tss_a, tss_c = ours["mem"][0], ours["mem"][2]
    assert w16(tss_c, 0) == 0x28 and w16(tss_a, 0x4C) == 0x1B and w16(tss_a, 0x50) == 0x23


def test_paging_loads_cr3_from_the_new_tss() -> None:
    # 7.2.1: the CR3 field is loaded with paging on (two identity-mapping page
    # directories, so the new task runs the same code under the other one).
    pt = b"".join(struct.pack("<I", (i << 12) | 3) for i in range(1024))
    pd1, pd2, ptab = 0x20000, 0x21000, 0x22000
    kernel = f"""
        mov eax, {pd1:#x}
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
        {far(0xEA, 0x30, 0)}
    """
    task_b = "mov eax, cr3\nmov dword ptr [0x5000], eax\n" + jmp_end()
    img = image(kernel, {TASK_B: task_b, TSS_B: tss32(eip=TASK_B, esp=STACK_B, cr3=pd2),
                         pd1: struct.pack("<I", ptab | 3), pd2: struct.pack("<I", ptab | 3),
                         ptab: pt})
    ours = both(img)
    assert ours["eax"] == pd2
    assert d32(ours["mem"][0], 0x1C) == 0           # CR3 is not saved: a static field



# -- the SDM by hand: faults before the commit point (the old task's context) ---------------------

def fault_frame(g: Guest, n: int = 4) -> list[int]:
    """The handler's vector (EDI) is checked by the caller; this is its frame: error
    code, EIP, CS, EFLAGS (from a same-privilege interrupt gate)."""
    return [g.mem.read(g.env.regs[4] + 4 * i, 4) for i in range(n)]


@pytest.mark.parametrize("sel,vector,error", [
    (0x88, 10, 0x88),     # 32-bit TSS limit 66H < 67H: #TS(TSS)
    (0x90, 10, 0x90),     # 16-bit TSS limit 2AH < 2BH: #TS(TSS)
    (0x98, 11, 0x98),     # TSS not present: #NP(TSS)
    (0xA0, 13, 0xA0),     # busy TSS: #GP(TSS)
    (0x33, 13, 0x30),     # RPL 3 > TSS DPL 0: #GP(TSS)
    (0x6B, 13, 0x68),     # RPL 3 > task gate DPL 0: #GP(gate)
    (0xB8, 11, 0xB8),     # task gate not present: #NP(gate)
    (0xA8, 13, 0x2C),     # the gate's TSS selector has TI = 1: #GP(TSS selector)
    (0xB0, 13, 0x10),     # the gate names a data segment: #GP(that selector)
    (0xE8, 13, 0x28),     # the gate names a busy TSS (the current task's): #GP(TSS)
])
def test_jmp_checks_before_the_commit_point_fault_in_the_old_task(sel: int, vector: int,
                                                                 error: int) -> None:
    # SDM vol. 2A JMP, TASK-GATE / TASK-STATE-SEGMENT; vol. 3A Table 7-1 conditions 1-2.
    g = run_interp(image(f"mov eax, 0x1234\n{far(0xEA, sel, 0)}\nhlt"))
    assert g.env.regs[7] == vector and fault_frame(g)[:3] == [error, BODY + 5, 0x08]
    assert g.env.tr.selector == 0x28 and g.env.cr[0] & CR0_TS == 0
    assert g.mem.read(TSS + 0x20, 4) == 0 and g.mem.read(TSS + 0x28, 4) == 0   # nothing saved
    gdt = g.mem.read_bytes(GDT, 0x100)
    assert busy(gdt, 0x28) and not busy(gdt, 0x30)


@pytest.mark.parametrize("link,vector,error", [
    (0x30, 10, 0x30),     # the link names an available TSS, not a busy one: #TS(link)
    (0x00, 10, 0x00),     # a null link: #TS(0)
    (0x2C, 10, 0x2C),     # TI = 1: #TS(link)
    (0x200, 10, 0x200),   # past the GDT limit: #TS(link)
    (0xF0, 11, 0xF0),     # a busy TSS not present: #NP(link)
])
def test_iret_task_return_checks_the_back_link(link: int, vector: int, error: int) -> None:
    # SDM vol. 2A IRET, TASK-RETURN; Table 6-6 (the IRET rows).
    kernel = f"""
        mov word ptr [{TSS:#x}], {link:#x}
        pushfd
        or dword ptr [esp], {NT_MASK:#x}
        popfd
        iretd
    """
    g = run_interp(image(kernel))
    iret_at = BODY + len(asm(kernel.rsplit("iretd", 1)[0], 32, BODY))
    assert g.env.regs[7] == vector and fault_frame(g)[:3] == [error, iret_at, 0x08]
    assert g.env.tr.selector == 0x28 and busy(g.mem.read_bytes(GDT, 0x100), 0x28)


# -- faults after the commit point: delivered in the new task --------------------------------------

B_SEGS = (0x10, 0x08, 0x10, 0x10, 0x10, 0x10)


def commit_fault(*, segs: tuple[int, ...] = B_SEGS, ldt: int = 0, eip: int = TASK_B
                 ) -> tuple[Guest, list[int]]:
    """JMP from task A to task B whose TSS has ``segs``/``ldt``/``eip``; returns the
    guest and the frame of the handler (error code, EIP, CS, EFLAGS)."""
    tss = tss32(eip=eip, esp=STACK_B, segs=segs, ldt=ldt)
    g = run_interp(image(f"{far(0xEA, 0x30, 0)}\nhlt", {TSS_B: tss, TASK_B: "hlt"}))
    assert g.env.regs[7] != 0xFFFF, "no fault"
    # The switch is complete: TR, busy bits, TS, task A saved with the EIP after the JMP.
    gdt = g.mem.read_bytes(GDT, 0x100)
    assert g.env.tr.selector == 0x30 and busy(gdt, 0x30) and not busy(gdt, 0x28)
    assert g.env.cr[0] & CR0_TS and g.mem.read(TSS + 0x20, 4) == BODY + 7
    return g, fault_frame(g)


@pytest.mark.parametrize("ldt,error", [
    (0x10, 0x10),          # not an LDT descriptor
    (0xC8, 0xC8),          # an LDT not present (#TS, not #NP: Table 7-1 condition 9)
    (0x54, 0x54),          # TI = 1
    (0x208, 0x208),        # past the GDT limit
])
def test_bad_ldt_in_the_new_tss_is_ts_in_the_new_task(ldt: int, error: int) -> None:
    g, frame = commit_fault(ldt=ldt)
    assert g.env.regs[7] == 10 and frame[:3] == [error, TASK_B, 0x08]
    assert g.env.regs[4] == STACK_B - 16          # pushed on the new task's stack


@pytest.mark.parametrize("index,sel,vector,error", [
    (R_CS, 0x10, 10, 0x10),      # CS is data: #TS(CS)
    (R_CS, 0x00, 10, 0x00),      # CS null: #TS(0)
    (R_CS, 0x0B, 10, 0x08),      # CS RPL 3 != DPL 0: #TS(CS)
    (R_CS, 0x70, 11, 0x70),      # CS not present: #NP(CS)
    (R_SS, 0x13, 10, 0x10),      # SS RPL 3 != CPL 0: #TS(SS)
    (R_SS, 0x08, 10, 0x08),      # SS is code: #TS(SS)
    (R_SS, 0x00, 10, 0x00),      # SS null: #TS(0)
    (R_SS, 0x78, 12, 0x78),      # SS not present: #SS(SS) (Table 7-1 condition 7)
    (3, 0x80, 10, 0x80),         # DS execute-only code: #TS(DS)
    (3, 0x78, 11, 0x78),         # DS not present: #NP(DS)
    (0, 0x208, 10, 0x208),       # ES past the GDT limit: #TS(ES)
    (4, 0x0C, 10, 0x0C),         # FS in the LDT with no LDT loaded (limit 0): #TS(FS)
])
def test_bad_segment_in_the_new_tss_faults_in_the_new_task(index: int, sel: int, vector: int,
                                                            error: int) -> None:
    segs = list(B_SEGS)
    segs[index] = sel
    g, frame = commit_fault(segs=tuple(segs))
    assert g.env.regs[7] == vector and frame[:2] == [error, TASK_B]
    assert frame[2] == segs[R_CS]                # the selector the new task's CS holds


def test_data_segment_more_privileged_than_the_new_cpl_is_ts_on_the_new_tss_stack() -> None:
    # Condition 16: DS DPL 0 < CPL 3 of the new task: #TS(DS), delivered from CPL 3, so
    # on SS0:ESP0 of the *new* TSS (KSTACK - 400H in tss32) with SS and ESP pushed.
    g, _ = commit_fault(segs=(0x23, 0x1B, 0x23, 0x10, 0x23, 0x23))
    frame = [g.mem.read(KSTACK - 0x400 - 24 + 4 * i, 4) for i in range(6)]
    assert g.env.regs[7] == 10 and g.env.regs[4] == KSTACK - 0x400 - 24
    assert frame[:3] == [0x10, TASK_B, 0x1B] and frame[4:] == [STACK_B, 0x23]


def test_eip_past_the_new_cs_limit_is_gp0_in_the_new_task() -> None:
    # JMP TASK-STATE-SEGMENT: "IF EIP not within code segment limit THEN #GP(0)".
    g, frame = commit_fault(segs=(0x10, 0xC0, 0x10, 0x10, 0x10, 0x10))
    assert g.env.regs[7] == 13 and frame[:3] == [0, TASK_B, 0xC0]


def test_segments_loaded_from_an_ldt_and_accessed_bits_set() -> None:
    # The LDT is loaded before the segments, so DS can come from it (selector 0x0C:
    # LDT entry 1); loading a descriptor sets its accessed bit (SDM vol. 3A, 3.4.5.1).
    gdt = dict(GDT_ENTRIES)
    gdt[0x10] = data32(0, typ=0x2)                 # DS of task B, not yet accessed
    task_b = "mov eax, dword ptr [0x5000]\nmov ebx, ds\nmov ecx, es\n" + jmp_end()
    tss = tss32(eip=TASK_B, esp=STACK_B, segs=(0x10, 0x08, 0x10, 0x0C, 0x10, 0x10), ldt=0x50)
    g = run_interp(image(f"{far(0xEA, 0x30, 0)}", {TASK_B: task_b, TSS_B: tss}, gdt))
    assert g.env.rip == END and g.env.regs[7] == 0xD7D7D7D7   # EDI from the TSS: no fault
    assert g.env.ldt.selector == 0x50 and g.env.ldt.base == LDT_AT and g.env.ldt.limit == 0x17
    assert (g.env.regs[3], g.env.regs[1]) == (0x0C, 0x10)
    assert g.mem.read(GDT + 0x10 + 5, 1) & 1       # accessed now


# -- interrupts and exceptions through task gates (Unicorn does not deliver them) ------------------

def idt_gate(vector: int, desc: int) -> dict[int, bytes]:
    return {IDT + 8 * vector: struct.pack("<Q", desc)}


def test_int_n_through_a_task_gate_nests_and_iret_returns_after_the_int() -> None:
    # SDM vol. 2A INT n, TASK-GATE; vol. 3A 6.12.2: a software interrupt saves the EIP
    # after INT n, the new task runs nested (no error code), IRET returns there.
    task_b = "pushfd\npop dword ptr [0x5000]\nmov dword ptr [0x5004], esp\niretd\nhlt"
    kernel = "mov eax, 0xABCD\nint 0x40\nmov dword ptr [0x5008], eax\n" + jmp_end()
    img = image(kernel, {TASK_B: task_b, TSS_B: tss32(eip=TASK_B, esp=STACK_B),
                         **idt_gate(0x40, gate(0x30, 0, 0x5, 0))})
    g = run_interp(img)
    assert g.env.rip == END and g.env.tr.selector == 0x28
    assert [g.mem.read(0x5000 + 4 * i, 4) for i in range(3)] == [0x4002, STACK_B, 0xABCD]
    assert g.mem.read(TSS + 0x20, 4) == BODY + 7 and g.mem.read(TSS_B, 2) == 0x28


def test_exception_through_a_task_gate_pushes_its_error_code_on_the_new_stack() -> None:
    # 6.13 and INT n TASK-GATE: #GP(200H) from MOV DS (past the GDT limit) through a
    # task gate: the old task is saved at the faulting MOV with RF set in its EFLAGS
    # image (a fault: SDM vol. 3A 18.3.1.1), the error code is a dword on task C's stack.
    kernel = "mov ax, 0x200\nmov ds, ax\nhlt"
    task_c = "mov eax, dword ptr [esp]\nmov ebx, esp\npushfd\npop ecx\n" + jmp_end()
    img = image(kernel, {TASK_C: task_c, TSS_C: tss32(eip=TASK_C, esp=STACK_C),
                         **idt_gate(13, gate(0x40, 0, 0x5, 0))})
    g = run_interp(img)
    assert g.env.rip == END and g.env.tr.selector == 0x40
    assert g.env.regs[:4] == [0x200, 0x4002, 0xD2D2D2D2, STACK_C - 4]
    assert g.mem.read(TSS + 0x20, 4) == BODY + 4                 # the MOV DS
    assert g.mem.read(TSS + 0x24, 4) & 0x10000                   # RF
    assert g.mem.read(TSS_C, 2) == 0x28 and busy(g.mem.read_bytes(GDT, 0x100), 0x28)


def test_exception_task_gate_to_a_busy_tss_is_gp_then_df() -> None:
    # INT n TASK-GATE: "IF TSS descriptor specifies that the TSS is busy THEN #GP(TSS
    # selector)": #GP during the delivery of #GP is #DF (6.15, Table 6-5).
    kernel = "mov ax, 0x200\nmov ds, ax\nhlt"
    img = image(kernel, {**idt_gate(13, gate(0x28, 0, 0x5, 0))})
    g = run_interp(img)
    assert g.env.regs[7] == 8 and g.env.tr.selector == 0x28


def test_int_n_at_cpl3_through_a_dpl0_task_gate_is_gp() -> None:
    # INT n: the gate's DPL is checked for any gate type, a task gate too (6.12.1.1).
    kernel = f"""
        push 0x23
        push {USTACK:#x}
        push 0x1b
        push {USER:#x}
        retf
    """
    img = image(kernel, {USER: "int 0x40\nhlt", **idt_gate(0x40, gate(0x30, 0, 0x5, 0))})
    g = run_interp(img)
    assert g.env.regs[7] == 13 and g.env.tr.selector == 0x28
    frame = [g.mem.read(KSTACK - 24 + 4 * i, 4) for i in range(3)]
    assert frame == [0x40 * 8 + 2, USER, 0x1B]


# -- the T flag, DR7, CR3 without paging -----------------------------------------------------------

def test_t_flag_in_the_new_tss_raises_db_with_bt_before_its_first_instruction() -> None:
    # 7.2.1 (T flag) and 18.3.1.5: #DB after the switch, DR6.BT set, the EIP pushed is
    # the new task's first instruction, which has not run (EAX keeps the TSS value).
    tss = tss32(eip=TASK_B, esp=STACK_B, trap=1)
    g = run_interp(image(far(0xEA, 0x30, 0), {TSS_B: tss, TASK_B: "mov eax, 1\nhlt"}))
    assert g.env.regs[7] == 1 and g.env.tr.selector == 0x30
    assert g.env.dr[6] & 0x800F == 0x8000 and g.env.regs[0] == 0xA0A0A0A0
    assert [g.mem.read(STACK_B - 12 + 4 * i, 4) for i in range(2)] == [TASK_B, 0x08]


def test_task_switch_clears_the_local_breakpoint_enables_of_dr7() -> None:
    # 18.2.4: L0-L3 are cleared on every task switch; G0-G3 stay.
    kernel = f"mov eax, 0xFF\nmov dr7, eax\n{far(0xEA, 0x30, 0)}"
    task_b = "mov eax, dr7\n" + jmp_end()
    g = run_interp(image(kernel, {TSS_B: tss32(eip=TASK_B, esp=STACK_B), TASK_B: task_b}))
    assert g.env.rip == END and g.env.regs[0] & 0xFF == 0xAA


def test_without_paging_the_cr3_field_is_not_loaded() -> None:
    tss = tss32(eip=TASK_B, esp=STACK_B, cr3=0x21000)
    g = run_interp(image(far(0xEA, 0x30, 0), {TSS_B: tss, TASK_B: jmp_end()}))
    assert g.env.rip == END and g.env.cr[3] == 0 and not g.env.cr[0] & CR0_PG


# -- 16-bit TSSs (Figure 7-10) ---------------------------------------------------------------------

def test_call_to_a_16_bit_tss_and_iret_back_use_the_16_bit_layout() -> None:
    # 7.6: IP, FLAGS, AX-DI, ES CS SS DS, LDT as words; no CR3, FS or GS (loaded null);
    # the upper halves of the registers are not kept (FFFFH here, as QEMU's TCG).
    task_d = """
        mov dword ptr [0x5050], eax
        pushf
        pop word ptr [0x5054]
        mov word ptr [0x5056], fs
        mov dx, 0x4444
        iret
    """
    kernel = KERNEL_REGS + f"{far(0x9A, 0x48, 0)}\n" + jmp_end()
    img = image(kernel, {TSS_D: tss16(ip=TASK_D, sp=STACK_D), TASK_D: asm(task_d, 16, TASK_D)})
    g = run_interp(img)
    assert g.env.rip == END and g.env.tr.selector == 0x28 and g.env.regs[2] == 0x33333333
    assert g.mem.read(0x5050, 4) == 0xFFFF1A1A
    assert g.mem.read(0x5054, 2) == 0x4002 and g.mem.read(0x5056, 2) == 0
    iret_end = TASK_D + len(asm(task_d, 16, TASK_D))
    saved = [g.mem.read(TSS_D + 2 * i, 2) for i in range(0x16)]
    assert saved[0] == 0x28                               # link
    assert saved[7:9] == [iret_end, 0x0002]               # IP after IRET; FLAGS, NT cleared
    assert saved[9:17] == [0x1A1A, 0x2C2C, 0x4444, 0x4B4B, STACK_D, 0x6B6B, 0x75E5, 0x8D1D]
    assert saved[17:21] == [0x60, 0x58, 0x60, 0x60] and saved[21] == 0
    gdt = g.mem.read_bytes(GDT, 0x100)
    assert busy(gdt, 0x28) and not busy(gdt, 0x48)


# -- the ring stack from the current TSS (SDM vol. 3A 6.12.1, 7.2.1, 7.6) --------------------------

def to_cpl3(user: str, ltr: int = 0x28) -> dict[int, bytes]:
    kernel = f"""
        mov ax, {ltr:#x}
        ltr ax
        push 0x23
        push {USTACK:#x}
        push 0x1b
        push {USER:#x}
        retf
    """
    gdt = dict(GDT_ENTRIES)
    gdt[0x48] = tss_desc(TSS_D, 0x2B, is32=False)
    return image(kernel, {USER: user, 0x3800: "mov edi, 0x22\nhlt",
                          **idt_gate(0x21, gate(0x08, HANDLERS, 0xE, 3)),
                          **idt_gate(0x22, gate(0xD0, 0x3800, 0xE, 3)),
                          TSS_D: tss16(ip=0, sp=0)}, gdt)


def test_interrupt_from_cpl3_with_a_16_bit_tss_takes_sp0_ss0_from_its_words() -> None:
    # Figure 7-10: SP0 at 2, SS0 at 4 (not the 32-bit ESP0 at 4, SS0 at 8).
    g = run_interp(to_cpl3("int 0x21\nhlt", ltr=0x48))
    assert g.env.regs[7] == 0 and g.env.regs[4] == KSTACK - 0x600 - 20
    frame = [g.mem.read(KSTACK - 0x600 - 20 + 4 * i, 4) for i in range(5)]
    assert frame[:2] == [USER + 2, 0x1B] and frame[3:] == [USTACK, 0x23]


def test_interrupt_whose_stack_slot_is_past_the_tss_limit_is_ts_on_the_tss() -> None:
    # TSS limit 0BH: SS0:ESP0 (4-9) are inside, ESP1:SS1 (12-17) are not: INT 22H to a
    # CPL-1 handler is #TS(TR selector E0H), delivered on SS0:ESP0 to CPL 0.
    g = run_interp(to_cpl3("int 0x22\nhlt", ltr=0xE0))
    assert g.env.regs[7] == 10 and g.env.regs[4] == KSTACK - 24
    assert [g.mem.read(KSTACK - 24 + 4 * i, 4) for i in range(3)] == [0xE0, USER, 0x1B]


# -- IA-32e mode: no task switches (SDM vol. 3A, 7.7) ----------------------------------------------

def test_ia32e_iret_with_nt_is_gp0_and_an_idt_task_gate_is_gp() -> None:
    g = Guest(64)
    g.load("iretq")
    g.env.eflags |= NT_MASK
    with pytest.raises(Fault) as iret_fault:
        excp.iret(g.core, 8, CODE + 2)           # IRET with NT = 1 in IA-32e mode
    assert (iret_fault.value.vector, iret_fault.value.error_code) == (13, 0)
    idt = 0x30000
    g.env.idt = SegmentCache(0, idt, 0x50 * 16 - 1, 0)
    g.mem.write_bytes(idt + 0x40 * 16, struct.pack("<QQ", gate(0x30, 0, 0x5, 0), 0))
    with pytest.raises(Fault) as gate_fault:
        excp.do_interrupt(g.core, 0x40, None, CODE, soft=False)
    assert (gate_fault.value.vector, gate_fault.value.error_code) == (13, 0x40 * 8 + 2)
