"""Segmentation: descriptor reads and loads, SYSCALL/SYSRET, SYSENTER/SYSEXIT, LAR/LSL
(Intel SDM vol. 3A, 3.4 and 5.8; QEMU's ``target/i386/tcg/seg_helper.c``).

Real mode and virtual-8086 mode: a selector load sets base = selector << 4 and
keeps the hidden limit and attributes (SDM vol. 3A, 20.1.1; that is what makes
"unreal mode" work).  Protected mode: the selector indexes the GDT or the LDT,
the descriptor is checked as the MOV/POP/JMP/CALL/RET "Operation" sections of
SDM vol. 2 say (type, DPL/RPL/CPL, present) and its base, limit and attributes
fill the segment cache (3.4.5, :func:`~pyqemu.target.i386.descriptors.descriptor_cache`).
Far JMP/CALL/RET are in :mod:`accel.interp.far`, call gates and far returns to an
outer privilege level in :mod:`accel.interp.gates`, task switches in
:mod:`accel.interp.task`: all of them build on the pieces here.
"""

from __future__ import annotations

from pyqemu.accel.interp.errors import EXCP_GP, EXCP_NP, EXCP_SS, EXCP_UD, Fault
from pyqemu.accel.interp.state import InterpCpu
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
    DESC_TYPE_SHIFT,
    DESC_W_MASK,
    EFER_LMA,
    EFER_SCE,
    IF_MASK,
    R_CS,
    R_DS,
    R_ES,
    R_FS,
    R_GS,
    R_SS,
    RF_MASK,
    VM_MASK,
    SegmentCache,
)
from pyqemu.target.i386.descriptors import (
    DESCRIPTOR_ATTR_MASK,
    GATE_CALL16,
    GATE_CALL32,
    GATE_TASK,
    SYS_LDT,
    SYS_TSS16,
    SYS_TSS16_BUSY,
    SYS_TSS32,
    SYS_TSS32_BUSY,
    descriptor_cache,
    descriptor_limit,
)

__all__ = [
    "TSS_BUSY",
    "VM86_SEG_FLAGS",
    "canonical",
    "check_selector",
    "check_target_ip",
    "descriptor_dpl",
    "descriptor_type",
    "in_table",
    "is_code",
    "is_writable_data",
    "load_seg",
    "load_system_seg",
    "mark_accessed",
    "null_outer_data_segs",
    "protected",
    "read_descriptor",
    "read_descriptor_hi64",
    "set_cs",
    "syscall",
    "sysenter",
    "sysexit",
    "sysret",
    "vm86_segment",
]

#: The busy bit of a TSS descriptor's type (SDM vol. 3A, 7.2.2: type 9/1 available,
#: B/3 busy).
TSS_BUSY = SYS_TSS32_BUSY ^ SYS_TSS32

#: Attributes of the flat segments SYSCALL/SYSRET/SYSENTER/SYSEXIT load (their
#: "Operation": type 11 execute/read accessed code, type 3 read/write accessed data).
_CODE = DESC_S_MASK | DESC_CS_MASK | DESC_R_MASK | DESC_A_MASK
_DATA = DESC_S_MASK | DESC_W_MASK | DESC_A_MASK
_FLAT = DESC_G_MASK | DESC_P_MASK
_DPL3 = 3 << DESC_DPL_SHIFT


#: The attributes of every segment register in VM86: present, S=1, DPL 3, read/write
#: accessed data, 16-bit (the access rights F3H the SDM requires of VM86 guest state,
#: vol. 3C 27.3.1.2 "Checks on Guest Segment Registers"; QEMU loads the same).
VM86_SEG_FLAGS = DESC_P_MASK | _DPL3 | _DATA


def vm86_segment(sel: int) -> SegmentCache:
    """A segment register as VM86 loads it: base = selector << 4, limit FFFFH (SDM vol.
    3A, 20.1.1)."""
    return SegmentCache(sel, sel << 4, 0xFFFF, VM86_SEG_FLAGS)


def protected(core: InterpCpu) -> bool:
    env = core.env
    return bool(env.cr[0] & CR0_PE) and not env.eflags & VM_MASK


def canonical(a: int) -> bool:
    """A 48-bit canonical linear address (SDM vol. 1, 3.3.7.1)."""
    return a < 0x800000000000 or a >= 0xFFFF800000000000


def descriptor_type(hi: int) -> int:
    """The type field with S (bits 12:8 of the high dword): 0-0xF a system type."""
    return (hi >> DESC_TYPE_SHIFT) & 0x1F


def descriptor_dpl(hi: int) -> int:
    return (hi >> DESC_DPL_SHIFT) & 3


def is_code(hi: int) -> bool:
    """A code segment descriptor (S = 1, type bit 3 set)."""
    return hi & (DESC_S_MASK | DESC_CS_MASK) == DESC_S_MASK | DESC_CS_MASK


def is_writable_data(hi: int) -> bool:
    """A writable data segment descriptor (S = 1, type bit 3 clear, W set): what SS takes."""
    return hi & (DESC_S_MASK | DESC_CS_MASK | DESC_W_MASK) == DESC_S_MASK | DESC_W_MASK


def in_table(core: InterpCpu, sel: int, size: int = 8) -> bool:
    """Whether the ``size`` bytes of the descriptor ``sel`` names lie within its table."""
    table = core.env.ldt if sel & 4 else core.env.gdt
    return (sel & ~7) + size - 1 <= table.limit


def check_target_ip(core: InterpCpu, cache: SegmentCache, ip: int) -> None:
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


def read_descriptor(core: InterpCpu, sel: int) -> tuple[int, int]:
    """The 8-byte descriptor of ``sel`` as (low dword, high dword); #GP(sel) past the limit."""
    env = core.env
    table = env.ldt if sel & 4 else env.gdt
    index = sel & ~7
    if index + 7 > table.limit:
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"selector {sel:#x} past the descriptor table")
    raw = core.mmu.read_bytes(table.base + index, 8)
    return int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:], "little")


def read_descriptor_hi64(core: InterpCpu, sel: int) -> int:
    """Upper 8 bytes of a 16-byte system descriptor in long mode (SDM vol. 3A, 7.2.3)."""
    env = core.env
    raw = core.mmu.read_bytes(env.gdt.base + (sel & ~7) + 8, 8)
    return int.from_bytes(raw[:4], "little")


def mark_accessed(core: InterpCpu, sel: int, hi: int) -> int:
    """Set the descriptor's accessed bit in memory when a load finds it clear; returns ``hi``
    with it set (SDM vol. 3A, 3.4.5.1: the processor sets A whenever it loads the selector
    of a code or data segment into a segment register; QEMU's helper_load_seg does too)."""
    if not hi & DESC_A_MASK:
        hi |= DESC_A_MASK
        table = core.env.ldt if sel & 4 else core.env.gdt
        core.mmu.write_bytes_linear(table.base + (sel & ~7) + 4, hi.to_bytes(4, "little"))
    return hi


def load_seg(core: InterpCpu, seg: int, sel: int) -> None:
    """MOV/POP to a segment register, LDS/LES/LFS/LGS/LSS (SDM vol. 2B, MOV "Operation",
    POP "Operation"; QEMU's ``helper_load_seg``).  Generated code calls it; a load of SS
    marks the instruction for the MOV SS / POP SS hold of debug events (SDM vol. 3A,
    6.8.3; accel/interp/debug.py tells LSS apart)."""
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
            dpl = descriptor_dpl(hi)
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
            env.segs[seg] = descriptor_cache(sel, lo, mark_accessed(core, sel, hi))
    core.segbase[seg] = env.segs[seg].base
    core.mode_changed()     # SS sets the stack size; any of ES CS SS DS may end flatness
    if seg == R_SS:
        core.debug.ss_loaded = True


def set_cs(core: InterpCpu, cache: SegmentCache, rip: int) -> None:
    env = core.env
    env.segs[R_CS] = cache
    code64 = bool(env.efer & EFER_LMA) and bool(cache.flags & DESC_L_MASK)
    if not code64:
        rip &= 0xFFFFFFFF if cache.flags & DESC_B_MASK else 0xFFFF
    env.rip = rip
    core.segbase[R_CS] = cache.base
    core.mode_changed()


def null_outer_data_segs(core: InterpCpu, new_cpl: int) -> None:
    """Return to an outer privilege level: ES, DS, FS and GS that hold a data or
    non-conforming code segment with DPL < the new CPL get a null selector (SDM vol. 2A,
    IRET "RETURN-TO-OUTER-PRIVILEGE-LEVEL", which IA-32e mode reaches too; vol. 2B RET
    the same rule).  Only the selector is nulled: the cache keeps its base and limit and
    becomes unusable (P=0), so in 64-bit mode FS and GS keep the base WRMSR or a load
    gave them, and elsewhere any access through the register is #GP(0)
    (accel/interp/segcheck.py).  A register already null is left alone.

    The SDM's pseudo-code and QEMU's TCG null them; interp follows the manual
    (test_exec.py, test_iretq_to_outer_level_nulls_segments_more_privileged_than_the_new_cpl)."""
    env = core.env
    for seg in (R_ES, R_DS, R_FS, R_GS):
        cache = env.segs[seg]
        if cache.selector & 0xFFFC == 0:
            continue
        flags = cache.flags
        conforming_code = flags & DESC_CS_MASK and flags & DESC_C_MASK
        if not conforming_code and (flags >> DESC_DPL_SHIFT) & 3 < new_cpl:
            env.segs[seg] = SegmentCache(0, cache.base, cache.limit, flags & ~DESC_P_MASK)


def load_system_seg(core: InterpCpu, which: str, sel: int) -> None:
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
    stype = descriptor_type(hi)
    ok = (SYS_TSS16, SYS_TSS32) if which == "ltr" else (SYS_LDT,)   # available TSS, LDT
    if stype not in ok:
        raise Fault(EXCP_GP, sel & 0xFFFC, why=f"{which}: descriptor type {stype:#x}")
    if not hi & DESC_P_MASK:
        raise Fault(EXCP_NP, sel & 0xFFFC, why=f"{which}: {sel:#x} not present")
    cache = descriptor_cache(sel, lo, hi)
    if env.efer & EFER_LMA:
        cache.base |= read_descriptor_hi64(core, sel) << 32
    if which == "ltr":
        busy = hi | (TSS_BUSY << DESC_TYPE_SHIFT)
        core.mmu.write_bytes_linear(env.gdt.base + (sel & ~7) + 4, busy.to_bytes(4, "little"))
        cache.flags |= TSS_BUSY << DESC_TYPE_SHIFT
        env.tr = cache
    else:
        env.ldt = cache


def syscall(core: InterpCpu, next_ip: int) -> None:
    """SYSCALL in 64-bit mode (SDM vol. 2B, SYSCALL, Operation)."""
    env = core.env
    if not env.efer & EFER_SCE:
        raise Fault(EXCP_UD, why="syscall with EFER.SCE clear")
    env.regs[1] = next_ip
    env.regs[11] = core.get_flags() & ~RF_MASK          # R11 = RFLAGS (RF cleared)
    core.cc = None
    sel = (env.star >> 32) & 0xFFFC
    env.segs[R_CS] = SegmentCache(sel, 0, 0xFFFFFFFF, _FLAT | DESC_L_MASK | _CODE)   # DPL 0
    env.segs[R_SS] = SegmentCache(sel + 8, 0, 0xFFFFFFFF, _FLAT | DESC_B_MASK | _DATA)
    env.eflags = (env.regs[11] & ~env.fmask & 0x3F7FD7) | 2
    env.rip = env.lstar
    core.mode_changed()
    core.debug.flags_changed()


def sysret(core: InterpCpu, size: int) -> None:
    """SYSRET to CPL 3: 64-bit (REX.W) or compatibility mode (SDM vol. 2B, SYSRET)."""
    env = core.env
    if not env.efer & EFER_SCE:
        raise Fault(EXCP_UD, why="sysret with EFER.SCE clear")
    base = (env.star >> 48) & 0xFFFF
    if size == 8:
        env.segs[R_CS] = SegmentCache((base + 16) | 3, 0, 0xFFFFFFFF,
                                      _FLAT | DESC_L_MASK | _DPL3 | _CODE)
        env.rip = env.regs[1]
    else:
        env.segs[R_CS] = SegmentCache(base | 3, 0, 0xFFFFFFFF,
                                      _FLAT | DESC_B_MASK | _DPL3 | _CODE)
        env.rip = env.regs[1] & 0xFFFFFFFF
    env.segs[R_SS] = SegmentCache((base + 8) | 3, 0, 0xFFFFFFFF,
                                  _FLAT | DESC_B_MASK | _DPL3 | _DATA)
    env.eflags = (env.regs[11] & 0x3C7FD7) | 2
    core.cc = None
    core.mode_changed()
    core.debug.flags_changed()


#: System descriptor types LAR/LSL accept (SDM vol. 2A, LAR Table 3-57, LSL Table 3-61):
#: legacy mode, then IA-32e mode (only LDT, 64-bit TSS available/busy, 64-bit call gate).
_LAR_TYPES = ({SYS_TSS16, SYS_LDT, SYS_TSS16_BUSY, GATE_CALL16, GATE_TASK, SYS_TSS32,
               SYS_TSS32_BUSY, GATE_CALL32}, {SYS_LDT, SYS_TSS32, SYS_TSS32_BUSY, GATE_CALL32})
_LSL_TYPES = ({SYS_TSS16, SYS_LDT, SYS_TSS16_BUSY, SYS_TSS32, SYS_TSS32_BUSY},
              {SYS_LDT, SYS_TSS32, SYS_TSS32_BUSY})


def check_selector(core: InterpCpu, which: str, sel: int) -> int | None:
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
    if not in_table(core, sel):
        return None
    raw = core.mmu.read_bytes(table.base + (sel & ~7), 8)
    lo, hi = int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:], "little")
    dpl = descriptor_dpl(hi)
    conforming = hi & (DESC_S_MASK | DESC_CS_MASK | DESC_C_MASK) == (
        DESC_S_MASK | DESC_CS_MASK | DESC_C_MASK)
    if not hi & DESC_S_MASK:
        ia32e = bool(env.efer & EFER_LMA)
        types = (_LAR_TYPES if which == "lar" else _LSL_TYPES)[ia32e]
        if which in ("verr", "verw") or descriptor_type(hi) not in types:
            return None
        if ia32e:
            # Every system descriptor LAR/LSL take in IA-32e mode is 16 bytes (SDM vol.
            # 3A, 3.5.2 and 7.2.3; 5.8.3.1): its upper half must be in the table too, and
            # it is read (a #PF there is the instruction's).
            if not in_table(core, sel, 16):
                return None
            core.mmu.read_bytes(table.base + (sel & ~7) + 8, 8)
    elif which == "verr" and hi & DESC_CS_MASK and not hi & DESC_R_MASK:
        return None                                       # execute-only code
    elif which == "verw" and (hi & DESC_CS_MASK or not hi & DESC_W_MASK):
        return None                                       # code, or read-only data
    if not conforming and (dpl < env.cpl or dpl < (sel & 3)):
        return None
    if which == "lar":
        return hi & DESCRIPTOR_ATTR_MASK
    if which == "lsl":
        return descriptor_limit(lo, hi)
    return 1


def sysenter(core: InterpCpu) -> None:
    """SYSENTER (SDM vol. 2B, SYSENTER, Operation): #GP(0) in real mode or with
    IA32_SYSENTER_CS[15:2] = 0; clears VM IF RF; flat CPL-0 CS = SYSENTER_CS & FFFCH
    (64-bit code in IA-32e mode, else 32-bit) and SS = CS + 8; RSP/RIP from
    IA32_SYSENTER_ESP/EIP, truncated to 32 bits outside IA-32e mode."""
    env = core.env
    if not env.cr[0] & CR0_PE:
        raise Fault(EXCP_GP, 0, why="sysenter in real mode")
    if not env.sysenter_cs & 0xFFFC:
        raise Fault(EXCP_GP, 0, why="sysenter with IA32_SYSENTER_CS null")
    ia32e = bool(env.efer & EFER_LMA)
    env.eflags = core.get_flags() & ~(VM_MASK | IF_MASK | RF_MASK)
    core.cc = None
    sel = env.sysenter_cs & 0xFFFC
    code = _FLAT | _CODE | (DESC_L_MASK if ia32e else DESC_B_MASK)
    env.segs[R_CS] = SegmentCache(sel, 0, 0xFFFFFFFF, code)
    env.segs[R_SS] = SegmentCache(sel + 8, 0, 0xFFFFFFFF, _FLAT | DESC_B_MASK | _DATA)
    mask = 0xFFFFFFFFFFFFFFFF if ia32e else 0xFFFFFFFF
    env.regs[4] = env.sysenter_esp & mask
    env.rip = env.sysenter_eip & mask
    core.segbase[R_CS] = core.segbase[R_SS] = 0
    core.mode_changed()
    core.debug.flags_changed()


def sysexit(core: InterpCpu, size: int) -> None:
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
    env.segs[R_CS] = SegmentCache(sel, 0, 0xFFFFFFFF, _FLAT | _DPL3 | _CODE | code)
    env.segs[R_SS] = SegmentCache((sel + 8) & 0xFFFF, 0, 0xFFFFFFFF,
                                  _FLAT | DESC_B_MASK | _DPL3 | _DATA)
    env.regs[4] = rcx
    env.rip = rdx
    core.segbase[R_CS] = core.segbase[R_SS] = 0
    core.mode_changed()
    core.debug.flags_changed()
