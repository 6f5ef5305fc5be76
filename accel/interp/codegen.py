"""The code emitter of one translation block: guest registers as Python locals.

A :class:`Ctx` collects the Python source of one block while the translator
walks its instructions.  It knows which guest registers the block touches (the
prologue loads them into locals ``g0..g15``, exits and the fault handler write
back the ones written), which segment bases it uses (``sg0..sg5``, constant in a
block because segment loads end blocks), and where each arithmetic flag was last
defined, so a flag read inside the block becomes an expression over the locals
of the instruction that set it (:mod:`accel.interp.flags`).

Ordering rule every semantic follows: an instruction performs all its memory
reads and writes (anything that can fault) before it assigns any register, so a
fault leaves the registers as they were before the instruction and the
instruction restarts cleanly (SDM vol. 3A, 6.5 "faults ... the state prior to
the instruction").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyqemu.accel.interp.errors import EXCP_GP, EXCP_SS, UnimplementedInstruction
from pyqemu.accel.interp.flags import (
    ARITH_MASK,
    CC_ALIASES,
    CONDITION_FLAGS,
    CONDITIONS,
    FLAG_BITS,
    FLAG_ORDER,
    FULL_KINDS,
    SUB_CONDITIONS,
    combine,
    expr,
)
from pyqemu.accel.interp.segcheck import BIG, DOWN, LIMIT, NOREAD, NOWRITE, NULL
from pyqemu.accel.interp.state import MASK, SIGN, Mode
from pyqemu.target.i386.cpu_state import R_DS, R_FS, R_GS, R_SS, SEG_NAMES

# Segment-override prefix bytes -> segment register (SDM vol. 2A, 2.1.1).
SEG_PREFIX = {0x26: 0, 0x2E: 1, 0x36: 2, 0x3E: 3, 0x64: 4, 0x65: 5}


class Op:
    """One decoded operand: ``kind`` is ``reg``, ``seg``, ``cr``, ``imm`` or ``mem``."""

    __slots__ = (
        "base",
        "base_name",
        "disp",
        "imm",
        "index",
        "kind",
        "name",
        "reg",
        "scale",
        "seg",
        "shift",
        "size",
    )

    def __init__(self, kind: str, size: int) -> None:
        self.kind = kind
        self.size = size
        self.reg = -1
        self.shift = 0
        self.name = ""
        self.imm = 0
        self.seg = -1
        self.base = -1
        self.index = -1
        self.scale = 1
        self.disp = 0
        self.base_name = ""


class Insn:
    """One decoded instruction, reduced to what the semantics need (capstone is not kept)."""

    __slots__ = (
        "adsize",
        "code",
        "ip",
        "k",
        "linear",
        "mnem",
        "modrm",
        "next_ip",
        "op_str",
        "ops",
        "opsize",
        "prefixes",
        "rep",
        "repne",
        "rex_w",
        "size",
    )

    k: int                    # its index in the block
    ip: int                   # its address (CS-relative)
    size: int                 # its length in bytes
    next_ip: int              # the address after it, wrapped to the code size
    linear: int               # the linear address of its first byte
    code: bytes               # its bytes
    mnem: str                 # the mnemonic, without prefixes ("movsb", not "rep movsb")
    op_str: str               # the operands as capstone prints them
    prefixes: list[int]       # the legacy prefix bytes (SDM vol. 2A, 2.1.1)
    rep: bool                 # F3 (REP/REPE)
    repne: bool               # F2 (REPNE)
    adsize: int               # address size in bytes (2, 4, 8)
    rex_w: bool               # REX.W (64-bit mode only)
    opsize: int               # operand size from the encoding (2, 4, 8)
    modrm: int | None         # the ModR/M byte, if the encoding has one
    ops: list[Op]

    def __init__(self) -> None:
        self.ops = []

    @property
    def text(self) -> str:
        return f"{self.mnem} {self.op_str}".strip()


def stack_size(c: Ctx, i: Insn) -> int:
    """Operand size of PUSH/POP: 8 in 64-bit mode unless 0x66 makes it 2 (SDM vol. 2B, PUSH)."""
    if c.mode.code == 64:
        return 2 if 0x66 in i.prefixes else 8
    return i.opsize


class Ctx:
    """Source of one block under construction."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.lines: list[str] = []
        self.ind = 2
        self.regs: set[int] = set()
        self.written: set[int] = set()
        self.segs: set[int] = set()
        self.seglims: set[int] = set()          # segments whose limit a check reads (slN)
        self.la_seg: dict[str, int] = {}        # linear-address local -> its segment
        self.flags: dict[str, str | None] = dict.fromkeys(FLAG_ORDER)
        self.full: tuple[Any, ...] | None = None     # (kind, width, a, b, r) owning all six
        self.partial: tuple[Any, ...] | None = None  # INC/DEC owning all but CF
        self.need_fe = False
        self.fault_snaps: dict[int, tuple[Any, ...]] = {}
        self.ips: list[int] = []
        self.k = 0
        self.n_set = -1
        self.tmp = 0
        self.insn: Insn | None = None
        self.ended = False
        self.stored = False
        self.ncells = 0                      # chaining link cells of the exits
        self.alias: dict[int, str] = {}      # register -> local standing in for it (POP [rsp])
        self.loop_rip: int | None = None     # set by the translator when a self-loop may chain
        self.looped = False
        self.has_store = False               # the prologue sets SMC (see store)


    # -- bookkeeping --------------------------------------------------------------------
    def checkpoint(self) -> tuple[Any, ...]:
        return (len(self.lines), set(self.regs), set(self.written), set(self.segs),
                dict(self.flags), self.full, self.partial, self.need_fe, dict(self.fault_snaps),
                self.n_set, self.ended)

    def restore(self, cp: tuple[Any, ...]) -> None:
        (n, self.regs, self.written, self.segs, self.flags, self.full, self.partial,
         self.need_fe, self.fault_snaps, self.n_set, self.ended) = cp
        del self.lines[n:]

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.ind + line)

    def t(self, stem: str = "t") -> str:
        self.tmp += 1
        return f"{stem}{self.tmp}"

    def unimplemented(self, why: str = "") -> UnimplementedInstruction:
        i = self.insn
        assert i is not None
        return UnimplementedInstruction(i.text, i.code, i.linear, self.cs_selector, i.ip)

    cs_selector = 0

    def may_fault(self) -> None:
        """The current instruction can fault: record where, and the flags at that point."""
        if self.n_set != self.k:
            self.n_set = self.k
            self.emit(f"n = {self.k}")
            self.fault_snaps[self.k] = (dict(self.flags), self.full, self.partial)

    # -- registers ------------------------------------------------------------------------
    def r(self, i: int) -> str:
        alias = self.alias.get(i)
        if alias is not None:
            return alias
        self.regs.add(i)
        return f"g{i}"

    def reg_read(self, op: Op) -> str:
        name = self.r(op.reg)
        size = op.size
        if size == 8:
            return name
        if op.shift:
            return f"({name} >> 8 & 0xFF)"
        return f"({name} & {MASK[size]:#x})"

    def reg_write(self, op: Op, value: str) -> None:
        """Write a masked ``value`` to a register (32-bit writes zero-extend, SDM 3.4.1.1)."""
        self.regs.add(op.reg)
        name = f"g{op.reg}"
        self.written.add(op.reg)
        if op.size >= 4:
            self.emit(f"{name} = {value}")
        elif op.shift:
            self.emit(f"{name} = {name} & ~0xFF00 | ({value}) << 8")
        else:
            self.emit(f"{name} = {name} & ~{MASK[op.size]:#x} | ({value})")

    def gpr_write(self, i: int, size: int, value: str) -> None:
        op = Op("reg", size)
        op.reg = i
        self.reg_write(op, value)

    def gpr_read(self, i: int, size: int) -> str:
        op = Op("reg", size)
        op.reg = i
        return self.reg_read(op)

    # -- memory -----------------------------------------------------------------------------
    def seg_base(self, seg: int) -> str | None:
        if seg not in (R_FS, R_GS) and (self.mode.code == 64 or self.mode.flat):
            return None
        self.segs.add(seg)
        return f"sg{seg}"

    def ea(self, op: Op) -> str:
        """Effective address, wrapped to the address size (SDM vol. 1, 3.7.5)."""
        assert self.insn is not None
        parts = []
        disp = op.disp
        if op.base_name in ("rip", "eip"):
            disp += self.insn.next_ip
        elif op.base >= 0:
            parts.append(self.r(op.base))
        if op.index >= 0:
            idx = self.r(op.index)
            parts.append(idx if op.scale == 1 else f"{idx} * {op.scale}")
        if disp or not parts:
            parts.append(hex(disp) if disp >= 0 else f"- {-disp:#x}")
        s = " + ".join(parts).replace("+ -", "-")
        adsize = self.insn.adsize
        if len(parts) == 1 and not op.disp and adsize == 8:
            return s
        return f"(({s}) & {MASK[adsize]:#x})"

    def default_seg(self, op: Op) -> int:
        if op.seg >= 0:
            return op.seg
        return R_SS if op.base_name in ("esp", "ebp", "rsp", "rbp", "sp", "bp") else R_DS

    def linear(self, seg: int, ea: str, size: int | None = None) -> str:
        """The linear address of offset ``ea`` in ``seg``; with the ``size`` of an access,
        first emit the segment's limit check (:mod:`accel.interp.segcheck`)."""
        if size is not None and self.mode.checks:
            self.limit_check(seg, ea, size)
        base = self.seg_base(seg)
        if base is None:
            return ea
        # Parenthesized as a whole: callers embed it in larger expressions (BT's bit
        # offset adds to it; `&` binds looser than `+`).
        return f"(({base} + ({ea})) & {MASK[8 if self.mode.code == 64 else 4]:#x})"

    def limit_check(self, seg: int, ea: str, size: int) -> None:
        """Emit the limit (and null) check of a ``size``-byte access at offset ``ea``
        (the check kinds of :mod:`accel.interp.segcheck`; SDM vol. 3A, 5.3)."""
        checks = self.mode.checks
        kind = checks[seg] if checks else 0
        if not kind & (LIMIT | DOWN | NULL):
            return
        self.may_fault()
        vec = EXCP_SS if seg == R_SS else EXCP_GP
        name = SEG_NAMES[seg]
        if kind & NULL:
            self.emit(f"raise Fault({EXCP_GP}, 0, why='access through a null {name}')")
            return
        self.seglims.add(seg)
        if kind & LIMIT:
            self.emit(f"if {ea} > sl{seg} - {size - 1}: "
                      f"raise Fault({vec}, 0, why='{name} limit')")
        else:
            upper = (0xFFFFFFFF if kind & BIG else 0xFFFF) - (size - 1)
            self.emit(f"if {ea} <= sl{seg} or {ea} > {upper:#x}: "
                      f"raise Fault({vec}, 0, why='{name} expand-down limit')")

    def type_check(self, seg: int, write: bool) -> None:
        """Emit #GP(0) for a write to code or read-only data, or a read of execute-only
        code (SDM vol. 3A, 5.4.1)."""
        checks = self.mode.checks
        kind = checks[seg] if checks else 0
        if kind & (NOWRITE if write else NOREAD):
            self.may_fault()
            what = "write to a read-only" if write else "read of an execute-only"
            self.emit(f"raise Fault({EXCP_GP}, 0, why='{what} {SEG_NAMES[seg]}')")

    def addr(self, op: Op, size: int | None = None) -> str:
        """Emit the operand's linear address into a local; returns its name.  ``size``: the
        bytes the instruction accesses there when not the operand's size (m16:32, ...)."""
        self.may_fault()
        name = self.t("la")
        seg = self.default_seg(op)
        self.emit(f"{name} = {self.linear(seg, self.ea(op), size or op.size)}")
        self.la_seg[name] = seg
        return name

    def load(self, la: str, size: int, tlb: str = "TR", slow: str = "ld") -> str:
        """Load ``size`` bytes at linear ``la`` (a local): the TLB hit is inline (a dict
        get and an unpack, no call of a Python helper); a miss, a page-straddling access
        or MMIO calls ``ldN`` (``lwN`` with ``tlb="TW"``: an RMW's read)."""
        self.may_fault()
        if self.mode.checks and la in self.la_seg:
            self.type_check(self.la_seg[la], tlb == "TW")
        name = self.t()
        self.emit(f"_e = {tlb}({la} >> 12)")
        self.emit(f"if _e is not None and {la} & 0xFFF <= {4096 - size}:")
        if size == 1:
            self.emit(f"    {name} = _e[0][{la} + _e[1]]")
        else:
            self.emit(f"    {name} = U{size}(_e[0], {la} + _e[1])[0]")
        self.emit("else:")
        self.emit(f"    {name} = {slow}{size}({la})")
        return name

    def store(self, la: str, size: int, value: str) -> None:
        """Store to linear ``la``: the TLB hit is inline.  Pages holding translated code
        have no write entry, so only the slow path (``stN``) can hit one: it alone
        copies the core's SMC flag into the block's local ``SMC``, which the check
        after the instruction reads (:meth:`smc_check`)."""
        self.may_fault()
        if self.mode.checks and la in self.la_seg:
            self.type_check(self.la_seg[la], True)
        self.stored = True
        self.has_store = True
        self.emit(f"_e = TW({la} >> 12)")
        self.emit(f"if _e is not None and {la} & 0xFFF <= {4096 - size}:")
        if size == 1:
            self.emit(f"    _e[0][{la} + _e[1]] = ({value}) & 0xFF")
        else:
            self.emit(f"    P{size}(_e[0], {la} + _e[1], ({value}) & {MASK[size]:#x})")
        self.emit("else:")
        self.emit(f"    st{size}({la}, {value})")
        self.emit("    SMC = S.smc")

    # -- operands -----------------------------------------------------------------------------
    def read(self, op: Op, size: int | None = None) -> str:
        """The operand's value (immediates masked to ``size`` or their own size)."""
        if op.kind == "reg":
            return self.reg_read(op)
        if op.kind == "imm":
            return hex(op.imm & MASK[size or op.size])
        if op.kind == "mem":
            return self.load(self.addr(op), op.size)
        raise self.unimplemented()

    def rmw(self, op: Op) -> tuple[str, Callable[[str], None]]:
        """Read a destination once; the returned writer stores back to the same place."""
        if op.kind == "reg":
            return self.reg_read(op), lambda v: self.reg_write(op, v)
        if op.kind == "mem":
            la = self.addr(op)
            # A read-modify-write reads with write intent: a #PF on the read already
            # reports W=1, as the processor does (checked against the CPU at CPL3).
            val = self.load(la, op.size, "TW", "lw")
            return val, lambda v: self.store(la, op.size, v)
        raise self.unimplemented()

    def write(self, op: Op, value: str) -> None:
        if op.kind == "reg":
            self.reg_write(op, value)
        elif op.kind == "mem":
            self.store(self.addr(op), op.size, value)
        else:
            raise self.unimplemented()

    # -- the stack (SDM vol. 1, 6.2) ---------------------------------------------------------
    def stack_mask(self) -> int:
        return MASK[self.mode.stack // 8]

    def push(self, values: list[tuple[str, int]]) -> str:
        """Store ``values`` (first pushed first) below RSP; returns the new-RSP local.

        The caller commits it with :meth:`set_sp` after its other faulting work.
        """
        sp = self.r(4)
        m = self.stack_mask()
        total = sum(size for _, size in values)
        new = self.t("sp")
        self.emit(f"{new} = ({sp} - {total}) & {m:#x}")
        off = 0
        for value, size in values:
            off += size
            self.may_fault()
            top = new if off == total else f"({new} + {total - off}) & {m:#x}"
            la = self.linear(R_SS, top, size)
            if la != new:                 # a segment base to add: into a local
                name = self.t("la")
                self.emit(f"{name} = {la}")
                la = name
            self.store(la, size, value)
        return new

    def pop(self, sizes: list[int], extra: int = 0) -> tuple[list[str], str]:
        """Load ``sizes`` from the stack top; returns (values, new-RSP local) uncommitted."""
        sp = self.r(4)
        m = self.stack_mask()
        off = 0
        vals = []
        for size in sizes:
            la = self.t("la")
            self.may_fault()
            # A 64-bit register needs no mask (registers hold 0 .. 2**64 - 1).
            top = (f"({sp} + {off}) & {m:#x}" if off else sp if m == MASK[8]
                   else f"{sp} & {m:#x}")
            self.emit(f"{la} = {self.linear(R_SS, top, size)}")
            vals.append(self.load(la, size))
            off += size
        new = self.t("sp")
        self.emit(f"{new} = ({sp} + {off + extra}) & {m:#x}")
        return vals, new

    def set_sp(self, value: str) -> None:
        self.gpr_write(4, self.mode.stack // 8, value)

    # -- flags -------------------------------------------------------------------------------
    def set_cc(self, kind: str, width: int, a: str, b: str, r: str) -> None:
        """Flags defined by a templated operation (``flags.TEMPLATES``) on locals a, b, r."""
        for f in FLAG_ORDER:
            e = expr(kind, f, width, a, b, r)
            if e is not None:
                self.flags[f] = e
        if kind in FULL_KINDS:
            self.full, self.partial = (kind, width, a, b, r), None
        else:
            self.full, self.partial = None, (kind, width, a, b, r, self.flags["C"])

    def set_flag(self, f: str, e: str) -> None:
        """A flag defined by an arbitrary expression (of locals already assigned)."""
        self.flags[f] = e
        self.full = self.partial = None

    def flag(self, f: str) -> str:
        e = self.flags[f]
        if e is None:
            self.need_fe = True
            bit = FLAG_BITS[f]
            return f"(FE >> {bit} & 1)" if bit else "(FE & 1)"
        return e

    def cond(self, cc: str) -> str:
        """A condition code as a Python boolean expression (SDM vol. 1, Table B-1)."""
        cc = CC_ALIASES.get(cc, cc)
        if cc not in CONDITIONS:
            raise self.unimplemented()
        full = self.full
        if full is not None and full[0] == "SUB" and cc in SUB_CONDITIONS \
                and all(self.flags[f] == expr("SUB", f, full[1], *full[2:]) for f in "CZSO"):
            _, width, a, b, _ = full
            return SUB_CONDITIONS[cc].format(a=a, b=b, m=hex(SIGN[width // 8]))
        return CONDITIONS[cc].format(**{f: self.flag(f) for f in CONDITION_FLAGS[cc]})

    def flags_value(self, flags: dict[str, str | None] | None = None) -> str:
        """The six arithmetic flags as one EFLAGS-bits expression (may read FE)."""
        fl = self.flags if flags is None else flags
        exprs = {}
        for f in FLAG_ORDER:
            e = fl[f]
            if e is None:
                bit = FLAG_BITS[f]
                e = f"(FE >> {bit} & 1)" if bit else "(FE & 1)"
                if flags is None:
                    self.need_fe = True     # read inside the block: load FE at entry
            exprs[f] = e
        return combine(exprs)

    def _flag_lines(self, snap: tuple[Any, ...] | None = None, fresh_fe: bool = True) -> list[str]:
        """Lines leaving the flags where the exec loop expects them (``S.cc`` / ``env.eflags``)."""
        fl, full, partial = snap if snap is not None else (self.flags, self.full, self.partial)
        if all(v is None for v in fl.values()):
            return []
        if full is not None and all(fl[f] == expr(full[0], f, *full[1:]) for f in FLAG_ORDER):
            kind, width, a, b, r = full
            return [f"S.cc = (EV_{kind}_{width}, {a}, {b}, {r}, None)"]
        if partial is not None and fl["C"] is None and all(
                fl[f] == expr(partial[0], f, *partial[1:5]) for f in "PAZSO"):
            # INC/DEC with CF still pending from before the block: chain the carry provider.
            kind, width, a, b, r, _ = partial
            return ["_p = S.cc",
                    f"S.cc = (EV_{kind}_{width}, {a}, {b}, {r}, _p and (_p[4] or _p))"]
        if partial is not None and fl["C"] is not None and "FE" not in fl["C"] and all(
                fl[f] == expr(partial[0], f, *partial[1:5]) for f in "PAZSO"):
            # INC/DEC after an in-block carry: the provider is the carry as 2|CF (an int).
            kind, width, a, b, r, _ = partial
            return [f"S.cc = (EV_{kind}_{width}, {a}, {b}, {r}, 2 | ({fl['C']}))"]
        lines = []
        value = self.flags_value(fl)
        if "FE" in value:
            lines.append("FE = S.get_flags()")
        lines.append(f"env.eflags = env.eflags & ~{ARITH_MASK:#x} | {value}")
        lines.append("S.cc = None")
        return lines

    def sync_flags(self) -> None:
        """Materialise the flags into ``env.eflags`` mid-block (before a helper reads them)."""
        for line in self._flag_lines():
            self.emit(line)
        self.flags = dict.fromkeys(FLAG_ORDER)
        self.full = self.partial = None
        self.emit("FE = env.eflags")

    # -- leaving the block -----------------------------------------------------------------
    def writeback(self) -> None:
        """Store the registers written so far; in a looping block, every register the
        block writes (a later iteration reaches this exit with all of them changed).
        Resolved in :meth:`source`, when both sets are known."""
        self.emit("#WB:" + ",".join(str(i) for i in sorted(self.written)) + "#")

    def exit(self, rip: str, done: int | None = None, stop: str | None = None) -> None:
        """Leave the block with RIP = ``rip`` after ``done`` (default: this one too) instructions.

        A constant target is chained (QEMU's ``tb_add_jump``): the exit returns the next
        block's function from a link cell, filled on first use by ``LINK`` from the block
        cache and cleared when that block is invalidated; the exec loop then calls it
        without looking anything up.  ``stop`` raises instead (HLT).

        A jump back to the block's own start (a tight loop) becomes a ``continue`` of a
        ``while`` around the body instead (block chaining to itself): registers stay in
        locals, the pending flags are stored as at an exit, and the exit request and the
        instruction budget are polled once per iteration.
        """
        if self.loop_rip is not None and rip == hex(self.loop_rip) and done is None:
            self.looped = True
            for line in self._flag_lines():
                self.emit(line)
            self.emit("#FE-RELOAD#")
            # The instruction count lives in the local IC while the block loops (stored
            # back at every way out: the exits, the fault handler, a helper's sync).
            self.emit(f"IC += {self.k + 1}")
            self.emit("if IC >= LIM or KICK.exit_request:")
            self.ind += 1
            self.emit("S.icount = IC")
            self.emit("#WRITEBACK#")
            self.emit(f"env.rip = {rip}")
            self.emit("return")
            self.ind -= 1
            self.emit("continue")
            return
        self.writeback()
        for line in self._flag_lines():
            self.emit(line)
        self.emit(f"#IC+{self.k + 1 if done is None else done}#")
        if stop is None and rip.startswith("0x"):
            # Chained: RIP is not stored; the next block's function carries it (``.rip``)
            # and whoever stops the chain (exit request, fault, helper) writes it.
            cell = f"L{self.ncells}"
            self.ncells += 1
            self.emit(f"nx = {cell}[0]")
            self.emit("if nx is not None:")
            self.emit("    return nx")
            self.emit(f"env.rip = {rip}")
            self.emit(f"return LINK({cell}, {rip})")
            return
        if stop is None:
            # A computed target (RET, indirect JMP/CALL): look the next block up here, in
            # the block cache of this mode (QEMU's lookup_and_goto_ptr), instead of
            # returning to the exec loop for it.
            self.emit(f"nx = JC({rip})")
            self.emit("if nx is not None:")
            self.emit("    return nx")
        self.emit(f"env.rip = {rip}")
        if stop is not None:
            self.emit(f"raise {stop}")
        else:
            self.emit("return None")

    def sync(self, rip: str) -> None:
        """Write everything back before a helper that sees the whole state (ends the block)."""
        self.writeback()
        self.sync_flags()
        self.emit(f"env.rip = {rip}")
        self.emit(f"#IC+{self.k}#")
        self.emit("n = -1")
        self.n_set = -1

    def finish_after_helper(self, rip: str | None) -> None:
        """End the block after a helper that ran with the state written back (see :meth:`sync`)."""
        if rip is not None:
            self.emit(f"env.rip = {rip}")
        self.emit("S.icount += 1")
        self.emit("return")

    def smc_check(self, next_ip: int) -> None:
        """After a store: if it hit a page of translated code, leave before running
        stale code (the one check per store; the TLB keeps code pages off the fast path)."""
        self.emit("if SMC:")
        self.ind += 1
        self.emit("S.smc = False")
        self.exit(hex(next_ip))
        self.ind -= 1

    def end(self) -> None:
        self.ended = True

    # -- assembling the function -------------------------------------------------------------
    def _resolve(self, lines: list[str]) -> list[str]:
        """Fill the placeholders a loop-back left (FE reload, write-back): known only now."""
        out = []
        for line in lines:
            stripped = line.strip()
            pad = line[:len(line) - len(line.lstrip())]
            if stripped == "#FE-RELOAD#":
                if self.need_fe:
                    out.append(pad + "FE = S.get_flags()")
            elif stripped == "#WRITEBACK#":
                out += [pad + f"R[{i}] = g{i}" for i in sorted(self.written)]
            elif stripped.startswith("#IC+"):
                k = stripped[4:-1]
                out.append(pad + (f"S.icount = IC + {k}" if self.looped
                                  else f"S.icount += {k}"))
            elif stripped.startswith("#WB:"):
                regs = sorted(self.written) if self.looped else [
                    int(x) for x in stripped[4:-1].split(",") if x]
                out += [pad + f"R[{i}] = g{i}" for i in regs]
            else:
                out.append(line)
        return out

    def source(self, name: str) -> str:
        """``def make_<name>(L0, L1, ...)`` returning the block function (cells as closures)."""
        inner = self._source(name)
        cells = "".join(f"L{j}, " for j in range(self.ncells)) + "JC"
        body = "".join("    " + line + "\n" for line in inner.splitlines())
        return f"def make_{name}({cells}):\n{body}    return {name}\n"

    def _source(self, name: str) -> str:
        lines = self._resolve(self.lines)
        if self.looped:
            lines = ["        while True:"] + ["    " + line for line in lines]
        pro = [f"def {name}():"]
        for i in sorted(self.regs):
            pro.append(f"    g{i} = R[{i}]")
        for s in sorted(self.segs):
            pro.append(f"    sg{s} = SB[{s}]")
        for s in sorted(self.seglims):
            pro.append(f"    sl{s} = env.segs[{s}].limit")
        if self.need_fe:
            pro.append("    FE = S.get_flags()")
        if self.has_store:
            pro.append("    SMC = False")
        if self.looped:
            pro.append("    IC = S.icount")
            pro.append("    LIM = S.limit")
        if not self.fault_snaps:
            body = [line[4:] for line in lines]
            return "\n".join(pro + body) + "\n"
        pro.append("    n = 0")
        pro.append("    try:")
        handler = ["    except Fault:", "        if n >= 0:"]
        handler += [f"            R[{i}] = g{i}" for i in sorted(self.written)]
        for k, snap in sorted(self.fault_snaps.items()):
            flag_lines = self._flag_lines(snap)
            if flag_lines:
                handler.append(f"            if n == {k}:")
                handler += ["                " + line for line in flag_lines]
        handler.append(f"            env.rip = {tuple(self.ips)!r}[n]")
        handler.append("            S.icount = IC + n" if self.looped
                       else "            S.icount += n")
        handler.append("        raise")
        return "\n".join(pro + lines + handler) + "\n"


__all__ = ["MASK", "SEG_PREFIX", "SIGN", "Ctx", "Insn", "Op", "stack_size"]
