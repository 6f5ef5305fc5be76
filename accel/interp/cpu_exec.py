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

EFLAGS: the arithmetic flags may be left pending in :attr:`InterpCore.cc`
between blocks; :meth:`run` and :meth:`step` materialise them into
``env.eflags`` before returning, so readers of ``env`` always see real flags.

TSC: RDTSC reads ``time.monotonic_ns()`` since the core was created plus
``env.tsc_offset`` (a 1 GHz invariant, monotonic counter; WRMSR to
IA32_TIME_STAMP_COUNTER adjusts the offset).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

from pyqemu.accel.interp import debug, excp, seg, string_rt, vm86
from pyqemu.accel.interp.codegen import MASK, Mode
from pyqemu.accel.interp.debug import GuestDebug
from pyqemu.accel.interp.errors import (
    EXCP_GP,
    EXCP_UD,
    CpuStop,
    Fault,
    InterpArgumentError,
    TripleFault,
)
from pyqemu.accel.interp.flags import ARITH_MASK, PARITY, LazyFlags
from pyqemu.accel.interp.mmu import ACC_WRITE, Mmu
from pyqemu.accel.interp.segcheck import check_stack, segment_checks
from pyqemu.accel.interp.table import RUNTIME, load_families
from pyqemu.accel.interp.translate import MAX_BLOCK_INSNS, TranslationBlock, Translator
from pyqemu.accel.ops import EXCP_DEBUG, EXCP_INTERRUPT, EXCP_SHUTDOWN
from pyqemu.target.i386 import cpu_state as cs
from pyqemu.target.i386.cpu_state import CPUX86State
from pyqemu.util import trace

#: run() stopped because ``max_insns`` instructions ran (not an exit request).
EXCP_BUDGET = 0x10101

_FMT = {2: "H", 4: "I", 8: "Q"}

CpuidFn = Callable[[int, int], tuple[int, int, int, int]]


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
        self.mem = mem
        self.io = io
        self.cpuid = cpuid or _no_cpuid
        self.exit_request = False
        self.kick = kick if kick is not None else self   # anything with .exit_request
        self.on_triple_fault = on_triple_fault
        self.icount = 0
        self.limit = 1 << 62        # icount at which looping blocks must return (run's budget)
        self.cc: tuple[Any, ...] | None = None
        self.lazy = LazyFlags(env)
        self.segbase = [s.base for s in env.segs]
        self.code_pages: dict[int, set[tuple[Any, ...]]] = {}
        self.code_snap: dict[int, bytes] = {}   # page -> its bytes when first translated
        self.tb_caches: dict[tuple[Any, ...], dict[int, TranslationBlock]] = {}
        self.tb1_caches: dict[tuple[Any, ...], dict[int, TranslationBlock]] = {}
        # mode key -> {rip: block function}: the blocks of tb_caches, for computed jumps
        # in generated code (``JC``); emptied in place, never replaced (blocks bind .get).
        self.jump_caches: dict[tuple[Any, ...], dict[int, Callable[[], Any]]] = {}
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
        self.ld = {n: self.mmu.helpers[f"ld{n}"] for n in (1, 2, 4, 8)}
        rmw_loads = {f"lw{n}": self._make_rmw_load(n) for n in (1, 2, 4, 8)}
        self.st = {n: self.mmu.helpers[f"st{n}"] for n in (1, 2, 4, 8)}
        load_families()         # fills RUNTIME with the families' helpers
        self.globals: dict[str, Any] = {
            "S": self, "env": env, "R": env.regs, "SB": self.segbase, "PARITY": PARITY,
            "Fault": Fault, "CpuStop": CpuStop, "IOR": self.io_read, "IOW": self.io_write,
            "CPUID": self.cpuid, "KICK": self.kick, "LINK": self.link,
            "__builtins__": __builtins__,
            **self.mmu.helpers, **rmw_loads, **RUNTIME,
            # The TLB fast paths generated code inlines (Codegen.load/store).
            "TR": self.mmu.tlb_r.get, "TW": self.mmu.tlb_w.get,
            **{f"U{n}": struct.Struct(f"<{c}").unpack_from for n, c in _FMT.items()},
            **{f"P{n}": struct.Struct(f"<{c}").pack_into for n, c in _FMT.items()},
        }
        for (kind, width), fn in self.lazy.eval.items():
            self.globals[f"EV_{kind}_{width}"] = fn
        self.translator = Translator(self)
        self.mode: Mode = self._compute_mode()
        self.tbs: dict[int, TranslationBlock] = {}
        self.mode_changed()
        self.debug.update()

    def _make_rmw_load(self, size: int) -> Callable[[int], int]:
        """``lwN``: the read of a read-modify-write, through the *write* TLB, so that a
        fault reports a write access (SDM vol. 3A, 4.7: the access that caused the
        fault; an RMW instruction's read is checked for write)."""
        get = self.mmu.tlb_w.get
        unpack = struct.Struct({1: "<B", 2: "<H", 4: "<I", 8: "<Q"}[size]).unpack_from
        limit = 4096 - size
        mmu, mem, dbg = self.mmu, self.mem, self.debug

        def load(la: int) -> int:
            e = get(la >> 12)
            if e is not None and la & 0xFFF <= limit:
                return unpack(e[0], la + e[1])[0]
            if dbg.watches:
                dbg.check_data(la, size, True)     # an RMW read counts as a write access
            if (la & 0xFFF) + size > 4096:
                pa1, pa2, lo = mmu.fill_split(la, size, ACC_WRITE)
                raw = mem.read_bytes(pa1, lo) + mem.read_bytes(pa2, size - lo)
                return int.from_bytes(raw, "little")
            return int(mem.read(mmu.fill(la, ACC_WRITE), size))
        return load

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
        if self.globals["R"] is not self.env.regs:
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
                                       self.breakpoints)
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

    def jump_cache(self, key: tuple[Any, ...]) -> Callable[[int], Any]:
        """``JC`` of the blocks of mode ``key``: rip -> the cached block's function or None."""
        return self.jump_caches.setdefault(key, {}).get

    def link(self, cell: list[Any], rip: int) -> Callable[[], Any] | None:
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
                    events = debug.step(self, self._tb1)
                    if limit is not None:
                        limit -= events
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
        fn: Callable[[], Any] | None = None
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

    def _tb1(self, pc: int) -> TranslationBlock:
        """The single-instruction block at ``pc`` in the current mode (translated on a miss)."""
        tb = self.tb1_caches.get(self.mode.key, {}).get(pc)
        return tb if tb is not None else self._tb_gen(pc, True)

    def step(self) -> int:
        """Execute exactly one instruction, or deliver the fault it raises (then RIP is the
        handler's first instruction); returns a stop reason (EXCP_BUDGET normally)."""
        return self.run(1)

    def _trace_block(self, tb: TranslationBlock) -> None:
        env = self.env
        if trace.enabled("cpu"):
            flags = self.get_flags()
            regs = " ".join(f"{n}={v:x}" for n, v in zip(cs.REG_NAMES, env.regs))
            trace.event(f"{regs} rip={env.rip:x} rfl={flags:x} mode={env.mode_name}", "cpu")
        if trace.enabled("exec"):
            trace.event(f"Trace {tb.pc:#x} [{tb.ninsns} insns]", "exec")

    # -- helpers called by generated code -----------------------------------------------------
    def io_read(self, port: int, size: int) -> int:
        if self.debug.io_watches:
            self.debug.check_io(port, size)
        if self.io is None:
            return (1 << (8 * size)) - 1
        return int(self.io.read(port, size))

    def io_write(self, port: int, value: int, size: int) -> None:
        if self.debug.io_watches:
            self.debug.check_io(port, size)
        if self.io is not None:
            a20 = self.env.a20_mask
            self.io.write(port, value, size)
            if self.env.a20_mask != a20:      # port 92h / the keyboard controller moved A20
                self.mmu.flush()

    def rdtsc(self) -> int:
        return (time.monotonic_ns() - self.tsc_epoch + self.env.tsc_offset) & 0xFFFFFFFFFFFFFFFF

    def popf(self, value: int, size: int) -> None:
        excp._set_flags(self, value, size)

    def debug_flags_changed(self) -> None:
        """TF or RF may have changed outside a block (SYSCALL, SYSRET, SYSENTER...)."""
        if self.dbg_armed or self.env.eflags & (cs.TF_MASK | cs.RF_MASK):
            self.debug.update()

    def write_dr(self) -> None:
        """After MOV to DRn (generated code ends the block): re-decode DR0-DR3/DR7."""
        self.debug.update()

    def soft_int(self, vector: int, next_ip: int, check_dpl: bool) -> None:
        # INT n/INT3/INTO/INT1 clear TF after pushing it: no single-step trap follows them
        # (SDM vol. 3A, 18.3.1.4).
        self.debug.event = True
        excp.do_interrupt(self, vector, None, next_ip, soft=check_dpl)

    def iret(self, size: int, next_ip: int) -> None:
        excp.iret(self, size, next_ip)

    def far_jump(self, sel: int, off: int, next_ip: int) -> None:
        seg.far_jump(self, sel, off, next_ip)

    def far_call(self, sel: int, off: int, size: int, next_ip: int) -> None:
        seg.far_call(self, sel, off, size, next_ip)

    def far_return(self, size: int, extra: int) -> None:
        seg.far_return(self, size, extra)

    def load_seg(self, index: int, sel: int) -> None:
        seg.load_seg(self, index, sel)
        if index == cs.R_SS:
            self.debug.ss_loaded = True   # MOV SS / POP SS hold debug events (debug.step)

    def load_system_seg(self, which: str, sel: int) -> None:
        seg.load_system_seg(self, which, sel)

    def check_selector(self, which: str, sel: int) -> int | None:
        return seg.check_selector(self, which, sel)

    def sysenter(self) -> None:
        seg.sysenter(self)
        self.debug_flags_changed()

    def sysexit(self, size: int) -> None:
        seg.sysexit(self, size)
        self.debug_flags_changed()

    def syscall(self, next_ip: int) -> None:
        seg.syscall(self, next_ip)
        self.debug_flags_changed()

    def sysret(self, size: int) -> None:
        seg.sysret(self, size)
        self.debug_flags_changed()

    def rep_string(self, kind: str, size: int, adsize: int, segment: int, rep: str,
                   next_ip: int) -> None:
        dbg = self.debug
        if rep and self.dbg_armed and (self.env.eflags & cs.TF_MASK or dbg.watches
                                       or dbg.io_watches):
            self._rep_one_iteration(kind, size, adsize, segment, rep, next_ip)
            return
        string_rt.rep_string(self, kind, size, adsize, segment, rep, next_ip)

    def _rep_one_iteration(self, kind: str, size: int, adsize: int, segment: int, rep: str,
                           next_ip: int) -> None:
        """One iteration of a REP string instruction, the rest left to a restart.

        With TF set the processor traps after each iteration (SDM vol. 3A, 18.3.1.4; on
        this project's host: RIP on the instruction, RCX one less, RF=1 pushed), and a
        data or I/O breakpoint traps after the iteration that hit it (18.3.1.2): the
        instruction runs with a count of one and RIP stays on it unless that ended it.
        """
        regs = self.env.regs
        am = MASK[adsize]
        count = regs[1] & am
        if count <= 1:
            string_rt.rep_string(self, kind, size, adsize, segment, rep, next_ip)
            return
        ip, old, cc0 = self.env.rip, regs[1], self.cc
        regs[1] = (old & ~am) | 1
        try:
            string_rt.rep_string(self, kind, size, adsize, segment, rep, next_ip)
        except BaseException:
            regs[1] = old               # a fault in the iteration: nothing was done
            raise
        regs[1] = count - 1 if adsize >= 4 else (old & ~0xFFFF) | (count - 1)
        if kind in ("cmps", "scas"):
            if (rep == "rep") != bool(self.get_flags() & cs.CC_Z):
                return                  # REPE/REPNE ended on its condition: complete
            # Between iterations the image has the flags of before the instruction: the
            # processor commits CMPS/SCAS flags when the instruction ends (measured on
            # this host's CPU, as for a fault inside one: string_rt.rep_string).
            self.cc = cc0
        self.env.rip = ip
        self.debug.rep_partial = True

    # stack access for helpers (registers in env.regs)
    def _stack_mask(self) -> int:
        return {16: 0xFFFF, 32: 0xFFFFFFFF, 64: 0xFFFFFFFFFFFFFFFF}[self.mode.stack]

    def push_rt(self, values: list[tuple[int, int]], stack64: bool = False) -> None:
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
        self.set_sp_rt((sp - off) & m)

    def pop_rt(self, sizes: list[int], extra: int = 0,
               start: int | None = None) -> tuple[list[int], int]:
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

    def set_sp_rt(self, value: int) -> None:
        regs = self.env.regs
        if self.mode.stack == 16:
            regs[4] = (regs[4] & ~0xFFFF) | (value & 0xFFFF)
        else:
            regs[4] = value

    # -- control registers and MSRs (SDM vol. 3A, 2.5; vol. 4) ------------------------------------
    def write_cr(self, n: int, value: int) -> None:
        env = self.env
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
        self.mmu.flush()
        self.mode_changed()
        if n == 4:
            self.debug.update()           # CR4.DE enables I/O breakpoints (R/W=10)

    _MSR_FIELDS = {cs.MSR_STAR: "star", cs.MSR_LSTAR: "lstar", cs.MSR_CSTAR: "cstar",
                   cs.MSR_FMASK: "fmask", cs.MSR_KERNELGSBASE: "kernelgsbase",
                   cs.MSR_IA32_SYSENTER_CS: "sysenter_cs", cs.MSR_IA32_SYSENTER_ESP: "sysenter_esp",
                   cs.MSR_IA32_SYSENTER_EIP: "sysenter_eip", cs.MSR_TSC_AUX: "tsc_aux",
                   cs.MSR_PAT: "pat", cs.MSR_IA32_APICBASE: "apic_base",
                   cs.MSR_IA32_MISC_ENABLE: "misc_enable", cs.MSR_EFER: "efer"}

    def rdmsr(self, index: int) -> int:
        """RDMSR: the MSRs CPUX86State models; #GP(0) for any other (SDM vol. 2B, RDMSR)."""
        env = self.env
        if index == cs.MSR_IA32_TSC:
            return self.rdtsc()
        if index == cs.MSR_FSBASE:
            return env.segs[cs.R_FS].base
        if index == cs.MSR_GSBASE:
            return env.segs[cs.R_GS].base
        name = self._MSR_FIELDS.get(index)
        if name is not None:
            return int(getattr(env, name))
        if index in env.msrs:
            return env.msrs[index]
        raise Fault(EXCP_GP, 0, why=f"rdmsr of unknown MSR {index:#x}")

    def wrmsr(self, index: int, value: int) -> None:
        env = self.env
        if index == cs.MSR_IA32_TSC:
            env.tsc_offset = value - (time.monotonic_ns() - self.tsc_epoch)
        elif index == cs.MSR_FSBASE:
            env.segs[cs.R_FS].base = value
        elif index == cs.MSR_GSBASE:
            env.segs[cs.R_GS].base = value
        elif index == cs.MSR_EFER:
            # LMA is read-only: it follows CR0.PG and LME (SDM vol. 3A, 2.2.1).
            if value & ~(cs.EFER_SCE | cs.EFER_LME | cs.EFER_LMA | cs.EFER_NXE):
                raise Fault(EXCP_GP, 0, why=f"reserved EFER bits {value:#x}")
            env.efer = (value & ~cs.EFER_LMA) | (env.efer & cs.EFER_LMA)
        elif index in self._MSR_FIELDS:
            setattr(env, self._MSR_FIELDS[index], value)
        elif index in env.msrs:
            env.msrs[index] = value
        else:
            raise Fault(EXCP_GP, 0, why=f"wrmsr of unknown MSR {index:#x}")
        self.mode_changed()
