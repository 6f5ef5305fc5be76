"""Exception and interrupt delivery, and IRET (Intel SDM vol. 3A, chapter 6; vol. 2A, IRET).

* Real mode (SDM vol. 3A, 20.1.4): the IVT at IDTR.base holds 4-byte far
  pointers; push FLAGS, CS, IP; clear IF, TF and AC.
* Protected mode (6.10-6.12): 8-byte interrupt/trap gates (16- or 32-bit); a
  gate to a more privileged non-conforming segment switches to the stack of the
  TSS (SS0:ESP0...); push [SS, ESP,] EFLAGS, CS, EIP [, error code]; an
  interrupt gate clears IF; TF, NT, RF and VM are cleared.
* Long mode (6.14): 16-byte gates, RSP from the TSS (or an IST slot), aligned
  to 16, then SS, RSP, RFLAGS, CS, RIP [, error code] as 8-byte pushes.
* A fault while delivering an exception becomes #DF; a fault while delivering
  #DF is a triple fault (6.15 "Interrupt 8"), which the exec loop turns into a
  reset request and ``EXCP_SHUTDOWN``.
* A task gate in the IDT (6.11, 6.12.2; legacy protected mode only: in IA-32e mode
  the gate type is #GP) switches tasks with :func:`accel.interp.task.switch_task`,
  nesting the new task and pushing the error code on its stack; IRET with
  EFLAGS.NT = 1 returns to the task in the back link (vol. 2A IRET, TASK-RETURN; in
  IA-32e mode it is #GP(0)).
* Virtual-8086 mode (20.3): an interrupt or exception from VM86 and the IRETs into
  and inside it are in :mod:`accel.interp.vm86` (the VM86 branches below).
"""

from __future__ import annotations

from pyqemu.accel.interp import task, vm86
from pyqemu.accel.interp.eflags import load_eflags
from pyqemu.accel.interp.errors import (
    EXCP_DB,
    EXCP_DF,
    EXCP_GP,
    EXCP_NP,
    EXCP_TS,
    HAS_ERROR_CODE,
    VECTOR_NAMES,
    Fault,
    TripleFault,
)
from pyqemu.accel.interp.gates import idt_gate, return_stack_segment
from pyqemu.accel.interp.seg import (
    check_target_ip,
    descriptor_dpl,
    is_code,
    mark_accessed,
    null_outer_data_segs,
    protected,
    read_descriptor,
)
from pyqemu.accel.interp.state import InterpCpu
from pyqemu.target.i386.cpu_state import (
    AC_MASK,
    CR0_PE,
    DESC_B_MASK,
    DESC_C_MASK,
    DESC_DPL_SHIFT,
    DESC_L_MASK,
    DESC_P_MASK,
    EFER_LMA,
    IF_MASK,
    NT_MASK,
    R_CS,
    R_SS,
    RF_MASK,
    TF_MASK,
    VM_MASK,
    SegmentCache,
)
from pyqemu.target.i386.descriptors import (
    DESCRIPTOR_ATTR_MASK,
    GATE_TASK,
    GATE_TRAP16,
    GATE_TRAP32,
    TSS64,
    descriptor_cache,
)
from pyqemu.util import trace

__all__ = ["deliver", "do_interrupt", "iret", "soft_int"]

#: Trap gates leave IF alone; interrupt gates clear it (SDM vol. 3A, 6.12.1.3).
_TRAP_GATES = (GATE_TRAP16, GATE_TRAP32)


def deliver(core: InterpCpu, fault: Fault) -> None:
    """Deliver an exception raised at ``env.rip`` (a fault: RIP is the faulting instruction).

    The EFLAGS image pushed for a fault-class exception has RF set, so that returning
    to the instruction does not hit an instruction breakpoint again (SDM vol. 3B,
    17.3.1.1 "Instruction-Breakpoint Exception Condition": "For any fault-class
    exception except a debug exception generated in response to an instruction
    breakpoint, the value pushed for RF is 1").  The handler starts with RF clear.
    """
    if fault.vector != EXCP_DB:
        core.env.eflags |= RF_MASK
    try:
        do_interrupt(core, fault.vector, fault.error_code, core.env.rip, soft=False, cr2=fault.cr2)
    except Fault as second:
        if fault.vector == EXCP_DF:
            raise TripleFault(f"{second} while delivering #DF") from second
        try:
            do_interrupt(core, EXCP_DF, 0, core.env.rip, soft=False)
        except Fault as third:
            raise TripleFault(f"{third} while delivering #DF after {second}") from third


def do_interrupt(core: InterpCpu, vector: int, error_code: int | None, ret_ip: int, *,
                 soft: bool, cr2: int | None = None) -> None:
    env = core.env
    flags = core.get_flags()      # materialise the lazy flags: they are pushed
    env.eflags = flags
    core.cc = None
    if cr2 is not None:
        env.cr[2] = cr2
    if trace.enabled("int"):
        trace.event(f"interrupt {vector} ({VECTOR_NAMES.get(vector, 'int')}) "
                    f"{'software ' if soft else ''}at {env.segs[R_CS].selector:04x}:{env.rip:#x}"
                    f"{'' if error_code is None else f' err={error_code:#x}'}", "int")
    if not env.cr[0] & CR0_PE:
        _real_mode(core, vector, ret_ip)
    elif env.eflags & VM_MASK:
        vm86.interrupt(core, vector, error_code, ret_ip, soft)
    elif env.efer & EFER_LMA:
        _long_mode(core, vector, error_code, ret_ip, soft)
    else:
        _protected(core, vector, error_code, ret_ip, soft)
    core.mode_changed()


def soft_int(core: InterpCpu, vector: int, next_ip: int, check_dpl: bool) -> None:
    """INT n, INT3, INTO (``check_dpl``: the gate's DPL is checked against the CPL) and
    INT1 from generated code: a trap, delivered with ``next_ip`` saved (SDM vol. 3A,
    6.4.2).  They clear TF after pushing it: no single-step trap follows them (SDM vol.
    3A, 18.3.1.4), which the debug path learns from ``debug.event``."""
    core.debug.event = True
    do_interrupt(core, vector, None, next_ip, soft=check_dpl)


def _real_mode(core: InterpCpu, vector: int, ret_ip: int) -> None:
    env = core.env
    if vector * 4 + 3 > env.idt.limit:
        raise Fault(EXCP_GP, vector * 8 + 2, why=f"vector {vector} past the IVT limit")
    entry = int.from_bytes(core.mmu.read_bytes(env.idt.base + vector * 4, 4), "little")
    core.stack_push([(env.eflags & 0xFFFF, 2), (env.segs[R_CS].selector, 2), (ret_ip & 0xFFFF, 2)])
    # RF too: :func:`deliver` set it for the image only (a 16-bit image has no RF), and
    # the handler starts with RF clear (SDM vol. 3A, 18.3.1.1).
    env.eflags &= ~(IF_MASK | TF_MASK | AC_MASK | RF_MASK)
    cs = env.segs[R_CS]
    cs.selector = entry >> 16
    cs.base = cs.selector << 4
    core.segbase[R_CS] = cs.base
    env.rip = entry & 0xFFFF


def _target_cs(core: InterpCpu, sel: int) -> tuple[SegmentCache, int]:
    if sel & 0xFFFC == 0:
        raise Fault(EXCP_GP, 0, why="interrupt gate with a null code selector")
    lo, hi = read_descriptor(core, sel)
    if not is_code(hi):
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"interrupt target {sel:#x} is not code")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_NP, sel & 0xFFFC, why=f"interrupt target {sel:#x} not present")
    dpl = descriptor_dpl(hi)
    new_cpl = core.env.cpl if hi & DESC_C_MASK or dpl >= core.env.cpl else dpl
    if dpl > core.env.cpl:
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"interrupt target {sel:#x} DPL > CPL")
    return descriptor_cache((sel & ~3) | new_cpl, lo, mark_accessed(core, sel, hi)), new_cpl


def _protected(core: InterpCpu, vector: int, error_code: int | None, ret_ip: int,
               soft: bool) -> None:
    env = core.env
    gate = idt_gate(core, vector, 8, soft, task_ok=True)
    if gate.type == GATE_TASK:
        _task_gate(core, vector, gate.selector, error_code if not soft else None, ret_ip)
        return
    cache, new_cpl = _target_cs(core, gate.selector)
    size = 4 if gate.type & 8 else 2           # a 32-bit gate (types E, F) or a 16-bit one
    offset = gate.offset
    frame = []
    old_ss, old_sp = env.segs[R_SS].selector, env.regs[4]
    if new_cpl < env.cpl:
        ss_sel, esp = task.tss_stack(core, new_cpl)
        env.segs[R_SS], _ = task.inner_stack_segment(core, ss_sel, new_cpl)
        core.segbase[R_SS] = env.segs[R_SS].base
        env.regs[4] = esp
        core.mode_changed()
        frame += [(old_ss, size), (old_sp, size)]
    frame += [(env.eflags, size), (env.segs[R_CS].selector, size), (ret_ip, size)]
    if error_code is not None and vector in HAS_ERROR_CODE and not soft:
        frame.append((error_code, size))
    core.stack_push(frame)
    env.eflags &= ~(TF_MASK | NT_MASK | RF_MASK | VM_MASK)
    if gate.type not in _TRAP_GATES:
        env.eflags &= ~IF_MASK                 # an interrupt gate
    env.segs[R_CS] = cache
    core.segbase[R_CS] = cache.base
    env.rip = offset if size == 4 else offset & 0xFFFF


def _task_gate(core: InterpCpu, vector: int, tss: int, error_code: int | None,
               ret_ip: int) -> None:
    """An interrupt or exception through a task gate (SDM vol. 3A, 6.12.2; vol. 2A INT n
    "TASK-GATE"): switch to the task, nested (back link, NT), saving ``ret_ip`` as the
    old task's EIP; push the error code of an exception that has one on the new task's
    stack; the new TSS's T flag traps (a #DB delivered here: a fault raised out of an
    event delivery would become #DF)."""
    if vector not in HAS_ERROR_CODE:
        error_code = None
    if task.switch_task(core, tss, task.INT, ret_ip, error_code):
        core.mode_changed()
        deliver(core, task.t_flag_trap(tss))


def _long_mode(core: InterpCpu, vector: int, error_code: int | None, ret_ip: int,
               soft: bool) -> None:
    env = core.env
    gate = idt_gate(core, vector, 16, soft)      # a 64-bit interrupt or trap gate (6.14.1)
    cache, new_cpl = _target_cs(core, gate.selector)
    old_ss, old_sp, old_cs = env.segs[R_SS].selector, env.regs[4], env.segs[R_CS].selector
    rsp = old_sp
    if gate.ist or new_cpl < env.cpl:
        # The 64-bit TSS: RSPn, or the IST slot the gate names (SDM vol. 3A, 6.14.5).
        slot = TSS64[f"ist{gate.ist}"] if gate.ist else TSS64.stack(new_cpl)[0]
        rsp = int.from_bytes(core.mmu.read_bytes(env.tr.base + slot.offset, slot.size),
                             "little")
    if new_cpl < env.cpl:
        # A null SS whose RPL and cached DPL are the new CPL (SDM vol. 3A, 6.14.4: "the
        # new SS is set to NULL ... with the RPL set to the new CPL"); the CPL is read
        # from SS.DPL, so a CPL-1/2 handler must not look like CPL 0.
        env.segs[R_SS] = SegmentCache(new_cpl, 0, 0, new_cpl << DESC_DPL_SHIFT)
        core.segbase[R_SS] = 0
    rsp &= ~0xF
    frame = [(old_ss, 8), (old_sp, 8), (env.eflags, 8), (old_cs, 8), (ret_ip, 8)]
    if error_code is not None and vector in HAS_ERROR_CODE and not soft:
        frame.append((error_code, 8))
    env.regs[4] = rsp
    core.mode_changed()
    core.stack_push(frame, stack64=True)
    env.eflags &= ~(TF_MASK | NT_MASK | RF_MASK | VM_MASK)
    if gate.type not in _TRAP_GATES:
        env.eflags &= ~IF_MASK
    env.segs[R_CS] = cache
    core.segbase[R_CS] = cache.base
    env.rip = gate.offset


def iret(core: InterpCpu, size: int, next_ip: int) -> None:
    """IRET/IRETD/IRETQ (SDM vol. 2A, IRET): real mode, same privilege, to an outer level,
    the 64-bit form that always pops SS:RSP, and the task return (NT = 1, protected mode:
    ``next_ip``, the address after the IRET, is saved in the task left); in and into
    virtual-8086 mode: :mod:`accel.interp.vm86`."""
    env = core.env
    if env.eflags & VM_MASK:
        # RETURN-FROM-VIRTUAL-8086-MODE comes first: NT plays no part in VM86.
        vm86.iret_in_vm86(core, size)
        return
    long64 = core.mode.code == 64
    if env.eflags & NT_MASK and protected(core):
        _task_return(core, next_ip)
        return
    sizes = [size] * (5 if long64 else 3)
    vals, new_sp = core.stack_pop(sizes)
    ip, sel, flags = vals[0], vals[1] & 0xFFFF, vals[2]
    if not protected(core):
        cs = env.segs[R_CS]
        check_target_ip(core, cs, ip)
        cs.selector, cs.base = sel, sel << 4
        core.segbase[R_CS] = cs.base
        core.set_sp(new_sp)
        load_eflags(core, flags, size, iret=True)
        env.rip = ip
        core.mode_changed()
        return
    if flags & VM_MASK and size == 4 and env.cpl == 0 and not env.efer & EFER_LMA:
        vm86.iret_to_vm86(core, ip, sel, flags, new_sp)   # (IA-32e mode has no VM86)
        return
    rpl = sel & 3
    cpl = env.cpl
    lo, hi = read_descriptor(core, sel)
    if not is_code(hi) or rpl < cpl:
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"iret to {sel:#x}")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_NP, sel & 0xFFFC, why=f"iret to {sel:#x}: not present")
    if long64 or rpl > cpl:
        if not long64:
            (sp, ss), new_sp = core.stack_pop([size, size], 0, start=new_sp)
        else:
            sp, ss = vals[3], vals[4] & 0xFFFF
        # The popped SS is checked as RET's (#GP/#SS; a null SS only for 64-bit code at
        # CPL 0-2, keeping the RPL as its DPL), then the new EIP, all before any change.
        to64 = bool(env.efer & EFER_LMA) and bool(hi & DESC_L_MASK)
        ss_cache, shi = return_stack_segment(core, ss, rpl, to64, "iret")
        check_target_ip(core, descriptor_cache(sel, lo, hi), ip)
        cache = descriptor_cache(sel, lo, mark_accessed(core, sel, hi))
        load_eflags(core, flags, size, iret=True)
        if shi is not None:
            ss_cache.flags = mark_accessed(core, ss, shi) & DESCRIPTOR_ATTR_MASK
        env.segs[R_SS] = ss_cache
        core.segbase[R_SS] = ss_cache.base
        env.segs[R_CS] = cache
        core.segbase[R_CS] = cache.base
        env.regs[4] = sp if size == 8 or env.segs[R_SS].flags & DESC_B_MASK else (
            env.regs[4] & ~0xFFFF | sp & 0xFFFF)
        if rpl > cpl:
            null_outer_data_segs(core, rpl)
    else:
        check_target_ip(core, descriptor_cache(sel, lo, hi), ip)
        cache = descriptor_cache(sel, lo, mark_accessed(core, sel, hi))
        load_eflags(core, flags, size, iret=True)
        env.segs[R_CS] = cache
        core.segbase[R_CS] = cache.base
        core.set_sp(new_sp)
    env.rip = ip if size != 2 else ip & 0xFFFF
    core.mode_changed()


def _task_return(core: InterpCpu, next_ip: int) -> None:
    """TASK-RETURN (SDM vol. 2A, IRET; vol. 3A, 7.4): switch, without nesting, to the
    task whose TSS selector is in the previous-task link of the current TSS; that
    task must be busy (:func:`accel.interp.task.new_tss_descriptor`: #TS(link) for a
    link in the LDT, past the GDT limit, not a busy TSS; #NP(link) not present).  In
    IA-32e mode there are no task switches: IRET with NT = 1 is #GP(0) (7.7)."""
    env = core.env
    if env.efer & EFER_LMA:
        raise Fault(EXCP_GP, 0, why="iret with EFLAGS.NT=1 in IA-32e mode")
    tr = env.tr
    if tr.limit < 1:
        raise Fault(EXCP_TS, tr.selector & 0xFFFC, why="iret: the back link is past the TSS limit")
    link = int.from_bytes(core.mmu.read_bytes(tr.base, 2), "little")
    if task.switch_task(core, link, task.IRET, next_ip):
        raise task.t_flag_trap(link)
