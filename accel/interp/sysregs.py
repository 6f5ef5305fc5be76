"""Control registers, MSRs and the time-stamp counter (Intel SDM vol. 3A, 2.5 and
vol. 4; QEMU's ``helper_write_crN``, ``helper_rdmsr``, ``helper_wrmsr``,
``helper_rdtsc`` in ``target/i386/tcg/sysemu/misc_helper.c``).

Generated code calls these (MOV to CRn, LMSW, RDMSR, WRMSR, RDTSC, RDTSCP) after
the block has written its state back; a task switch loads CR3 through
:func:`write_cr` too.

TSC: RDTSC reads ``time.monotonic_ns()`` since the core was created plus
``env.tsc_offset`` (a 1 GHz invariant, monotonic counter; WRMSR to
IA32_TIME_STAMP_COUNTER adjusts the offset).
"""

from __future__ import annotations

import time

from pyqemu.accel.interp.errors import EXCP_GP, EXCP_UD, Fault
from pyqemu.accel.interp.state import InterpCpu
from pyqemu.target.i386 import cpu_state as cs

__all__ = ["MSR_FIELDS", "rdmsr", "rdtsc", "write_cr", "wrmsr"]


def rdtsc(core: InterpCpu) -> int:
    """The TSC (SDM vol. 2B, RDTSC): nanoseconds since the core was made, plus the offset."""
    return (time.monotonic_ns() - core.tsc_epoch + core.env.tsc_offset) & 0xFFFFFFFFFFFFFFFF


def write_cr(core: InterpCpu, n: int, value: int) -> None:
    """MOV to CRn, LMSW, a task switch's CR3 (SDM vol. 2A, MOV to/from control registers;
    vol. 3A, 2.5).  Flushes the TLB and recomputes the block key."""
    env = core.env
    if n == 0:
        if value & cs.CR0_PG and not value & cs.CR0_PE:
            raise Fault(EXCP_GP, 0, why="CR0.PG without CR0.PE")
        old = env.cr[0]
        env.cr[0] = value | cs.CR0_ET
        if (old ^ value) & cs.CR0_PG:
            # Long mode becomes active when paging is enabled with EFER.LME (SDM 9.8.5).
            if value & cs.CR0_PG and env.efer & cs.EFER_LME:
                if not env.cr[4] & cs.CR4_PAE:
                    env.cr[0] = old
                    raise Fault(EXCP_GP, 0, why="long mode without CR4.PAE")
                env.efer |= cs.EFER_LMA
            elif not value & cs.CR0_PG:
                env.efer &= ~cs.EFER_LMA
    elif n in (2, 3, 4, 8):
        env.cr[n] = value
    else:
        raise Fault(EXCP_UD, why=f"mov to cr{n}")
    core.mmu.flush()
    core.mode_changed()
    if n == 4:
        core.debug.update()           # CR4.DE enables I/O breakpoints (R/W=10)


#: MSRs that are fields of CPUX86State, by index.
MSR_FIELDS = {cs.MSR_STAR: "star", cs.MSR_LSTAR: "lstar", cs.MSR_CSTAR: "cstar",
              cs.MSR_FMASK: "fmask", cs.MSR_KERNELGSBASE: "kernelgsbase",
              cs.MSR_IA32_SYSENTER_CS: "sysenter_cs", cs.MSR_IA32_SYSENTER_ESP: "sysenter_esp",
              cs.MSR_IA32_SYSENTER_EIP: "sysenter_eip", cs.MSR_TSC_AUX: "tsc_aux",
              cs.MSR_PAT: "pat", cs.MSR_IA32_APICBASE: "apic_base",
              cs.MSR_IA32_MISC_ENABLE: "misc_enable", cs.MSR_EFER: "efer"}


def rdmsr(core: InterpCpu, index: int) -> int:
    """RDMSR: the MSRs CPUX86State models; #GP(0) for any other (SDM vol. 2B, RDMSR)."""
    env = core.env
    if index == cs.MSR_IA32_TSC:
        return rdtsc(core)
    if index == cs.MSR_FSBASE:
        return env.segs[cs.R_FS].base
    if index == cs.MSR_GSBASE:
        return env.segs[cs.R_GS].base
    name = MSR_FIELDS.get(index)
    if name is not None:
        return int(getattr(env, name))
    if index in env.msrs:
        return env.msrs[index]
    raise Fault(EXCP_GP, 0, why=f"rdmsr of unknown MSR {index:#x}")


def wrmsr(core: InterpCpu, index: int, value: int) -> None:
    """WRMSR (SDM vol. 2B, WRMSR): the MSRs CPUX86State models; #GP(0) for any other and
    for reserved EFER bits."""
    env = core.env
    if index == cs.MSR_IA32_TSC:
        env.tsc_offset = value - (time.monotonic_ns() - core.tsc_epoch)
    elif index == cs.MSR_FSBASE:
        env.segs[cs.R_FS].base = value
    elif index == cs.MSR_GSBASE:
        env.segs[cs.R_GS].base = value
    elif index == cs.MSR_EFER:
        # LMA is read-only: it follows CR0.PG and LME (SDM vol. 3A, 2.2.1).
        if value & ~(cs.EFER_SCE | cs.EFER_LME | cs.EFER_LMA | cs.EFER_NXE):
            raise Fault(EXCP_GP, 0, why=f"reserved EFER bits {value:#x}")
        env.efer = (value & ~cs.EFER_LMA) | (env.efer & cs.EFER_LMA)
    elif index in MSR_FIELDS:
        setattr(env, MSR_FIELDS[index], value)
    elif index in env.msrs:
        env.msrs[index] = value
    else:
        raise Fault(EXCP_GP, 0, why=f"wrmsr of unknown MSR {index:#x}")
    core.mode_changed()
