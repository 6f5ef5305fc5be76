"""The guest's own debug facilities: EFLAGS.TF single-step and DR0-DR3/DR6/DR7 breakpoints.

Intel SDM vol. 3A (3B in older editions), chapter 18, as the interpreter models it:

* 18.2: DR0-DR3 hold linear addresses; DR7 enables each with L0-L3/G0-G3 (bits 0-7)
  and gives its R/W (00 execute, 01 data write, 10 I/O with CR4.DE, 11 data read or
  write) and LEN (00 one byte, 01 two, 11 four, 10 eight) fields at bits 16-31.  The
  processor masks the address's low bits by LEN (18.2.5: unaligned breakpoints are
  aligned down).  DR6 reports B0-B3 (bits 0-3), BD (13), BS (14), BT (15); B0-B3
  are written on each debug exception, the other bits are only ever set.
* 18.3.1.1: an instruction breakpoint is a fault, checked before the instruction
  runs (RIP = the instruction); EFLAGS.RF set suppresses it for one instruction and
  the processor clears RF when an instruction completes.
* 18.3.1.2 / 18.3.1.3: data and I/O breakpoints are traps, taken after the
  instruction that made the access; for a repeated string instruction, after the
  iteration that made it.
* 18.3.1.4: TF set at the start of an instruction traps after it with DR6.BS, so the
  POPF/IRET that sets TF does not trap after itself and the one that clears it does.
  A REP string instruction traps after each iteration (RIP stays on it, RF=1 in the
  pushed image).  INT n, INT3, INTO and the delivery of any exception clear TF in
  EFLAGS after pushing it, so the handler is not single-stepped and no trap follows
  the instruction that raised it.
* 6.8.3: after MOV SS or POP SS, debug exceptions and single-step traps are held
  until the boundary after the next instruction (LSS does not do this).
* 18.2.4: DR7.GD makes any MOV DRn a #DB fault with DR6.BD (generated inline by
  ``ops_system._mov_dr``).

Performance: :meth:`GuestDebug.update` sets ``core.dbg_armed`` whenever TF, RF, a
MOV-SS-held event, or any breakpoint enabled in DR7 is active.  Only then does the
exec loop run one instruction per block through :func:`step`; otherwise generated
code and the chained loop are exactly what they are without this module.  Data
breakpoints keep their pages off the softmmu TLB (as pages of translated code are
kept off its write side), so only the slow load/store paths, which call
:meth:`GuestDebug.check_data`, see watched accesses.

B0-B3 are reported for enabled breakpoints only: the SDM allows the processor to
set them also for conditions met by breakpoints not enabled in DR7; KVM's emulator
and QEMU report enabled ones, as this does.  The task-switch trap (the TSS T flag,
DR6.BT) is raised by :mod:`accel.interp.task`.
"""

from __future__ import annotations

from collections.abc import Callable

from pyqemu.accel.interp import excp
from pyqemu.accel.interp.errors import EXCP_DB, Fault
from pyqemu.accel.interp.state import InterpCpu
from pyqemu.target.i386.cpu_state import CR4_DE, RF_MASK, TF_MASK
from pyqemu.target.i386.paging import ACC_EXEC

DR6_B = 0xF
DR6_BD, DR6_BS, DR6_BT = 1 << 13, 1 << 14, 1 << 15
DR7_ENABLES = 0xFF
RW_EXEC, RW_WRITE, RW_IO, RW_RW = 0, 1, 2, 3
#: DR7 LENn encodings -> bytes (SDM vol. 3A, 18.2.4; 10b is 8 bytes in IA-32e mode).
LEN_BYTES = {0: 1, 1: 2, 2: 8, 3: 4}

# Prefix bytes that may precede MOV SS / POP SS (SDM vol. 2A, 2.1.1).
_PREFIXES = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3})


class GuestDebug:
    """The decoded DR0-DR3/DR7 of one core and the debug events of the current instruction."""

    def __init__(self, core: InterpCpu) -> None:
        self.core = core
        self.sig: tuple[int, ...] | None = None
        self.exec_bp: dict[int, int] = {}          # linear address -> B bits (R/W=00)
        self.watches: tuple[tuple[int, int, int, bool], ...] = ()   # (lo, hi, bit, reads too)
        self.io_watches: tuple[tuple[int, int, int], ...] = ()      # (lo, hi, bit)
        self.pages_r: frozenset[int] = frozenset()  # linear pages kept off the read TLB
        self.pages_w: frozenset[int] = frozenset()  # ... and off the write TLB
        self.hits = 0              # B bits of data/I/O breakpoints hit by this instruction
        self.held = 0              # DR6 bits held by MOV SS / POP SS for one instruction
        self.shadow = False        # the instruction follows a MOV SS / POP SS (6.8.3)
        self.ss_loaded = False     # the instruction loaded SS (set by seg.load_seg)
        self.event = False         # the instruction raised a software interrupt
        self.rep_partial = False   # a REP string instruction stopped after one iteration

    # -- DR7 decoding ------------------------------------------------------------------
    def update(self) -> None:
        """Re-read DR0-DR3, DR7 and CR4.DE if they changed; recompute ``core.dbg_armed``.

        Called after MOV to DRn, a CR4 write, POPF/IRET/SYSRET/SYSEXIT (which may set
        TF or RF) and :meth:`InterpCore.refresh` (state written between runs).
        """
        core = self.core
        env = core.env
        dr7 = env.dr[7]
        sig = (dr7 & 0xFFFF00FF, env.dr[0], env.dr[1], env.dr[2], env.dr[3],
               env.cr[4] & CR4_DE) if dr7 & DR7_ENABLES else (0,)
        if sig != self.sig:
            self.sig = sig
            self._decode(dr7)
        core.dbg_armed = bool(env.eflags & (TF_MASK | RF_MASK) or self.shadow or self.exec_bp
                              or self.watches or self.io_watches)

    def flags_changed(self) -> None:
        """TF or RF may have changed outside a block (POPF, IRET, SYSCALL, SYSRET,
        SYSENTER, SYSEXIT, a switch into VM86): :meth:`update` when it can matter."""
        if self.core.dbg_armed or self.core.env.eflags & (TF_MASK | RF_MASK):
            self.update()

    def _decode(self, dr7: int) -> None:
        env = self.core.env
        exec_bp: dict[int, int] = {}
        watches = []
        io_watches = []
        for n in range(4):
            if not dr7 >> (2 * n) & 3:
                continue
            rw = dr7 >> (16 + 4 * n) & 3
            length = LEN_BYTES[dr7 >> (18 + 4 * n) & 3]
            if rw == RW_EXEC:
                # The LEN of an instruction breakpoint must be 00 (18.2.4); the address
                # is compared with the instruction's first byte.
                exec_bp[env.dr[n]] = exec_bp.get(env.dr[n], 0) | 1 << n
                continue
            lo = env.dr[n] & ~(length - 1)
            if rw == RW_IO:
                if env.cr[4] & CR4_DE:         # R/W=10 is undefined without CR4.DE
                    io_watches.append((lo & 0xFFFF, (lo & 0xFFFF) + length, 1 << n))
                continue
            watches.append((lo, lo + length, 1 << n, rw == RW_RW))
        pages_r = frozenset(lo >> 12 for lo, _, _, reads in watches if reads)
        pages_w = frozenset(lo >> 12 for lo, _, _, _ in watches)
        self.exec_bp = exec_bp
        self.watches = tuple(watches)
        self.io_watches = tuple(io_watches)
        if pages_r != self.pages_r or pages_w != self.pages_w:
            self.pages_r, self.pages_w = pages_r, pages_w
            self.core.mmu.flush()       # drop the TLB entries that would bypass the checks

    # -- called from the memory and I/O slow paths -------------------------------------------
    def check_data(self, la: int, size: int, write: bool) -> None:
        """A data access of ``size`` bytes at linear ``la`` (18.3.1.2): note the hits."""
        end = la + size
        for lo, hi, bit, reads in self.watches:
            if la < hi and lo < end and (write or reads):
                self.hits |= bit

    def check_io(self, port: int, size: int) -> None:
        """An I/O access (18.3.1.3, R/W=10 with CR4.DE): note the hits."""
        end = port + size
        for lo, hi, bit in self.io_watches:
            if port < hi and lo < end:
                self.hits |= bit


def _movss_or_popss(core: InterpCpu, la: int) -> bool:
    """Whether the instruction at ``la`` (which loaded SS) is MOV SS or POP SS, not LSS.

    MOV Sreg (8E) and POP SS (17) are one-byte opcodes; LSS is 0F B2.  The bytes were
    fetched a moment ago to translate the instruction, so the read cannot fault.
    """
    for k in range(15):
        b = core.mem.read(core.mmu.translate((la + k) & core.la_mask, ACC_EXEC), 1)
        if b in _PREFIXES or (core.mode.code == 64 and 0x40 <= b <= 0x4F):
            continue
        return b != 0x0F
    return False


def _raise_db(core: InterpCpu, dr6_bits: int) -> None:
    """Deliver #DB (vector 1, no error code: SDM vol. 3A, 6.15 "Interrupt 1") with DR6
    updated: B0-B3 replaced by this exception's, BD/BS/BT added (18.2.3)."""
    env = core.env
    env.dr[6] = (env.dr[6] & ~DR6_B) | dr6_bits
    excp.deliver(core, Fault(EXCP_DB, why=f"debug exception, DR6 bits {dr6_bits:#x}"))


def step(dbg: GuestDebug, execute: Callable[[int], None]) -> int:
    """Run the instruction at RIP of ``dbg``'s CPU with the debug checks of chapter 18
    (the exec loop's path while ``dbg_armed``); returns how many
    events (an exception, a #DB) were delivered, which the caller's budget counts as
    steps of their own.

    ``execute(pc)`` runs the single-instruction block at ``pc`` (translating it if
    needed; a fetch fault is delivered like any fault of the instruction) and leaves
    RIP where the instruction went.
    """
    core = dbg.core
    env = core.env
    pc = env.rip
    flags = env.eflags
    held, dbg.held = dbg.held, 0
    shadow, dbg.shadow = dbg.shadow, False
    if flags & RF_MASK:
        # RF suppresses this instruction's breakpoints; the processor clears it when the
        # instruction completes (18.3.1.1): cleared now, an IRET may load it again.
        env.eflags = flags & ~RF_MASK
    elif dbg.exec_bp and not shadow:
        bits = dbg.exec_bp.get((core.mode.cs_base + pc) & core.la_mask)
        if bits:
            # A fault: RIP stays on the instruction and RF=0 is pushed (18.3.1.1), so the
            # handler sets RF in the image before IRET to get past it.
            _raise_db(core, bits)
            dbg.update()
            return 1
    dbg.hits = 0
    dbg.ss_loaded = dbg.event = dbg.rep_partial = False
    try:
        execute(pc)
    except Fault as f:
        # The instruction did not complete: no trap of its own, and events held by a MOV
        # SS before it are dropped; the exception clears TF for its handler.
        excp.deliver(core, f)
        dbg.update()
        return 1
    bits = dbg.hits | held
    if flags & TF_MASK and not dbg.event:
        bits |= DR6_BS
    if dbg.ss_loaded and not shadow and _movss_or_popss(
            core, (core.mode.cs_base + pc) & core.la_mask):
        # MOV SS / POP SS: hold this instruction's debug events, and inhibit the next
        # one's instruction breakpoints, until after the next instruction (6.8.3); a
        # MOV SS right after does not extend the hold.
        dbg.held, dbg.shadow = bits, True
        dbg.update()
        return 0
    if dbg.rep_partial:
        # Stopped between iterations: the image pushed for a trap here has RF=1, so that
        # returning to the instruction does not re-trigger its instruction breakpoint.
        env.eflags |= RF_MASK
    if bits:
        _raise_db(core, bits)
        dbg.update()
        return 1
    dbg.update()
    return 0


__all__ = ["DR6_B", "DR6_BD", "DR6_BS", "DR6_BT", "GuestDebug", "step"]
