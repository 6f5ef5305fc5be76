"""Far JMP, CALL and RET (Intel SDM vol. 2A JMP and CALL, vol. 2B RET "Operation"; QEMU's
``helper_ljmp_protected``, ``helper_lcall_real/protected``, ``helper_lret_protected``).

Real and virtual-8086 mode load CS as the 8086 did; protected mode reads the
descriptor the selector names and dispatches on its type: a code segment is the
direct transfer here (CONFORMING-/NONCONFORMING-CODE-SEGMENT, no privilege
change), a system descriptor (call gate, TSS, task gate) goes to
:func:`accel.interp.gates.through_system_descriptor`, and a far RET to an outer
privilege level to :func:`accel.interp.gates.return_to_outer`.  Every check that
can fault comes before anything in ``env`` or on the stack changes.
"""

from __future__ import annotations

from pyqemu.accel.interp import gates
from pyqemu.accel.interp.errors import EXCP_GP, EXCP_NP, Fault, InterpError
from pyqemu.accel.interp.seg import (
    check_target_ip,
    descriptor_dpl,
    mark_accessed,
    protected,
    read_descriptor,
    set_cs,
)
from pyqemu.accel.interp.state import InterpCpu
from pyqemu.target.i386.cpu_state import (
    DESC_B_MASK,
    DESC_C_MASK,
    DESC_CS_MASK,
    DESC_L_MASK,
    DESC_P_MASK,
    DESC_S_MASK,
    EFER_LMA,
    R_CS,
    SegmentCache,
)
from pyqemu.target.i386.descriptors import descriptor_cache

__all__ = ["code_descriptor", "far_call", "far_jump", "far_return", "target_descriptor"]


def target_descriptor(core: InterpCpu, sel: int) -> tuple[int, int]:
    """The descriptor a far JMP/CALL names: #GP(0) for a null selector, #GP(sel) past
    the table limit (SDM vol. 2A, CALL/JMP "Operation", before the type dispatch)."""
    if sel & 0xFFFC == 0:
        raise Fault(EXCP_GP, 0, why="far transfer to a null selector")
    return read_descriptor(core, sel)


def code_descriptor(core: InterpCpu, sel: int,
                    desc: tuple[int, int] | None = None) -> tuple[SegmentCache, int]:
    """Check a far JMP/CALL target code segment (CONFORMING-/NONCONFORMING-CODE-SEGMENT
    of SDM vol. 2A CALL/JMP: no privilege change); returns its cache and the CPL.
    ``desc``: the descriptor, when the caller has read it already."""
    env = core.env
    lo, hi = desc if desc is not None else target_descriptor(core, sel)
    if not hi & DESC_S_MASK:
        raise InterpError(f"interp: code_descriptor({sel:#x}) called for a system descriptor")
    if not hi & DESC_CS_MASK:
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"far transfer to data segment {sel:#x}")
    cpl = env.cpl
    dpl = descriptor_dpl(hi)
    if hi & DESC_C_MASK:
        if dpl > cpl:
            raise Fault(EXCP_GP, sel & 0xFFFC, why=f"conforming segment {sel:#x} DPL > CPL")
    elif (sel & 3) > cpl or dpl != cpl:
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"code segment {sel:#x} privilege")
    if env.efer & EFER_LMA and hi & DESC_L_MASK and hi & DESC_B_MASK:
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"code segment {sel:#x} with L and D set")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_NP, sel & 0xFFFC, why=f"code segment {sel:#x} not present")
    cache = descriptor_cache((sel & ~3) | cpl, lo, mark_accessed(core, sel, hi))
    return cache, cpl


def _real_cs(core: InterpCpu, sel: int, ip: int) -> None:
    """CS:IP as real and virtual-8086 mode load them: base = selector << 4, the cached
    limit and attributes kept (SDM vol. 3A, 20.1.1)."""
    cs = core.env.segs[R_CS]
    cs.selector, cs.base = sel, sel << 4
    core.env.rip = ip
    core.segbase[R_CS] = cs.base
    core.mode_changed()


def far_jump(core: InterpCpu, sel: int, off: int, next_ip: int) -> None:
    """JMP ptr16:xx / m16:xx (SDM vol. 2A, JMP, far jumps).  ``next_ip``: the address
    after the instruction, which a task switch saves in the old TSS."""
    if not protected(core):
        check_target_ip(core, core.env.segs[R_CS], off)
        _real_cs(core, sel, off)
        return
    desc = target_descriptor(core, sel)
    if not desc[1] & DESC_S_MASK:
        gates.through_system_descriptor(core, sel, *desc, call=False, next_ip=next_ip)
        return
    cache, _ = code_descriptor(core, sel, desc)
    check_target_ip(core, cache, off)
    set_cs(core, cache, off)


def far_call(core: InterpCpu, sel: int, off: int, size: int, next_ip: int) -> None:
    """CALL far: push CS then the return offset, both ``size`` bytes (SDM vol. 2A, CALL)."""
    env = core.env
    cache = None
    if protected(core):
        desc = target_descriptor(core, sel)
        if not desc[1] & DESC_S_MASK:
            gates.through_system_descriptor(core, sel, *desc, call=True, next_ip=next_ip)
            return
        cache, _ = code_descriptor(core, sel, desc)   # validate before touching the stack
    check_target_ip(core, cache or env.segs[R_CS], off)
    core.stack_push([(env.segs[R_CS].selector, size), (next_ip, size)])
    if cache is None:
        _real_cs(core, sel, off)
    else:
        set_cs(core, cache, off)


def far_return(core: InterpCpu, size: int, extra: int) -> None:
    """RET far [imm16] (SDM vol. 2B, RET): real mode, "RETURN-TO-SAME-PRIVILEGE-LEVEL",
    and to an outer level (RPL > CPL: :func:`accel.interp.gates.return_to_outer`)."""
    env = core.env
    (ip, sel), new_sp = core.stack_pop([size, size], extra)
    sel &= 0xFFFF
    if not protected(core):
        check_target_ip(core, env.segs[R_CS], ip)
        core.set_sp(new_sp)
        _real_cs(core, sel, ip)
        return
    lo, hi = gates.return_code_segment(core, sel)
    if (sel & 3) > env.cpl:
        gates.return_to_outer(core, ip, sel, lo, hi, size, extra, new_sp)
        return
    check_target_ip(core, descriptor_cache(sel, lo, hi), ip)
    cache = descriptor_cache(sel, lo, mark_accessed(core, sel, hi))
    core.set_sp(new_sp)
    set_cs(core, cache, ip)
