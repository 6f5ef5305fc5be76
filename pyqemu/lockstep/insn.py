"""The instruction lockstep steps: decoded once by capstone, kept as what lockstep uses.

Before each step lockstep reads the leader's next instruction (through the leader's
page tables, :mod:`pyqemu.lockstep.state`) and decodes it for the CS it runs in
(16, 32 or 64-bit: Intel SDM vol. 3A, 3.4.5 "D/B" and "L").  Of capstone's answer it
keeps the text (the report), the first operand's size and a shift's count (the flags
the SDM leaves undefined depend on both), the explicit memory operands (the bytes the
instruction may write) and whether a REP prefix repeats it (KVM steps each iteration
of a REP string instruction: SDM vol. 2B, "REP/REPE/REPZ/REPNE/REPNZ").  Capstone's
implicit-operand metadata is not used; it has known mistakes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["Insn", "MemOperand", "decode"]

_STRING = ("movs", "stos", "lods", "scas", "cmps", "ins", "outs")
_SHIFTS = frozenset(("shl", "sal", "shr", "sar", "rol", "ror", "rcl", "rcr", "shld", "shrd"))
_CACHE_SIZE = 65536


@dataclasses.dataclass(frozen=True)
class MemOperand:
    """An explicit memory operand: ``segment:[base + index * scale + disp]``, ``size`` bytes."""

    segment: str | None
    base: str | None
    index: str | None
    scale: int
    disp: int
    size: int


@dataclasses.dataclass(frozen=True)
class Insn:
    """One decoded guest instruction (what lockstep needs of capstone's answer)."""

    address: int
    bytes: bytes
    mnemonic: str                    # as capstone spells it, prefixes included ("rep stosb")
    op_str: str
    bits: int                        # the code segment's default operand size
    addr_bits: int                   # the effective address size
    rep: bool                        # a REP/REPE/REPNE prefix repeats it
    width: int                       # first operand's size in bits (0 without operands)
    count: int | str | None          # shift/rotate count: an immediate, "cl", or None
    mems: tuple[MemOperand, ...]
    name: str = ""                   # the mnemonic without prefixes ("stosb")

    @property
    def text(self) -> str:
        return f"{self.mnemonic} {self.op_str}".strip()


_decoders: dict[int, Any] = {}
_cache: dict[tuple[int, int, bytes], Insn | None] = {}


def _decoder(bits: int) -> Any:
    md = _decoders.get(bits)
    if md is None:
        import capstone
        mode = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}[bits]
        md = capstone.Cs(capstone.CS_ARCH_X86, mode)
        md.detail = True
        _decoders[bits] = md
    return md


def decode(code: bytes, address: int, bits: int) -> Insn | None:
    """The first instruction of ``code`` at ``address`` for a ``bits``-bit code segment,
    or None where capstone cannot decode it.

    Cached by (bits, address, bytes): the text of a relative branch depends on where
    it is, and a guest runs the same instructions at the same places.
    """
    key = (bits, address, code)
    try:
        return _cache[key]
    except KeyError:
        pass
    insn = _decode(code, address, bits)
    if len(_cache) < _CACHE_SIZE:
        _cache[key] = insn
    return insn


def _decode(code: bytes, address: int, bits: int) -> Insn | None:
    from capstone import x86_const as x
    for ci in _decoder(bits).disasm(code, address, 1):
        mems: list[MemOperand] = []
        width = 0
        count: int | str | None = None
        ops = list(ci.operands)
        for n, op in enumerate(ops):
            if n == 0:
                width = op.size * 8
            if op.type == x.X86_OP_MEM:
                m = op.mem
                mems.append(MemOperand(
                    ci.reg_name(m.segment) if m.segment else None,
                    ci.reg_name(m.base) if m.base else None,
                    ci.reg_name(m.index) if m.index else None,
                    m.scale, m.disp, op.size))
        name = ci.mnemonic.split()[-1]
        if name in _SHIFTS:
            last = ops[-1] if len(ops) > 1 else None
            if last is None:
                count = 1
            elif last.type == x.X86_OP_IMM:
                count = last.imm
            elif last.type == x.X86_OP_REG and ci.reg_name(last.reg) == "cl":
                count = "cl"
        rep = (bool(set(ci.prefix) & {0xF2, 0xF3}) and name.startswith(_STRING)) or \
            ci.mnemonic.startswith("rep")
        return Insn(ci.address, bytes(ci.bytes), ci.mnemonic, ci.op_str, bits,
                    ci.addr_size * 8, rep, width, count, tuple(mems), name)
    return None
