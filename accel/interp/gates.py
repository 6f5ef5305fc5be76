"""Far transfers through system descriptors: call gates, task switches by far JMP/CALL,
and far RET to an outer level.

Follows Intel SDM vol. 3A, 5.8 ("Privilege Level Checking When Transferring
Program Control Between Code Segments") and the "Operation" sections of
vol. 2A CALL and JMP (CALL-GATE, MORE-PRIVILEGE, SAME-PRIVILEGE) and vol. 2B RET
(RETURN-TO-OUTER-PRIVILEGE-LEVEL and its IA-32e mode form):

* a far CALL or JMP whose selector names a call gate (5.8.3): a 16-bit gate
  (type 4) or a 32-bit gate (type 0xC) in legacy protected mode, the 16-byte
  64-bit gate (type 0xC, 5.8.3.1) in IA-32e mode;
* a CALL through a gate to a more privileged non-conforming segment switches to
  the stack the TSS holds for that level (5.8.5): SS:ESP from a 32- or 16-bit
  TSS, RSPn and a null SS in IA-32e mode; the caller's SS:ESP, the gate's
  parameter count of parameters (legacy gates only, 5.8.4) and CS:EIP are pushed;
* a far RET whose CS RPL is above the CPL (5.8.6) pops SS:ESP too, checks that
  stack, applies the imm16 adjustment to both stacks and nulls the data segment
  registers the outer level may not use.

JMP through a call gate never changes privilege.  A far JMP or CALL to a TSS
descriptor or through a task gate (vol. 2A, TASK-STATE-SEGMENT and TASK-GATE) makes
the checks of its own, then switches tasks with :func:`accel.interp.task.switch_task`
(a CALL nests: back link and NT; a JMP does not).  The stack of an inner level comes
from the current TSS through :func:`accel.interp.task.tss_stack` and is checked by
:func:`accel.interp.task.inner_stack_segment`, which interrupt delivery uses too.

Every check that can fault runs before anything in ``env`` changes, and the stack
frame is written before the new state is committed, so a fault leaves the caller's
state for the handler, as a fault should (SDM vol. 3A, 6.5).
"""

from __future__ import annotations

from pyqemu.accel.interp import task
from pyqemu.accel.interp.errors import EXCP_GP, EXCP_NP, EXCP_SS, Fault, InterpError
from pyqemu.accel.interp.seg import (
    TSS_BUSY,
    canonical,
    descriptor_dpl,
    descriptor_type,
    in_table,
    is_code,
    is_writable_data,
    mark_accessed,
    null_outer_data_segs,
    read_descriptor,
    set_cs,
)
from pyqemu.accel.interp.state import InterpCpu
from pyqemu.target.i386.cpu_state import (
    DESC_B_MASK,
    DESC_C_MASK,
    DESC_DPL_SHIFT,
    DESC_L_MASK,
    DESC_P_MASK,
    DESC_TYPE_SHIFT,
    EFER_LMA,
    R_CS,
    R_SS,
    SegmentCache,
)
from pyqemu.target.i386.descriptors import (
    DESCRIPTOR_ATTR_MASK,
    GATE_CALL16,
    GATE_CALL32,
    GATE_INT16,
    GATE_INT32,
    GATE_TASK,
    GATE_TRAP16,
    GATE_TRAP32,
    SYS_TSS16,
    SYS_TSS16_BUSY,
    SYS_TSS32,
    SYS_TSS32_BUSY,
    Gate,
    descriptor_cache,
)

__all__ = ["idt_gate", "return_code_segment", "return_stack_segment", "return_to_outer",
           "through_system_descriptor"]

_MASK = {2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}

#: Gate types an 8-byte IDT entry may hold (SDM vol. 3A, 6.11), and a 16-byte one
#: in IA-32e mode (6.14.1: no task gates, the interrupt and trap gates are 64-bit).
_IDT_TYPES = {8: (GATE_TASK, GATE_INT16, GATE_TRAP16, GATE_INT32, GATE_TRAP32),
              16: (GATE_INT32, GATE_TRAP32)}


def _stack_mask(ss_flags: int) -> int:
    return 0xFFFFFFFF if ss_flags & DESC_B_MASK else 0xFFFF


# -- IDT gates -------------------------------------------------------------------------------

def idt_gate(core: InterpCpu, vector: int, size: int, soft: bool,
             task_ok: bool = False) -> Gate:
    """Read and check the IDT gate of ``vector`` (SDM vol. 3A, 6.11, 6.12.1.1, 6.14.1):
    ``size`` 8 (legacy) or 16 (IA-32e).  #GP(vector * 8 + 2) past the IDT limit, for a
    type an IDT entry may not hold, or for a software interrupt (``soft``) through a gate
    whose DPL is below the CPL; #NP(vector * 8 + 2) not present.  With ``task_ok``, a
    task gate (8-byte IDT only) passes the same checks (its ``selector`` names the
    TSS); without, a caller that has no task-switch path stops with
    :class:`InterpError` on one."""
    env = core.env
    if vector * size + size - 1 > env.idt.limit:
        raise Fault(EXCP_GP, vector * 8 + 2, why=f"vector {vector} past the IDT limit")
    raw = core.mmu.read_bytes(env.idt.base + vector * size, size)
    lo, hi = int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:8], "little")
    upper = int.from_bytes(raw[8:12], "little") if size == 16 else 0
    gate = Gate.decode(lo, hi, upper)
    if gate.type == GATE_TASK and size == 8 and not task_ok:
        raise InterpError(f"interp: task gate for vector {vector} reached by a delivery path "
                          f"without task switches")
    if gate.type not in _IDT_TYPES[size]:
        raise Fault(EXCP_GP, vector * 8 + 2, why=f"vector {vector}: bad gate type {gate.type:#x}")
    if soft and gate.dpl < env.cpl:
        raise Fault(EXCP_GP, vector * 8 + 2, why=f"int {vector}: gate DPL < CPL")
    if not gate.present:
        raise Fault(EXCP_NP, vector * 8 + 2, why=f"vector {vector}: gate not present")
    return gate


# -- far CALL / JMP through a system descriptor ---------------------------------------------

def through_system_descriptor(core: InterpCpu, sel: int, lo: int, hi: int, *, call: bool,
                              next_ip: int) -> None:
    """A far CALL (``call``) or JMP to ``sel``, whose descriptor ``lo``/``hi`` has S = 0
    (SDM vol. 2A, CALL and JMP "Operation": the type dispatch after the descriptor read)."""
    stype = descriptor_type(hi)            # S = 0 here: the system type
    what = "call" if call else "jmp"
    if core.env.efer & EFER_LMA:
        # IA-32e mode: only the 64-bit call gate; no task switches (SDM vol. 3A, 7.7).
        if stype != GATE_CALL32:
            raise Fault(EXCP_GP, sel & 0xFFFC, why=f"far {what} to system type {stype:#x} "
                                                   f"in IA-32e mode")
        _call_gate(core, sel, lo, hi, call, next_ip, 8)
    elif stype in (GATE_CALL16, GATE_CALL32):
        _call_gate(core, sel, lo, hi, call, next_ip, 4 if stype == GATE_CALL32 else 2)
    elif stype in (SYS_TSS16, SYS_TSS32, SYS_TSS16_BUSY, SYS_TSS32_BUSY):
        _tss_target(core, sel, hi, call, next_ip)
    elif stype == GATE_TASK:
        _task_gate(core, sel, lo, hi, call, next_ip)
    else:
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"far {what} to system type {stype:#x}")


def _tss_target(core: InterpCpu, sel: int, hi: int, call: bool, next_ip: int) -> None:
    """TASK-STATE-SEGMENT (SDM vol. 2A, JMP/CALL): #GP(sel) when the TSS's DPL is below
    the CPL or the RPL or it is busy, #NP(sel) not present; then the task switch, and
    #GP(0) there when the new EIP is past the new CS limit."""
    what = "call" if call else "jmp"
    busy = hi & (TSS_BUSY << DESC_TYPE_SHIFT)
    if descriptor_dpl(hi) < core.env.cpl or descriptor_dpl(hi) < (sel & 3) or busy:
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"far {what} to TSS {sel:#x}: privilege or busy")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_NP, sel & 0xFFFC, why=f"far {what} to TSS {sel:#x}: not present")
    _switch(core, sel, call, next_ip)


def _task_gate(core: InterpCpu, sel: int, lo: int, hi: int, call: bool, next_ip: int) -> None:
    """TASK-GATE (SDM vol. 2A, JMP/CALL): #GP(gate) when the gate's DPL is below the CPL
    or the RPL, #NP(gate) not present; the TSS it names is checked by
    :func:`accel.interp.task.new_tss_descriptor` (#GP(TSS) in the LDT, past the GDT,
    not an available TSS; #NP(TSS) not present; #TS(TSS) too short), then the switch."""
    gate = Gate.decode(lo, hi)
    if gate.dpl < core.env.cpl or gate.dpl < (sel & 3):
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"task gate {sel:#x} privilege")
    if not gate.present:
        raise Fault(EXCP_NP, sel & 0xFFFC, why=f"task gate {sel:#x} not present")
    _switch(core, gate.selector, call, next_ip)


def _switch(core: InterpCpu, tss: int, call: bool, next_ip: int) -> None:
    """The task switch of a far CALL (nesting: back link, NT) or JMP (SDM vol. 3A, 7.3)."""
    if task.switch_task(core, tss, task.CALL if call else task.JMP, next_ip):
        raise task.t_flag_trap(tss)


def _call_gate(core: InterpCpu, gate_sel: int, lo: int, hi: int, call: bool,
               next_ip: int, gsize: int) -> None:
    """CALL-GATE (SDM vol. 2A, CALL and JMP; vol. 3A, 5.8.3-5.8.5); ``gsize`` is the
    gate's size in bytes per stack slot: 2, 4 or 8 (the 16-byte IA-32e gate)."""
    env = core.env
    cpl = env.cpl
    what = "call" if call else "jmp"
    gate = Gate.decode(lo, hi)
    if gate.dpl < cpl or (gate_sel & 3) > gate.dpl:
        raise Fault(EXCP_GP, gate_sel & 0xFFFC, why=f"{what} through call gate {gate_sel:#x}: "
                                                    f"gate DPL {gate.dpl}")
    if not gate.present:
        raise Fault(EXCP_NP, gate_sel & 0xFFFC, why=f"call gate {gate_sel:#x} not present")
    offset = gate.offset
    if gsize == 8:
        # 5.8.3.1: the upper 8 bytes hold offset bits 63:32; their type field (bits
        # 12:8 of the fourth dword) must be 0, so an 8-byte gate read as 16 faults.
        if not in_table(core, gate_sel, 16):
            raise Fault(EXCP_GP, gate_sel & 0xFFFC, why=f"call gate {gate_sel:#x}: upper half "
                                                        f"past the table limit")
        table = env.ldt if gate_sel & 4 else env.gdt
        upper = core.mmu.read_bytes(table.base + (gate_sel & ~7) + 8, 8)
        if descriptor_type(int.from_bytes(upper[4:], "little")) != 0:
            raise Fault(EXCP_GP, gate_sel & 0xFFFC, why=f"call gate {gate_sel:#x}: upper type "
                                                        f"field not 0")
        offset = Gate.decode(lo, hi, int.from_bytes(upper[:4], "little")).offset
    elif gsize == 2:
        offset &= 0xFFFF
    cs_sel = gate.selector
    if cs_sel & 0xFFFC == 0:
        raise Fault(EXCP_GP, 0, why=f"call gate {gate_sel:#x} with a null code selector")
    clo, chi = read_descriptor(core, cs_sel)              # #GP(cs_sel) past the limit
    cdpl = descriptor_dpl(chi)
    conforming = bool(chi & DESC_C_MASK)
    if not is_code(chi) or cdpl > cpl or (not call and not conforming and cdpl != cpl):
        raise Fault(EXCP_GP, cs_sel & 0xFFFC, why=f"call gate {gate_sel:#x}: target {cs_sel:#x} "
                                                  f"type or privilege")
    code64 = bool(env.efer & EFER_LMA)
    if code64 and chi & (DESC_L_MASK | DESC_B_MASK) != DESC_L_MASK:
        raise Fault(EXCP_GP, cs_sel & 0xFFFC, why=f"call gate {gate_sel:#x}: target {cs_sel:#x} "
                                                  f"is not 64-bit code")
    if not chi & DESC_P_MASK:
        raise Fault(EXCP_NP, cs_sel & 0xFFFC, why=f"call gate target {cs_sel:#x} not present")
    new_cpl = cdpl if call and not conforming and cdpl < cpl else cpl
    cache = descriptor_cache((cs_sel & ~3) | new_cpl, clo, mark_accessed(core, cs_sel, chi))
    if code64:
        if not canonical(offset):
            raise Fault(EXCP_GP, 0, why=f"call gate {gate_sel:#x}: non-canonical {offset:#x}")
    elif offset > cache.limit:
        raise Fault(EXCP_GP, 0, why=f"call gate {gate_sel:#x}: {offset:#x} past the CS limit")
    if not call:
        set_cs(core, cache, offset)
    elif new_cpl < cpl:
        _call_more_privilege(core, gate, gsize, next_ip, cache, offset, new_cpl)
    else:
        _call_same_privilege(core, gsize, next_ip, cache, offset)


def _push(core: InterpCpu, base: int, sp: int, mask: int,
          frame: list[tuple[int, int]], supervisor: bool) -> int:
    """Write ``frame`` ((value, size) pairs, first pushed first) below ``base``+``sp``;
    returns the new stack pointer.  Nothing in ``env`` changes.  ``supervisor``: the
    pushes to the new stack of a privilege change are made at the new CPL (< 3)."""
    off = 0
    for value, size in frame:
        off += size
        la = (base + ((sp - off) & mask)) & core.la_mask
        if supervisor:
            core.mmu.write_bytes_linear(la, (value & _MASK[size]).to_bytes(size, "little"))
        else:
            core.st[size](la, value)
    return (sp - off) & mask


def _call_same_privilege(core: InterpCpu, gsize: int, next_ip: int, cache: SegmentCache,
                         offset: int) -> None:
    """SAME-PRIVILEGE (SDM vol. 2A, CALL): push CS and the return offset, each a gate-size
    slot (a 64-bit gate pushes 8-byte slots on the 64-bit RSP, whatever the caller's mode)."""
    env = core.env
    old_cs = env.segs[R_CS].selector
    rsp = env.regs[4]
    if gsize == 8:
        if not (canonical(rsp - 16) and canonical(rsp - 1)):
            raise Fault(EXCP_SS, 0, why="call gate: pushes at a non-canonical RSP")
        sp = _push(core, 0, rsp, _MASK[8], [(old_cs, 8), (next_ip, 8)], False)
        env.regs[4] = sp
    else:
        ss = env.segs[R_SS]
        mask = _stack_mask(ss.flags)
        sp = _push(core, ss.base, rsp, mask, [(old_cs, gsize), (next_ip & _MASK[gsize], gsize)],
                   False)
        env.regs[4] = (rsp & ~mask) | sp
    set_cs(core, cache, offset)


def _call_more_privilege(core: InterpCpu, gate: Gate, gsize: int,
                         next_ip: int, cache: SegmentCache, offset: int, new_cpl: int) -> None:
    """MORE-PRIVILEGE (SDM vol. 2A, CALL; vol. 3A, 5.8.5 and Figure 5-13): the stack of
    ``new_cpl`` from the TSS, then push the caller's SS and ESP, the parameters (legacy
    gates: bits 4:0 of the gate's second dword count them, copied as gate-size slots in
    their order on the caller's stack), the caller's CS and EIP."""
    env = core.env
    new_ss, new_sp = task.tss_stack(core, new_cpl)
    old_ss, old_sp = env.segs[R_SS], env.regs[4]
    old_cs = env.segs[R_CS].selector
    if gsize == 8:
        ss_cache = SegmentCache(new_ss, 0, 0, new_cpl << DESC_DPL_SHIFT)   # null, DPL = CPL
        if not (canonical(new_sp - 32) and canonical(new_sp - 1)):
            raise Fault(EXCP_SS, 0, why="call gate: new stack at a non-canonical RSP")
        frame = [(old_ss.selector, 8), (old_sp, 8), (old_cs, 8), (next_ip, 8)]
        sp = _push(core, 0, new_sp, _MASK[8], frame, True)
        rsp = sp
    else:
        ss_cache, mask = task.inner_stack_segment(core, new_ss, new_cpl)
        # The parameters, read from the caller's stack before anything changes.
        count = gate.param_count
        old_mask = _stack_mask(old_ss.flags)
        params = []
        for i in range(count - 1, -1, -1):          # the deepest first: order is kept
            la = (old_ss.base + ((old_sp + i * gsize) & old_mask)) & 0xFFFFFFFF
            params.append((int.from_bytes(core.mmu.read_bytes(la, gsize), "little"), gsize))
        frame = ([(old_ss.selector, gsize), (old_sp & _MASK[gsize], gsize)] + params
                 + [(old_cs, gsize), (next_ip & _MASK[gsize], gsize)])
        sp = _push(core, ss_cache.base, new_sp, mask, frame, True)
        rsp = (new_sp & ~mask) | sp
    env.segs[R_SS] = ss_cache
    env.regs[4] = rsp
    set_cs(core, cache, offset)                      # mode_changed: CPL is SS.DPL now


# -- far RET to an outer privilege level ----------------------------------------------------

def return_code_segment(core: InterpCpu, sel: int) -> tuple[int, int]:
    """The checks on the CS popped by a far RET (SDM vol. 2B, RET "Operation", protected
    and IA-32e mode): #GP(0) null; #GP(sel) past the limit, not code, L and D both set in
    IA-32e mode, RPL < CPL, conforming with DPL > RPL, non-conforming with DPL != RPL;
    #NP(sel) not present.  Returns the descriptor (lo, hi)."""
    env = core.env
    if sel & 0xFFFC == 0:
        raise Fault(EXCP_GP, 0, why="far return to a null selector")
    lo, hi = read_descriptor(core, sel)
    rpl = sel & 3
    dpl = descriptor_dpl(hi)
    bad = (not is_code(hi) or rpl < env.cpl
           or (env.efer & EFER_LMA and hi & DESC_L_MASK and hi & DESC_B_MASK)
           or (dpl > rpl if hi & DESC_C_MASK else dpl != rpl))
    if bad:
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"far return to {sel:#x}")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_NP, sel & 0xFFFC, why=f"far return to {sel:#x}: not present")
    return lo, hi


def return_stack_segment(core: InterpCpu, ss: int, rpl: int, to64: bool,
                         what: str) -> tuple[SegmentCache, int | None]:
    """Check the SS that RET far or IRET pops to return to privilege level ``rpl``
    (SDM vol. 2B RET, vol. 2A IRET, both RETURN-TO-OUTER-PRIVILEGE-LEVEL and their
    IA-32e forms): legacy: #GP(0) null; #GP(SS) past the table limit, RPL or DPL not
    ``rpl``, not writable data; #SS(SS) not present.  A null SS is taken for a 64-bit
    CS (``to64``) with ``rpl`` < 3, with ``rpl`` as its DPL (the CPL is read from
    SS.DPL).  Returns the new SS cache (accessed bit not yet written) and the
    descriptor's high dword (None for a null SS)."""
    if ss & 0xFFFC == 0:
        if not to64 or rpl == 3:
            raise Fault(EXCP_GP, 0, why=f"{what} to an outer level with a null SS")
        return SegmentCache(ss, 0, 0, rpl << DESC_DPL_SHIFT), None
    slo, shi = read_descriptor(core, ss)              # #GP(ss) past the limit
    if (ss & 3) != rpl or descriptor_dpl(shi) != rpl or not is_writable_data(shi):
        raise Fault(EXCP_GP, ss & 0xFFFC, why=f"{what}: stack segment {ss:#x}")
    if not shi & DESC_P_MASK:
        raise Fault(EXCP_SS, ss & 0xFFFC, why=f"{what}: stack segment {ss:#x} not present")
    return descriptor_cache(ss, slo, shi), shi


def return_to_outer(core: InterpCpu, ip: int, sel: int, lo: int, hi: int, size: int,
                    extra: int, sp_after_cs: int) -> None:
    """RETURN-TO-OUTER-PRIVILEGE-LEVEL (SDM vol. 2B, RET; vol. 3A, 5.8.6): ``ip``/``sel``
    were popped, ``sp_after_cs`` is the stack pointer past them plus ``extra`` (imm16);
    pop the caller's ESP and SS there, check SS (legacy: #GP(0) null; #GP(SS) past the
    limit, RPL or DPL != the new CPL, not writable data; #SS(SS) not present; IA-32e
    mode: a null SS is taken for a 64-bit CS with RPL < 3), add ``extra`` to the new
    stack pointer too, and null ES, DS, FS and GS where they hold a segment the new CPL
    may not use."""
    env = core.env
    rpl = sel & 3
    ia32e = bool(env.efer & EFER_LMA)
    to64 = ia32e and bool(hi & DESC_L_MASK)
    (sp, ss), _ = core.stack_pop([size, size], 0, start=sp_after_cs)
    ss &= 0xFFFF
    ss_cache, shi = return_stack_segment(core, ss, rpl, to64, "far return")
    if to64:
        if not canonical(ip):
            raise Fault(EXCP_GP, 0, why=f"far return to non-canonical {ip:#x}")
    else:
        if size == 2:
            ip &= 0xFFFF
        if ip > descriptor_cache(sel, lo, hi).limit:
            raise Fault(EXCP_GP, 0, why=f"far return: {ip:#x} past the CS limit")
    # The new stack pointer, as the pseudo-code has it: ESP := the popped value (zero-
    # extended), then the imm16 is added at the new stack's address size: the full RSP
    # for 64-bit code, SP alone (bits 31:16 as popped) for a 16-bit SS.
    if to64:
        rsp = (sp + extra) & _MASK[8]
    else:
        sp &= 0xFFFFFFFF
        mask = _stack_mask(ss_cache.flags)
        rsp = (sp & ~mask) | ((sp + extra) & mask)
    cache = descriptor_cache(sel, lo, mark_accessed(core, sel, hi))
    if shi is not None:
        ss_cache.flags = mark_accessed(core, ss, shi) & DESCRIPTOR_ATTR_MASK
    env.segs[R_SS] = ss_cache
    env.regs[4] = rsp
    # SDM vol. 2B RET, both forms: ES, FS, GS and DS are checked in every mode (the
    # IRET rule, which seg.null_outer_data_segs implements for both instructions).
    null_outer_data_segs(core, rpl)
    set_cs(core, cache, ip)
