"""The translator: capstone decodes a block once, the family tables turn it into Python source.

``translate_block`` reads guest code at a linear PC, decodes it with capstone
(CS_MODE_16/32/64, detail on) until a control transfer, a mode change, a page
boundary, a breakpoint or the size cap, reduces each capstone instruction to an
:class:`~accel.interp.codegen.Insn` (capstone objects are not kept: nothing of
capstone runs when a block runs), has each instruction's semantic emit its
source, and compiles the block into one Python function (a translation block,
QEMU's ``tb_gen_code``).  Operand and address sizes and prefixes come from the
encoding (SDM vol. 2A, 2.1 and 2.2), not from capstone's implicit-register
metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import capstone
from capstone import x86 as csx

# Each family module registers its rows in table.OPS when imported.
from pyqemu.accel.interp import (  # noqa: F401
    ops_alu,
    ops_bcd,
    ops_control,
    ops_move,
    ops_muldiv,
    ops_shift,
    ops_string,
    ops_system,
    vm86,
)
from pyqemu.accel.interp.codegen import Ctx, Insn, Op
from pyqemu.accel.interp.errors import (
    EXCP_GP,
    EXCP_UD,
    Fault,
    InterpError,
    UnimplementedInstruction,
)
from pyqemu.accel.interp.mmu import ACC_EXEC, PAGE
from pyqemu.accel.interp.state import InterpCpu, Mode
from pyqemu.accel.interp.table import OPS
from pyqemu.target.i386.cpu_state import GPR_PARTS, SEG_NAMES
from pyqemu.util import trace

__all__ = ["MAX_BLOCK_INSNS", "MAX_INSN_LEN", "BlockFn", "TranslationBlock", "Translator"]

#: Most instructions per block (QEMU's TCG_MAX_INSNS is 512; Python blocks stay small).
MAX_BLOCK_INSNS = 64
MAX_INSN_LEN = 15

_CS_MODES = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}

#: The names capstone gives the absent index of a SIB byte whose index field is 100b
#: without REX.X ("none" in SDM vol. 2A, 2.1.5, Table 2-3; 2.2.1.2 for REX.X).
_NO_INDEX = frozenset({"riz", "eiz"})
#: What a decoder surprise or a semantic's bug can raise while a block is built: turned
#: into an InterpError naming the instruction, never let out as such.
_TRANSLATION_BUGS = (KeyError, IndexError, ValueError, TypeError, AttributeError)


class BlockFn(Protocol):
    """A compiled block (docs/architecture.md, the generated-code ABI): called with no
    arguments, it runs the block and returns the next block's function when an exit is
    chained, else None (RIP then in ``env.rip``); ``rip`` is its own start, where a
    chain stopped before calling it resumes."""

    rip: int

    def __call__(self) -> BlockFn | None: ...


@dataclass
class TranslationBlock:
    """One compiled block (QEMU's ``TranslationBlock``)."""

    pc: int                      # linear address of the first instruction
    key: tuple[Any, ...]
    fn: BlockFn
    ninsns: int
    pages: tuple[int, ...]       # physical pages its code came from
    source: str = field(repr=False, default="")
    cells: list[list[Any]] = field(repr=False, default_factory=list)     # its exits' links
    incoming: list[list[Any]] = field(repr=False, default_factory=list)  # links to it


class Translator:
    """Decoder and code generator shared by the blocks of one core.  ``namespace``: the
    globals of every block (:func:`accel.interp.namespace.block_namespace`)."""

    def __init__(self, core: InterpCpu, namespace: dict[str, Any]) -> None:
        self.core = core
        self.namespace = namespace
        self.ops = OPS
        self.md: dict[int, capstone.Cs] = {}
        for bits, mode in _CS_MODES.items():
            md = capstone.Cs(capstone.CS_ARCH_X86, mode)
            md.detail = True
            self.md[bits] = md
        self.counter = 0

    # -- fetching -----------------------------------------------------------------
    def _fetch(self, la: int) -> tuple[bytes, list[int], Fault | None]:
        """Bytes from ``la`` to its page end plus, when ``la`` is within one instruction's
        length of that end, what the next page can give (<= 15).

        Returns the bytes, the physical page of each fetched page, and the fault
        of the next page if it could not be read (raised only if an instruction
        really needs those bytes).  The next page is walked only then because the
        walk sets accessed bits (SDM vol. 3A, 4.8), which the hardware leaves clear
        on a page it does not fetch from: an instruction that straddles the page
        end later in a block ends the block and starts one of its own here.
        """
        mmu = self.core.mmu
        pa = mmu.translate(la, ACC_EXEC)
        n = PAGE - (la & 0xFFF)
        data = self.core.mem.read_bytes(pa, n)
        pages = [pa >> 12]
        if n >= MAX_INSN_LEN:
            return data, pages, None
        nxt = (la + n) & self.core.la_mask
        try:
            pa2 = mmu.translate(nxt, ACC_EXEC)
        except Fault as f:
            return data, pages, f
        data += self.core.mem.read_bytes(pa2, MAX_INSN_LEN)
        pages.append(pa2 >> 12)
        return data, pages, None

    # -- decoding -------------------------------------------------------------------
    def _insn(self, ci: Any, mode: Mode, k: int) -> Insn:
        i = Insn()
        i.k = k
        i.ip = ci.address
        i.size = ci.size
        i.next_ip = (ci.address + ci.size) & mode.ipmask
        i.linear = (mode.cs_base + ci.address) & self.core.la_mask
        i.code = bytes(ci.bytes)
        # capstone prints prefixes into the mnemonic ("rep movsb", "lock add"): the
        # prefix bytes are taken from the encoding instead.
        i.mnem = ci.mnemonic.split()[-1] if " " in ci.mnemonic else ci.mnemonic
        i.op_str = ci.op_str
        i.prefixes = [p for p in ci.prefix if p]
        i.rep = 0xF3 in i.prefixes
        i.repne = 0xF2 in i.prefixes
        i.adsize = ci.addr_size
        i.rex_w = bool(ci.rex & 8) if mode.code == 64 else False
        opsize = 2 if mode.code == 16 else 4
        if 0x66 in i.prefixes:
            opsize = 6 - opsize
        if i.rex_w:
            opsize = 8
        i.opsize = opsize
        i.modrm = ci.modrm if ci.modrm_offset else None
        for o in ci.operands:
            i.ops.append(self._operand(ci, o))
        return i

    def _operand(self, ci: Any, o: Any) -> Op:
        if o.type == csx.X86_OP_REG:
            name = ci.reg_name(o.reg)
            gpr = GPR_PARTS.get(name)
            if gpr is not None:
                op = Op("reg", gpr[2] // 8)
                op.reg, op.shift = gpr[0], gpr[1]
            elif name in SEG_NAMES:
                op = Op("seg", 2)
                op.reg = SEG_NAMES.index(name)
            elif name.startswith(("cr", "dr")) and name[2:].isdigit():
                op = Op(name[:2], o.size)
                op.reg = int(name[2:])
            else:
                op = Op("other", o.size)
            op.name = name
            return op
        if o.type == csx.X86_OP_IMM:
            op = Op("imm", o.size)
            op.imm = o.imm
            return op
        if o.type == csx.X86_OP_MEM:
            op = Op("mem", o.size)
            m = o.mem
            if m.segment:
                seg = ci.reg_name(m.segment)
                if seg not in SEG_NAMES:
                    return Op("other", o.size)
                op.seg = SEG_NAMES.index(seg)
            if m.base:
                op.base_name = ci.reg_name(m.base)
                if op.base_name not in ("rip", "eip"):
                    base = GPR_PARTS.get(op.base_name)
                    if base is None:
                        return Op("other", o.size)
                    op.base = base[0]
            if m.index:
                name = ci.reg_name(m.index)
                if name not in _NO_INDEX:
                    index = GPR_PARTS.get(name)
                    if index is None:
                        return Op("other", o.size)
                    op.index = index[0]
            op.scale = m.scale
            op.disp = m.disp
            return op
        return Op("other", 0)

    # -- translation --------------------------------------------------------------------
    def translate(self, rip: int, mode: Mode, max_insns: int,
                  breakpoints: frozenset[int] | set[int] = frozenset(),
                  jump_cache: Callable[[int], Any] | None = None) -> TranslationBlock:
        """Build the block at CS-relative ``rip`` in ``mode``, at most ``max_insns`` long,
        ending before any of ``breakpoints``.  ``jump_cache``: the lookup of this mode's
        blocks by RIP, which the block's computed jumps use (``JC``)."""
        core = self.core
        la = (mode.cs_base + rip) & core.la_mask
        data, pages, next_fault = self._fetch(la)
        md = self.md[mode.code]
        c = Ctx(mode)
        c.cs_selector = core.env.segs[1].selector
        if max_insns > 1 and rip not in breakpoints:
            c.loop_rip = rip          # a jump back here may loop inside the block
        first_page = la >> 12
        if rip > mode.cs_limit:
            raise Fault(EXCP_GP, 0, why=f"code fetch at {rip:#x}, past the CS limit")
        k = 0
        last: Insn | None = None
        used_len = 0
        for ci in md.disasm(data, rip):
            ilin = (mode.cs_base + ci.address) & core.la_mask
            if k and (ilin >> 12 != first_page or ci.address in breakpoints
                      or k >= max_insns):
                break
            if ci.address + ci.size - 1 > mode.cs_limit:
                if k:
                    break                 # the block that starts there faults
                raise Fault(EXCP_GP, 0, why=f"instruction at {ci.address:#x} crosses "
                                            f"the CS limit")
            try:
                i = self._insn(ci, mode, k)
            except _TRANSLATION_BUGS as e:
                if k == 0:
                    raise _cannot_translate(ci, ilin, c.cs_selector, e) from e
                break                     # the block that starts there reports it
            c.k, c.insn = k, i
            sem = self.ops.get(i.mnem)
            if mode.vm86:
                sem = vm86.semantic(i.mnem, sem)
            cp = c.checkpoint()
            try:
                if sem is None or any(o.kind == "other" for o in i.ops):
                    raise c.unimplemented()
                c.ips.append(i.ip)
                c.stored = False
                sem(c, i)
                if c.stored and not c.ended:
                    c.smc_check(i.next_ip)
            except UnimplementedInstruction:
                c.restore(cp)
                del c.ips[k:]
                if k == 0:
                    raise
                break
            except _TRANSLATION_BUGS as e:
                c.restore(cp)
                del c.ips[k:]
                if k == 0:
                    raise _cannot_translate(ci, ilin, c.cs_selector, e) from e
                break
            last = i
            used_len = (ci.address - rip) + ci.size
            k += 1
            if c.ended:
                break
        if last is None:
            # Nothing decodes at the PC: missing bytes on an unmapped next page, else #UD.
            if next_fault is not None and len(data) < MAX_INSN_LEN:
                raise next_fault
            raise Fault(EXCP_UD, why=f"undecodable bytes {data[:MAX_INSN_LEN].hex(' ')} at {la:#x}")
        if not c.ended:
            c.k = k - 1
            c.exit(hex(last.next_ip), done=k)
        if used_len <= PAGE - (la & 0xFFF):
            pages = pages[:1]
        self.counter += 1
        name = f"tb_{la:x}_{self.counter}"
        src = c.source(name)
        if trace.enabled("in_asm"):
            self._trace_in_asm(la, md, data[:used_len], rip)
        ns: dict[str, Any] = {}
        exec(compile(src, f"<{name}>", "exec"), self.namespace, ns)
        cells: list[list[Any]] = [[None] for _ in range(c.ncells)]
        fn: BlockFn = ns[f"make_{name}"](*cells, jump_cache)
        fn.rip = rip              # where a chain that stops before calling it must resume
        return TranslationBlock(la, (rip,) + mode.key, fn, k, tuple(pages), src, cells)

    def _trace_in_asm(self, la: int, md: capstone.Cs, code: bytes, rip: int) -> None:
        trace.event(f"IN: {la:#x}", "in_asm")
        for ci in md.disasm(code, rip):
            trace.event(f"  {ci.address:#010x}:  {ci.bytes.hex():<20} {ci.mnemonic} {ci.op_str}",
                        "in_asm")


def _cannot_translate(ci: Any, linear: int, cs: int, e: BaseException) -> InterpError:
    """A decoder surprise (capstone reported what the operand model has no place for) or
    a bug in a semantic, named with the instruction and its address."""
    text = f"{ci.mnemonic} {ci.op_str}".strip()
    width = 4 if ci.address <= 0xFFFF else 8 if ci.address <= 0xFFFFFFFF else 16
    return InterpError(f"interp: cannot translate '{text}' ({bytes(ci.bytes).hex(' ')}) at "
                       f"{linear:#x} (cs:ip {cs:04x}:{ci.address:0{width}x}): "
                       f"{type(e).__name__}: {e}")
