"""Port I/O from guest code: the accesses of IN, OUT, INS and OUTS (QEMU's
``cpu_inb``/``cpu_outb`` through ``address_space_io``).

The permission check (IOPL, the TSS bit map) comes first and is
:mod:`accel.interp.ioperm`'s; here is the access itself: the guest's I/O
breakpoints (DR7 R/W=10 with CR4.DE, SDM vol. 3A, 18.3.1.3) see it, then the I/O
address space dispatches it.  A write that moves the A20 gate (port 92H, the
keyboard controller) flushes the TLB, whose entries hold A20-masked addresses.
"""

from __future__ import annotations

from pyqemu.accel.interp.state import InterpCpu

__all__ = ["io_read", "io_write"]


def io_read(core: InterpCpu, port: int, size: int) -> int:
    """Read ``size`` bytes from ``port``; all ones with no I/O space (a floating bus)."""
    if core.debug.io_watches:
        core.debug.check_io(port, size)
    io = core.io
    if io is None:
        return (1 << (8 * size)) - 1
    return int(io.read(port, size))


def io_write(core: InterpCpu, port: int, value: int, size: int) -> None:
    """Write ``size`` bytes of ``value`` to ``port``."""
    if core.debug.io_watches:
        core.debug.check_io(port, size)
    io = core.io
    if io is not None:
        env = core.env
        a20 = env.a20_mask
        io.write(port, value, size)
        if env.a20_mask != a20:      # port 92h / the keyboard controller moved A20
            core.mmu.flush()
