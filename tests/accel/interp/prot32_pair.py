"""One 32-bit protected-mode scenario run on interp and on Unicorn (QEMU's TCG core), and
the state both are compared on: the general registers, EIP, EFLAGS, the segment
selectors, optionally TR and CR0.TS, and the memory ranges a test names.  Shared by
test_gates.py, test_task.py and test_vm86.py, whose scenarios build their own GDT,
IDT and TSS in the image (Unicorn delivers no exceptions: a scenario that raises one
fails on the Unicorn side with the vector named).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from pyqemu.accel.ops import EXCP_DEBUG, EXCP_HLT
from pyqemu.target.i386.cpu_state import CR0_TS
from tests.accel.interp.harness import Guest

unicorn = pytest.importorskip("unicorn")
from unicorn import x86_const as ux  # noqa: E402

REGS32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
UC32 = (ux.UC_X86_REG_EAX, ux.UC_X86_REG_ECX, ux.UC_X86_REG_EDX, ux.UC_X86_REG_EBX,
        ux.UC_X86_REG_ESP, ux.UC_X86_REG_EBP, ux.UC_X86_REG_ESI, ux.UC_X86_REG_EDI)
UC_SEGS = (ux.UC_X86_REG_ES, ux.UC_X86_REG_CS, ux.UC_X86_REG_SS, ux.UC_X86_REG_DS,
           ux.UC_X86_REG_FS, ux.UC_X86_REG_GS)
Ranges = Sequence[tuple[int, int]]


def run_interp(img: dict[int, bytes], end: int, budget: int = 100_000) -> Guest:
    """Load ``img`` ({address: bytes}) into a 32-bit guest (EDI = FFFFH: the handlers put
    the vector there) and run it until ``end`` (a breakpoint) or a HLT."""
    g = Guest(32)
    for addr, raw in img.items():
        g.mem.write_bytes(addr, raw)
    g.env.regs[7] = 0xFFFF
    g.core.tb_flush()
    g.core.breakpoints = {end}
    reason = g.core.run(budget)
    assert reason in (EXCP_DEBUG, EXCP_HLT), f"stopped with {reason:#x} at {g.env.rip:#x}"
    return g


def interp_state(g: Guest, compared: Ranges, system: bool = False) -> dict[str, Any]:
    """The compared state of an interp guest; ``system`` adds TR and CR0.TS."""
    env = g.env
    out: dict[str, Any] = {n: env.regs[i] & 0xFFFFFFFF for i, n in enumerate(REGS32)}
    out["eip"] = env.rip
    out["eflags"] = g.core.get_flags()
    out["sregs"] = [s.selector for s in env.segs]
    if system:
        out["tr"] = env.tr.selector
        out["ts"] = bool(env.cr[0] & CR0_TS)
    out["mem"] = [g.mem.read_bytes(a, n) for a, n in compared]
    return out


def run_unicorn(img: dict[int, bytes], start: int, end: int, compared: Ranges,
                system: bool = False) -> dict[str, Any]:
    """The same image on Unicorn from ``start`` to ``end``; the same state back."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    uc.mem_map(0, 2 << 20)
    for addr, raw in img.items():
        uc.mem_write(addr, raw)
    uc.reg_write(ux.UC_X86_REG_EDI, 0xFFFF)
    events: list[int] = []

    def on_intr(u: Any, intno: int, _: object) -> None:
        events.append(intno)
        u.emu_stop()

    uc.hook_add(unicorn.UC_HOOK_INTR, on_intr)
    uc.emu_start(start, end, count=100_000)
    assert not events, f"Unicorn raised exception {events} at {uc.reg_read(ux.UC_X86_REG_EIP):#x}"
    out: dict[str, Any] = {n: uc.reg_read(r) for n, r in zip(REGS32, UC32, strict=True)}
    out["eip"] = uc.reg_read(ux.UC_X86_REG_EIP)
    out["eflags"] = uc.reg_read(ux.UC_X86_REG_EFLAGS)
    out["sregs"] = [uc.reg_read(r) for r in UC_SEGS]
    if system:
        out["tr"] = uc.reg_read(ux.UC_X86_REG_TR)[0]
        out["ts"] = bool(uc.reg_read(ux.UC_X86_REG_CR0) & CR0_TS)
    out["mem"] = [bytes(uc.mem_read(a, n)) for a, n in compared]
    return out
