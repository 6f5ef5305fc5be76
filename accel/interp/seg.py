"""Segmentation: descriptor loads, far JMP/CALL/RET (Intel SDM vol. 3A, 3.4 and 5.8).

Real mode and virtual-8086 mode: a selector load sets base = selector << 4 and
keeps the hidden limit and attributes (SDM vol. 3A, 20.1.1; that is what makes
"unreal mode" work).  Protected mode: the selector indexes the GDT or the LDT,
the descriptor is checked as the MOV/POP/JMP/CALL/RET "Operation" sections of
SDM vol. 2 say (type, DPL/RPL/CPL, present) and its base, limit and attributes
fill the segment cache (3.4.5).  Far transfers through call gates and far returns
to an outer privilege level are in :mod:`accel.interp.gates`, task switches (a
task gate or a TSS as a far JMP/CALL target) in :mod:`accel.interp.task`.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from pyqemu.accel.interp.errors import EXCP_GP, EXCP_NP, EXCP_SS, EXCP_UD, Fault, InterpError
from pyqemu.target.i386.cpu_state import (
    CR0_PE,
    DESC_A_MASK,
    DESC_B_MASK,
    DESC_C_MASK,
    DESC_CS_MASK,
    DESC_DPL_SHIFT,
    DESC_G_MASK,
    DESC_L_MASK,
    DESC_P_MASK,
    DESC_R_MASK,
    DESC_S_MASK,
    DESC_W_MASK,
    EFER_LMA,
    R_CS,
    R_SS,
    VM_MASK,
    SegmentCache,
)
from pyqemu.target.i386.descriptors import descriptor_cache

if TYPE_CHECKING:
    from pyqemu.accel.interp.cpu_exec import InterpCore


def protected(core: InterpCore) -> bool:
    env = core.env
    return bool(env.cr[0] & CR0_PE) and not env.eflags & VM_MASK


def _gates() -> ModuleType:
    """:mod:`accel.interp.gates`, imported on first use: it imports this module and
    :mod:`accel.interp.excp` (which imports this one), so it cannot be imported at the top."""
    from pyqemu.accel.interp import gates
    return gates


def canonical(a: int) -> bool:
    """A 48-bit canonical linear address (SDM vol. 1, 3.3.7.1)."""
    return a < 0x800000000000 or a >= 0xFFFF800000000000


def check_target_ip(core: InterpCore, cache: SegmentCache, ip: int) -> None:
    """#GP(0) unless a far transfer's new instruction pointer lies within the new CS
    limit, or is canonical when the new CS is 64-bit code (SDM vol. 2A JMP and CALL,
    vol. 2B RET, vol. 2A IRET: "IF tempEIP not within code segment limits THEN
    #GP(0)"; in real mode the limit is the one CS keeps in its cache).  Made before any
    register or the stack changes."""
    if core.env.efer & EFER_LMA and cache.flags & DESC_L_MASK:
        if not canonical(ip):
            raise Fault(EXCP_GP, 0, why=f"far transfer to non-canonical {ip:#x}")
    elif ip > cache.limit:
        raise Fault(EXCP_GP, 0, why=f"far transfer to {ip:#x}, past the CS limit "
                                    f"{cache.limit:#x}")


def read_descriptor(core: InterpCore, sel: int) -> tuple[int, int]:
    """The 8-byte descriptor of ``sel`` as (low dword, high dword); #GP(sel) past the limit."""
    env = core.env
    table = env.ldt if sel & 4 else env.gdt
    index = sel & ~7
    if index + 7 > table.limit:
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"selector {sel:#x} past the descriptor table")
    raw = core.mmu.read_bytes(table.base + index, 8)
    return int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:], "little")


def read_descriptor_hi64(core: InterpCore, sel: int) -> int:
    """Upper 8 bytes of a 16-byte system descriptor in long mode (SDM vol. 3A, 7.2.3)."""
    env = core.env
    raw = core.mmu.read_bytes(env.gdt.base + (sel & ~7) + 8, 8)
    return int.from_bytes(raw[:4], "little")


def mark_accessed(core: InterpCore, sel: int, hi: int) -> int:
    """Set the descriptor's accessed bit in memory when a load finds it clear; returns ``hi``
    with it set (SDM vol. 3A, 3.4.5.1: the processor sets A whenever it loads the selector
    of a code or data segment into a segment register; QEMU's helper_load_seg does too)."""
    if not hi & DESC_A_MASK:
        hi |= DESC_A_MASK
        table = core.env.ldt if sel & 4 else core.env.gdt
        core.mmu.write_bytes_linear(table.base + (sel & ~7) + 4, hi.to_bytes(4, "little"))
    return hi


def cache_from(sel: int, lo: int, hi: int) -> SegmentCache:
    """Descriptor -> segment cache (SDM vol. 3A, 3.4.5, Figure 3-8)."""
    return descriptor_cache(sel, lo, hi)


def load_seg(core: InterpCore, seg: int, sel: int) -> None:
    """MOV/POP to a segment register (SDM vol. 2B, MOV "Operation", POP "Operation")."""
    env = core.env
    if seg == R_CS:
        raise Fault(EXCP_UD, why="mov to cs")
    cache = env.segs[seg]
    if not protected(core):
        cache.selector = sel
        cache.base = sel << 4
    else:
        cpl = env.cpl
        rpl = sel & 3
        if sel & 0xFFFC == 0:
            if seg == R_SS and not (core.mode.code == 64 and cpl != 3):
                raise Fault(EXCP_GP, 0, why="null selector loaded into ss")
            env.segs[seg] = SegmentCache(sel, 0, 0, 0)
        else:
            lo, hi = read_descriptor(core, sel)
            dpl = (hi >> DESC_DPL_SHIFT) & 3
            code = bool(hi & DESC_CS_MASK)
            if not hi & DESC_S_MASK:
                raise Fault(EXCP_GP, sel & 0xFFFC, why=f"system descriptor {sel:#x}")
            if seg == R_SS:
                if code or not hi & DESC_W_MASK or rpl != cpl or dpl != cpl:
                    raise Fault(EXCP_GP, sel & 0xFFFC, why=f"bad stack segment {sel:#x}")
                if not hi & DESC_P_MASK:
                    raise Fault(EXCP_SS, sel & 0xFFFC, why=f"stack segment {sel:#x} not present")
            else:
                if code and not hi & DESC_R_MASK:
                    raise Fault(EXCP_GP, sel & 0xFFFC, why=f"execute-only segment {sel:#x}")
                if (not code or not hi & DESC_C_MASK) and (rpl > dpl or cpl > dpl):
                    raise Fault(EXCP_GP, sel & 0xFFFC, why=f"segment {sel:#x} privilege")
                if not hi & DESC_P_MASK:
                    raise Fault(EXCP_NP, sel & 0xFFFC, why=f"segment {sel:#x} not present")
            env.segs[seg] = cache_from(sel, lo, mark_accessed(core, sel, hi))
    core.segbase[seg] = env.segs[seg].base
    core.mode_changed()     # SS sets the stack size; any of ES CS SS DS may end flatness


def target_descriptor(core: InterpCore, sel: int) -> tuple[int, int]:
    """The descriptor a far JMP/CALL names: #GP(0) for a null selector, #GP(sel) past
    the table limit (SDM vol. 2A, CALL/JMP "Operation", before the type dispatch)."""
    if sel & 0xFFFC == 0:
        raise Fault(EXCP_GP, 0, why="far transfer to a null selector")
    return read_descriptor(core, sel)


def code_descriptor(core: InterpCore, sel: int,
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
    dpl = (hi >> DESC_DPL_SHIFT) & 3
    if hi & DESC_C_MASK:
        if dpl > cpl:
            raise Fault(EXCP_GP, sel & 0xFFFC, why=f"conforming segment {sel:#x} DPL > CPL")
    elif (sel & 3) > cpl or dpl != cpl:
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"code segment {sel:#x} privilege")
    if env.efer & EFER_LMA and hi & DESC_L_MASK and hi & DESC_B_MASK:
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"code segment {sel:#x} with L and D set")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_NP, sel & 0xFFFC, why=f"code segment {sel:#x} not present")
    cache = cache_from((sel & ~3) | cpl, lo, mark_accessed(core, sel, hi))
    return cache, cpl


def set_cs(core: InterpCore, cache: SegmentCache, rip: int) -> None:
    env = core.env
    env.segs[R_CS] = cache
    code64 = bool(env.efer & 0x400) and bool(cache.flags & DESC_L_MASK)
    if not code64:
        rip &= 0xFFFFFFFF if cache.flags & DESC_B_MASK else 0xFFFF
    env.rip = rip
    core.segbase[R_CS] = cache.base
    core.mode_changed()


def far_jump(core: InterpCore, sel: int, off: int, next_ip: int) -> None:
    """JMP ptr16:xx / m16:xx (SDM vol. 2A, JMP, far jumps).  ``next_ip``: the address
    after the instruction, which a task switch saves in the old TSS."""
    env = core.env
    if not protected(core):
        cs = env.segs[R_CS]
        check_target_ip(core, cs, off)
        cs.selector, cs.base = sel, sel << 4
        env.rip = off
        core.segbase[R_CS] = cs.base
        core.mode_changed()
        return
    desc = target_descriptor(core, sel)
    if not desc[1] & DESC_S_MASK:
        _gates().through_system_descriptor(core, sel, *desc, call=False, next_ip=next_ip)
        return
    cache, _ = code_descriptor(core, sel, desc)
    check_target_ip(core, cache, off)
    set_cs(core, cache, off)


def far_call(core: InterpCore, sel: int, off: int, size: int, next_ip: int) -> None:
    """CALL far: push CS then the return offset, both ``size`` bytes (SDM vol. 2A, CALL)."""
    env = core.env
    cache = None
    if protected(core):
        desc = target_descriptor(core, sel)
        if not desc[1] & DESC_S_MASK:
            _gates().through_system_descriptor(core, sel, *desc, call=True, next_ip=next_ip)
            return
        cache, _ = code_descriptor(core, sel, desc)   # validate before touching the stack
    check_target_ip(core, cache or env.segs[R_CS], off)
    core.push_rt([(env.segs[R_CS].selector, size), (next_ip, size)])
    if cache is None:
        cs = env.segs[R_CS]
        cs.selector, cs.base = sel, sel << 4
        env.rip = off
        core.segbase[R_CS] = cs.base
        core.mode_changed()
    else:
        set_cs(core, cache, off)


def far_return(core: InterpCore, size: int, extra: int) -> None:
    """RET far [imm16] (SDM vol. 2B, RET): real mode, "RETURN-TO-SAME-PRIVILEGE-LEVEL",
    and to an outer level (RPL > CPL: :func:`accel.interp.gates.return_to_outer`)."""
    env = core.env
    (ip, sel), new_sp = core.pop_rt([size, size], extra)
    sel &= 0xFFFF
    if not protected(core):
        cs = env.segs[R_CS]
        check_target_ip(core, cs, ip)
        cs.selector, cs.base = sel, sel << 4
        core.set_sp_rt(new_sp)
        env.rip = ip
        core.segbase[R_CS] = cs.base
        core.mode_changed()
        return
    g = _gates()
    lo, hi = g.return_code_segment(core, sel)
    if (sel & 3) > env.cpl:
        g.return_to_outer(core, ip, sel, lo, hi, size, extra, new_sp)
        return
    check_target_ip(core, cache_from(sel, lo, hi), ip)
    cache = cache_from(sel, lo, mark_accessed(core, sel, hi))
    core.set_sp_rt(new_sp)
    set_cs(core, cache, ip)


def load_system_seg(core: InterpCore, which: str, sel: int) -> None:
    """LTR/LLDT (SDM vol. 2A): a GDT system descriptor (16 bytes in long mode, 7.2.3);
    LTR also marks the TSS busy in the GDT."""
    env = core.env
    if sel & 0xFFFC == 0:
        if which == "lldt":
            env.ldt = SegmentCache(sel, 0, 0, 0)
            return
        raise Fault(EXCP_GP, 0, why="ltr with a null selector")
    if sel & 4:
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"{which}: selector {sel:#x} is in the LDT")
    lo, hi = read_descriptor(core, sel)
    stype = (hi >> 8) & 0x1F
    ok = (1, 9) if which == "ltr" else (2,)          # available 16/32(64)-bit TSS, LDT
    if stype not in ok:
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"{which}: descriptor type {stype:#x}")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_NP, sel & 0xFFFC, why=f"{which}: {sel:#x} not present")
    cache = cache_from(sel, lo, hi)
    if env.efer & 0x400:
        cache.base |= read_descriptor_hi64(core, sel) << 32
    if which == "ltr":
        busy = hi | (2 << 8)                          # type 9/1 -> 11/3 (busy)
        core.mmu.write_bytes_linear(env.gdt.base + (sel & ~7) + 4, busy.to_bytes(4, "little"))
        cache.flags |= 2 << 8
        env.tr = cache
    else:
        env.ldt = cache


def syscall(core: InterpCore, next_ip: int) -> None:
    """SYSCALL in 64-bit mode (SDM vol. 2B, SYSCALL, Operation)."""
    env = core.env
    if not env.efer & 1:
        raise Fault(EXCP_UD, why="syscall with EFER.SCE clear")
    env.regs[1] = next_ip
    env.regs[11] = core.get_flags() & ~0x10000          # R11 = RFLAGS (RF cleared)
    core.cc = None
    sel = (env.star >> 32) & 0xFFFC
    env.segs[R_CS] = SegmentCache(sel, 0, 0xFFFFFFFF, 0xA09B00 | DESC_P_MASK)  # L, G, code, DPL0
    env.segs[R_SS] = SegmentCache(sel + 8, 0, 0xFFFFFFFF, 0xC09300 | DESC_P_MASK)
    env.eflags = (env.regs[11] & ~env.fmask & 0x3F7FD7) | 2
    env.rip = env.lstar
    core.mode_changed()


def sysret(core: InterpCore, size: int) -> None:
    """SYSRET to CPL 3: 64-bit (REX.W) or compatibility mode (SDM vol. 2B, SYSRET)."""
    env = core.env
    if not env.efer & 1:
        raise Fault(EXCP_UD, why="sysret with EFER.SCE clear")
    base = (env.star >> 48) & 0xFFFF
    if size == 8:
        env.segs[R_CS] = SegmentCache((base + 16) | 3, 0, 0xFFFFFFFF, 0xA0FB00 | DESC_P_MASK)
        env.rip = env.regs[1]
    else:
        env.segs[R_CS] = SegmentCache(base | 3, 0, 0xFFFFFFFF, 0xC0FB00 | DESC_P_MASK)
        env.rip = env.regs[1] & 0xFFFFFFFF
    env.segs[R_SS] = SegmentCache((base + 8) | 3, 0, 0xFFFFFFFF, 0xC0F300 | DESC_P_MASK)
    env.eflags = (env.regs[11] & 0x3C7FD7) | 2
    core.cc = None
    core.mode_changed()


#: System descriptor types LAR/LSL accept (SDM vol. 2A, LAR Table 3-57, LSL Table 3-61):
#: legacy mode, then IA-32e mode (only LDT, 64-bit TSS available/busy, 64-bit call gate).
_LAR_TYPES = ({1, 2, 3, 4, 5, 9, 0xB, 0xC}, {2, 9, 0xB, 0xC})
_LSL_TYPES = ({1, 2, 3, 9, 0xB}, {2, 9, 0xB})


def check_selector(core: InterpCore, which: str, sel: int) -> int | None:
    """LAR, LSL, VERR, VERW (SDM vol. 2A LAR/LSL, vol. 2B VERR/VERW, "Operation"): the
    access rights (LAR: descriptor bytes 4-7 masked 00F0FF00H), the scaled limit (LSL) or 1
    (VERR/VERW), or None where the instruction clears ZF: a null selector, an offset past
    the GDT/LDT limit, a type the instruction does not accept, or (except a conforming
    code segment) DPL < CPL or DPL < RPL.  In IA-32e mode the system descriptors LAR/LSL
    take are 16 bytes: ZF is cleared unless the whole of one is within the table limit.
    Presence is not checked; nothing faults but a read of the descriptor table itself (#PF)."""
    env = core.env
    if sel & 0xFFFC == 0:
        return None
    table = env.ldt if sel & 4 else env.gdt
    if (sel & ~7) + 7 > table.limit:
        return None
    raw = core.mmu.read_bytes(table.base + (sel & ~7), 8)
    lo, hi = int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:], "little")
    dpl = (hi >> DESC_DPL_SHIFT) & 3
    conforming = hi & (DESC_S_MASK | DESC_CS_MASK | DESC_C_MASK) == (
        DESC_S_MASK | DESC_CS_MASK | DESC_C_MASK)
    if not hi & DESC_S_MASK:
        ia32e = bool(env.efer & EFER_LMA)
        types = (_LAR_TYPES if which == "lar" else _LSL_TYPES)[ia32e]
        if which in ("verr", "verw") or (hi >> 8) & 0xF not in types:
            return None
        if ia32e:
            # Every system descriptor LAR/LSL take in IA-32e mode is 16 bytes (SDM vol.
            # 3A, 3.5.2 and 7.2.3; 5.8.3.1): its upper half must be in the table too, and
            # it is read (a #PF there is the instruction's).
            if (sel & ~7) + 15 > table.limit:
                return None
            core.mmu.read_bytes(table.base + (sel & ~7) + 8, 8)
    elif which == "verr" and hi & DESC_CS_MASK and not hi & DESC_R_MASK:
        return None                                       # execute-only code
    elif which == "verw" and (hi & DESC_CS_MASK or not hi & DESC_W_MASK):
        return None                                       # code, or read-only data
    if not conforming and (dpl < env.cpl or dpl < (sel & 3)):
        return None
    if which == "lar":
        return hi & 0x00F0FF00
    if which == "lsl":
        limit = (lo & 0xFFFF) | (hi & 0xF0000)
        return (limit << 12) | 0xFFF if hi & DESC_G_MASK else limit
    return 1


def sysenter(core: InterpCore) -> None:
    """SYSENTER (SDM vol. 2B, SYSENTER, Operation): #GP(0) in real mode or with
    IA32_SYSENTER_CS[15:2] = 0; clears VM IF RF; flat CPL-0 CS = SYSENTER_CS & FFFCH
    (64-bit code in IA-32e mode, else 32-bit) and SS = CS + 8; RSP/RIP from
    IA32_SYSENTER_ESP/EIP, truncated to 32 bits outside IA-32e mode."""
    env = core.env
    if not env.cr[0] & CR0_PE:
        raise Fault(EXCP_GP, 0, why="sysenter in real mode")
    if not env.sysenter_cs & 0xFFFC:
        raise Fault(EXCP_GP, 0, why="sysenter with IA32_SYSENTER_CS null")
    ia32e = bool(env.efer & 0x400)
    env.eflags = core.get_flags() & ~(VM_MASK | 0x200 | 0x10000)     # VM, IF, RF
    core.cc = None
    sel = env.sysenter_cs & 0xFFFC
    code = DESC_G_MASK | DESC_P_MASK | DESC_S_MASK | 0xB00 | (DESC_L_MASK if ia32e else DESC_B_MASK)
    env.segs[R_CS] = SegmentCache(sel, 0, 0xFFFFFFFF, code)
    env.segs[R_SS] = SegmentCache(sel + 8, 0, 0xFFFFFFFF,
                                  DESC_G_MASK | DESC_B_MASK | DESC_P_MASK | DESC_S_MASK | 0x300)
    mask = 0xFFFFFFFFFFFFFFFF if ia32e else 0xFFFFFFFF
    env.regs[4] = env.sysenter_esp & mask
    env.rip = env.sysenter_eip & mask
    core.segbase[R_CS] = core.segbase[R_SS] = 0
    core.mode_changed()


def sysexit(core: InterpCore, size: int) -> None:
    """SYSEXIT (SDM vol. 2B, SYSEXIT, Operation): #GP(0) in real mode, at CPL > 0 or with
    IA32_SYSENTER_CS[15:2] = 0; CPL-3 flat CS = (SYSENTER_CS + 32) | 3 for a 64-bit
    return (REX.W; #GP(0) for a non-canonical RCX or RDX), else (SYSENTER_CS + 16) | 3;
    SS = CS + 8; RSP = RCX, RIP = RDX (ECX/EDX zero-extended).  RFLAGS unchanged."""
    env = core.env
    if not env.cr[0] & CR0_PE or env.cpl:
        raise Fault(EXCP_GP, 0, why="sysexit outside CPL 0 protected mode")
    if not env.sysenter_cs & 0xFFFC:
        raise Fault(EXCP_GP, 0, why="sysexit with IA32_SYSENTER_CS null")
    rcx, rdx = env.regs[1], env.regs[2]
    if size == 8:
        if not (canonical(rcx) and canonical(rdx)):
            raise Fault(EXCP_GP, 0, why="sysexit to a non-canonical RCX/RDX")
        sel = ((env.sysenter_cs + 32) & 0xFFFF) | 3
        code = DESC_L_MASK
    else:
        rcx, rdx = rcx & 0xFFFFFFFF, rdx & 0xFFFFFFFF
        sel = ((env.sysenter_cs + 16) & 0xFFFF) | 3
        code = DESC_B_MASK
    dpl3 = 3 << DESC_DPL_SHIFT
    env.segs[R_CS] = SegmentCache(sel, 0, 0xFFFFFFFF,
                                  DESC_G_MASK | DESC_P_MASK | DESC_S_MASK | dpl3 | 0xB00 | code)
    env.segs[R_SS] = SegmentCache((sel + 8) & 0xFFFF, 0, 0xFFFFFFFF, DESC_G_MASK | DESC_B_MASK
                                  | DESC_P_MASK | DESC_S_MASK | dpl3 | 0x300)
    env.regs[4] = rcx
    env.rip = rdx
    core.segbase[R_CS] = core.segbase[R_SS] = 0
    core.mode_changed()
