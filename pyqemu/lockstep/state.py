"""What lockstep captures and compares of the architectural state.

After every instruction each machine's state is read (QEMU's ``cpu_synchronize_state``,
here :meth:`pyqemu.machine.Machine.env`) and compared:

* the general registers and RIP;
* RFLAGS without RF (the debug exception that single-stepping takes sets it: Intel
  SDM vol. 3B, 18.3.1.1) and without the flags the SDM leaves undefined for the
  instruction ("Flags Affected" of each instruction, vol. 2A/2B), which come from the
  one table of them, :func:`pyqemu.accel.interp.undefined_flags.undefined_flags`;
* every segment register's selector and its hidden part: base, limit and the
  attributes type (without the accessed bit), S, DPL, P, AVL, L, D/B and G (SDM vol. 3A,
  3.4.2-3.4.5); GDTR and IDTR (base, limit), the LDTR and TR selectors;
* CR0, CR2, CR3, CR4 (SDM vol. 3A, 2.5) and IA32_EFER (2.2.1);
* the memory the instruction may have written (:func:`written_ranges`: its memory
  operands, what it pushed, a string instruction's destination), read through the
  leader's page tables from both machines' RAM, and all of RAM now and then
  (:func:`first_ram_difference`).

Guest memory is read without side effects (:class:`GuestMemory`): RAM and ROM only,
never a device, through :func:`pyqemu.target.i386.paging.page_walk`, which reads the
tables and sets no accessed or dirty bit.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import TypeVar

from pyqemu.accel.interp.undefined_flags import undefined_flags
from pyqemu.hw.core.machine import MachineState
from pyqemu.lockstep.insn import Insn
from pyqemu.machine import Machine
from pyqemu.system.memory import AddressSpace, MemoryRegion
from pyqemu.target.i386 import cpu_state as cs
from pyqemu.target.i386.cpu_state import CPUX86State
from pyqemu.target.i386.paging import page_walk

__all__ = [
    "FLAGS_IGNORED",
    "SEG_ATTR_MASK",
    "GuestMemory",
    "StateDiff",
    "adopt_undefined_flags",
    "arch_state",
    "board_part",
    "code_bits",
    "compare",
    "first_ram_difference",
    "snapshot",
    "undefined_flags_of",
    "written_ranges",
]

#: RFLAGS bits never compared: RF, which the single-step trap's #DB leaves set
#: (SDM vol. 3B, 18.3.1.1); it says how the instruction was stepped, not what it did.
FLAGS_IGNORED = cs.RF_MASK
#: Segment attribute bits compared (SDM vol. 3A, 3.4.5): type without the accessed
#: bit, S, DPL, P, AVL, L, D/B, G.  The accessed bit of the hidden part is left out:
#: KVM reports it as its segment cache holds it, which is not what the descriptor in
#: memory says (and that is compared as memory).
SEG_ATTR_MASK = (cs.DESC_W_MASK | cs.DESC_C_MASK | cs.DESC_CS_MASK | cs.DESC_S_MASK
                 | 3 << cs.DESC_DPL_SHIFT | cs.DESC_P_MASK | cs.DESC_AVL_MASK
                 | cs.DESC_L_MASK | cs.DESC_B_MASK | cs.DESC_G_MASK)

_T = TypeVar("_T")
_SEG_FIELDS = tuple((i, name, f"{name}.base", f"{name}.limit", f"{name}.attr")
                    for i, name in enumerate(cs.SEG_NAMES))
_REG_FIELDS = tuple(enumerate(cs.REG_NAMES))


def board_part(ms: MachineState, name: str, kind: type[_T]) -> _T:
    """The board's ``name`` (``address_space_memory``, ``ram`` ...: what ``pc_memory_init``
    made), checked to be a ``kind``."""
    part = getattr(ms, name, None)
    if not isinstance(part, kind):
        raise TypeError(f"machine {ms.typename!r} has no {kind.__name__} {name!r}")
    return part


# -- registers ------------------------------------------------------------------------------

def arch_state(env: CPUX86State) -> dict[str, int]:
    """The architectural state lockstep compares, as ``{field: value}`` in report order.

    A data segment register whose selector is null in protected mode is unusable: only
    its selector is architectural (SDM vol. 3A, 3.4.2; in 64-bit mode SS may hold a
    null selector at CPL0-2 and still be used, so SS keeps its hidden part there).
    """
    regs = env.regs
    st: dict[str, int] = {name: regs[i] for i, name in _REG_FIELDS}
    st["rip"] = env.rip
    st["rflags"] = env.eflags
    pe = env.cr[0] & cs.CR0_PE
    code64 = env.code64
    segs = env.segs
    for i, name, base, limit, attr in _SEG_FIELDS:
        s = segs[i]
        st[name] = s.selector
        if pe and not s.selector & ~3 and i != cs.R_CS and not (i == cs.R_SS and code64):
            continue
        st[base] = s.base
        st[limit] = s.limit
        st[attr] = s.flags & SEG_ATTR_MASK
    st["gdtr.base"], st["gdtr.limit"] = env.gdt.base, env.gdt.limit
    st["idtr.base"], st["idtr.limit"] = env.idt.base, env.idt.limit
    st["ldtr"], st["tr"] = env.ldt.selector, env.tr.selector
    cr = env.cr
    st["cr0"], st["cr2"], st["cr3"], st["cr4"] = cr[0], cr[2], cr[3], cr[4]
    st["efer"] = env.efer
    return st


def snapshot(env: CPUX86State) -> CPUX86State:
    """What lockstep reads of the state before a step, copied (cheaper than ``env.copy()``:
    the register lists and segment caches, the rest shallow)."""
    snap = copy.copy(env)
    snap.regs = list(env.regs)
    snap.segs = [s.copy() for s in env.segs]
    snap.cr = list(env.cr)
    return snap


def code_bits(env: CPUX86State) -> int:
    """The default operand size of the code segment ``env`` runs in (SDM vol. 3A, 3.4.5)."""
    return 64 if env.code64 else 32 if env.code32 else 16


# -- RFLAGS ---------------------------------------------------------------------------------

def undefined_flags_of(insn: Insn | None, pre: CPUX86State) -> int:
    """The RFLAGS bits ``insn`` leaves undefined, given the state before it ran.

    The table is :func:`~pyqemu.accel.interp.undefined_flags.undefined_flags`; lockstep
    gives it the mnemonic, the first operand's width and, for a shift or rotate, the
    count as the processor uses it: an immediate or CL, masked to 5 bits (6 bits with
    a 64-bit operand: SDM vol. 2B, "SAL/SAR/SHL/SHR", "RCL/RCR/ROL/ROR", "SHLD", "SHRD").
    """
    if insn is None:
        return 0
    count: int | None = None
    if isinstance(insn.count, int):
        count = insn.count
    elif insn.count == "cl":
        count = pre.regs[cs.R_ECX] & 0xFF
    if count is not None:
        count &= 0x3F if insn.width == 64 else 0x1F
    return undefined_flags(insn.name, insn.width or 32, count)


def adopt_undefined_flags(leader: CPUX86State, follower: CPUX86State, undef: int) -> bool:
    """Give the follower the leader's values of the ``undef`` flags; True if that changed
    anything.  Either value is right, but a later PUSHF, Jcc or ADC reads them: with the
    hardware's values in both, what comes after compares only what is defined."""
    if not (leader.eflags ^ follower.eflags) & undef:
        return False
    follower.eflags = (follower.eflags & ~undef) | (leader.eflags & undef)
    return True


# -- memory ---------------------------------------------------------------------------------

class GuestMemory:
    """One machine's guest memory, read without side effects.

    Physical reads reach RAM and ROM only (never a device: ``address_space_read`` on a
    region with ``ops`` would run its callback); linear addresses are translated through
    the page tables of a given CPU state, read the same way.
    """

    def __init__(self, machine: Machine) -> None:
        ms = machine.state
        self._asp = board_part(ms, "address_space_memory", AddressSpace)
        self._ram = board_part(ms, "ram", MemoryRegion)

    def ram(self) -> memoryview:
        """Guest RAM (``pc.ram``): the bytes both accelerators run on."""
        return self._ram.ram()

    def phys_read(self, pa: int, n: int) -> bytes | None:
        """``n`` bytes of RAM/ROM at physical ``pa``, or None if they are not all RAM/ROM
        of one region."""
        r = self._asp.lookup(pa)
        if r is None or not r.mr.is_ram or pa + n > r.end:
            return None
        off = r.offset + pa - r.start
        return bytes(r.mr.ram()[off:off + n])

    def _entry(self, addr: int, size: int) -> int | None:
        b = self.phys_read(addr, size)
        return None if b is None else int.from_bytes(b, "little")

    def translate(self, env: CPUX86State, la: int) -> int | None:
        """Linear -> physical through ``env``'s paging mode and tables (SDM vol. 3A,
        chapter 4); None where a level is not present."""
        return page_walk(self._entry, env.cr[0], env.cr[3], env.cr[4], env.efer, la).pa

    def read_linear(self, env: CPUX86State, la: int, n: int) -> bytes:
        """Up to ``n`` bytes at linear ``la``: shorter where a page is not mapped."""
        out = bytearray()
        while n > 0:
            chunk = min(n, 0x1000 - (la & 0xFFF))
            pa = self.translate(env, la)
            b = None if pa is None else self.phys_read(pa, chunk)
            if b is None:
                break
            out += b
            la, n = la + chunk, n - chunk
        return bytes(out)


_STACK_BASES = frozenset(("rsp", "esp", "sp", "rbp", "ebp", "bp"))
_NO_ACCESS = frozenset(("lea", "nop", "invlpg", "clflush", "prefetch", "prefetchw",
                        "prefetcht0", "prefetcht1", "prefetcht2", "prefetchnta"))
_STRING_STORES = ("movs", "stos", "ins")
#: the most a push-like instruction moves the stack pointer that lockstep takes for a
#: write of the stack (an interrupt frame with an error code in IA-32e mode is 48 bytes)
_MAX_PUSH = 64
#: the longest string store range compared per instruction (longer ones: the RAM check)
_MAX_STRING = 1 << 20


def written_ranges(insn: Insn | None, pre: CPUX86State,
                   post: CPUX86State) -> list[tuple[int, int]]:
    """Linear ``[start, end)`` ranges ``insn`` may have written, from the state before and
    after it: its memory operands (segment base + effective address, SDM vol. 1, 3.7.5),
    the stack below the old stack pointer if it moved down (a push, CALL, ENTER, an
    interrupt frame) and a string store's destination (ES:rDI to where rDI went)."""
    if insn is None:
        return []
    out: list[tuple[int, int]] = []
    amask = (1 << insn.addr_bits) - 1
    long64 = insn.bits == 64
    lmask = 0xFFFFFFFFFFFFFFFF if long64 else 0xFFFFFFFF
    if insn.name not in _NO_ACCESS and insn.mems:
        for mo in insn.mems:
            ea = mo.disp
            for reg, k in ((mo.base, 1), (mo.index, mo.scale)):
                if reg in ("rip", "eip"):
                    ea += pre.rip + len(insn.bytes)
                elif reg:
                    ea += pre.reg(reg) * k
            seg = mo.segment or ("ss" if mo.base in _STACK_BASES else "ds")
            # In 64-bit mode only FS and GS have a base (SDM vol. 3A, 3.4.4).
            base = pre.segs[cs.SEG_NAMES.index(seg)].base \
                if not long64 or seg in ("fs", "gs") else 0
            la = (base + (ea & amask)) & lmask
            out.append((la, la + max(mo.size, 1)))
    ss = pre.segs[cs.R_SS]
    ss_base = 0 if long64 else ss.base
    smask = 0xFFFFFFFFFFFFFFFF if long64 else (
        0xFFFFFFFF if ss.flags & cs.DESC_B_MASK else 0xFFFF)
    old_sp, new_sp = pre.regs[cs.R_ESP] & smask, post.regs[cs.R_ESP] & smask
    if 0 < old_sp - new_sp <= _MAX_PUSH:
        out.append(((ss_base + new_sp) & lmask, (ss_base + old_sp) & lmask))
    if insn.name.startswith(_STRING_STORES):
        es = 0 if long64 else pre.segs[cs.R_ES].base
        a, b = pre.regs[cs.R_EDI] & amask, post.regs[cs.R_EDI] & amask
        lo, hi = min(a, b), max(a, b)
        if hi - lo <= _MAX_STRING:
            out.append(((es + lo) & lmask, (es + hi + 8) & lmask))
    return [(a, b) for a, b in out if b > a]


# -- comparing ------------------------------------------------------------------------------

@dataclasses.dataclass
class StateDiff:
    """Both machines' compared state after a step and where they differ."""

    leader: dict[str, int]
    follower: dict[str, int]
    registers: list[str]                         # the arch_state fields that differ
    memory: list[tuple[int, bytes, bytes]]       # (linear address, leader's, follower's)

    @property
    def fields(self) -> list[str]:
        return self.registers + [f"mem[{a:#x}]" for a, _, _ in self.memory]


def compare(leader: CPUX86State, follower: CPUX86State, undef: int,
            ranges: list[tuple[int, int]], lmem: GuestMemory, fmem: GuestMemory) -> StateDiff:
    """Compare the two states (RFLAGS without ``undef`` and :data:`FLAGS_IGNORED`) and the
    linear ``ranges`` of memory, read through the leader's page tables in both machines."""
    ls, fs = arch_state(leader), arch_state(follower)
    keep = ~(undef | FLAGS_IGNORED)
    ls["rflags"] &= keep
    fs["rflags"] &= keep
    registers = [] if ls == fs else [
        k for k in dict.fromkeys([*ls, *fs]) if ls.get(k) != fs.get(k)]
    memory = []
    for a, b in ranges:
        lb, fb = lmem.read_linear(leader, a, b - a), fmem.read_linear(leader, a, b - a)
        if lb != fb:
            memory.append((a, lb, fb))
    return StateDiff(ls, fs, registers, memory)


def first_ram_difference(lmem: GuestMemory, fmem: GuestMemory,
                         chunk: int = 1 << 20) -> int | None:
    """The lowest physical address where the two machines' RAM differs, or None."""
    lv, fv = lmem.ram(), fmem.ram()
    size = len(lv)
    # Chunks compared as bytes: memcmp speed (memoryview == compares item by item).
    at = next((o for o in range(0, size, chunk)
               if lv[o:o + chunk].tobytes() != fv[o:o + chunk].tobytes()), None)
    if at is None:
        return None
    return next(i for i in range(at, min(at + chunk, size)) if lv[i] != fv[i])
