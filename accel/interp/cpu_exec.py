"""``InterpCore``: the interpreter's CPU and its exec loop (QEMU's ``cpu_exec``).

The loop (``accel/tcg/cpu-exec.c`` in shape): check the exit request, look the
block up by (RIP, mode key) (the mode key holds CS base, code and stack size,
CPL, PE, long mode, paging: QEMU's (pc, cs_base, flags)), translate it on a miss,
run it; a guest fault raised inside is delivered through the IVT/IDT
(:mod:`accel.interp.excp`) and the loop goes on.  HLT, breakpoints, the budget
and triple faults return a stop reason.

The core needs no machine: ``InterpCore(env, mem, io, cpuid)`` runs on any
:class:`~pyqemu.target.i386.cpu_state.CPUX86State` and address spaces, so unit and
differential tests drive it directly.

The core keeps the state (``env`` and what is derived from it: the block key, the
segment bases, the pending flags), the exec loop and the block cache; it is the
:class:`~accel.interp.state.InterpCpu` the helpers are written against, and what
generated code calls lives in the helper modules, reached through the names of
:mod:`accel.interp.namespace`.

EFLAGS: the arithmetic flags may be left pending in :attr:`InterpCore.cc`
between blocks; :meth:`run` and :meth:`step` materialise them into
``env.eflags`` before returning, so readers of ``env`` always see real flags.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pyqemu.accel.interp import debug, excp, vm86
from pyqemu.accel.interp.debug import GuestDebug
from pyqemu.accel.interp.errors import CpuStop, Fault, InterpArgumentError, TripleFault
from pyqemu.accel.interp.flags import ARITH_MASK, LazyFlags
from pyqemu.accel.interp.mmu import Mmu
from pyqemu.accel.interp.namespace import CpuidFn, block_namespace
from pyqemu.accel.interp.segcheck import check_stack, segment_checks
from pyqemu.accel.interp.state import MASK, Kick, LazyCC, Mode, PortSpace
from pyqemu.accel.interp.translate import (
    MAX_BLOCK_INSNS,
    BlockFn,
    TranslationBlock,
    Translator,
)
from pyqemu.accel.ops import EXCP_DEBUG, EXCP_INTERRUPT, EXCP_SHUTDOWN
from pyqemu.system.memory import AddressSpace
from pyqemu.target.i386 import cpu_state as cs
from pyqemu.target.i386.cpu_state import CPUX86State
from pyqemu.util import trace

__all__ = ["EXCP_BUDGET", "InterpCore"]

#: run() stopped because ``max_insns`` instructions ran (not an exit request).
EXCP_BUDGET = 0x10101


def _no_cpuid(leaf: int, subleaf: int) -> tuple[int, int, int, int]:
    return (0, 0, 0, 0)


class InterpCore:
    """One x86 CPU interpreted in Python."""

    def __init__(self, env: CPUX86State, mem: Any, io: Any = None,
                 cpuid: CpuidFn | None = None, *, kick: Any = None,
                 on_triple_fault: Callable[[], None] | None = None) -> None:
        if not isinstance(env, CPUX86State):
            raise InterpArgumentError(
                f"interp: env must be a CPUX86State, not {type(env).__name__}")
        if mem is None or not hasattr(mem, "lookup"):
            raise InterpArgumentError("interp: mem must be an AddressSpace")
        self.env = env
        self.mem: AddressSpace = mem
        self.io: PortSpace | None = io
        self.cpuid: CpuidFn = cpuid or _no_cpuid
        self.exit_request = False
        # Anything with .exit_request (the CPUState under a machine, else the core itself).
        self.kick: Kick = kick if kick is not None else self
        self.on_triple_fault = on_triple_fault
        self.icount = 0
        self.limit = 1 << 62        # icount at which blocks and REP strings stop (run's budget)
        self.cc: LazyCC | None = None
        self.lazy = LazyFlags(env)
        self.segbase = [s.base for s in env.segs]
        self.code_pages: dict[int, set[tuple[Any, ...]]] = {}
        self.code_snap: dict[int, bytes] = {}   # page -> its bytes when first translated
        self.tb_caches: dict[tuple[Any, ...], dict[int, TranslationBlock]] = {}
        self.tb1_caches: dict[tuple[Any, ...], dict[int, TranslationBlock]] = {}
        # mode key -> {rip: block function}: the blocks of tb_caches, for computed jumps
        # in generated code (``JC``); emptied in place, never replaced (blocks bind .get).
        self.jump_caches: dict[tuple[Any, ...], dict[int, BlockFn]] = {}
        self.smc = False
        self.breakpoints: set[int] = set()
        self.bp_skip: int | None = None
        self.tsc_epoch = time.monotonic_ns()
        self.la_mask = 0xFFFFFFFF
        # The guest's own TF and DR0-DR7 (accel/interp/debug.py): while ``dbg_armed`` the
        # loop runs one instruction at a time through debug.step, otherwise not at all.
        self.dbg_armed = False
        self.debug = GuestDebug(self)
        self.mmu = Mmu(self)
        self.ld: dict[int, Callable[[int], int]] = {
            n: self.mmu.helpers[f"ld{n}"] for n in (1, 2, 4, 8)}
        self.st: dict[int, Callable[[int, int], None]] = {
            n: self.mmu.helpers[f"st{n}"] for n in (1, 2, 4, 8)}
        # The globals of every block (accel/interp/namespace.py lists them).
        self.namespace: dict[str, Any] = block_namespace(self)
        self.translator = Translator(self, self.namespace)
        self.mode: Mode = self._compute_mode()
        self.tbs: dict[int, TranslationBlock] = {}
        self.mode_changed()
        self.debug.update()

    # -- state derived from env ---------------------------------------------------------
    def _compute_mode(self) -> Mode:
        env = self.env
        code = 64 if env.code64 else 32 if env.code32 else 16
        if code == 64:
            stack = 64
        else:
            stack = 32 if env.segs[cs.R_SS].flags & cs.DESC_B_MASK else 16
        flat = not any(env.segs[i].base for i in (cs.R_ES, cs.R_CS, cs.R_SS, cs.R_DS))
        pe = bool(env.cr[0] & cs.CR0_PE)
        v86 = pe and bool(env.eflags & cs.VM_MASK)
        if v86:
            # Whatever entered VM86 (IRET, a task switch, a test writing env): no CR4.VME.
            vm86.check_supported(env)
        return Mode(code, stack, env.cpl, pe, env.long_mode_active,
                    bool(env.cr[0] & cs.CR0_PG), env.segs[cs.R_CS].base, flat,
                    segment_checks(env), v86, env.segs[cs.R_CS].limit)

    def mode_changed(self) -> None:
        """Recompute the mode key after anything that may change it (QEMU's hflags update)."""
        old = getattr(self, "mode", None)
        self.mode = mode = self._compute_mode()
        if old is not None and (old.cpl != mode.cpl or old.paging != mode.paging):
            self.mmu.flush()
        self.la_mask = 0xFFFFFFFFFFFFFFFF if mode.long else 0xFFFFFFFF
        for i, s in enumerate(self.env.segs):
            self.segbase[i] = s.base
        self.tbs = self.tb_caches.setdefault(mode.key, {})

    def refresh(self) -> None:
        """Re-read everything derived from ``env`` (it may have been written between runs)."""
        if self.namespace["R"] is not self.env.regs:
            raise InterpArgumentError("interp: env.regs was replaced; assign into it instead")
        self.mmu.flush()
        self.mmu.check_version()
        self.mode_changed()
        # Code written behind our back between runs (a loader, a debugger, a test writing
        # guest RAM directly) does not pass our store path: compare the pages we translated.
        for pp, snap in list(self.code_snap.items()):
            if self.mem.read_bytes(pp << 12, 4096) != snap:
                self.invalidate_page(pp)
        self.smc = False
        self.debug.update()       # TF, RF or DR0-DR7 may have been written between runs

    # -- lazy flags ----------------------------------------------------------------------
    def get_flags(self) -> int:
        """EFLAGS with the pending arithmetic flags computed (QEMU's ``cpu_compute_eflags``)."""
        c = self.cc
        if c is None:
            return self.env.eflags
        return (self.env.eflags & ~ARITH_MASK) | c[0](c[1], c[2], c[3], c[4])

    def sync_flags(self) -> None:
        if self.cc is not None:
            self.env.eflags = self.get_flags()
            self.cc = None

    # -- translation blocks -------------------------------------------------------------
    def tb_flush(self) -> None:
        """Drop every translated block (``tb_flush``): after code was written behind our back."""
        for caches in (self.tb_caches, self.tb1_caches):
            for cache in caches.values():
                for tb in cache.values():
                    for cell in tb.cells:
                        cell[0] = None
        self.tb_caches.clear()
        self.tb1_caches.clear()
        for jc in self.jump_caches.values():
            jc.clear()
        self.code_pages.clear()
        self.code_snap.clear()
        self.tbs = self.tb_caches.setdefault(self.mode.key, {})
        self.mmu.flush()

    def _tb_gen(self, rip: int, single: bool) -> TranslationBlock:
        mode = self.mode
        tb = self.translator.translate(rip, mode, 1 if single else MAX_BLOCK_INSNS,
                                       self.breakpoints, self.jump_cache(mode.key))
        cache = (self.tb1_caches.setdefault(mode.key, {}) if single else self.tbs)
        cache[rip] = tb
        if not single:
            self.jump_caches.setdefault(mode.key, {})[rip] = tb.fn
        for pp in tb.pages:
            self.code_pages.setdefault(pp, set()).add((mode.key, rip, single))
            if pp not in self.code_snap:
                self.code_snap[pp] = self.mem.read_bytes(pp << 12, 4096)
            self.mmu.drop_write_entries(pp)
        return tb

    def invalidate_page(self, ppage: int) -> None:
        """A store hit a page of translated code: drop its blocks (``tb_invalidate_phys_page``)."""
        self.code_snap.pop(ppage, None)
        for key, rip, single in self.code_pages.pop(ppage, ()):
            caches = self.tb1_caches if single else self.tb_caches
            tb = caches.get(key, {}).pop(rip, None)
            if tb is not None:
                if not single:
                    self.jump_caches.get(key, {}).pop(rip, None)
                for cell in tb.incoming:      # unchain it (``tb_jmp_unlink``)
                    cell[0] = None
                tb.incoming.clear()
        self.smc = True       # a block that stored checks this and ends right after the store

    def jump_cache(self, key: tuple[Any, ...]) -> Callable[[int], BlockFn | None]:
        """``JC`` of the blocks of mode ``key``: rip -> the cached block's function or None."""
        return self.jump_caches.setdefault(key, {}).get

    def link(self, cell: list[Any], rip: int) -> BlockFn | None:
        """``LINK`` in generated code: chain an exit to the cached block at ``rip``, if any.

        Never translates (that could fault inside the calling block); the exec loop
        translates on its next lookup and the exit links on its next pass.
        """
        tb = self.tbs.get(rip)
        if tb is None:
            return None
        cell[0] = tb.fn
        tb.incoming.append(cell)
        return tb.fn

    # -- the exec loop ---------------------------------------------------------------------
    def run(self, max_insns: int | None = None) -> int:
        """Run until something stops the CPU; returns an ``EXCP_*`` reason.

        EXCP_HLT (HLT executed, RIP after it), EXCP_INTERRUPT (exit request seen and
        cleared), EXCP_DEBUG (breakpoint at RIP), EXCP_SHUTDOWN (triple fault),
        :data:`EXCP_BUDGET` (``max_insns`` instructions ran).
        """
        if max_insns is not None and max_insns <= 0:
            raise InterpArgumentError(f"interp: max_insns must be positive, not {max_insns}")
        self.refresh()
        env = self.env
        kick = self.kick
        limit = None if max_insns is None else self.icount + max_insns
        self.limit = (1 << 62) if limit is None else limit
        skip, self.bp_skip = self.bp_skip, None
        bps = self.breakpoints
        tracer = trace.tracer
        fast = limit is None and not bps and not tracer._enabled
        try:
            while True:
                if fast and not self.dbg_armed:
                    reason = self._run_chained()
                    if reason is not None:
                        return reason
                    # The guest armed TF or a DR7 breakpoint: go on one step at a time.
                if kick.exit_request:
                    kick.exit_request = False
                    return EXCP_INTERRUPT
                pc = env.rip
                single = False
                if limit is not None:
                    left = limit - self.icount
                    if left <= 0:
                        return EXCP_BUDGET
                    single = left < MAX_BLOCK_INSNS
                if bps and pc in bps:
                    if pc != skip:
                        self.bp_skip = pc
                        return EXCP_DEBUG
                    skip = None
                    single = True
                if self.dbg_armed:
                    # The guest's own #DB conditions, checked around each instruction; a
                    # #DB goes to the guest's IDT/IVT, never to our caller as EXCP_DEBUG.
                    events = debug.step(self.debug, self._execute1)
                    if limit is not None and events:
                        limit -= events
                        self.limit = limit
                    continue
                if single:
                    tb = self.tb1_caches.get(self.mode.key, {}).get(pc)
                else:
                    tb = self.tbs.get(pc)
                try:
                    if tb is None:
                        tb = self._tb_gen(pc, single)
                    if tracer._enabled:
                        self._trace_block(tb)
                    nxt = tb.fn()
                    if nxt is not None:
                        env.rip = nxt.rip         # a chained exit leaves RIP to its successor
                except Fault as f:
                    excp.deliver(self, f)
                    if limit is not None:
                        # Delivering an event is a step of its own (a single-step stops
                        # on the handler's first instruction, as on hardware with TF).
                        limit -= 1
                        self.limit = limit
        except CpuStop as stop:
            return stop.reason
        except TripleFault as tf:
            if trace.enabled("int"):
                trace.event(f"triple fault: {tf}", "int")
            if self.on_triple_fault is not None:
                self.on_triple_fault()
            return EXCP_SHUTDOWN
        finally:
            self.sync_flags()

    def _run_chained(self) -> int | None:
        """The fast loop (no budget, no breakpoints, no trace): chained blocks return the
        next block's function, so a lookup happens only where a chain ends.

        Returns None when the guest armed its debug facilities: every instruction that
        can (POPF, IRET, MOV DRn, SYSRET...) ends its block with no successor, so the
        check costs one attribute test where a chain ends, none inside one."""
        env = self.env
        kick = self.kick
        fn: BlockFn | None = None
        while True:
            if kick.exit_request:
                kick.exit_request = False
                if fn is not None:
                    env.rip = fn.rip              # the chain stops before this block
                return EXCP_INTERRUPT
            try:
                if fn is None:
                    if self.dbg_armed:
                        return None
                    pc = env.rip
                    tb = self.tbs.get(pc)
                    if tb is None:
                        tb = self._tb_gen(pc, False)
                    fn = tb.fn
                fn = fn()
            except Fault as f:
                fn = None
                excp.deliver(self, f)

    def _execute1(self, pc: int) -> None:
        """Run the single-instruction block at ``pc`` in the current mode (translated on a
        miss): the debug path's one step (accel/interp/debug.py)."""
        tb = self.tb1_caches.get(self.mode.key, {}).get(pc)
        if tb is None:
            tb = self._tb_gen(pc, True)
        if trace.tracer._enabled:
            self._trace_block(tb)
        nxt = tb.fn()
        if nxt is not None:
            self.env.rip = nxt.rip            # a chained exit: its successor is not run here

    def step(self) -> int:
        """Execute exactly one instruction, or deliver the fault it raises (then RIP is the
        handler's first instruction); returns a stop reason (EXCP_BUDGET normally)."""
        return self.run(1)

    def _trace_block(self, tb: TranslationBlock) -> None:
        env = self.env
        if trace.enabled("cpu"):
            flags = self.get_flags()
            regs = " ".join(f"{n}={v:x}" for n, v in zip(cs.REG_NAMES, env.regs, strict=True))
            trace.event(f"{regs} rip={env.rip:x} rfl={flags:x} mode={env.mode_name}", "cpu")
        if trace.enabled("exec"):
            trace.event(f"Trace {tb.pc:#x} [{tb.ninsns} insns]", "exec")

    # -- the stack, for helpers (registers in env.regs) ------------------------------------
    def _stack_mask(self) -> int:
        return MASK[self.mode.stack // 8]

    def stack_push(self, values: list[tuple[int, int]], stack64: bool = False) -> None:
        """Push from a helper (far CALL, ...): every slot checked against SS's limit first,
        so that a #SS(0) leaves the stack untouched (accel/interp/segcheck.py), unless
        ``stack64``: an IA-32e interrupt frame, pushed to a 64-bit stack before CS is
        the handler's."""
        m = self._stack_mask()
        base = 0 if self.mode.code == 64 else self.segbase[cs.R_SS]
        sp = self.env.regs[4]
        off = 0
        for _, size in values:
            off += size
            if not stack64:
                check_stack(self, (sp - off) & m, size, True)
        off = 0
        for value, size in values:
            off += size
            self.st[size]((base + ((sp - off) & m)) & self.la_mask, value)
        self.set_sp((sp - off) & m)

    def stack_pop(self, sizes: list[int], extra: int = 0,
                  start: int | None = None) -> tuple[list[int], int]:
        """Read ``sizes`` from the stack top (or from ``start``), each slot checked against
        SS's limit; returns the values and the new stack pointer, not yet committed."""
        m = self._stack_mask()
        base = 0 if self.mode.code == 64 else self.segbase[cs.R_SS]
        sp = self.env.regs[4] if start is None else start
        vals = []
        off = 0
        for size in sizes:
            check_stack(self, (sp + off) & m, size, False)
            vals.append(self.ld[size]((base + ((sp + off) & m)) & self.la_mask))
            off += size
        return vals, (sp + off + extra) & m

    def set_sp(self, value: int) -> None:
        regs = self.env.regs
        if self.mode.stack == 16:
            regs[4] = (regs[4] & ~0xFFFF) | (value & 0xFFFF)
        else:
            regs[4] = value
