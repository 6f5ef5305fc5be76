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
from pyqemu.accel.interp.seg import (
    TSS_BUSY,
    descriptor_dpl,
    descriptor_type,
    in_table,
    is_code,
    is_writable_data,
    mark_accessed,
    read_descriptor,
    vm86_segment,
)
from pyqemu.accel.interp.segcheck import check_access
from pyqemu.accel.interp.state import InterpCpu
from pyqemu.accel.interp.sysregs import write_cr
from pyqemu.target.i386.cpu_state import (
    CR0_PG,
    CR0_TS,
    DESC_B_MASK,
    DESC_C_MASK,
    DESC_CS_MASK,
    DESC_DPL_SHIFT,
    DESC_P_MASK,
    DESC_R_MASK,
    DESC_S_MASK,
    DESC_TYPE_SHIFT,
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
from pyqemu.target.i386.descriptors import (
    SYS_LDT,
    SYS_TSS16,
    SYS_TSS32,
    TSS16,
    TSS32,
    TSS64,
    TssLayout,
    descriptor_cache,
)


class Source(enum.Enum):
    """What started the task switch (the columns of SDM vol. 3A, Table 7-2)."""

    JMP = "jmp"
    CALL = "call"
    IRET = "iret"
    INT = "int"          # an interrupt or exception through a task gate in the IDT


JMP, CALL, IRET, INT = Source.JMP, Source.CALL, Source.IRET, Source.INT

#: EFLAGS bits a 32-bit TSS image loads (all defined flags; bit 1 always reads 1).
EFLAGS_LOADED = 0x3F7FD5
#: DR7 L0-L3: cleared on every task switch (SDM vol. 3A, 18.2.4).
DR7_LOCAL_ENABLES = 0x55
DR6_BT = 1 << 15

_MASK = {2: 0xFFFF, 4: 0xFFFFFFFF}


#: The byte of a descriptor that holds its type field (bits 11:8 of the high dword),
#: which the busy-bit updates read and write.
_TYPE_BYTE = 4 + DESC_TYPE_SHIFT // 8


def _is32(hi: int) -> bool:
    """A 32-bit (or 64-bit) TSS descriptor, not a 16-bit one: type bit 3 (Table 3-2)."""
    return bool(descriptor_type(hi) & (SYS_TSS32 ^ SYS_TSS16))


def _layout(hi: int) -> TssLayout:
    return TSS32 if _is32(hi) else TSS16


# -- the TSS of the current task: the inner stacks -------------------------------------------

def tss_stack(core: InterpCpu, level: int) -> tuple[int, int]:
    """SS and ESP/SP (RSP in IA-32e mode) for privilege ``level`` from the current TSS
    (SDM vol. 3A, 7.2.1 Figure 7-2, 7.6 Figure 7-10, 7.7 Figure 7-11; 6.12.1 and vol. 2A
    CALL MORE-PRIVILEGE): #TS(TSS selector) when the slot is past the TSS limit.  A
    16-bit TSS holds SPn, SSn as words at 2 + 4n; a 32-bit one ESPn, SSn at 4 + 8n.
    IA-32e: SS is the null selector with RPL = ``level``."""
    env = core.env
    tr = env.tr
    layout = TSS64 if env.efer & EFER_LMA else _layout(tr.flags)
    sp_field, ss_field = layout.stack(level)          # SSn follows (E)SPn; none in IA-32e
    at = sp_field.offset
    end = (ss_field or sp_field).offset + (ss_field or sp_field).size
    if end - 1 > tr.limit:
        raise Fault(EXCP_TS, tr.selector & 0xFFFC, why=f"TSS stack slot for CPL {level} "
                                                       f"past the TSS limit")
    raw = core.mmu.read_bytes(tr.base + at, end - at)
    sp = int.from_bytes(raw[:sp_field.size], "little")
    if ss_field is None:
        return level, sp
    return int.from_bytes(raw[ss_field.offset - at:end - at], "little"), sp


def inner_stack_segment(core: InterpCpu, ss: int, level: int) -> tuple[SegmentCache, int]:
    """Check the SS a TSS gives for ``level`` (SDM vol. 2A CALL MORE-PRIVILEGE, vol. 3A
    6.12.1 and Interrupt 10/12): #TS(0) null; #TS(SS) past the table, RPL or DPL not
    ``level``, not writable data; #SS(SS) not present.  Returns the cache (accessed bit
    set) and the stack-pointer mask of its B flag."""
    if ss & 0xFFFC == 0:
        raise Fault(EXCP_TS, 0, why=f"null SS in the TSS for CPL {level}")
    if not in_table(core, ss):
        raise Fault(EXCP_TS, ss & 0xFFFC, why=f"TSS stack {ss:#x} past the table")
    lo, hi = read_descriptor(core, ss)
    if (ss & 3) != level or descriptor_dpl(hi) != level or not is_writable_data(hi):
        raise Fault(EXCP_TS, ss & 0xFFFC, why=f"TSS stack segment {ss:#x} for CPL {level}")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_SS, ss & 0xFFFC, why=f"TSS stack segment {ss:#x} not present")
    cache = descriptor_cache(ss, lo, mark_accessed(core, ss, hi))
    return cache, 0xFFFFFFFF if hi & DESC_B_MASK else 0xFFFF


# -- the new TSS descriptor ---------------------------------------------------------------------

def new_tss_descriptor(core: InterpCpu, sel: int, source: Source) -> tuple[int, int]:
    """Read and check the descriptor of the TSS a task switch goes to (SDM vol. 2A,
    JMP/CALL TASK-GATE, INT n TASK-GATE, IRET TASK-RETURN; vol. 3A 7.3 steps 1-3,
    Table 7-1 conditions 1-2).  The selector must name a TSS in the GDT: #GP(sel) for
    JMP, CALL and INT (#TS(sel) for IRET, which finds it in the back link) when TI = 1,
    past the GDT limit, or not a TSS of the state the source needs (available, or busy
    for IRET); #NP(sel) not present; #TS(sel) limit below 67H (2BH for a 16-bit TSS)."""
    bad = EXCP_TS if source is IRET else EXCP_GP
    why = f"task switch ({source.value}) to {sel:#x}"
    if sel & 4 or not in_table(core, sel):
        raise Fault(bad, sel & 0xFFFC, why=f"{why}: not a GDT selector within the limit")
    lo, hi = read_descriptor(core, sel)
    stype = descriptor_type(hi)                  # with S: a TSS has S = 0
    busy = TSS_BUSY if source is IRET else 0
    if stype not in (SYS_TSS16 | busy, SYS_TSS32 | busy):
        state = "busy" if source is IRET else "available"
        raise Fault(bad, sel & 0xFFFC, why=f"{why}: not an {state} TSS (type {stype:#x})")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_NP, sel & 0xFFFC, why=f"{why}: TSS not present")
    if descriptor_cache(sel, lo, hi).limit < _layout(hi).min_limit:
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"{why}: TSS limit below the minimum")
    return lo, hi


# -- reading and writing TSS images ---------------------------------------------------------------

_GPRS32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
_GPRS16 = tuple(r[1:] for r in _GPRS32)
_SEGS = ("es", "cs", "ss", "ds", "fs", "gs")


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


def _read_image(core: InterpCpu, base: int, is32: bool) -> _Image:
    """The new task's state from its TSS: read whole, before anything is written (7.3
    step 4: the TSS must be accessible; a #PF here is still the old task's)."""
    img = _Image()
    if is32:
        f = TSS32.unpack(core.mmu.read_bytes(base, TSS32.size))
        img.cr3, img.eip, img.eflags = f["cr3"], f["eip"], f["eflags"]
        img.regs = [f[r] for r in _GPRS32]
        img.segs = [f[s] for s in _SEGS]
        img.ldt = f["ldt"]
        img.trap = bool(f["trap"] & 1)
    else:
        f = TSS16.unpack(core.mmu.read_bytes(base, TSS16.size))
        img.eip, img.eflags = f["ip"], f["flags"]
        img.regs = [0xFFFF0000 | f[r] for r in _GPRS16]
        img.segs = [f[s] for s in _SEGS[:4]] + [0, 0]
        img.ldt = f["ldt"]
    return img


def _save_old(core: InterpCpu, base: int, next_eip: int, eflags: int, is32: bool) -> None:
    """Save the old task in its TSS (SDM vol. 3A, 7.3 step 7): EIP, EFLAGS, the eight
    general registers and the segment selectors; nothing else (CR3, LDT, the stacks
    are static fields).  A 32-bit TSS gets each selector as a word: the reserved word
    above it is not written.  The fields are written in ascending order."""
    env = core.env
    write = core.mmu.write_bytes_linear
    layout, ip, flags, gprs = (TSS32, "eip", "eflags", _GPRS32) if is32 else (
        TSS16, "ip", "flags", _GPRS16)
    values = [(ip, next_eip), (flags, eflags)] + [(r, env.regs[i]) for i, r in enumerate(gprs)]
    values += [(s, env.segs[i].selector) for i, s in enumerate(_SEGS if is32 else _SEGS[:4])]
    for name, value in values:
        field = layout[name]
        write(base + field.offset, (value & ((1 << 8 * field.size) - 1)).to_bytes(
            field.size, "little"))


def _saved_range(is32: bool) -> tuple[int, int]:
    """Where :func:`_save_old` writes: from the EIP field up to the LDT selector field
    (32-bit: 20H-5FH, 16-bit: 0EH-29H), as (offset, length)."""
    layout = TSS32 if is32 else TSS16
    first = layout.offset("eip" if is32 else "ip")
    return first, layout.offset("ldt") - first


def _probe(core: InterpCpu, la: int, n: int, access: int) -> None:
    """Translate every page of ``la``..``la+n-1`` for ``access`` (a #PF now is before
    anything was written: SDM vol. 3A, 7.3 step 4)."""
    end = la + n
    while la < end:
        core.mmu.translate(la & 0xFFFFFFFF, access, supervisor=True)
        la = (la | 0xFFF) + 1


def _set_busy(core: InterpCpu, sel: int, busy: bool) -> None:
    """Set or clear the busy bit (type bit 1) of the GDT TSS descriptor ``sel`` (7.2.2)."""
    at = core.env.gdt.base + (sel & ~7) + _TYPE_BYTE
    byte = core.mmu.read_bytes(at, 1)[0]
    byte = byte | TSS_BUSY if busy else byte & ~TSS_BUSY
    core.mmu.write_bytes_linear(at, bytes([byte]))


# -- the switch ---------------------------------------------------------------------------

def switch_task(core: InterpCpu, sel: int, source: Source, next_eip: int,
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
    new = descriptor_cache(sel, lo, hi)
    img = _read_image(core, new.base, new32)

    # The old task's TSS must take the save (Table 6-6): its limit and its pages.
    old = env.tr
    old_sel = old.selector
    old32 = _is32(old.flags)
    first, size = _saved_range(old32)                       # EIP .. the last selector
    if old.limit < (TSS32 if old32 else TSS16).min_limit:
        raise Fault(EXCP_TS, old_sel & 0xFFFC, why=f"old TSS {old_sel:#x} limit too small to "
                                                   f"save the task")
    _probe(core, old.base + first, size, ACC_WRITE)
    link = TSS32["link"]                                     # the same in a 16-bit TSS
    if source is CALL or source is INT:
        _probe(core, new.base + link.offset, link.size, ACC_WRITE)
    _probe(core, env.gdt.base + (sel & ~7) + _TYPE_BYTE, 1, ACC_WRITE)
    _probe(core, env.gdt.base + (old_sel & ~7) + _TYPE_BYTE, 1, ACC_WRITE)

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
        core.mmu.write_bytes_linear(new.base + link.offset,
                                    (old_sel & 0xFFFF).to_bytes(link.size, "little"))
        img.eflags |= NT_MASK
    if source is not IRET:
        _set_busy(core, sel, True)
    new.flags |= TSS_BUSY << DESC_TYPE_SHIFT
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


def _load_task(core: InterpCpu, img: _Image, new32: bool) -> None:
    """Step 11-12 of 7.3: CR3 (32-bit TSS, paging on), EFLAGS, EIP, the registers, then
    the LDT and the segment registers with the task-switch checks."""
    env = core.env
    if new32 and env.cr[0] & CR0_PG:
        write_cr(core, 3, img.cr3)
    env.eflags = (img.eflags & (EFLAGS_LOADED if new32 else 0xFFFF & EFLAGS_LOADED)) | 2
    env.rip = img.eip
    for i, v in enumerate(img.regs):
        env.regs[i] = v
    if env.eflags & VM_MASK:
        # A 32-bit TSS may resume a virtual-8086 task (SDM vol. 3A, 20.2.5): the six
        # selectors load as in real mode, at CPL 3; the LDT is still loaded and checked.
        for i, s in enumerate(img.segs):
            env.segs[i] = vm86_segment(s)
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


def _load_ldt(core: InterpCpu, sel: int) -> None:
    """LDTR from the new TSS (Table 7-1, conditions 4 and 9): null is allowed; else
    #TS(LDT selector) for TI = 1, past the GDT limit, not an LDT descriptor, or not
    present."""
    env = core.env
    env.ldt = SegmentCache(sel, 0, 0, 0)
    if sel & 0xFFFC == 0:
        return
    if sel & 4 or not in_table(core, sel):
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: LDT selector {sel:#x}")
    lo, hi = read_descriptor(core, sel)
    if descriptor_type(hi) != SYS_LDT:
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: {sel:#x} is not an LDT")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: LDT {sel:#x} not present")
    env.ldt = descriptor_cache(sel, lo, hi)


def _load_cs(core: InterpCpu, sel: int) -> None:
    """CS from the new TSS; its RPL is the new CPL (Table 7-1 conditions 5, 10, 11;
    Table 6-6): #TS(CS) null, past the table, not code, non-conforming with DPL != RPL,
    conforming with DPL > RPL; #NP(CS) not present."""
    if sel & 0xFFFC == 0 or not in_table(core, sel):
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: CS {sel:#x} null or past the table")
    lo, hi = read_descriptor(core, sel)
    rpl, dpl = sel & 3, descriptor_dpl(hi)
    if not is_code(hi) or (dpl > rpl if hi & DESC_C_MASK else dpl != rpl):
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: CS {sel:#x} type or privilege")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_NP, sel & 0xFFFC, why=f"task switch: CS {sel:#x} not present")
    core.env.segs[R_CS] = descriptor_cache(sel, lo, mark_accessed(core, sel, hi))


def _load_ss(core: InterpCpu, sel: int, cpl: int) -> None:
    """SS from the new TSS (Table 7-1 conditions 6, 7, 8, 12): #TS(SS) null, past the
    table, not writable data, RPL or DPL != CPL; #SS(SS) not present."""
    if sel & 0xFFFC == 0 or not in_table(core, sel):
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: SS {sel:#x} null or past the table")
    lo, hi = read_descriptor(core, sel)
    if not is_writable_data(hi) or (sel & 3) != cpl or descriptor_dpl(hi) != cpl:
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: SS {sel:#x} type or privilege")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_SS, sel & 0xFFFC, why=f"task switch: SS {sel:#x} not present")
    core.env.segs[R_SS] = descriptor_cache(sel, lo, mark_accessed(core, sel, hi))


def _load_data(core: InterpCpu, seg: int, sel: int, cpl: int) -> None:
    """ES, DS, FS or GS from the new TSS (Table 7-1 conditions 13-16): null is allowed;
    #TS(sel) past the table, a system descriptor, execute-only code, data or
    non-conforming code with DPL < CPL or DPL < RPL; #NP(sel) not present."""
    if sel & 0xFFFC == 0:
        return                                 # the placeholder is the null segment
    if not in_table(core, sel):
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: {sel:#x} past the table")
    lo, hi = read_descriptor(core, sel)
    code = bool(hi & DESC_CS_MASK)
    dpl = descriptor_dpl(hi)
    if (not hi & DESC_S_MASK or (code and not hi & DESC_R_MASK)
            or ((not code or not hi & DESC_C_MASK) and (dpl < cpl or dpl < (sel & 3)))):
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"task switch: data segment {sel:#x}")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_NP, sel & 0xFFFC, why=f"task switch: segment {sel:#x} not present")
    core.env.segs[seg] = descriptor_cache(sel, lo, mark_accessed(core, sel, hi))


def _push_error_code(core: InterpCpu, error_code: int, size: int) -> None:
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


__all__ = ["CALL", "INT", "IRET", "JMP", "Source", "inner_stack_segment",
           "new_tss_descriptor", "switch_task", "t_flag_trap", "tss_stack"]
