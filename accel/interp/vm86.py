"""Virtual-8086 mode (Intel SDM vol. 3A, chapter 20, 20.2-20.3), without the CR4.VME
and CR4.PVI extensions of 20.4-20.5: with CR4.VME=1 and VM=1 the VM stops with an
:class:`InterpError` naming it (:func:`check_supported`).

* Entering (20.2.1; vol. 2A IRET "RETURN-TO-VIRTUAL-8086-MODE"): a 32-bit IRET at
  CPL 0 whose EFLAGS image has VM=1 pops EIP, CS, EFLAGS, ESP, SS, ES, DS, FS, GS and
  loads every segment as the 8086 would (:func:`vm86_segment`); CPL becomes 3.
* Running (20.2): segment loads are real-mode style (:func:`accel.interp.seg.load_seg`
  and the far transfers take their real-mode path, as
  :func:`~accel.interp.seg.protected` is False with VM=1); paging applies at CPL 3
  (``CPUX86State.cpl`` is 3); IN/OUT/INS/OUTS always consult the TSS I/O bit map
  (:mod:`accel.interp.ioperm`); privileged instructions are #GP(0) at CPL 3 (5.9);
  the rows of :data:`UD_IN_VM86` are #UD and those of :data:`IOPL_SENSITIVE` #GP(0)
  at IOPL < 3 (20.2.7; each instruction's "Virtual-8086 Mode Exceptions").  Those two
  are translation-time rules: a VM86 block has its own mode key (``Mode.vm86``).
* Leaving (20.3.1.1; vol. 2A INT n "INTERRUPT-FROM-VIRTUAL-8086-MODE"; vol. 3A
  6.12.1): an interrupt or exception through a trap or interrupt gate to a DPL-0
  non-conforming code segment switches to SS0:ESP0 of the TSS, pushes GS, FS, DS, ES,
  SS, ESP, EFLAGS, CS, EIP [, error code], nulls GS, FS, DS and ES and clears VM, TF,
  RF, NT (and IF for an interrupt gate).  A task gate stops with :class:`InterpError`.
* IRET inside VM86 at IOPL 3 (vol. 2A IRET "RETURN-FROM-VIRTUAL-8086-MODE") stays in
  VM86: VM, IOPL, VIP and VIF keep their values.

Error codes carry no EXT bit, as everywhere in :mod:`accel.interp.excp`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyqemu.accel.interp.eflags import load_eflags
from pyqemu.accel.interp.errors import (
    EXCP_GP,
    EXCP_NP,
    EXCP_SS,
    EXCP_TS,
    EXCP_UD,
    HAS_ERROR_CODE,
    Fault,
    InterpError,
)
from pyqemu.accel.interp.gates import idt_gate
from pyqemu.accel.interp.seg import (
    VM86_SEG_FLAGS,
    descriptor_dpl,
    in_table,
    is_code,
    is_writable_data,
    mark_accessed,
    read_descriptor,
    vm86_segment,
)
from pyqemu.accel.interp.state import InterpCpu
from pyqemu.accel.interp.task import tss_stack
from pyqemu.target.i386.cpu_state import (
    CR4_VME,
    DESC_B_MASK,
    DESC_C_MASK,
    DESC_CS_MASK,
    DESC_E_MASK,
    DESC_P_MASK,
    IF_MASK,
    IOPL_MASK,
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
    CPUX86State,
    SegmentCache,
)
from pyqemu.target.i386.descriptors import GATE_TRAP16, GATE_TRAP32, descriptor_cache

if TYPE_CHECKING:
    from pyqemu.accel.interp.codegen import Ctx, Insn
    from pyqemu.accel.interp.table import Semantic

__all__ = ["IOPL_SENSITIVE", "UD_IN_VM86", "VM86_SEG_FLAGS", "check_supported", "interrupt",
           "iret_in_vm86", "iret_to_vm86", "semantic", "vm86_segment"]

#: Every defined EFLAGS bit (CF PF AF ZF SF TF IF DF OF IOPL NT RF VM AC VIF VIP ID):
#: "EFLAGS <- tempEFLAGS" of RETURN-TO-VIRTUAL-8086-MODE loads all of them.
_ALL_FLAGS = 0x3F7FD5

#: Instructions "not recognized in virtual-8086 mode": #UD (SDM vol. 2A LAR, LSL, LLDT,
#: LTR, ARPL; vol. 2B SLDT, STR, VERR/VERW, "Virtual-8086 Mode Exceptions").
UD_IN_VM86 = frozenset({"lar", "lsl", "verr", "verw", "arpl", "lldt", "sldt", "ltr", "str"})

#: The IOPL-sensitive instructions of 20.2.7: #GP(0) in VM86 when IOPL < 3 (without
#: CR4.VME).  INT3, INTO and INT1 are not among them (vol. 2A INT n: "INT n" only);
#: IN/OUT go by the I/O bit map instead (20.2.8.1).
IOPL_SENSITIVE = frozenset({"cli", "sti", "pushf", "pushfd", "popf", "popfd", "int",
                            "iret", "iretd"})


def check_supported(env: CPUX86State) -> None:
    """Stop with InterpError when VM86 would need CR4.VME (20.4), which interp lacks."""
    if env.eflags & VM_MASK and env.cr[4] & CR4_VME:
        raise InterpError("interp: virtual-8086 mode extensions (CR4.VME=1 with EFLAGS.VM=1)"
                          " are not implemented")


def _fits(cache: SegmentCache, off: int, n: int, mask: int) -> bool:
    """Whether ``n`` bytes at offset ``off`` lie inside the stack segment ``cache``
    without wrapping (SDM vol. 3A, 5.3: expand-up and expand-down limits)."""
    last = off + n - 1
    if last > mask:
        return False
    if cache.flags & DESC_E_MASK and not cache.flags & DESC_CS_MASK:
        upper = 0xFFFFFFFF if cache.flags & DESC_B_MASK else 0xFFFF
        return off > cache.limit and last <= upper
    return last <= cache.limit


# -- entering and staying: IRET ---------------------------------------------------------------

def iret_to_vm86(core: InterpCpu, ip: int, cs: int, flags: int, sp: int) -> None:
    """RETURN-TO-VIRTUAL-8086-MODE (SDM vol. 2A, IRET): a 32-bit IRET at CPL 0 has popped
    EIP, CS and EFLAGS (VM=1) from SS:``sp``; now ESP, SS, ES, DS, FS and GS follow, each
    a doubleword whose high word is dropped.  Everything is read and checked before any
    register changes, so a fault leaves the CPL-0 state as it was."""
    env = core.env
    ss = env.segs[R_SS]
    mask = 0xFFFFFFFF if ss.flags & DESC_B_MASK else 0xFFFF
    if not _fits(ss, sp & mask, 24, mask):
        raise Fault(EXCP_SS, 0, why="iret to virtual-8086 mode: 24 bytes past the stack limit")
    if ip > 0xFFFF:
        raise Fault(EXCP_GP, 0, why=f"iret to virtual-8086 mode: EIP {ip:#x} past the limit")
    if env.cr[4] & CR4_VME:
        raise InterpError("interp: IRET to virtual-8086 mode with CR4.VME=1: the virtual-8086"
                          " mode extensions are not implemented")
    (esp, new_ss, es, ds, fs, gs), _ = core.stack_pop([4] * 6, start=sp)
    env.eflags = (flags & _ALL_FLAGS) | 2
    core.cc = None
    for seg, sel in ((R_CS, cs), (R_SS, new_ss), (R_ES, es), (R_DS, ds), (R_FS, fs),
                     (R_GS, gs)):
        env.segs[seg] = vm86_segment(sel & 0xFFFF)
    env.regs[4] = esp & 0xFFFFFFFF          # "SS:ESP <- TempSS:TempESP": all 32 bits
    env.rip = ip
    core.mode_changed()
    core.debug.flags_changed()


def iret_in_vm86(core: InterpCpu, size: int) -> None:
    """RETURN-FROM-VIRTUAL-8086-MODE at IOPL 3 (SDM vol. 2A, IRET; IOPL < 3 is #GP(0)
    before this runs, see :data:`IOPL_SENSITIVE`): pop (E)IP, CS, (E)FLAGS; a 32-bit
    EIP past the CS limit FFFFH is #GP(0); VM, IOPL, VIP and VIF are not popped
    (:func:`accel.interp.eflags.load_eflags` keeps them at CPL 3)."""
    env = core.env
    (ip, sel, flags), new_sp = core.stack_pop([size] * 3)
    if ip > 0xFFFF:
        raise Fault(EXCP_GP, 0, why=f"iret in virtual-8086 mode: EIP {ip:#x} past the limit")
    env.segs[R_CS] = vm86_segment(sel & 0xFFFF)
    core.set_sp(new_sp)
    load_eflags(core, flags, size, iret=True)
    env.rip = ip
    core.mode_changed()


# -- leaving: interrupts and exceptions -----------------------------------------------------------

def _handler_cs(core: InterpCpu, sel: int) -> SegmentCache:
    """The gate's code segment (INT n, TRAP-OR-INTERRUPT-GATE then "VM = 1": "IF new
    code-segment DPL != 0 THEN #GP(new code-segment selector)"; a conforming segment, or
    one of DPL 3, is #GP(selector) from VM86 too)."""
    if sel & 0xFFFC == 0:
        raise Fault(EXCP_GP, 0, why="interrupt from virtual-8086 mode: null code selector")
    lo, hi = read_descriptor(core, sel)
    if not is_code(hi):
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"interrupt target {sel:#x} is not code")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_NP, sel & 0xFFFC, why=f"interrupt target {sel:#x} not present")
    if hi & DESC_C_MASK or descriptor_dpl(hi):
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"interrupt from virtual-8086 mode to {sel:#x}:"
                                               " not a DPL-0 non-conforming code segment")
    return descriptor_cache(sel & ~3, lo, mark_accessed(core, sel, hi))


def _ring0_stack(core: InterpCpu, sel: int) -> SegmentCache:
    """NewSS from the TSS (INT n, INTERRUPT-FROM-VIRTUAL-8086-MODE): null -> #TS(0);
    past its table, RPL != 0, DPL != 0 or not writable data -> #TS(NewSS); not present
    -> #SS(NewSS)."""
    if sel & 0xFFFC == 0:
        raise Fault(EXCP_TS, 0, why="interrupt from virtual-8086 mode: null SS0 in the TSS")
    if not in_table(core, sel) or sel & 3:
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"SS0 {sel:#x} of the TSS")
    lo, hi = read_descriptor(core, sel)
    if not is_writable_data(hi) or descriptor_dpl(hi):
        raise Fault(EXCP_TS, sel & 0xFFFC, why=f"SS0 {sel:#x} is not DPL-0 writable data")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_SS, sel & 0xFFFC, why=f"SS0 {sel:#x} not present")
    return descriptor_cache(sel, lo, mark_accessed(core, sel, hi))


def _write_frame(core: InterpCpu, base: int, sp: int, mask: int,
                 frame: list[tuple[int, int]]) -> int:
    """Write ``frame`` ((value, size), first pushed first) below ``base``:``sp`` as
    implicit supervisor-mode writes (the pushes of a switch to ring 0, SDM vol. 3A 4.6),
    leaving ``env`` alone; returns the new stack pointer."""
    off = 0
    for value, size in frame:
        off += size
        la = (base + ((sp - off) & mask)) & 0xFFFFFFFF
        core.mmu.write_bytes_linear(la, (value & ((1 << 8 * size) - 1)).to_bytes(size, "little"))
    return (sp - off) & mask


def interrupt(core: InterpCpu, vector: int, error_code: int | None, ret_ip: int,
              soft: bool) -> None:
    """INTERRUPT-FROM-VIRTUAL-8086-MODE (SDM vol. 2A, INT n; vol. 3A 20.3.1.1, Figure
    20-5): the checks of the gate, the handler's code segment and the TSS's ring-0
    stack come first, then the frame is written at CPL 0 (gate-size slots; selectors
    zero-extended), then the registers change.  ``soft``: INT n/INT3/INTO, whose gate
    DPL must be 3 (:func:`accel.interp.gates.idt_gate`); the IOPL check of INT n was made
    by the block (:data:`IOPL_SENSITIVE`).  A task gate stops with :class:`InterpError`
    (``idt_gate`` without ``task_ok``): interp has no task switch out of VM86."""
    env = core.env
    gate = idt_gate(core, vector, 8, soft)
    offset = gate.offset
    cs_cache = _handler_cs(core, gate.selector)
    ss_sel, esp = tss_stack(core, 0)
    ss_cache = _ring0_stack(core, ss_sel)
    size = 4 if gate.type & 8 else 2
    segs = env.segs
    frame = [(segs[R_GS].selector, size), (segs[R_FS].selector, size),
             (segs[R_DS].selector, size), (segs[R_ES].selector, size),
             (segs[R_SS].selector, size), (env.regs[4], size), (env.eflags, size),
             (segs[R_CS].selector, size), (ret_ip, size)]
    if error_code is not None and vector in HAS_ERROR_CODE and not soft:
        frame.append((error_code, size))
    mask = 0xFFFFFFFF if ss_cache.flags & DESC_B_MASK else 0xFFFF
    n = size * len(frame)
    if not _fits(ss_cache, (esp - n) & mask, n, mask):
        raise Fault(EXCP_SS, ss_sel & 0xFFFC, why=f"no room for the {n}-byte VM86 frame")
    if size == 2:
        offset &= 0xFFFF
    if offset > cs_cache.limit:
        raise Fault(EXCP_GP, 0, why=f"interrupt handler {offset:#x} past its CS limit")
    sp = _write_frame(core, ss_cache.base, esp, mask, frame)
    env.eflags &= ~(VM_MASK | TF_MASK | RF_MASK | NT_MASK)
    if gate.type not in (GATE_TRAP16, GATE_TRAP32):
        env.eflags &= ~IF_MASK                 # an interrupt gate
    for seg in (R_ES, R_DS, R_FS, R_GS):
        # Null selectors, unusable in protected mode (a load of a null selector).
        segs[seg] = SegmentCache(0, 0, 0, 0)
    segs[R_SS] = ss_cache
    env.regs[4] = (esp & ~mask) | sp
    segs[R_CS] = cs_cache
    env.rip = offset
    # The caller (excp.do_interrupt) recomputes the mode: CPL 0, 32- or 16-bit code.


# -- translation: the rows VM86 changes ------------------------------------------------------

def _gen_ud(c: Ctx, i: Insn) -> None:
    c.may_fault()
    c.emit(f"raise Fault({EXCP_UD}, why='{i.mnem} in virtual-8086 mode')")
    c.end()


_iopl_rows: dict[object, Semantic] = {}


def _iopl_row(sem: Semantic) -> Semantic:
    """``sem`` preceded by the VM86 IOPL test (#GP(0) at IOPL < 3), made once per row."""
    row = _iopl_rows.get(sem)
    if row is None:
        def row(c: Ctx, i: Insn) -> None:
            c.may_fault()
            c.emit(f"if env.eflags & {IOPL_MASK:#x} != {IOPL_MASK:#x}: raise Fault("
                   f"{EXCP_GP}, 0, why='{i.mnem} in virtual-8086 mode with IOPL < 3')")
            sem(c, i)
        _iopl_rows[sem] = row
    return row


def semantic(mnem: str, sem: Semantic | None) -> Semantic | None:
    """The row of ``mnem`` in a virtual-8086 block: #UD for :data:`UD_IN_VM86` (ARPL has
    no row elsewhere: it exists only outside 64-bit mode and is #UD here), the IOPL test
    in front of :data:`IOPL_SENSITIVE`, else the table's own row."""
    if mnem in UD_IN_VM86:
        return _gen_ud
    if mnem in IOPL_SENSITIVE and sem is not None:
        return _iopl_row(sem)
    return sem
