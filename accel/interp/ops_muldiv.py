"""Multiply and divide: MUL, IMUL (one, two and three operands), DIV, IDIV.

Intel SDM vol. 2A "MUL", "IMUL", "DIV", "IDIV".  MUL/IMUL set CF=OF when the
upper half of the product is significant (for IMUL: when the truncated product
differs from the full one); SF ZF AF PF are undefined (we take SF ZF PF from
the low half and clear AF, see :mod:`accel.interp.undefined_flags`).  DIV/IDIV
raise #DE on a zero divisor or a quotient that does not fit (SDM vol. 3A, 6.15
"Interrupt 0"); IDIV truncates toward zero; their flags are undefined and left
unchanged.
"""

from __future__ import annotations

from pyqemu.accel.interp.codegen import MASK, SIGN, Ctx, Insn
from pyqemu.accel.interp.errors import EXCP_DE, Fault
from pyqemu.accel.interp.table import op

__all__ = ["div_signed", "div_unsigned", "gen_div", "gen_mul"]

# Accumulator register pairs by operand size: (low, high) register indices; 8-bit is AX.
RAX, RDX = 0, 2


def div_unsigned(a: int, b: int, size: int) -> tuple[int, int]:
    """Unsigned divide of the double-width dividend; #DE on zero or overflow (``DIVU`` in
    generated code, accel/interp/namespace.py)."""
    if b == 0:
        raise Fault(EXCP_DE, why="divide by zero")
    q, r = divmod(a, b)
    if q > MASK[size]:
        raise Fault(EXCP_DE, why="quotient too large")
    return q, r


def div_signed(a: int, b: int, size: int) -> tuple[int, int]:
    """Signed divide (operands unsigned encodings): quotient toward zero, remainder sign of
    a (``DIVS`` in generated code, accel/interp/namespace.py)."""
    if b == 0:
        raise Fault(EXCP_DE, why="divide by zero")
    bits = size * 8
    sa = a - (1 << (2 * bits)) if a >> (2 * bits - 1) else a
    sb = b - (1 << bits) if b >> (bits - 1) else b
    q = abs(sa) // abs(sb)
    if (sa < 0) != (sb < 0):
        q = -q
    r = sa - q * sb
    if not -(1 << (bits - 1)) <= q < (1 << (bits - 1)):
        raise Fault(EXCP_DE, why="quotient too large")
    m = MASK[size]
    return q & m, r & m


def _signed(v: str, size: int) -> str:
    return f"(({v} ^ {SIGN[size]:#x}) - {SIGN[size]:#x})"


def _mul_flags(c: Ctx, lo: str, size: int, ovf: str) -> None:
    c.set_flag("C", ovf)
    c.set_flag("O", ovf)
    c.set_flag("Z", f"({lo} == 0)")
    c.set_flag("S", f"({lo} >> {size * 8 - 1} & 1)")
    c.set_flag("P", f"PARITY[{lo} & 0xFF]")
    c.set_flag("A", "0")


@op("mul", "imul")
def gen_mul(c: Ctx, i: Insn) -> None:
    signed = i.mnem == "imul"
    if len(i.ops) == 1:
        (src,) = i.ops
        size = src.size
        a, b, p, lo, hi, ovf = (c.t(x) for x in ("a", "b", "p", "lo", "hi", "ov"))
        c.emit(f"{b} = {c.read(src)}")
        c.emit(f"{a} = {c.gpr_read(RAX, size)}")
        if signed:
            double = MASK[size] << (size * 8) | MASK[size]
            c.emit(f"{p} = ({_signed(a, size)} * {_signed(b, size)}) & {double:#x}")
        else:
            c.emit(f"{p} = {a} * {b}")
        c.emit(f"{lo} = {p} & {MASK[size]:#x}")
        c.emit(f"{hi} = {p} >> {size * 8}")
        if signed:
            c.emit(f"{ovf} = {hi} != ({MASK[size]:#x} if {lo} >> {size * 8 - 1} else 0)")
        else:
            c.emit(f"{ovf} = {hi} != 0")
        if size == 1:
            c.gpr_write(RAX, 2, p)
        else:
            c.gpr_write(RAX, size, lo)
            c.gpr_write(RDX, size, hi)
        _mul_flags(c, lo, size, ovf)
        return
    if not signed:
        raise c.unimplemented()
    dst = i.ops[0]
    size = dst.size
    if len(i.ops) == 2:
        x, y = c.read(dst), c.read(i.ops[1], size)
    else:
        x, y = c.read(i.ops[1]), c.read(i.ops[2], size)
    a, b, p, lo, ovf = (c.t(n) for n in ("a", "b", "p", "lo", "ov"))
    c.emit(f"{a} = {x}")
    c.emit(f"{b} = {y}")
    c.emit(f"{p} = {_signed(a, size)} * {_signed(b, size)}")
    c.emit(f"{lo} = {p} & {MASK[size]:#x}")
    c.emit(f"{ovf} = {_signed(lo, size)} != {p}")
    c.reg_write(dst, lo)
    _mul_flags(c, lo, size, ovf)


@op("div", "idiv")
def gen_div(c: Ctx, i: Insn) -> None:
    (src,) = i.ops
    size = src.size
    b, a, q, r = c.t("b"), c.t("a"), c.t("q"), c.t("r")
    c.emit(f"{b} = {c.read(src)}")
    if size == 1:
        c.emit(f"{a} = {c.gpr_read(RAX, 2)}")
    else:
        c.emit(f"{a} = {c.gpr_read(RDX, size)} << {size * 8} | {c.gpr_read(RAX, size)}")
    c.may_fault()
    c.emit(f"{q}, {r} = {'DIVS' if i.mnem == 'idiv' else 'DIVU'}({a}, {b}, {size})")
    if size == 1:
        c.gpr_write(RAX, 2, f"{r} << 8 | {q}")
    else:
        c.gpr_write(RAX, size, q)
        c.gpr_write(RDX, size, r)
