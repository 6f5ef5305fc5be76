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
* Not KVM: this host's KVM (PVM) cannot run a 32-bit protected-mode kernel with its
  own GDT at CPL 3 and emulates CPL-0 code in its own instruction emulator, so it is
  no reference for task switches (DESIGN.md, "The KVM on our own machines").
"""

from __future__ import annotations

import struct

import pytest

from hw.core.cpu import EXCP_DEBUG, EXCP_HLT
from hw.i386.cpu_state import CR0_PG, CR0_TS, NT_MASK, R_CS, R_SS
from tests.accel.interp.harness import CODE, Guest, asm
from tests.accel.interp.test_gates import (BODY, HANDLERS, IDT, KSTACK, PSEUDO, REGS32, TSS, UC32,
                                           UC_SEGS, USER, USTACK, code32, data32, far, gate,
                                           prologue, seg)

unicorn = pytest.importorskip("unicorn")
from unicorn import x86_const as U  # noqa: E402

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
    0xE0: gate(0xD0, 0x3800, 0xE, 3),                        # (an interrupt gate: #TS case)
}
GDT_LIMIT = 0x1FF
LDT_ENTRIES = {0x00: 0, 0x08: data32(0), 0x10: code32(0)}


def tss32(*, eip: int, esp: int, eflags: int = 0x2, regs: tuple[int, ...] | None = None,
          segs: tuple[int, ...] = (0x10, 0x08, 0x10, 0x10, 0x10, 0x10), ldt: int = 0,
          cr3: int = 0, trap: int = 0, link: int = 0) -> bytes:
    """A 32-bit TSS image (SDM vol. 3A, 7.2.1, Figure 7-2); segs in ES CS SS DS FS GS order."""
    raw = bytearray(0x68)
    regs = regs or (0xA0A0A0A0, 0xC1C1C1C1, 0xD2D2D2D2, 0xB3B3B3B3, esp, 0xB5B5B5B5,
                    0x51515151, 0xD7D7D7D7)
    regs = regs[:4] + (esp,) + regs[5:]
    struct.pack_into("<H", raw, 0, link)
    struct.pack_into("<II", raw, 4, KSTACK - 0x400, 0x10)      # SS0:ESP0
    struct.pack_into("<III", raw, 0x1C, cr3, eip, eflags)
    struct.pack_into("<8I", raw, 0x28, *regs)
    for i, s in enumerate(segs):
        struct.pack_into("<H", raw, 0x48 + 4 * i, s)
    struct.pack_into("<HH", raw, 0x60, ldt, 0)
    struct.pack_into("<HH", raw, 0x64, trap, 0x68)
    return bytes(raw)


def tss16(*, ip: int, sp: int, flags: int = 0x2, segs: tuple[int, ...] = (0x60, 0x58, 0x60, 0x60),
          ldt: int = 0, link: int = 0) -> bytes:
    """A 16-bit TSS image (SDM vol. 3A, 7.6, Figure 7-10); segs in ES CS SS DS order."""
    raw = bytearray(0x2C)
    struct.pack_into("<HHH", raw, 0, link, KSTACK - 0x600, 0x10)   # link, SP0, SS0
    words = (ip, flags, 0x1A1A, 0x2C2C, 0x3D3D, 0x4B4B, sp, 0x6B6B, 0x75E5, 0x8D1D)
    struct.pack_into("<10H", raw, 0x0E, *words)
    struct.pack_into("<4H", raw, 0x22, *segs)
    struct.pack_into("<H", raw, 0x2A, ldt)
    return bytes(raw)


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
    tss_a = bytearray(0x68)
    struct.pack_into("<II", tss_a, 4, KSTACK, 0x10)
    struct.pack_into("<HH", tss_a, 0x64, 0, 0x68)
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
    g = Guest(32)
    for addr, raw in img.items():
        g.mem.write_bytes(addr, raw)
    g.mem.write_bytes(END, asm("hlt", 32, END))
    g.env.regs[7] = 0xFFFF                 # EDI: the vector a handler sets
    g.core.tb_flush()
    g.core.breakpoints = {end}
    reason = g.core.run(budget)
    assert reason in (EXCP_DEBUG, EXCP_HLT), f"stopped with {reason:#x} at {g.env.rip:#x}"
    return g


def state_interp(g: Guest) -> dict[str, object]:
    env = g.env
    out: dict[str, object] = {n: env.regs[i] & 0xFFFFFFFF for i, n in enumerate(REGS32)}
    out["eip"] = env.rip
    out["eflags"] = g.core.get_flags()
    out["sregs"] = [s.selector for s in env.segs]
    out["tr"] = env.tr.selector
    out["ts"] = bool(env.cr[0] & CR0_TS)
    out["mem"] = [g.mem.read_bytes(a, n) for a, n in COMPARED]
    return out


def run_unicorn(img: dict[int, bytes], end: int = END) -> dict[str, object]:
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    uc.mem_map(0, 2 << 20)
    for addr, raw in img.items():
        uc.mem_write(addr, raw)
    uc.reg_write(U.UC_X86_REG_EDI, 0xFFFF)
    events: list[int] = []

    def on_intr(u: unicorn.Uc, intno: int, _: object) -> None:
        events.append(intno)
        u.emu_stop()

    uc.hook_add(unicorn.UC_HOOK_INTR, on_intr)
    uc.emu_start(CODE, end, count=100_000)
    assert not events, f"Unicorn raised exception {events} at {uc.reg_read(U.UC_X86_REG_EIP):#x}"
    out: dict[str, object] = {n: uc.reg_read(r) for n, r in zip(REGS32, UC32)}
    out["eip"] = uc.reg_read(U.UC_X86_REG_EIP)
    out["eflags"] = uc.reg_read(U.UC_X86_REG_EFLAGS)
    out["sregs"] = [uc.reg_read(r) for r in UC_SEGS]
    out["tr"] = uc.reg_read(U.UC_X86_REG_TR)[0]
    out["ts"] = bool(uc.reg_read(U.UC_X86_REG_CR0) & CR0_TS)
    out["mem"] = [bytes(uc.mem_read(a, n)) for a, n in COMPARED]
    return out


def both(img: dict[int, bytes]) -> dict[str, object]:
    """Run ``img`` to END on interp and on Unicorn; every compared item must agree."""
    ours = state_interp(run_interp(img))
    theirs = run_unicorn(img)
    assert ours["eip"] == END, f"interp stopped at {ours['eip']:#x} (vector {ours['edi']:#x})"
    for key in ours:
        if key == "mem":
            for (addr, _), a, b in zip(COMPARED, ours[key], theirs[key]):  # type: ignore[arg-type]
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
    tss_a, tss_b, gdt = ours["mem"][0], ours["mem"][1], ours["mem"][3]   # type: ignore[index]
    assert ours["tr"] == 0x28 and ours["ts"] is True
    assert busy(gdt, 0x28) and not busy(gdt, 0x30)
    # Task A, saved by its JMP: EIP after it, CF set, its registers and selectors.
    assert d32(tss_a, 0x20) == BODY + len(back) and d32(tss_a, 0x24) == 0x3
    assert [d32(tss_a, 0x28 + 4 * i) for i in (0, 4, 7)] == [0x11111111, KSTACK, 0x77777777]
    assert [w16(tss_a, 0x48 + 4 * i) for i in range(6)] == [0x10, 0x08, 0x10, 0x10, 0x10, 0x23]
    # Task B ran with its TSS's registers and was saved by its own JMP.
    assert ours["mem"][6][:8] == struct.pack("<II", 0xA0A0A0A0, STACK_B)   # type: ignore[index]
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
    tss_a, tss_b, gdt = ours["mem"][0], ours["mem"][1], ours["mem"][3]   # type: ignore[index]
    data = ours["mem"][6]                                                 # type: ignore[index]
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
    assert ours["mem"][6][0x30:0x34] == struct.pack("<I", 0x08)   # type: ignore[index]
    tss_a, tss_c = ours["mem"][0], ours["mem"][2]                 # type: ignore[index]
    assert w16(tss_c, 0) == 0x28 and w16(tss_a, 0x4C) == 0x1B and w16(tss_a, 0x50) == 0x23
