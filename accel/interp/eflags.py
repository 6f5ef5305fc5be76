"""Loading EFLAGS from a popped image: POPF and IRET (QEMU's ``cpu_load_eflags``).

One rule set for both instructions (Intel SDM vol. 2B, POPF "Operation" and Table
4-16; vol. 2A, IRET "Operation"): which bits a given CPL, IOPL and operand size
may change.
"""

from __future__ import annotations

from pyqemu.accel.interp.state import InterpCpu
from pyqemu.target.i386.cpu_state import CR0_PE, IF_MASK, IOPL_MASK, RF_MASK

__all__ = ["POPF_MASK", "load_eflags"]

#: The bits POPF/IRET may load at CPL 0: CF PF AF ZF SF TF IF DF OF IOPL NT AC ID
#: (VM, VIP and VIF are never in it; RF is IRET's alone, below).
POPF_MASK = 0x247FD5


def load_eflags(cpu: InterpCpu, value: int, size: int, iret: bool = False) -> None:
    """The EFLAGS update rules shared by POPF and IRET (SDM vol. 2B, POPF, Table 4-16).

    Generated code calls it for POPF (``load_eflags(S, value, size)``); IRET in every
    mode calls it with ``iret``.  RF: POPF clears it; IRETD/IRETQ load it from the
    image (SDM vol. 2A, IRET: "EFLAGS(RF, AC, ID) <- tempEFLAGS" with a 32- or 64-bit
    operand size), which is how a #DB handler returns past an instruction breakpoint
    (SDM vol. 3A, 18.3.1.1).  A new TF or RF arms the exec loop's debug path
    (accel/interp/debug.py).
    """
    env = cpu.env
    cpl = env.cpl        # 0 in real mode, 3 in virtual-8086 mode
    iopl = (env.eflags & IOPL_MASK) >> 12
    mask = POPF_MASK
    if env.cr[0] & CR0_PE:
        # Protected and virtual-8086 mode (POPF "Operation": in VM86 at IOPL 3 the
        # IOPL is not modified; VM, VIP and VIF are never in the mask).
        if cpl > 0:
            mask &= ~IOPL_MASK
        if cpl > iopl:
            mask &= ~IF_MASK
    if size == 2:
        mask &= 0xFFFF
    env.eflags = (env.eflags & ~mask) | (value & mask) | 2
    env.eflags &= ~RF_MASK
    if iret and size != 2:
        env.eflags |= value & RF_MASK
    cpu.cc = None
    cpu.debug.flags_changed()
