"""binary32 and binary64 arithmetic as SSE performs it: add, sub, mul, div, sqrt.

Operands and results are the raw bit patterns (ints). Each operation follows IEEE
754-2008, 5.4.1 (the arithmetic) and 6 (infinities, NaNs, signed zeros), with the
x86's choices from Intel SDM vol. 1, chapters 4 and 11:

* NaN operands (4.8.3.5 Table 4-7, SSE column): the first source operand if it is a
  NaN, else the second, quieted; an SNaN operand raises IE. An operation whose result
  is invalid (inf - inf, 0 * inf, 0/0, inf/inf, the square root of a negative number)
  returns the default NaN, the negative QNaN indefinite (4.8.3.7).
* Denormal operands (4.8.3.2, 4.9.1.2): DE is raised and the operation goes on with the
  exact value, or, with DAZ, the operand reads as a zero of its sign and DE stays clear
  (10.2.3.4). DE ranks below the invalid-operation and divide-by-zero exceptions and
  below a NaN operand (4.9.2 and 11.5.2.2): it is not raised next to a NaN, nor when the
  operation is invalid (the square root of a negative denormal) or divides by zero (a
  denormal divided by zero). CVTSS2SI and kin and ROUNDSS report no DE at all (SDM
  vol. 2 lists no #D for them); DAZ still applies to them.
* Results: rounded by :mod:`pyqemu.fpu.rounding` (tininess after rounding; FTZ flushes
  a tiny result to zero with UE and PE, 10.2.3.3).

The common case (two normal operands) reaches the rounding step after a few integer
operations; everything else goes through ``_special_*``.
"""

from __future__ import annotations

from math import isqrt

from pyqemu.fpu.rounding import FLOAT32, FLOAT64, BinaryFormat, round_pack_binary
from pyqemu.fpu.status import (
    FLAG_DENORMAL,
    FLAG_DIVBYZERO,
    FLAG_INVALID,
    ROUND_DOWN,
    FloatStatus,
)


def is_nan(a: int, f: BinaryFormat) -> bool:
    """Whether ``a`` is a NaN of format ``f`` (IEEE 754-2008, 3.4)."""
    return (a & ~f.sign) > f.inf


def is_snan(a: int, f: BinaryFormat) -> bool:
    """Whether ``a`` is a signaling NaN: quiet bit clear (IEEE 754-2008, 6.2.1)."""
    return (a & ~f.sign) > f.inf and not a & f.quiet


def propagate_nan(a: int, b: int, f: BinaryFormat, s: FloatStatus) -> int:
    """The result of a two-operand operation with a NaN operand (SDM vol. 1, 4.8.3.5
    Table 4-7, SSE): the first operand if a NaN, else the second, quieted; IE for an
    SNaN either side."""
    mag = ~f.sign
    inf = f.inf
    q = f.quiet
    if ((a & mag) > inf and not a & q) or ((b & mag) > inf and not b & q):
        s.flags |= FLAG_INVALID
    if (a & mag) > inf:
        return a | q
    return b | q


def quiet_nan(a: int, f: BinaryFormat, s: FloatStatus) -> int:
    """One NaN operand: quieted, IE if it was signaling."""
    if not a & f.quiet:
        s.flags |= FLAG_INVALID
    return a | f.quiet


def unpack(a: int, f: BinaryFormat, s: FloatStatus) -> tuple[int, int]:
    """A finite operand as (significand, exponent of its last place), DE or DAZ applied
    to a denormal: value = sig * 2**exp, sig 0 for a zero."""
    e = (a >> f.fb) & f.emask
    m = a & f.fmask
    if e:
        return m | f.hidden, e + f.lsb_min - 1
    if m:
        if s.daz:
            return 0, f.lsb_min
        s.flags |= FLAG_DENORMAL
    return m, f.lsb_min


def unpack_no_de(a: int, f: BinaryFormat, daz: bool) -> tuple[int, int]:
    """As :func:`unpack` for the instructions that do not report DE for a denormal
    operand while DAZ still applies (CVTSS2SI and kin, ROUNDSS: SDM vol. 2 lists no #D
    for them)."""
    e = (a >> f.fb) & f.emask
    m = a & f.fmask
    if e:
        return m | f.hidden, e + f.lsb_min - 1
    return (0 if daz else m), f.lsb_min


def reads_as_zero(a: int, f: BinaryFormat, s: FloatStatus) -> bool:
    """Whether finite ``a`` is (or, with DAZ, reads as) zero; DE for a denormal."""
    if a & (f.inf | f.fmask) == 0:
        return True
    if a & f.inf:
        return False
    if s.daz:
        return True
    s.flags |= FLAG_DENORMAL
    return False


# -- add and subtract (IEEE 754-2008, 5.4.1 and 6.3) --

def _add(a: int, b: int, s: FloatStatus, f: BinaryFormat, flip: int) -> int:
    fb = f.fb
    em = f.emask
    ea = (a >> fb) & em
    eb = (b >> fb) & em
    if ea == em or eb == em:
        return _special_add(a, b, s, f, flip)
    b ^= flip
    sign = f.sign
    sa = a & sign
    sb = b & sign
    ma = a & f.fmask
    mb = b & f.fmask
    if ea:
        ma |= f.hidden
    else:
        ea = 1
        if ma:
            if s.daz:
                ma = 0
            else:
                s.flags |= FLAG_DENORMAL
    if eb:
        mb |= f.hidden
    else:
        eb = 1
        if mb:
            if s.daz:
                mb = 0
            else:
                s.flags |= FLAG_DENORMAL
    if ea < eb or (ea == eb and ma < mb):
        ea, eb = eb, ea
        ma, mb = mb, ma
        sa, sb = sb, sa
    d = ea - eb
    if not mb:
        sig = ma
        eb = ea
    elif d > f.precision + 6:
        # b lies below a's last place by more than three places: it matters only as a
        # sticky bit (see pyqemu.fpu.rounding).
        ma <<= 4
        mb = 1
        eb = ea - 4
        sig = ma + mb if sa == sb else ma - mb
    else:
        ma <<= d
        sig = ma + mb if sa == sb else ma - mb
    if not sig:
        if sa == sb:
            return sa
        return sign if s.rounding == ROUND_DOWN else 0
    return round_pack_binary(sa, sig, eb + f.lsb_min - 1, f, s, s.ftz)


def _special_add(a: int, b: int, s: FloatStatus, f: BinaryFormat, flip: int) -> int:
    """An infinity or a NaN among the operands of add/sub."""
    inf = f.inf
    mag = ~f.sign
    if (a & mag) > inf or (b & mag) > inf:
        return propagate_nan(a, b, f, s)
    b ^= flip
    if (a & mag) == inf and (b & mag) == inf:
        if (a ^ b) & f.sign:
            s.flags |= FLAG_INVALID
            return f.default_nan
        return a
    if (a & mag) == inf:
        reads_as_zero(b, f, s)
        return a
    reads_as_zero(a, f, s)
    return b


def float32_add(a: int, b: int, s: FloatStatus) -> int:
    """ADDSS (IEEE 754-2008, 5.4.1 addition)."""
    return _add(a, b, s, FLOAT32, 0)


def float32_sub(a: int, b: int, s: FloatStatus) -> int:
    """SUBSS (IEEE 754-2008, 5.4.1 subtraction)."""
    return _add(a, b, s, FLOAT32, 0x80000000)


def float64_add(a: int, b: int, s: FloatStatus) -> int:
    """ADDSD (IEEE 754-2008, 5.4.1 addition)."""
    return _add(a, b, s, FLOAT64, 0)


def float64_sub(a: int, b: int, s: FloatStatus) -> int:
    """SUBSD (IEEE 754-2008, 5.4.1 subtraction)."""
    return _add(a, b, s, FLOAT64, 0x8000000000000000)


# -- multiply (IEEE 754-2008, 5.4.1 and 7.2) --

def _mul(a: int, b: int, s: FloatStatus, f: BinaryFormat) -> int:
    fb = f.fb
    em = f.emask
    ea = (a >> fb) & em
    eb = (b >> fb) & em
    sign = (a ^ b) & f.sign
    if ea and eb and ea != em and eb != em:
        h = f.hidden
        return round_pack_binary(sign, ((a & f.fmask) | h) * ((b & f.fmask) | h),
                                 ea + eb + 2 * (f.lsb_min - 1), f, s, s.ftz)
    if ea == em or eb == em:
        return _special_mul(a, b, s, f, sign)
    ma, xa = unpack(a, f, s)
    mb, xb = unpack(b, f, s)
    if not ma or not mb:
        return sign
    return round_pack_binary(sign, ma * mb, xa + xb, f, s, s.ftz)


def _special_mul(a: int, b: int, s: FloatStatus, f: BinaryFormat, sign: int) -> int:
    inf = f.inf
    mag = ~f.sign
    if (a & mag) > inf or (b & mag) > inf:
        return propagate_nan(a, b, f, s)
    # One infinity at least: inf * 0 is invalid (a denormal is a zero under DAZ).
    za = (a & mag) != inf and reads_as_zero(a, f, s)
    zb = (b & mag) != inf and reads_as_zero(b, f, s)
    if za or zb:
        s.flags |= FLAG_INVALID
        return f.default_nan
    return sign | inf


def float32_mul(a: int, b: int, s: FloatStatus) -> int:
    """MULSS (IEEE 754-2008, 5.4.1 multiplication)."""
    return _mul(a, b, s, FLOAT32)


def float64_mul(a: int, b: int, s: FloatStatus) -> int:
    """MULSD (IEEE 754-2008, 5.4.1 multiplication)."""
    return _mul(a, b, s, FLOAT64)


# -- divide (IEEE 754-2008, 5.4.1, 7.2 and 7.3) --

def divide_sig(ma: int, mb: int, p: int) -> tuple[int, int]:
    """``ma / mb`` as (quotient with at least p + 2 bits and a sticky bit, the power of
    two it is scaled by): ma / mb = q * 2**-k."""
    k = p + 3 + mb.bit_length() - ma.bit_length()
    if k < 0:
        k = 0
    q, r = divmod(ma << k, mb)
    return (q << 1) | (r != 0), k + 1


def _div(a: int, b: int, s: FloatStatus, f: BinaryFormat) -> int:
    fb = f.fb
    em = f.emask
    ea = (a >> fb) & em
    eb = (b >> fb) & em
    sign = (a ^ b) & f.sign
    if ea == em or eb == em:
        return _special_div(a, b, s, f, sign)
    mb, xb = unpack(b, f, s)
    if not mb:
        # 0/0 is invalid, x/0 a division by zero: both rank above a denormal dividend
        # (SDM vol. 1, 4.9.2), which then raises no DE.
        if a & ~f.sign and not (s.daz and not ea):
            s.flags |= FLAG_DIVBYZERO
            return sign | f.inf
        s.flags |= FLAG_INVALID
        return f.default_nan
    ma, xa = unpack(a, f, s)
    if not ma:
        return sign
    q, k = divide_sig(ma, mb, f.precision)
    return round_pack_binary(sign, q, xa - xb - k, f, s, s.ftz)


def _special_div(a: int, b: int, s: FloatStatus, f: BinaryFormat, sign: int) -> int:
    inf = f.inf
    mag = ~f.sign
    if (a & mag) > inf or (b & mag) > inf:
        return propagate_nan(a, b, f, s)
    if (a & mag) == inf:
        if (b & mag) == inf:
            s.flags |= FLAG_INVALID
            return f.default_nan
        reads_as_zero(b, f, s)
        return sign | inf
    reads_as_zero(a, f, s)
    return sign


def float32_div(a: int, b: int, s: FloatStatus) -> int:
    """DIVSS (IEEE 754-2008, 5.4.1 division)."""
    return _div(a, b, s, FLOAT32)


def float64_div(a: int, b: int, s: FloatStatus) -> int:
    """DIVSD (IEEE 754-2008, 5.4.1 division)."""
    return _div(a, b, s, FLOAT64)


# -- square root (IEEE 754-2008, 5.4.1 and 7.2) --

def sqrt_sig(m: int, x: int, p: int) -> tuple[int, int]:
    """The square root of ``m * 2**x`` (m > 0) as (root with at least p + 2 bits and a
    sticky bit, exponent of its last place)."""
    if x & 1:
        m <<= 1
        x -= 1
    k = p + 3 - (m.bit_length() >> 1)
    if k < 0:
        k = 0
    m <<= 2 * k
    r = isqrt(m)
    return (r << 1) | (r * r != m), ((x >> 1) - k) - 1


def _sqrt(a: int, s: FloatStatus, f: BinaryFormat) -> int:
    fb = f.fb
    e = (a >> fb) & f.emask
    sign = a & f.sign
    if e == f.emask:
        if a & f.fmask:
            return quiet_nan(a, f, s)
        if sign:
            s.flags |= FLAG_INVALID
            return f.default_nan
        return a
    if sign and a & ~f.sign and not (s.daz and not e):
        # Invalid ranks above a denormal operand (SDM vol. 1, 4.9.2): no DE.
        s.flags |= FLAG_INVALID
        return f.default_nan
    m, x = unpack(a, f, s)
    if not m:
        return sign
    r, x = sqrt_sig(m, x, f.precision)
    return round_pack_binary(0, r, x, f, s, s.ftz)


def float32_sqrt(a: int, s: FloatStatus) -> int:
    """SQRTSS (IEEE 754-2008, 5.4.1 squareRoot)."""
    return _sqrt(a, s, FLOAT32)


def float64_sqrt(a: int, s: FloatStatus) -> int:
    """SQRTSD (IEEE 754-2008, 5.4.1 squareRoot)."""
    return _sqrt(a, s, FLOAT64)
