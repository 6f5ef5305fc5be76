"""The x87's other floatx80 operations: conversions, FRNDINT, FSCALE, FPREM, FPREM1.

None of these reads the precision control (Intel SDM vol. 1, 8.1.5.2: it applies to
add, sub, mul, div and sqrt only); a floatx80 result has a 64-bit significand. DAZ and
FTZ are SSE's and do not apply. Operand encodings and NaN rules as in
:mod:`pyqemu.fpu.extended`.

* FLD m32/m64 (``float32_to_floatx80``, ``float64_to_floatx80``): exact; a denormal
  source raises DE, an SNaN IE (quieted). FST m32/m64 (``floatx80_to_float32``,
  ``floatx80_to_float64``): rounded in ``s.rounding``; a NaN keeps its sign and the top
  of its fraction, quieted (4.8.3.5); an unsupported operand gives the SSE formats'
  indefinite.
* FILD (``int16/32/64_to_floatx80``): exact. FIST/FISTP (``floatx80_to_int16/32/64``)
  round in ``s.rounding``, FISTTP (``*_round_to_zero``) truncates; a NaN, an infinity,
  an unsupported operand or a result out of range raises IE and gives the integer
  indefinite (4.8.3.7), PE when inexact. Integers are two's-complement
  patterns of their width.
* FRNDINT (``floatx80_round_to_int``): IEEE 754-2008, 5.9 roundToIntegralExact.
* FSCALE (``floatx80_scale``): ``a * 2**trunc(b)`` (SDM vol. 2, FSCALE, its table of results).
* FPREM / FPREM1 (``floatx80_fprem``, ``floatx80_fprem1``): partial remainders (SDM
  vol. 2, FPREM, FPREM1; IEEE 754-2008, 5.3.1 remainder is FPREM1 iterated to the end).
"""

from __future__ import annotations

from collections.abc import Callable

from pyqemu.fpu.binary import quiet_nan as quiet_nan_binary
from pyqemu.fpu.convert import sig_to_int
from pyqemu.fpu.extended import (
    J_BIT,
    M64,
    denormal_check,
    is_inf,
    is_nan,
    is_unsupported,
    prelude2,
    quiet_nan,
    unpack,
    unpack_no_de,
)
from pyqemu.fpu.rounding import (
    FLOAT32,
    FLOAT64,
    X80_BIAS,
    X80_DEFAULT_NAN,
    X80_INF,
    X80_LSB_MIN,
    X80_SIGN,
    BinaryFormat,
    increments,
    round_pack_binary,
    round_pack_x80,
)
from pyqemu.fpu.status import (
    FLAG_C1,
    FLAG_DENORMAL,
    FLAG_INEXACT,
    FLAG_INVALID,
    FSW_C0,
    FSW_C1,
    FSW_C2,
    FSW_C3,
    ROUND_TO_ZERO,
    FloatStatus,
)


def fprem_partial_bits(d: int) -> int:
    """FPREM/FPREM1 with exponents ``d`` >= 64 apart: the partial remainder leaves the
    exponent difference at most this many bits smaller. The SDM leaves this "N" to the
    processor, between 32 and 63 (vol. 2, FPREM, Operation); 32 + (d mod 32), with the
    exponents of the normalized operands, is what tests/fpu/test_x87.py measures."""
    return 32 + (d & 31)


def _pack_exact(sign: int, m: int, x: int) -> int:
    """An exact nonzero ``m * 2**x`` within range, as a floatx80."""
    n = m.bit_length()
    biased = x + n - 1 + X80_BIAS
    if biased <= 0:
        return sign | (m << (x - X80_LSB_MIN))
    return sign | (biased << 64) | (m << (64 - n))


# -- the binary formats, both ways (FLD m32/m64, FST m32/m64) --

def _from_binary(a: int, s: FloatStatus, f: BinaryFormat) -> int:
    sign = X80_SIGN if a & f.sign else 0
    e = (a >> f.fb) & f.emask
    m = a & f.fmask
    if e == f.emask:
        if not m:
            return sign | X80_INF
        m = quiet_nan_binary(a, f, s) & f.fmask
        return sign | X80_INF | (m << (63 - f.fb))
    if not e:
        if not m:
            return sign
        s.flags |= FLAG_DENORMAL
    return _pack_exact(sign, m | f.hidden if e else m, (e or 1) + f.lsb_min - 1)


def float32_to_floatx80(a: int, s: FloatStatus) -> int:
    """FLD m32fp."""
    return _from_binary(a, s, FLOAT32)


def float64_to_floatx80(a: int, s: FloatStatus) -> int:
    """FLD m64fp."""
    return _from_binary(a, s, FLOAT64)


def _to_binary(a: int, s: FloatStatus, f: BinaryFormat) -> int:
    sign = f.sign if a & X80_SIGN else 0
    if is_unsupported(a):
        s.flags |= FLAG_INVALID
        return f.default_nan
    if is_nan(a):
        a = quiet_nan(a, s)
        return sign | f.inf | ((a & (J_BIT - 1)) >> (63 - f.fb))
    if is_inf(a):
        return sign | f.inf
    m, x = unpack_no_de(a)
    if not m:
        return sign
    return round_pack_binary(sign, m, x, f, s, False)


def floatx80_to_float32(a: int, s: FloatStatus) -> int:
    """FST m32fp."""
    return _to_binary(a, s, FLOAT32)


def floatx80_to_float64(a: int, s: FloatStatus) -> int:
    """FST m64fp."""
    return _to_binary(a, s, FLOAT64)


# -- integers (FILD, FIST, FISTTP) --

def _from_int(a: int, bits: int) -> int:
    a &= (1 << bits) - 1
    if not a:
        return 0
    if a >> (bits - 1):
        return _pack_exact(X80_SIGN, (1 << bits) - a, 0)
    return _pack_exact(0, a, 0)


def int16_to_floatx80(a: int, s: FloatStatus) -> int:
    """FILD m16int."""
    return _from_int(a, 16)


def int32_to_floatx80(a: int, s: FloatStatus) -> int:
    """FILD m32int."""
    return _from_int(a, 32)


def int64_to_floatx80(a: int, s: FloatStatus) -> int:
    """FILD m64int."""
    return _from_int(a, 64)


def _to_int(a: int, s: FloatStatus, bits: int, rounding: int) -> int:
    if (a >> 64) & 0x7FFF == 0x7FFF or is_unsupported(a):
        s.flags |= FLAG_INVALID
        return 1 << (bits - 1)
    m, x = unpack_no_de(a)
    if not m:
        return 0
    return sig_to_int(bool(a & X80_SIGN), m, x, rounding, bits, s)


def floatx80_to_int16(a: int, s: FloatStatus) -> int:
    """FIST/FISTP m16int."""
    return _to_int(a, s, 16, s.rounding)


def floatx80_to_int32(a: int, s: FloatStatus) -> int:
    """FIST/FISTP m32int."""
    return _to_int(a, s, 32, s.rounding)


def floatx80_to_int64(a: int, s: FloatStatus) -> int:
    """FISTP m64int."""
    return _to_int(a, s, 64, s.rounding)


def floatx80_to_int16_round_to_zero(a: int, s: FloatStatus) -> int:
    """FISTTP m16int."""
    return _to_int(a, s, 16, ROUND_TO_ZERO)


def floatx80_to_int32_round_to_zero(a: int, s: FloatStatus) -> int:
    """FISTTP m32int."""
    return _to_int(a, s, 32, ROUND_TO_ZERO)


def floatx80_to_int64_round_to_zero(a: int, s: FloatStatus) -> int:
    """FISTTP m64int."""
    return _to_int(a, s, 64, ROUND_TO_ZERO)


# -- FRNDINT --

def floatx80_round_to_int(a: int, s: FloatStatus) -> int:
    """FRNDINT: to an integral value in ``s.rounding``, PE when inexact."""
    if is_unsupported(a):
        s.flags |= FLAG_INVALID
        return X80_DEFAULT_NAN
    if (a >> 64) & 0x7FFF == 0x7FFF:
        return quiet_nan(a, s) if is_nan(a) else a
    sign = a & X80_SIGN
    m, x = unpack(a, s)
    if not m or x >= 0:
        return a
    q = m >> -x
    rem = m & ((1 << -x) - 1)
    if rem:
        if increments(s.rounding, sign != 0, q & 1, rem, 1 << (-x - 1)):
            q += 1
            s.flags |= FLAG_INEXACT | FLAG_C1
        else:
            s.flags |= FLAG_INEXACT
    if not q:
        return sign
    return _pack_exact(sign, q, 0)


# -- FSCALE --

def floatx80_scale(a: int, b: int, s: FloatStatus) -> int:
    """FSCALE: ``a * 2**trunc(b)``, rounded as a floatx80 (SDM vol. 2, FSCALE: Table
    3-46 gives the results for zeros and infinities)."""
    r = prelude2(a, b, s)
    if r >= 0:
        return r
    sign = a & X80_SIGN
    if is_inf(b):
        denormal_check(a, s)
        za = not a & ((0x7FFF << 64) | M64)
        if b & X80_SIGN:
            if is_inf(a):
                s.flags |= FLAG_INVALID
                return X80_DEFAULT_NAN
            return sign
        if za:
            s.flags |= FLAG_INVALID
            return X80_DEFAULT_NAN
        return sign | X80_INF
    mb, xb = unpack(b, s)
    if is_inf(a):
        return a
    ma, xa = unpack(a, s)
    if not ma:
        return a
    n = mb >> -xb if xb < 0 else mb << min(xb, 32)
    if n > 1 << 20:
        n = 1 << 20
    if b & X80_SIGN:
        n = -n
    return round_pack_x80(sign, ma, xa + n, 64, s)


# -- FPREM and FPREM1 --

def _quotient_bits(q: int) -> int:
    """C0, C3, C1 from the quotient's bits 2, 1, 0 (SDM vol. 2, FPREM, Operation)."""
    return ((q >> 2) & 1) * FSW_C0 | ((q >> 1) & 1) * FSW_C3 | (q & 1) * FSW_C1


def partial_remainder(a: int, b: int, s: FloatStatus, nearest: bool,
                      partial_bits: Callable[[int], int] = fprem_partial_bits
                      ) -> tuple[int, int]:
    """FPREM (``nearest`` False: the quotient truncated) or FPREM1 (``nearest``: rounded
    to nearest even) of ``a / b``, as (result, C0|C1|C2|C3). With the exponents ``d`` >=
    64 apart the reduction is partial (C2 set): the quotient's bits beyond
    ``partial_bits(d)`` are taken off (SDM vol. 2, FPREM, Operation); otherwise C0, C3
    and C1 receive the quotient's bits 2, 1 and 0. The remainder is exact."""
    r = prelude2(a, b, s)
    if r >= 0:
        return r, 0
    if is_inf(a):
        # Invalid ranks above a denormal divisor (SDM vol. 1, 4.9.2): no DE.
        s.flags |= FLAG_INVALID
        return X80_DEFAULT_NAN, 0
    if is_inf(b):
        denormal_check(a, s)
        if not a & ~X80_SIGN:
            return a, 0
        ma, xa = unpack_no_de(a)
        return _pack_exact(a & X80_SIGN, ma, xa), 0
    mb, xb = unpack(b, s)
    if not mb:
        # Invalid ranks above a denormal dividend (SDM vol. 1, 4.9.2): no DE.
        s.flags |= FLAG_INVALID
        return X80_DEFAULT_NAN, 0
    ma, xa = unpack(a, s)
    if not ma:
        return a, 0
    sign = a & X80_SIGN
    d = (xa + ma.bit_length()) - (xb + mb.bit_length())
    if d < -1 or (d == -1 and not nearest):
        # |a| < |b| / 2 (or < |b| for FPREM): the quotient is 0 and a the remainder,
        # normalized (a pseudo-denormal comes back as the number it denotes).
        return _pack_exact(sign, ma, xa), 0
    partial = d >= 64
    if partial:
        xb += d - partial_bits(d)
    x = min(xa, xb)
    num = ma << (xa - x)
    den = mb << (xb - x)
    q, rem = divmod(num, den)
    if nearest and not partial and (2 * rem > den or (2 * rem == den and q & 1)):
        q += 1
        rem = den - rem
        sign ^= X80_SIGN
    cc = FSW_C2 if partial else _quotient_bits(q)
    if not rem:
        return a & X80_SIGN, cc
    return round_pack_x80(sign, rem, x, 64, s), cc


def floatx80_fprem(a: int, b: int, s: FloatStatus) -> tuple[int, int]:
    """FPREM: the partial remainder of ``a / b`` with the quotient truncated; returns
    (result, condition bits C0|C1|C2|C3 of the status word)."""
    return partial_remainder(a, b, s, False)


def floatx80_fprem1(a: int, b: int, s: FloatStatus) -> tuple[int, int]:
    """FPREM1: as FPREM with the quotient rounded to nearest (IEEE 754-2008, 5.3.1
    remainder when C2 comes back clear)."""
    return partial_remainder(a, b, s, True)

