"""The names a translation block's namespace holds: the one table of the generated-code ABI.

A block is Python source compiled into a function (:mod:`accel.interp.translate`,
docs/architecture.md "The generated-code ABI of interp"); whatever it calls or
reads that is not one of its own locals is a global of the dict this module
builds, one dict per core.  :data:`NAMES` lists every one: its name, what it is,
how generated code uses it, and which module provides it.
:func:`block_namespace` builds the dict and refuses to hand out one that does not
hold exactly the listed names, and a test checks that every global a compiled
block reads is listed.

Conventions:

* helpers that see the whole CPU take it first, as ``S`` (``far_jump(S, sel, off,
  next_ip)``); the block has written its registers and flags back before it calls
  one (``Ctx.sync``), and ends right after;
* the memory fast paths (``TR``/``TW`` with ``U``/``P``), the loads and stores
  ``ldN``/``stN``/``lwN``, ``LINK``, ``KICK`` and the lazy-flag evaluators are
  bound once per core, so a block reaches each with one global lookup and no
  attribute lookup, and calls it directly;
* besides the globals, a block function closes over ``L0``, ``L1``... (its
  chaining cells, ``[next block function or None]``) and ``JC`` (the lookup of
  this mode's blocks by RIP, for computed jumps): the ``make_<name>`` factory
  around each block takes them as arguments.
"""

from __future__ import annotations

import builtins
import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pyqemu.accel.interp import excp, far, seg, string_rt, sysregs
from pyqemu.accel.interp.eflags import load_eflags
from pyqemu.accel.interp.errors import CpuStop, Fault
from pyqemu.accel.interp.flags import PARITY, TEMPLATES
from pyqemu.accel.interp.ioperm import io_perm_check
from pyqemu.accel.interp.mmu import Mmu
from pyqemu.accel.interp.ops_bcd import bcd_adjust
from pyqemu.accel.interp.ops_muldiv import div_signed, div_unsigned
from pyqemu.accel.interp.portio import io_read, io_write
from pyqemu.accel.interp.state import InterpCpu
from pyqemu.accel.interp.translate import BlockFn

__all__ = ["NAMES", "BlockCpu", "CpuidFn", "Name", "block_namespace"]

CpuidFn = Callable[[int, int], tuple[int, int, int, int]]

_SIZES = (1, 2, 4, 8)
_PACKED = {2: "H", 4: "I", 8: "Q"}          # 1-byte accesses index the memoryview instead
_WIDTHS = (8, 16, 32, 64)


class BlockCpu(InterpCpu, Protocol):
    """The CPU a namespace is built for: the helpers' view plus what only blocks use."""

    @property
    def mmu(self) -> Mmu:
        """The softmmu, with its TLB dicts and the ``ldN``/``stN``/``lwN`` closures."""

    @property
    def cpuid(self) -> CpuidFn:
        """CPUID (leaf, subleaf) -> (EAX, EBX, ECX, EDX)."""

    def link(self, cell: list[Any], rip: int) -> BlockFn | None:
        """Chain an exit to the cached block at ``rip``, if any (``tb_add_jump``)."""


@dataclass(frozen=True)
class Name:
    """One global of a block's namespace."""

    name: str
    what: str
    use: str          # how generated code uses it (its signature, for a callable)
    provider: str     # where it comes from


NAMES: tuple[Name, ...] = (
    # -- state ----------------------------------------------------------------------------
    Name("S", "the core (InterpCore, an InterpCpu)",
         "S.cc = (EV, a, b, r, carry) | None; S.icount += n; S.limit; S.smc; S.get_flags();"
         " the first argument of every helper", "cpu_exec.InterpCore"),
    Name("env", "the architectural state (CPUX86State)",
         "env.eflags, env.rip, env.segs[i], env.cr[n], env.dr[n], env.gdt ...",
         "InterpCore.env"),
    Name("R", "env.regs: the 16 general registers, read into locals g0..g15 at entry",
         "gN = R[N]; R[N] = gN at every way out", "InterpCore.env.regs"),
    Name("SB", "segment bases by register number, read into locals sg0..sg5 at entry",
         "sgN = SB[N]; SB[5] = ... (SWAPGS)", "InterpCore.segbase"),
    Name("KICK", "whatever asks the vCPU to stop", "KICK.exit_request (polled by looping "
         "blocks)", "InterpCore.kick"),
    # -- classes and constants -----------------------------------------------------------
    Name("Fault", "a guest exception", "raise Fault(vector, error_code=None, cr2=None, "
         "why='')", "errors.Fault"),
    Name("CpuStop", "ask the exec loop to return a stop reason", "raise CpuStop(EXCP_HLT)",
         "errors.CpuStop"),
    Name("PARITY", "PF of each byte value", "PARITY[r & 0xFF] -> 0 | 1", "flags.PARITY"),
    # -- memory: the TLB fast paths and the loads/stores behind them ---------------------
    Name("TR", "the read TLB's get", "TR(la >> 12) -> (memoryview, delta) | None",
         "mmu.Mmu.tlb_r.get"),
    Name("TW", "the write TLB's get (no entry for pages of translated code)",
         "TW(la >> 12) -> (memoryview, delta) | None", "mmu.Mmu.tlb_w.get"),
    *(Name(f"U{n}", f"little-endian {8 * n}-bit unpack", f"U{n}(view, offset)[0] -> int",
           "struct.Struct.unpack_from") for n in _PACKED),
    *(Name(f"P{n}", f"little-endian {8 * n}-bit pack", f"P{n}(view, offset, value)",
           "struct.Struct.pack_into") for n in _PACKED),
    *(Name(f"ld{n}", f"{n}-byte load at the current CPL (TLB miss, page split, MMIO)",
           f"ld{n}(la) -> int", "mmu.Mmu helpers") for n in _SIZES),
    *(Name(f"st{n}", f"{n}-byte store at the current CPL (invalidates translated code)",
           f"st{n}(la, value)", "mmu.Mmu helpers") for n in _SIZES),
    *(Name(f"lw{n}", f"{n}-byte read of a read-modify-write, checked as a write",
           f"lw{n}(la) -> int", "mmu.Mmu helpers") for n in _SIZES),
    Name("flush_page", "INVLPG", "flush_page(la)", "mmu.Mmu.flush_page"),
    # -- lazy flags and chaining ----------------------------------------------------------
    *(Name(f"EV_{kind}_{w}", f"the six arithmetic flags of a {w}-bit {kind}",
           "EV(a, b, r, carry provider) -> EFLAGS bits; stored in S.cc", "flags.LazyFlags")
      for kind in TEMPLATES for w in _WIDTHS),
    Name("LINK", "chain an exit to the cached block at rip (fills the cell)",
         "LINK(Ln, rip) -> block function | None", "InterpCore.link"),
    # -- pure helpers -----------------------------------------------------------------------
    Name("BCD", "DAA DAS AAA AAS AAM AAD", "BCD(kind, ax, cf, af, imm) -> (ax, cf, af)",
         "ops_bcd.bcd_adjust"),
    Name("DIVU", "DIV of the double-width dividend (#DE)", "DIVU(a, b, size) -> (q, r)",
         "ops_muldiv.div_unsigned"),
    Name("DIVS", "IDIV (#DE)", "DIVS(a, b, size) -> (q, r)", "ops_muldiv.div_signed"),
    Name("CPUID", "the CPU model's CPUID", "CPUID(eax, ecx) -> (eax, ebx, ecx, edx)",
         "InterpCore.cpuid"),
    # -- port I/O -------------------------------------------------------------------------
    Name("IOR", "IN", "IOR(port, size) -> int", "portio.io_read (bound to the core)"),
    Name("IOW", "OUT", "IOW(port, value, size)", "portio.io_write (bound to the core)"),
    Name("io_perm_check", "IOPL and the TSS I/O bit map (#GP(0))",
         "io_perm_check(S, port, size)", "ioperm.io_perm_check"),
    # -- helpers that see the whole CPU (the block synced and ends after them) -------------
    Name("far_jump", "JMP far", "far_jump(S, sel, off, next_ip)", "far.far_jump"),
    Name("far_call", "CALL far", "far_call(S, sel, off, size, next_ip)", "far.far_call"),
    Name("far_return", "RET far", "far_return(S, size, imm16)", "far.far_return"),
    Name("iret", "IRET/IRETD/IRETQ", "iret(S, size, next_ip)", "excp.iret"),
    Name("soft_int", "INT n / INT3 / INTO / INT1", "soft_int(S, vector, next_ip, check_dpl)",
         "excp.soft_int"),
    Name("load_eflags", "POPF", "load_eflags(S, value, size)", "eflags.load_eflags"),
    Name("load_seg", "MOV/POP Sreg, LDS/LES/LFS/LGS/LSS", "load_seg(S, seg, sel)",
         "seg.load_seg"),
    Name("load_system_seg", "LTR, LLDT", "load_system_seg(S, 'ltr' | 'lldt', sel)",
         "seg.load_system_seg"),
    Name("check_selector", "LAR LSL VERR VERW", "check_selector(S, mnemonic, sel) -> "
         "int | None", "seg.check_selector"),
    Name("syscall", "SYSCALL", "syscall(S, next_ip)", "seg.syscall"),
    Name("sysret", "SYSRET", "sysret(S, size)", "seg.sysret"),
    Name("sysenter", "SYSENTER", "sysenter(S)", "seg.sysenter"),
    Name("sysexit", "SYSEXIT", "sysexit(S, size)", "seg.sysexit"),
    Name("rep_string", "REP string instructions, INS, OUTS",
         "rep_string(S, kind, size, adsize, seg, rep, next_ip)", "string_rt.rep_string"),
    Name("write_cr", "MOV to CRn, LMSW", "write_cr(S, n, value)", "sysregs.write_cr"),
    Name("rdmsr", "RDMSR", "rdmsr(S, ecx) -> int", "sysregs.rdmsr"),
    Name("wrmsr", "WRMSR", "wrmsr(S, ecx, value)", "sysregs.wrmsr"),
    Name("rdtsc", "RDTSC, RDTSCP", "rdtsc(S) -> int", "sysregs.rdtsc"),
    Name("debug_update", "after MOV to DRn: re-decode DR0-DR3/DR7", "debug_update()",
         "debug.GuestDebug.update"),
)

#: The helpers every namespace holds as they are (unbound: they take ``S`` first).
_HELPERS: dict[str, Callable[..., Any]] = {
    "BCD": bcd_adjust, "DIVU": div_unsigned, "DIVS": div_signed,
    "io_perm_check": io_perm_check,
    "far_jump": far.far_jump, "far_call": far.far_call, "far_return": far.far_return,
    "iret": excp.iret, "soft_int": excp.soft_int, "load_eflags": load_eflags,
    "load_seg": seg.load_seg, "load_system_seg": seg.load_system_seg,
    "check_selector": seg.check_selector, "syscall": seg.syscall, "sysret": seg.sysret,
    "sysenter": seg.sysenter, "sysexit": seg.sysexit, "rep_string": string_rt.rep_string,
    "write_cr": sysregs.write_cr, "rdmsr": sysregs.rdmsr, "wrmsr": sysregs.wrmsr,
    "rdtsc": sysregs.rdtsc,
}


def block_namespace(cpu: BlockCpu) -> dict[str, Any]:
    """The globals of every block of ``cpu``: exactly :data:`NAMES` (and ``__builtins__``)."""
    mmu = cpu.mmu
    ns: dict[str, Any] = {
        "S": cpu, "env": cpu.env, "R": cpu.env.regs, "SB": cpu.segbase, "KICK": cpu.kick,
        "Fault": Fault, "CpuStop": CpuStop, "PARITY": PARITY,
        "TR": mmu.tlb_r.get, "TW": mmu.tlb_w.get,
        **{f"U{n}": struct.Struct(f"<{c}").unpack_from for n, c in _PACKED.items()},
        **{f"P{n}": struct.Struct(f"<{c}").pack_into for n, c in _PACKED.items()},
        **mmu.helpers, "flush_page": mmu.flush_page,
        **{f"EV_{kind}_{w}": fn for (kind, w), fn in cpu.lazy.eval.items()},
        "LINK": cpu.link, "CPUID": cpu.cpuid,
        "IOR": functools.partial(io_read, cpu), "IOW": functools.partial(io_write, cpu),
        "debug_update": cpu.debug.update,
        **_HELPERS,
    }
    listed = {n.name for n in NAMES}
    if set(ns) != listed or len(listed) != len(NAMES):    # a programmer error
        raise RuntimeError(f"interp: block namespace and NAMES differ: "
                           f"{sorted(set(ns) ^ listed)}")
    ns["__builtins__"] = builtins.__dict__
    return ns
