"""binary32/binary64 conversions and rounding to an integral value, as SSE does them.

* Between the two formats (CVTSS2SD, CVTSD2SS; IEEE 754-2008, 5.4.2): a NaN keeps its
  sign and the top of its payload and is quieted (SDM vol. 1, 4.8.3.5); a denormal
  operand raises DE or reads as zero under DAZ; a narrowed result is rounded, FTZ
  applying.
* To an integer (CVTSS2SI, CVTTSS2SI and their double forms; IEEE 754-2008, 5.8): in
  the rounding mode, or toward zero for the truncating forms; a NaN or a result out of
  range raises IE and gives the integer indefinite, the most negative integer (SDM
  vol. 1, 4.8.3.7 and 11.5.2.1); PE if inexact.
* From an integer (CVTSI2SS, CVTSI2SD; IEEE 754-2008, 5.4.1 convertFromInt): rounded.
* Round to an integral value (ROUNDSS/ROUNDSD; IEEE 754-2008, 5.3.1 roundToIntegral*
  and 5.9): the rounding mode is an argument (imm8[1:0], or MXCSR.RC when imm8[2] is
  set); ``inexact=False`` is imm8[3]: PE suppressed (roundToIntegralExact is the form
  with it raised).

Integers are passed and returned as two's-complement bit patterns of their width
(an int32 result 0x80000000 is the indefinite); an integer operand may also be given
as a negative Python int.
"""

from __future__ import annotations

from pyqemu.fpu.binary import quiet_nan, unpack, unpack_no_de
from pyqemu.fpu.rounding import FLOAT32, FLOAT64, BinaryFormat, increments, round_pack_binary
from pyqemu.fpu.status import FLAG_C1, FLAG_INEXACT, FLAG_INVALID, ROUND_TO_ZERO, FloatStatus


def sig_to_int(negative: bool, m: int, x: int, rounding: int, bits: int,
               s: FloatStatus) -> int:
    """``m * 2**x`` (with its sign) rounded to a ``bits``-wide two's-complement int:
    the pattern, or the integer indefinite with IE when out of range."""
    top = 1 << (bits - 1)
    if x >= 0:
        if m.bit_length() + x > bits:
            s.flags |= FLAG_INVALID
            return top
        q = m << x
        inexact = False
    else:
        q = m >> -x
        rem = m & ((1 << -x) - 1)
        inexact = rem != 0
        up = inexact and increments(rounding, negative, q & 1, rem, 1 << (-x - 1))
        if up:
            q += 1
    if q > top or (q == top and not negative):
        s.flags |= FLAG_INVALID
        return top
    if inexact:
        s.flags |= FLAG_INEXACT | FLAG_C1 if up else FLAG_INEXACT
    return (-q if negative else q) & ((top << 1) - 1)


def _to_int(a: int, s: FloatStatus, f: BinaryFormat, bits: int, rounding: int) -> int:
    if (a >> f.fb) & f.emask == f.emask:
        s.flags |= FLAG_INVALID
        return 1 << (bits - 1)
    m, x = unpack_no_de(a, f, s.daz)
    if not m:
        return 0
    return sig_to_int(bool(a & f.sign), m, x, rounding, bits, s)


def float32_to_int32(a: int, s: FloatStatus) -> int:
    """CVTSS2SI r32: in the rounding mode of ``s``."""
    return _to_int(a, s, FLOAT32, 32, s.rounding)


def float32_to_int64(a: int, s: FloatStatus) -> int:
    """CVTSS2SI r64: in the rounding mode of ``s``."""
    return _to_int(a, s, FLOAT32, 64, s.rounding)


def float32_to_int32_round_to_zero(a: int, s: FloatStatus) -> int:
    """CVTTSS2SI r32: truncating."""
    return _to_int(a, s, FLOAT32, 32, ROUND_TO_ZERO)


def float32_to_int64_round_to_zero(a: int, s: FloatStatus) -> int:
    """CVTTSS2SI r64: truncating."""
    return _to_int(a, s, FLOAT32, 64, ROUND_TO_ZERO)


def float64_to_int32(a: int, s: FloatStatus) -> int:
    """CVTSD2SI r32: in the rounding mode of ``s``."""
    return _to_int(a, s, FLOAT64, 32, s.rounding)


def float64_to_int64(a: int, s: FloatStatus) -> int:
    """CVTSD2SI r64: in the rounding mode of ``s``."""
    return _to_int(a, s, FLOAT64, 64, s.rounding)


def float64_to_int32_round_to_zero(a: int, s: FloatStatus) -> int:
    """CVTTSD2SI r32: truncating."""
    return _to_int(a, s, FLOAT64, 32, ROUND_TO_ZERO)


def float64_to_int64_round_to_zero(a: int, s: FloatStatus) -> int:
    """CVTTSD2SI r64: truncating."""
    return _to_int(a, s, FLOAT64, 64, ROUND_TO_ZERO)


def _from_int(a: int, bits: int, s: FloatStatus, f: BinaryFormat) -> int:
    a &= (1 << bits) - 1
    if not a:
        return 0
    if a >> (bits - 1):
        return round_pack_binary(f.sign, (1 << bits) - a, 0, f, s, False)
    return round_pack_binary(0, a, 0, f, s, False)


def int32_to_float32(a: int, s: FloatStatus) -> int:
    """CVTSI2SS from r/m32."""
    return _from_int(a, 32, s, FLOAT32)


def int64_to_float32(a: int, s: FloatStatus) -> int:
    """CVTSI2SS from r/m64."""
    return _from_int(a, 64, s, FLOAT32)


def int32_to_float64(a: int, s: FloatStatus) -> int:
    """CVTSI2SD from r/m32 (always exact)."""
    return _from_int(a, 32, s, FLOAT64)


def int64_to_float64(a: int, s: FloatStatus) -> int:
    """CVTSI2SD from r/m64."""
    return _from_int(a, 64, s, FLOAT64)


def _convert(a: int, s: FloatStatus, src: BinaryFormat, dst: BinaryFormat) -> int:
    sign = dst.sign if a & src.sign else 0
    if (a >> src.fb) & src.emask == src.emask:
        frac = a & src.fmask
        if not frac:
            return sign | dst.inf
        a = quiet_nan(a, src, s) & src.fmask
        if dst.fb > src.fb:
            return sign | dst.inf | (a << (dst.fb - src.fb))
        return sign | dst.inf | (a >> (src.fb - dst.fb))
    m, x = unpack(a, src, s)
    if not m:
        return sign
    return round_pack_binary(sign, m, x, dst, s, s.ftz)


def float32_to_float64(a: int, s: FloatStatus) -> int:
    """CVTSS2SD (exact but for DAZ)."""
    return _convert(a, s, FLOAT32, FLOAT64)


def float64_to_float32(a: int, s: FloatStatus) -> int:
    """CVTSD2SS: rounded, FTZ applying."""
    return _convert(a, s, FLOAT64, FLOAT32)


def _round_to_int(a: int, s: FloatStatus, f: BinaryFormat, rounding: int,
                  inexact: bool) -> int:
    e = (a >> f.fb) & f.emask
    if e == f.emask:
        return quiet_nan(a, f, s) if a & f.fmask else a
    if e >= f.bias + f.fb:
        return a
    sign = a & f.sign
    m, x = unpack_no_de(a, f, s.daz)
    if not m:
        return sign
    q = m >> -x
    rem = m & ((1 << -x) - 1)
    if rem:
        if inexact:
            s.flags |= FLAG_INEXACT
        if increments(rounding, sign != 0, q & 1, rem, 1 << (-x - 1)):
            q += 1
    if not q:
        return sign
    return round_pack_binary(sign, q, 0, f, s, False)


def float32_round_to_int(a: int, s: FloatStatus, rounding: int, inexact: bool = True) -> int:
    """ROUNDSS with imm8[1:0] (or MXCSR.RC) = ``rounding``, imm8[3] = ``not inexact``."""
    return _round_to_int(a, s, FLOAT32, rounding, inexact)


def float64_round_to_int(a: int, s: FloatStatus, rounding: int, inexact: bool = True) -> int:
    """ROUNDSD with imm8[1:0] (or MXCSR.RC) = ``rounding``, imm8[3] = ``not inexact``."""
    return _round_to_int(a, s, FLOAT64, rounding, inexact)
