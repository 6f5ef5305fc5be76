"""Integer arithmetic and logic: ADD ADC SUB SBB CMP AND OR XOR TEST NOT NEG INC DEC.

Semantics and flags from Intel SDM vol. 2A/2B, the instruction pages of the same
names ("Operation", "Flags Affected"); the flag formulas live in
:mod:`accel.interp.flags`.
"""

from __future__ import annotations

from pyqemu.accel.interp.codegen import MASK, Ctx, Insn
from pyqemu.accel.interp.table import op

__all__ = ["ALU", "gen_alu", "gen_incdec", "gen_neg", "gen_not"]

#: mnemonic -> (flag kind, result template, writes the destination)
ALU: dict[str, tuple[str, str, bool]] = {
    "add": ("ADD", "({a} + {b}) & {m}", True),
    "adc": ("ADC", "({a} + {b} + {c}) & {m}", True),
    "sub": ("SUB", "({a} - {b}) & {m}", True),
    "sbb": ("SBB", "({a} - {b} - {c}) & {m}", True),
    "cmp": ("SUB", "({a} - {b}) & {m}", False),
    "and": ("LOGIC", "{a} & {b}", True),
    "or": ("LOGIC", "{a} | {b}", True),
    "xor": ("LOGIC", "{a} ^ {b}", True),
    "test": ("LOGIC", "{a} & {b}", False),
}


@op(*ALU)
def gen_alu(c: Ctx, i: Insn) -> None:
    kind, tmpl, writes = ALU[i.mnem]
    dst, src = i.ops
    size = dst.size
    if writes:
        a_val, put = c.rmw(dst)
    else:
        a_val, put = c.read(dst), None
    a, b, r = c.t("a"), c.t("b"), c.t("r")
    c.emit(f"{a} = {a_val}")
    # xor r, r / sub r, r: the idiom still reads the register, harmless.
    c.emit(f"{b} = {c.read(src, size)}")
    carry = c.flag("C") if "{c}" in tmpl else "0"
    c.emit(f"{r} = " + tmpl.format(a=a, b=b, c=carry, m=hex(MASK[size])))
    if put is not None:
        put(r)
    c.set_cc(kind, size * 8, a, b, r)


@op("inc", "dec")
def gen_incdec(c: Ctx, i: Insn) -> None:
    (dst,) = i.ops
    size = dst.size
    val, put = c.rmw(dst)
    a, r = c.t("a"), c.t("r")
    c.emit(f"{a} = {val}")
    sign = "+" if i.mnem == "inc" else "-"
    c.emit(f"{r} = ({a} {sign} 1) & {MASK[size]:#x}")
    put(r)
    c.set_cc("INC" if i.mnem == "inc" else "DEC", size * 8, a, "1", r)


@op("neg")
def gen_neg(c: Ctx, i: Insn) -> None:
    """NEG is 0 - src: CF = (src != 0), the other flags as SUB (SDM vol. 2B, NEG)."""
    (dst,) = i.ops
    val, put = c.rmw(dst)
    b, r = c.t("b"), c.t("r")
    c.emit(f"{b} = {val}")
    c.emit(f"{r} = -{b} & {MASK[dst.size]:#x}")
    put(r)
    c.set_cc("SUB", dst.size * 8, "0", b, r)


@op("not")
def gen_not(c: Ctx, i: Insn) -> None:
    """NOT: no flags affected (SDM vol. 2B, NOT)."""
    (dst,) = i.ops
    val, put = c.rmw(dst)
    r = c.t("r")
    c.emit(f"{r} = {val} ^ {MASK[dst.size]:#x}")
    put(r)
