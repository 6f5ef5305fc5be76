"""Hardware task switching (Intel SDM vol. 3A, chapter 7 "Task Management").

:func:`switch_task` is the one task switch of legacy protected mode, whatever starts
it (7.3): a far JMP or CALL to a TSS descriptor or through a task gate (vol. 2A,
JMP/CALL "TASK-GATE" and "TASK-STATE-SEGMENT"), an interrupt or exception through a
task gate in the IDT (vol. 3A, 6.11 and 6.12.2), and IRET with EFLAGS.NT = 1
(vol. 2A, IRET "TASK-RETURN").  The caller makes the checks that belong to its
source (gate and TSS DPL against CPL and RPL, the gate's presence); this module
checks the new TSS descriptor, saves the old task, commits, and loads the new one.

Layouts: the 32-bit TSS (7.2.1, Figure 7-2) and the 16-bit TSS (7.6, Figure 7-10).

The commit point (7.3, the note after the step list; vol. 3A 6.15 "Interrupt 10"):
everything that can fault before the old task is saved is checked first, so such a
fault leaves the old task as it was, and the pages the switch writes are probed
before the first write.  From the moment TR holds the new TSS, a fault (a bad LDT,
CS, SS or data segment, EIP past the CS limit, the error-code push) is raised with
the new task's EIP and registers in ``env``, so it is delivered in the context of the
new task, as the SDM says; the selectors not yet loaded by then are left as null or
unusable caches holding the TSS's selector values.

Choices where the SDM leaves the result open, and what they follow:

* A 16-bit TSS loads the upper halves of the general registers with FFFFH (the SDM:
  "the upper 16 bits of the registers are modified and not maintained"; QEMU's TCG
  does this), clears the upper half of EFLAGS, and loads FS and GS with null.
* The segment registers are loaded in the order CS, SS, ES, DS, FS, GS after the LDT
  (QEMU's TCG order; Table 7-1 lists conditions, not an order).
* The old TSS's limit must cover the fields the switch writes (67H or 2BH), else
  #TS(old TSS selector): "Stores to the old TSS encounter a fault condition" (Table 6-6).
* Error codes do not carry EXT: no delivery path of the interpreter sets it yet.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from pyqemu.accel.interp.errors import (
    EXCP_DB,
    EXCP_GP,
    EXCP_NP,
    EXCP_SS,
    EXCP_TS,
    Fault,
    InterpError,
)
from pyqemu.accel.interp.mmu import ACC_WRITE
from pyqemu.accel.interp.seg import cache_from, mark_accessed, read_descriptor
from pyqemu.accel.interp.segcheck import check_access
from pyqemu.target.i386.cpu_state import (
    CR0_PG,
    CR0_TS,
    DESC_A_MASK,
    DESC_B_MASK,
    DESC_C_MASK,
    DESC_CS_MASK,
    DESC_DPL_SHIFT,
    DESC_P_MASK,
    DESC_R_MASK,
    DESC_S_MASK,
    DESC_W_MASK,
    EFER_LMA,
    NT_MASK,
    R_CS,
    R_DS,
    R_ES,
    R_FS,
    R_GS,
    R_SS,
    VM_MASK,
    SegmentCache,
)

if TYPE_CHECKING:
    from pyqemu.accel.interp.cpu_exec import InterpCore


class Source(enum.Enum):
    """What started the task switch (the columns of SDM vol. 3A, Table 7-2)."""

    JMP = "jmp"
    CALL = "call"
    IRET = "iret"
    INT = "int"          # an interrupt or exception through a task gate in the IDT


JMP, CALL, IRET, INT = Source.JMP, Source.CALL, Source.IRET, Source.INT

#: Type field of a TSS descriptor (SDM vol. 3A, Table 3-2): bit 3 = 32-bit, bit 1 = busy.
TSS_BUSY = 0x2
#: Smallest limits a TSS may have (7.2.2: 67H; 7.6: a 16-bit TSS is 44 bytes).
MIN_LIMIT = {True: 0x67, False: 0x2B}
#: EFLAGS bits a 32-bit TSS image loads (all defined flags; bit 1 always reads 1).
EFLAGS_LOADED = 0x3F7FD5
#: DR7 L0-L3: cleared on every task switch (SDM vol. 3A, 18.2.4).
DR7_LOCAL_ENABLES = 0x55
DR6_BT = 1 << 15

_MASK = {2: 0xFFFF, 4: 0xFFFFFFFF}


def _is32(hi: int) -> bool:
    return bool((hi >> 8) & 8)


def _dpl(hi: int) -> int:
    return (hi >> DESC_DPL_SHIFT) & 3


# -- the TSS of the current task: the inner stacks -------------------------------------------

def tss_stack(core: InterpCore, level: int) -> tuple[int, int]:
    """SS and ESP/SP (RSP in IA-32e mode) for privilege ``level`` from the current TSS
    (SDM vol. 3A, 7.2.1 Figure 7-2, 7.6 Figure 7-10, 7.7 Figure 7-11; 6.12.1 and vol. 2A
    CALL MORE-PRIVILEGE): #TS(TSS selector) when the slot is past the TSS limit.  A
    16-bit TSS holds SPn, SSn as words at 2 + 4n; a 32-bit one ESPn, SSn at 4 + 8n.
    IA-32e: SS is the null selector with RPL = ``level``."""
    env = core.env
    tr = env.tr
    if env.efer & EFER_LMA:
        at, width = level * 8 + 4, 8
    elif _is32(tr.flags):
        at, width = level * 8 + 4, 6                      # ESPn, then SSn
    else:
        at, width = level * 4 + 2, 4                      # SPn, then SSn
    if at + width - 1 > tr.limit:
        raise Fault(EXCP_TS, tr.selector & 0xFFFC, why=f"TSS stack slot for CPL {level} "
                                                       f"past the TSS limit")
    raw = core.mmu.read_bytes(tr.base + at, width)
    if width == 8:
        return level, int.from_bytes(raw, "little")
    if width == 6:
        return int.from_bytes(raw[4:6], "little"), int.from_bytes(raw[:4], "little")
    return int.from_bytes(raw[2:4], "little"), int.from_bytes(raw[:2], "little")


def inner_stack_segment(core: InterpCore, ss: int, level: int) -> tuple[SegmentCache, int]:
    """Check the SS a TSS gives for ``level`` (SDM vol. 2A CALL MORE-PRIVILEGE, vol. 3A
    6.12.1 and Interrupt 10/12): #TS(0) null; #TS(SS) past the table, RPL or DPL not
    ``level``, not writable data; #SS(SS) not present.  Returns the cache (accessed bit
    set) and the stack-pointer mask of its B flag."""
    if ss & 0xFFFC == 0:
        raise Fault(EXCP_TS, 0, why=f"null SS in the TSS for CPL {level}")
    table = core.env.ldt if ss & 4 else core.env.gdt
    if (ss & ~7) + 7 > table.limit:
        raise Fault(EXCP_TS, ss & 0xFFFC, why=f"TSS stack {ss:#x} past the table")
    lo, hi = read_descriptor(core, ss)
    writable_data = hi & (DESC_S_MASK | DESC_CS_MASK | DESC_W_MASK) == DESC_S_MASK | DESC_W_MASK
    if (ss & 3) != level or _dpl(hi) != level or not writable_data:
        raise Fault(EXCP_TS, ss & 0xFFFC, why=f"TSS stack segment {ss:#x} for CPL {level}")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_SS, ss & 0xFFFC, why=f"TSS stack segment {ss:#x} not present")
    cache = cache_from(ss, lo, mark_accessed(core, ss, hi))
    return cache, 0xFFFFFFFF if hi & DESC_B_MASK else 0xFFFF


# -- the new TSS descriptor ---------------------------------------------------------------------

def new_tss_descriptor(core: InterpCore, sel: int, source: Source) -> tuple[int, int]:
    """Read and check the descriptor of the TSS a task switch goes to (SDM vol. 2A,
    JMP/CALL TASK-GATE, INT n TASK-GATE, IRET TASK-RETURN; vol. 3A 7.3 steps 1-3,
    Table 7-1 conditions 1-2).  The selector must name a TSS in the GDT: #GP(sel) for
    JMP, CALL and INT (#TS(sel) for IRET, which finds it in the back link) when TI = 1,
    past the GDT limit, or not a TSS of the state the source needs (available, or busy
    for IRET); #NP(sel) not present; #TS(sel) limit below 67H (2BH for a 16-bit TSS)."""
    bad = EXCP_TS if source is IRET else EXCP_GP
    why = f"task switch ({source.value}) to {sel:#x}"
    env = core.env
    if sel & 4 or (sel & ~7) + 7 > env.gdt.limit:
        raise Fault(bad, sel & 0xFFFC, why=f"{why}: not a GDT selector within the limit")
    lo, hi = read_descriptor(core, sel)
    stype = (hi >> 8) & 0x1F                     # with S: a TSS has S = 0
    busy = TSS_BUSY if source is IRET else 0
    if stype not in (0x1 | busy, 0x9 | busy):
        state = "busy" if source is IRET else "available"
        raise Fault(bad, sel & 0xFFFC, why=f"{why}: not an {state} TSS (type {stype:#x})")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_NP, sel & 0xFFFC, why=f"{why}: TSS not present")
    if cache_from(sel, lo, hi).limit < MIN_LIMIT[_is32(hi)]:
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"{why}: TSS limit below the minimum")
    return lo, hi


# -- reading and writing TSS images ---------------------------------------------------------------

class _Image:
    """The dynamic fields of a TSS (SDM vol. 3A, 7.2.1 and 7.6), as loaded or saved."""

    def __init__(self) -> None:
        self.cr3 = 0
        self.eip = 0
        self.eflags = 0
        self.regs = [0] * 8
        self.segs = [0] * 6            # ES CS SS DS FS GS
        self.ldt = 0
        self.trap = False


def _read_image(core: InterpCore, base: int, is32: bool) -> _Image:
    """The new task's state from its TSS: read whole, before anything is written (7.3
    step 4: the TSS must be accessible; a #PF here is still the old task's)."""
    img = _Image()
    if is32:
        raw = core.mmu.read_bytes(base, 0x68)

        def d(at: int) -> int:
            return int.from_bytes(raw[at:at + 4], "little")
        img.cr3, img.eip, img.eflags = d(0x1C), d(0x20), d(0x24)
        img.regs = [d(0x28 + 4 * i) for i in range(8)]
        img.segs = [d(0x48 + 4 * i) & 0xFFFF for i in range(6)]
        img.ldt = d(0x60) & 0xFFFF
        img.trap = bool(d(0x64) & 1)
    else:
        raw = core.mmu.read_bytes(base, 0x2C)

        def w(at: int) -> int:
            return int.from_bytes(raw[at:at + 2], "little")
        img.eip, img.eflags = w(0x0E), w(0x10)
        img.regs = [0xFFFF0000 | w(0x12 + 2 * i) for i in range(8)]
        img.segs = [w(0x22), w(0x24), w(0x26), w(0x28), 0, 0]
        img.ldt = w(0x2A)
    return img


def _save_old(core: InterpCore, base: int, next_eip: int, eflags: int, is32: bool) -> None:
    """Save the old task in its TSS (SDM vol. 3A, 7.3 step 7): EIP, EFLAGS, the eight
    general registers and the segment selectors; nothing else (CR3, LDT, the stacks
    are static fields).  A 32-bit TSS gets each selector as a word: the reserved word
    above it is not written."""
    env = core.env
    write = core.mmu.write_bytes_linear
    if is32:
        fields = [next_eip, eflags] + [env.regs[i] for i in range(8)]
        write(base + 0x20, b"".join((v & 0xFFFFFFFF).to_bytes(4, "little") for v in fields))
        for i in range(6):
            write(base + 0x48 + 4 * i, env.segs[i].selector.to_bytes(2, "little"))
        return
    fields = [next_eip, eflags] + [env.regs[i] for i in range(8)] + [
        env.segs[s].selector for s in (R_ES, R_CS, R_SS, R_DS)]
    write(base + 0x0E, b"".join((v & 0xFFFF).to_bytes(2, "little") for v in fields))


def _probe(core: InterpCore, la: int, n: int, access: int) -> None:
    """Translate every page of ``la``..``la+n-1`` for ``access`` (a #PF now is before
    anything was written: SDM vol. 3A, 7.3 step 4)."""
    end = la + n
    while la < end:
        core.mmu.translate(la & 0xFFFFFFFF, access, supervisor=True)
        la = (la | 0xFFF) + 1


def _set_busy(core: InterpCore, sel: int, busy: bool) -> None:
    """Set or clear the busy bit (type bit 1) of the GDT TSS descriptor ``sel`` (7.2.2)."""
    at = core.env.gdt.base + (sel & ~7) + 5
    byte = core.mmu.read_bytes(at, 1)[0]
    byte = byte | TSS_BUSY if busy else byte & ~TSS_BUSY
    core.mmu.write_bytes_linear(at, bytes([byte]))


# -- the switch ---------------------------------------------------------------------------------------

def switch_task(core: InterpCore, sel: int, source: Source, next_eip: int,
                error_code: int | None = None) -> bool:
    """Switch to the task whose TSS selector is ``sel`` (SDM vol. 3A, 7.3, the steps
    and Table 7-2).  ``next_eip`` is saved as the old task's EIP: the instruction after
    the JMP, CALL, IRET or INT n, or the faulting instruction for an exception.
    ``error_code``: pushed on the new task's stack (source INT, an exception that has
    one: vol. 3A 6.13), a dword for a 32-bit TSS, a word for a 16-bit one.

    Returns True when the new TSS has its T flag set: DR6.BT is set and the caller
    owes a #DB trap before the new task's first instruction (SDM vol. 3A, 7.2.1 and
    18.3.1.5), which :func:`t_flag_trap` gives; how to raise it depends on whether the
    caller is an instruction or an event delivery."""
    env = core.env
    if env.efer & EFER_LMA:
        raise InterpError("interp: switch_task called in IA-32e mode (callers raise #GP)")
    lo, hi = new_tss_descriptor(core, sel, source)
    new32 = _is32(hi)
    new = cache_from(sel, lo, hi)
    img = _read_image(core, new.base, new32)

    # The old task's TSS must take the save (Table 6-6): its limit and its pages.
    old = env.tr
    old_sel = old.selector
    old32 = _is32(old.flags)
    first, size = (0x20, 0x40) if old32 else (0x0E, 0x1C)   # EIP .. the last selector
    if old.limit < MIN_LIMIT[old32]:
        raise Fault(EXCP_TS, old_sel & 0xFFFC, why=f"old TSS {old_sel:#x} limit too small to "
                                                   f"save the task")
    _probe(core, old.base + first, size, ACC_WRITE)
    if source is CALL or source is INT:
        _probe(core, new.base, 2, ACC_WRITE)                 # the previous-task link
    _probe(core, env.gdt.base + (sel & ~7) + 5, 1, ACC_WRITE)
    _probe(core, env.gdt.base + (old_sel & ~7) + 5, 1, ACC_WRITE)

    # Step 5-7: the old busy bit (JMP, IRET: cleared, the task may be dispatched again),
    # the saved EFLAGS (IRET clears NT: the old task is no longer nested), the save.
    eflags = core.get_flags()
    core.cc = None
    if source is JMP or source is IRET:
        _set_busy(core, old_sel, False)
    if source is IRET:
        eflags &= ~NT_MASK
    _save_old(core, old.base, next_eip, eflags, old32)

    # Steps 8-10: link back and nest (CALL, INT), mark the new task busy, load TR,
    # set CR0.TS.  From here on the switch is committed.
    if source is CALL or source is INT:
        core.mmu.write_bytes_linear(new.base, (old_sel & 0xFFFF).to_bytes(2, "little"))
        img.eflags |= NT_MASK
    if source is not IRET:
        _set_busy(core, sel, True)
    new.flags |= TSS_BUSY << 8
    env.tr = new
    env.cr[0] |= CR0_TS
    try:
        _load_task(core, img, new32)
        if error_code is not None:
            _push_error_code(core, error_code, 4 if new32 else 2)
        if env.rip > env.segs[R_CS].limit:
            raise Fault(EXCP_GP, 0, why=f"task switch: EIP {env.rip:#x} past the CS limit")
    finally:
        core.mode_changed()
    env.dr[7] &= ~DR7_LOCAL_ENABLES
    core.debug.update()
    if img.trap:
        # B0-B3 report this exception's breakpoints, none here (SDM vol. 3A, 18.2.3).
        env.dr[6] = (env.dr[6] & ~0xF) | DR6_BT
    return img.trap


def t_flag_trap(sel: int) -> Fault:
    """The #DB of a new TSS's T flag: a trap, so the EIP it saves is the new task's
    first instruction, which ``env.rip`` holds when it is raised or delivered."""
    return Fault(EXCP_DB, why=f"task switch to {sel:#x} with the T flag set")


def _load_task(core: InterpCore, img: _Image, new32: bool) -> None:
    """Step 11-12 of 7.3: CR3 (32-bit TSS, paging on), EFLAGS, EIP, the registers, then
    the LDT and the segment registers with the task-switch checks."""
    env = core.env
    if new32 and env.cr[0] & CR0_PG:
        core.write_cr(3, img.cr3)
    env.eflags = (img.eflags & (EFLAGS_LOADED if new32 else 0xFFFF & EFLAGS_LOADED)) | 2
    env.rip = img.eip
    for i, v in enumerate(img.regs):
        env.regs[i] = v
    if env.eflags & VM_MASK:
        # A 32-bit TSS may resume a virtual-8086 task (SDM vol. 3A, 20.2.5): the six
        # selectors load as in real mode, at CPL 3; the LDT is still loaded and checked.
        for i, s in enumerate(img.segs):
            env.segs[i] = SegmentCache(s, s << 4, 0xFFFF, _VM86_FLAGS)
        _load_ldt(core, img.ldt)
        return
    cpl = img.segs[R_CS] & 3
    # Placeholders until each register is checked: the selector values with null
    # (unusable) caches, CS and SS at the new CPL, so that a fault after the commit
    # point is delivered at the new task's privilege level.
    for i, s in enumerate(img.segs):
        env.segs[i] = SegmentCache(s, 0, 0, cpl << DESC_DPL_SHIFT if i in (R_CS, R_SS) else 0)
    core.mode_changed()
    _load_ldt(core, img.ldt)
    _load_cs(core, img.segs[R_CS])
    _load_ss(core, img.segs[R_SS], cpl)
    for i in (R_ES, R_DS, R_FS, R_GS):
        _load_data(core, i, img.segs[i], cpl)


_VM86_FLAGS = (DESC_P_MASK | DESC_S_MASK | DESC_W_MASK | DESC_A_MASK | 3 << DESC_DPL_SHIFT)


def _in_table(core: InterpCore, sel: int) -> bool:
    table = core.env.ldt if sel & 4 else core.env.gdt
    return (sel & ~7) + 7 <= table.limit


def _load_ldt(core: InterpCore, sel: int) -> None:
    """LDTR from the new TSS (Table 7-1, conditions 4 and 9): null is allowed; else
    #TS(LDT selector) for TI = 1, past the GDT limit, not an LDT descriptor, or not
    present."""
    env = core.env
    env.ldt = SegmentCache(sel, 0, 0, 0)
    if sel & 0xFFFC == 0:
        return
    if sel & 4 or not _in_table(core, sel):
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: LDT selector {sel:#x}")
    lo, hi = read_descriptor(core, sel)
    if hi & DESC_S_MASK or (hi >> 8) & 0xF != 2:
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: {sel:#x} is not an LDT")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: LDT {sel:#x} not present")
    env.ldt = cache_from(sel, lo, hi)


def _load_cs(core: InterpCore, sel: int) -> None:
    """CS from the new TSS; its RPL is the new CPL (Table 7-1 conditions 5, 10, 11;
    Table 6-6): #TS(CS) null, past the table, not code, non-conforming with DPL != RPL,
    conforming with DPL > RPL; #NP(CS) not present."""
    if sel & 0xFFFC == 0 or not _in_table(core, sel):
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: CS {sel:#x} null or past the table")
    lo, hi = read_descriptor(core, sel)
    rpl, dpl = sel & 3, _dpl(hi)
    if (hi & (DESC_S_MASK | DESC_CS_MASK) != DESC_S_MASK | DESC_CS_MASK
            or (dpl > rpl if hi & DESC_C_MASK else dpl != rpl)):
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: CS {sel:#x} type or privilege")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_NP, sel & 0xFFFC, why=f"task switch: CS {sel:#x} not present")
    core.env.segs[R_CS] = cache_from(sel, lo, mark_accessed(core, sel, hi))


def _load_ss(core: InterpCore, sel: int, cpl: int) -> None:
    """SS from the new TSS (Table 7-1 conditions 6, 7, 8, 12): #TS(SS) null, past the
    table, not writable data, RPL or DPL != CPL; #SS(SS) not present."""
    if sel & 0xFFFC == 0 or not _in_table(core, sel):
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: SS {sel:#x} null or past the table")
    lo, hi = read_descriptor(core, sel)
    writable_data = hi & (DESC_S_MASK | DESC_CS_MASK | DESC_W_MASK) == DESC_S_MASK | DESC_W_MASK
    if not writable_data or (sel & 3) != cpl or _dpl(hi) != cpl:
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: SS {sel:#x} type or privilege")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_SS, sel & 0xFFFC, why=f"task switch: SS {sel:#x} not present")
    core.env.segs[R_SS] = cache_from(sel, lo, mark_accessed(core, sel, hi))


def _load_data(core: InterpCore, seg: int, sel: int, cpl: int) -> None:
    """ES, DS, FS or GS from the new TSS (Table 7-1 conditions 13-16): null is allowed;
    #TS(sel) past the table, a system descriptor, execute-only code, data or
    non-conforming code with DPL < CPL or DPL < RPL; #NP(sel) not present."""
    if sel & 0xFFFC == 0:
        return                                 # the placeholder is the null segment
    if not _in_table(core, sel):
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: {sel:#x} past the table")
    lo, hi = read_descriptor(core, sel)
    code = bool(hi & DESC_CS_MASK)
    dpl = _dpl(hi)
    if (not hi & DESC_S_MASK or (code and not hi & DESC_R_MASK)
            or ((not code or not hi & DESC_C_MASK) and (dpl < cpl or dpl < (sel & 3)))):
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: data segment {sel:#x}")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_NP, sel & 0xFFFC, why=f"task switch: segment {sel:#x} not present")
    core.env.segs[seg] = cache_from(sel, lo, mark_accessed(core, sel, hi))


def _push_error_code(core: InterpCore, error_code: int, size: int) -> None:
    """Push the exception's error code on the new task's stack (SDM vol. 2A, INT n
    TASK-GATE: #SS(0) when the stack limit does not allow it), an ordinary push at the
    new task's CPL."""
    env = core.env
    ss = env.segs[R_SS]
    mask = 0xFFFFFFFF if ss.flags & DESC_B_MASK else 0xFFFF
    sp = (env.regs[4] - size) & mask
    core.mode_changed()                       # the new CPL and SS check kind
    check_access(core, R_SS, sp, size, True)
    core.st[size]((ss.base + sp) & 0xFFFFFFFF, error_code & _MASK[size])
    env.regs[4] = (env.regs[4] & ~mask) | sp


__all__ = ["CALL", "INT", "IRET", "JMP", "Source", "inner_stack_segment", "new_tss_descriptor",
           "switch_task", "t_flag_trap", "tss_stack"]
