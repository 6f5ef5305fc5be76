"""What the interpreter's helpers may touch of the CPU: :class:`InterpCpu`, and the block key.

The helpers (exception delivery :mod:`.excp`, segments :mod:`.seg`, far transfers
:mod:`.far`, gates :mod:`.gates`, task switches :mod:`.task`, virtual-8086 mode
:mod:`.vm86`, EFLAGS :mod:`.eflags`, control registers and MSRs :mod:`.sysregs`,
port I/O :mod:`.portio` and :mod:`.ioperm`, strings :mod:`.string_rt`, the guest's
debug registers :mod:`.debug`, segment checks :mod:`.segcheck`, the softmmu
:mod:`.mmu`) are written against the protocols here, never against
:class:`~accel.interp.cpu_exec.InterpCore` itself: the core implements them, and
the helpers import this module only (an import-linter contract in pyproject.toml
keeps it so).  This is the split QEMU makes between ``CPUX86State`` plus the
``cpu_*`` accessors a ``target/i386/tcg/*_helper.c`` file uses, and the TCG exec
loop that calls those helpers.

:class:`Mode` is the part of the translation-block key that the code of a block
depends on (QEMU's ``hflags``); it lives here because helpers read it
(``cpu.mode.code``, ``cpu.mode.checks``) and the code generator compiles against it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from pyqemu.accel.interp.flags import LazyFlags
from pyqemu.system.memory import AddressSpace
from pyqemu.target.i386.cpu_state import CPUX86State

__all__ = ["MASK", "SIGN", "DebugState", "InterpCpu", "Kick", "LazyCC", "Mode", "PortSpace",
           "SoftMmu"]

#: Operand-size masks and sign bits, by size in bytes.
MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}
SIGN = {1: 0x80, 2: 0x8000, 4: 0x80000000, 8: 0x8000000000000000}

#: A pending lazy-flags state: (evaluator, a, b, r, carry provider) (:mod:`.flags`).
LazyCC = tuple[Any, ...]


class Mode:
    """What a block's code depends on: part of the TB key (QEMU's ``hflags``)."""

    __slots__ = (
        "checks",
        "code",
        "cpl",
        "cs_base",
        "cs_limit",
        "flat",
        "key",
        "long",
        "paging",
        "pe",
        "stack",
        "vm86",
    )

    code: int
    stack: int
    cpl: int
    pe: bool
    long: bool
    paging: bool
    cs_base: int
    cs_limit: int
    flat: bool
    checks: tuple[int, ...]
    vm86: bool
    key: tuple[Any, ...]

    def __init__(self, code: int, stack: int, cpl: int, pe: bool, long: bool, paging: bool,
                 cs_base: int, flat: bool = False, checks: tuple[int, ...] = (),
                 vm86: bool = False, cs_limit: int = 0xFFFFFFFF) -> None:
        self.code, self.stack, self.cpl, self.pe = code, stack, cpl, pe
        self.long, self.paging, self.cs_base = long, paging, cs_base
        # The last offset code may be fetched from (no limit in 64-bit code): the
        # translator ends a block there and raises #GP(0) past it (SDM vol. 3A, 5.3).
        self.cs_limit = 0xFFFFFFFFFFFFFFFF if code == 64 else cs_limit
        # ES CS SS DS all have base 0 (QEMU's !HF_ADDSEG): generated code skips the adds.
        self.flat = flat
        # Each segment's limit/type check kind (accel.interp.segcheck); () when none.
        self.checks = checks
        # EFLAGS.VM (QEMU's HF_VM): some rows differ there (accel.interp.vm86.semantic).
        self.vm86 = vm86
        self.key = (cs_base, code, stack, cpl, pe, long, paging, flat, checks, vm86,
                    self.cs_limit)

    @property
    def ipmask(self) -> int:
        return MASK[8] if self.code == 64 else MASK[4] if self.code == 32 else MASK[2]


class Kick(Protocol):
    """Whatever asks the vCPU to stop (``CPUState``, or the core itself): the exec loop
    and long-running helpers poll ``exit_request``."""

    exit_request: bool


class PortSpace(Protocol):
    """The port I/O space: an :class:`~pyqemu.system.memory.AddressSpace` of I/O regions,
    or anything that answers the same two calls (a test's recorder)."""

    def read(self, addr: int, size: int) -> int: ...

    def write(self, addr: int, value: int, size: int) -> None: ...


class SoftMmu(Protocol):
    """What helpers use of the softmmu (:class:`accel.interp.mmu.Mmu`)."""

    @property
    def tlb_r(self) -> dict[int, tuple[memoryview, int]]:
        """vpage -> (RAM view, delta): the read TLB (bulk string paths read it)."""

    @property
    def tlb_w(self) -> dict[int, tuple[memoryview, int]]:
        """vpage -> (RAM view, delta): the write TLB."""

    def translate(self, la: int, access: int, supervisor: bool = False) -> int:
        """Linear -> physical for ``access`` (SDM vol. 3A, 4.6), raising #PF/#GP."""

    def read_bytes(self, la: int, n: int) -> bytes:
        """Implicit supervisor-mode read of a system structure (GDT, IDT, TSS...)."""

    def write_bytes_linear(self, la: int, data: bytes) -> None:
        """Implicit supervisor-mode write of a system structure (accessed, busy bits)."""

    def flush(self) -> None:
        """Drop every TLB entry."""


class DebugState(Protocol):
    """What helpers use of the guest's debug facilities (:class:`accel.interp.debug.GuestDebug`)."""

    #: data breakpoints (lo, hi, B bit, reads too); empty when none is enabled
    watches: tuple[tuple[int, int, int, bool], ...]
    #: I/O breakpoints (lo, hi, B bit) (CR4.DE)
    io_watches: tuple[tuple[int, int, int], ...]
    #: linear pages kept off the read / write TLB (a data breakpoint watches them)
    pages_r: frozenset[int]
    pages_w: frozenset[int]
    #: set by the SS loads (MOV SS/POP SS hold debug events: SDM vol. 3A, 6.8.3)
    ss_loaded: bool
    #: set by INT n/INT3/INTO/INT1 (no single-step trap follows them: 18.3.1.4)
    event: bool
    #: set when a REP string instruction stopped after one iteration (18.3.1.4)
    rep_partial: bool

    def update(self) -> None:
        """Re-decode DR0-DR3/DR7 and recompute ``InterpCpu.dbg_armed``."""

    def flags_changed(self) -> None:
        """TF or RF may have changed: :meth:`update` when that can matter."""

    def check_data(self, la: int, size: int, write: bool) -> None:
        """Note the data breakpoints a slow-path access hits (18.3.1.2)."""

    def check_io(self, port: int, size: int) -> None:
        """Note the I/O breakpoints an access hits (18.3.1.3)."""


class InterpCpu(Protocol):
    """The CPU as the helpers see it: :class:`~accel.interp.cpu_exec.InterpCore` is one.

    State read-only here (the helpers change what it holds, never rebind it) is given
    as properties; ``cc``, ``dbg_armed`` and ``icount`` are written by helpers.
    Registers live in ``env.regs`` whenever a helper runs: a block writes its locals
    back before it calls one (``docs/architecture.md``, the generated-code ABI).
    """

    @property
    def env(self) -> CPUX86State:
        """The architectural state (registers, segment caches, control registers...)."""

    @property
    def mem(self) -> AddressSpace:
        """Guest-physical memory."""

    @property
    def io(self) -> PortSpace | None:
        """The port I/O space (None: reads give all ones, writes vanish)."""

    @property
    def mode(self) -> Mode:
        """The current block key; :meth:`mode_changed` recomputes it."""

    @property
    def segbase(self) -> list[int]:
        """Segment bases by register number, as blocks read them (``SB``)."""

    @property
    def la_mask(self) -> int:
        """Linear-address mask: 64 bits in IA-32e mode, else 32."""

    @property
    def ld(self) -> dict[int, Callable[[int], int]]:
        """size -> the data load of the current CPL through the TLB (``ldN``)."""

    @property
    def st(self) -> dict[int, Callable[[int, int], None]]:
        """size -> the data store of the current CPL through the TLB (``stN``)."""

    @property
    def mmu(self) -> SoftMmu:
        """The softmmu: translation and system-structure access."""

    @property
    def debug(self) -> DebugState:
        """The guest's debug registers and the current instruction's debug events."""

    @property
    def lazy(self) -> LazyFlags:
        """The lazy-flags evaluators (``lazy.eval[kind, width]``)."""

    @property
    def kick(self) -> Kick:
        """What asks the vCPU to stop; polled by long helpers (REP strings)."""

    @property
    def limit(self) -> int:
        """The icount at which :meth:`run`'s instruction budget ends."""

    @property
    def tsc_epoch(self) -> int:
        """``time.monotonic_ns()`` when the core was made: TSC 0."""

    @property
    def code_pages(self) -> dict[int, set[tuple[Any, ...]]]:
        """Physical pages holding translated code -> the blocks made from them."""

    #: Pending arithmetic flags (None: ``env.eflags`` holds them): :meth:`get_flags`.
    cc: LazyCC | None
    #: Whether the guest's TF/RF/DR7 need the one-instruction debug path.
    dbg_armed: bool
    #: Instructions retired (REP iterations each count, as QEMU's icount does).
    icount: int

    def get_flags(self) -> int:
        """EFLAGS with the pending arithmetic flags computed (``cpu_compute_eflags``)."""

    def sync_flags(self) -> None:
        """Materialise the pending flags into ``env.eflags``."""

    def mode_changed(self) -> None:
        """Recompute the block key after a change to CS, SS, CR0, EFER, EFLAGS.VM..."""

    def invalidate_page(self, ppage: int) -> None:
        """A store hit translated code on ``ppage``: drop its blocks."""

    def stack_push(self, values: list[tuple[int, int]], stack64: bool = False) -> None:
        """Push (value, size) pairs, first pushed first, all checked before any write."""

    def stack_pop(self, sizes: list[int], extra: int = 0,
                  start: int | None = None) -> tuple[list[int], int]:
        """Read ``sizes`` from the stack top (or ``start``); returns the values and the
        new stack pointer, uncommitted."""

    def set_sp(self, value: int) -> None:
        """Set the stack pointer at the stack's size (SP, ESP or RSP)."""
