"""Protected-mode I/O permission: IOPL, then the TSS I/O permission bit map.

Intel SDM vol. 1, 19.5 "Protected-Mode I/O" (13.5 / 18.5 in older editions):

- 19.5.1 "I/O Privilege Level": in protected mode, IN, INS, OUT and OUTS at
  CPL <= IOPL go ahead with no further check.
- 19.5.2 "I/O Permission Bit Map": at CPL > IOPL, or in virtual-8086 mode, the
  processor looks the port up in the bit map of the current TSS.  The map starts
  at the 16-bit "I/O map base address" at offset 66H of the TSS (the same offset
  in the 32-bit TSS, vol. 3A 7.2.1 Figure 7-2, and the 64-bit TSS, 7.7 Figure
  7-11); one bit per port, and *every* bit of the ``size`` consecutive ports of
  the access must be 0.  Because an access may straddle a byte of the map, the
  processor "reads two bytes from the I/O permission bit map for every access";
  both must lie within the TSS limit, hence the all-ones byte the SDM asks for
  after the map.  Ports past the limit count as set bits.

The IN/INS/OUT/OUTS pages of vol. 2A/2B say the same in their "Operation":
``IF ((PE = 1) and ((CPL > IOPL) or (VM = 1)))`` then any set permission bit (or
one that cannot be read) is #GP(0).  The TR's cached base and limit are used
(vol. 3A 7.2.4), not the descriptor in the GDT; the map bytes are implicit
supervisor-mode reads (vol. 3A 4.6), so a not-present TSS page is a #PF.

A 16-bit TSS has no I/O map base field (vol. 3A 7.6, Figure 7-12), so with a
16-bit TSS in TR (type 1 or 3), or a TR cache that holds no present TSS at all,
every checked access is #GP(0).
"""

from __future__ import annotations

from pyqemu.accel.interp.errors import EXCP_GP, Fault
from pyqemu.accel.interp.state import InterpCpu
from pyqemu.target.i386.cpu_state import CR0_PE, DESC_P_MASK, IOPL_MASK, VM_MASK
from pyqemu.target.i386.descriptors import SYS_TSS32, SYS_TSS32_BUSY, TSS32, TSS64

__all__ = ["IO_MAP_BASE", "TSS32_TYPES", "io_bitmap_allows", "io_check_needed",
           "io_perm_check"]

#: The I/O map base address field: offset 66H of a 32-bit and of a 64-bit TSS.
IO_MAP_BASE = TSS32["iomap_base"]
if TSS64["iomap_base"] != IO_MAP_BASE:             # a programmer error in the layouts
    raise AssertionError("the 32- and 64-bit TSS must hold the I/O map base alike")
#: Available / busy 32-bit TSS (a 64-bit TSS in IA-32e mode).
TSS32_TYPES = (SYS_TSS32, SYS_TSS32_BUSY)


def io_check_needed(eflags: int, cr0: int, cpl: int) -> bool:
    """Whether an I/O instruction must consult the bit map (SDM vol. 1, 19.5.1)."""
    return bool(cr0 & CR0_PE) and (cpl > (eflags & IOPL_MASK) >> 12 or bool(eflags & VM_MASK))


def io_bitmap_allows(core: InterpCpu, port: int, size: int) -> bool:
    """True when the current TSS's bit map allows ``size`` bytes at ``port`` (19.5.2).

    Assumes the check is needed (:func:`io_check_needed`); may raise the #PF of
    reading the TSS.
    """
    tr = core.env.tr
    if not tr.flags & DESC_P_MASK or tr.type not in TSS32_TYPES:
        return False
    # The 2-byte map base at 66H-67H must itself be inside the segment.
    if tr.limit < IO_MAP_BASE.offset + IO_MAP_BASE.size - 1:
        return False
    read = core.mmu.read_bytes
    lam = core.la_mask
    base = int.from_bytes(read((tr.base + IO_MAP_BASE.offset) & lam, IO_MAP_BASE.size),
                          "little")
    off = base + (port >> 3)
    # The processor reads two bytes whatever the access size: both within the limit.
    if off + 1 > tr.limit:
        return False
    bits = int.from_bytes(read((tr.base + off) & lam, 2), "little")
    return not bits >> (port & 7) & ((1 << size) - 1)


def io_perm_check(core: InterpCpu, port: int, size: int) -> None:
    """#GP(0) unless IN/OUT/INS/OUTS of ``size`` bytes at ``port`` is allowed now.

    Called by generated code (IN/OUT: ``io_perm_check(S, port, size)``) and by the
    INS/OUTS runtime; cheap when CPL <= IOPL, which the generated code also tests
    inline before calling.
    """
    env = core.env
    if not io_check_needed(env.eflags, env.cr[0], env.cpl):
        return
    if not io_bitmap_allows(core, port & 0xFFFF, size):
        raise Fault(EXCP_GP, 0, why=f"I/O port {port & 0xFFFF:#x} ({size} bytes) denied by "
                                    f"IOPL {(env.eflags & IOPL_MASK) >> 12} and the TSS bit map")
