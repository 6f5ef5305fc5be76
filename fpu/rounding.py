"""Rounding an exact result to a format: the one place results are rounded and packed.

Every operation computes its result exactly as ``sig * 2**exp`` (a Python int
significand of any width, positive) and hands it here. Where the exact result has
more bits than the operation kept, the operation appends one *sticky* bit: a 1 one
place below every bit it kept, so that the value handed over lies strictly between
the same two neighbours of the destination format as the true result, and on the
same side of their midpoint (IEEE 754-2008, 4.3: the result is the infinitely
precise result, rounded).

Rounding follows IEEE 754-2008, 4.3.1 and 4.3.2 with the x86's choices (Intel SDM
vol. 1, 4.8.4 and 4.9.1): tininess is detected *after* rounding (the result rounded
to the destination's precision with an unbounded exponent lies strictly between
``-2**emin`` and ``2**emin``; 4.9.1.5), underflow is flagged, with the exception
masked, only when a tiny result is also inexact, and overflow delivers infinity or
the largest finite number as Table 4-10 (4.9.1.4) gives for each rounding mode.
"""

from __future__ import annotations

from pyqemu.fpu.status import (
    FLAG_C1,
    FLAG_INEXACT,
    FLAG_OVERFLOW,
    FLAG_UNDERFLOW,
    FloatStatus,
)

_PE_UP = FLAG_INEXACT | FLAG_C1
_OVERFLOW = FLAG_OVERFLOW | FLAG_INEXACT
_OVERFLOW_UP = FLAG_OVERFLOW | FLAG_INEXACT | FLAG_C1
_UNDERFLOW = FLAG_UNDERFLOW | FLAG_INEXACT
_UNDERFLOW_UP = FLAG_UNDERFLOW | FLAG_INEXACT | FLAG_C1


class BinaryFormat:
    """An IEEE 754 binary interchange format (IEEE 754-2008, 3.6 Table 3.5; SDM vol. 1,
    4.2.2 Table 4-3): its field layout and the constants the operations use."""

    __slots__ = ("bias", "default_nan", "emask", "fb", "fmask", "hidden", "inf", "lsb_max",
                 "lsb_min", "max_finite", "name", "precision", "quiet", "sign")

    def __init__(self, name: str, exponent_bits: int, fraction_bits: int) -> None:
        self.name = name
        self.fb = fraction_bits
        self.precision = fraction_bits + 1
        self.emask = (1 << exponent_bits) - 1
        self.bias = (1 << (exponent_bits - 1)) - 1
        self.fmask = (1 << fraction_bits) - 1
        self.hidden = 1 << fraction_bits
        self.sign = 1 << (exponent_bits + fraction_bits)
        self.quiet = 1 << (fraction_bits - 1)
        self.inf = self.emask << fraction_bits
        self.max_finite = self.inf - 1
        # The SSE default NaN, the QNaN floating-point indefinite (SDM vol. 1, 4.8.3.7;
        # its encoding in 4.2.2 Table 4-3): sign set, quiet bit set, the rest clear.
        self.default_nan = self.sign | self.inf | self.quiet
        # Exponents of one unit in the last place: of a denormal (and of the smallest
        # normal), and of the largest normal.
        self.lsb_min = 1 - self.bias - fraction_bits
        self.lsb_max = self.bias - fraction_bits


FLOAT32 = BinaryFormat("binary32", 8, 23)
FLOAT64 = BinaryFormat("binary64", 11, 52)


def increments(rounding: int, negative: bool, odd: int, rem: int, half: int) -> bool:
    """Whether rounding the magnitude ``q + rem/(2*half)`` (``rem`` nonzero) goes up
    to ``q + 1``; ``odd`` is q's low bit (IEEE 754-2008, 4.3.1 and 4.3.2)."""
    if rounding == 0:
        return rem > half or (rem == half and odd != 0)
    if rounding == 3:
        return False
    return negative == (rounding == 1)


def overflow_binary(sign: int, f: BinaryFormat, s: FloatStatus) -> int:
    """The masked overflow result (SDM vol. 1, 4.9.1.4 Table 4-10)."""
    r = s.rounding
    if r == 0 or (r == 1 and sign) or (r == 2 and not sign):
        s.flags |= _OVERFLOW_UP
        return sign | f.inf
    s.flags |= _OVERFLOW
    return sign | f.max_finite


def round_pack_binary(sign: int, sig: int, exp: int, f: BinaryFormat, s: FloatStatus,
                      ftz: bool) -> int:
    """``sign | round(sig * 2**exp)`` in format ``f``, flags into ``s``; ``sign`` is the
    format's sign bit or 0, ``sig`` > 0 (see the module doc for the sticky bit). With
    ``ftz`` a tiny result is flushed to a signed zero with UE and PE (MXCSR.FTZ, SDM
    vol. 1, 10.2.3.3)."""
    p = f.precision
    lsb = exp + sig.bit_length() - p
    if lsb < f.lsb_min:
        return _round_tiny_binary(sign, sig, exp, f, s, ftz)
    shift = lsb - exp
    if shift > 0:
        q = sig >> shift
        rem = sig & ((1 << shift) - 1)
        if rem:
            rounding = s.rounding
            if rounding == 0:
                # nearest-even inline: the common case pays no call
                half = 1 << (shift - 1)
                up = rem > half or (rem == half and q & 1)
            else:
                up = increments(rounding, sign != 0, q & 1, rem, 1 << (shift - 1))
            if up:
                s.flags |= _PE_UP
                q += 1
                if q >> p:
                    q >>= 1
                    lsb += 1
            else:
                s.flags |= FLAG_INEXACT
    else:
        q = sig << -shift
    if lsb > f.lsb_max:
        return overflow_binary(sign, f, s)
    return sign | (((lsb - f.lsb_min) << f.fb) + q)


def _round_tiny_binary(sign: int, sig: int, exp: int, f: BinaryFormat, s: FloatStatus,
                       ftz: bool) -> int:
    p = f.precision
    lsb_min = f.lsb_min
    tiny = _is_tiny(sign, sig, exp, p, lsb_min, s.rounding)
    if ftz and tiny:
        s.flags |= _UNDERFLOW
        return sign
    shift = lsb_min - exp
    if shift <= 0:
        return sign | (sig << -shift)
    q = sig >> shift
    rem = sig & ((1 << shift) - 1)
    if rem:
        if increments(s.rounding, sign != 0, q & 1, rem, 1 << (shift - 1)):
            q += 1
            s.flags |= _UNDERFLOW_UP if tiny else _PE_UP
        else:
            s.flags |= _UNDERFLOW if tiny else FLAG_INEXACT
    # A carry into the hidden bit makes the smallest normal: the packing needs nothing
    # more, the exponent field is the significand's carry.
    return sign | q


def _is_tiny(sign: int, sig: int, exp: int, p: int, lsb_min: int, rounding: int) -> bool:
    """Tininess after rounding (SDM vol. 1, 4.9.1.5; IEEE 754-2008, 7.5): for a result
    below ``2**emin``, whether rounding it to ``p`` bits with an unbounded exponent
    leaves it there (only a result in the binade just below can round up out of it)."""
    n = sig.bit_length()
    if exp + n - p < lsb_min - 1:
        return True
    shift = n - p
    if shift <= 0:
        return True
    rem = sig & ((1 << shift) - 1)
    if not rem:
        return True
    q = sig >> shift
    return not (increments(rounding, sign != 0, q & 1, rem, 1 << (shift - 1))
                and (q + 1) >> p)


# -- the x87 double extended-precision format (SDM vol. 1, 4.2.2 Table 4-3, 8.2.2) --

X80_BIAS = 16383
X80_INF = (0x7FFF << 64) | (1 << 63)
X80_SIGN = 1 << 79
#: the real indefinite (SDM vol. 1, 4.8.3.7): the x87's default NaN
X80_DEFAULT_NAN = X80_SIGN | X80_INF | (1 << 62)
#: exponent of one unit in the 64-bit significand's last place at the smallest exponent
X80_LSB_MIN = 1 - X80_BIAS - 63
_X80_EMAX = X80_BIAS


def overflow_x80(sign: int, p: int, s: FloatStatus) -> int:
    """The masked overflow result for a ``p``-bit significand (SDM vol. 1, 4.9.1.4
    Table 4-10; the largest finite number has ``p`` ones, 8.1.5.2)."""
    r = s.rounding
    if r == 0 or (r == 1 and sign) or (r == 2 and not sign):
        s.flags |= _OVERFLOW_UP
        return sign | X80_INF
    s.flags |= _OVERFLOW
    return sign | (0x7FFE << 64) | (((1 << p) - 1) << (64 - p))


def round_pack_x80(sign: int, sig: int, exp: int, p: int, s: FloatStatus) -> int:
    """``sign | round(sig * 2**exp)`` as a floatx80 whose significand is rounded to
    ``p`` bits (24, 53 or 64: the x87 precision control, SDM vol. 1, 8.1.5.2) within
    the extended exponent range: a denormal's last place is then ``2**(emin - p + 1)``,
    as for an IEEE format of precision ``p`` and the extended exponents."""
    n = sig.bit_length()
    lsb = exp + n - p
    lsb_min = 1 - X80_BIAS - p + 1
    tiny = False
    if lsb < lsb_min:
        tiny = _is_tiny(sign, sig, exp, p, lsb_min, s.rounding)
        lsb = lsb_min
    shift = lsb - exp
    if shift > 0:
        q = sig >> shift
        rem = sig & ((1 << shift) - 1)
        if rem:
            if increments(s.rounding, sign != 0, q & 1, rem, 1 << (shift - 1)):
                s.flags |= _UNDERFLOW_UP if tiny else _PE_UP
                q += 1
                if q >> p:
                    q >>= 1
                    lsb += 1
            else:
                s.flags |= _UNDERFLOW if tiny else FLAG_INEXACT
    else:
        q = sig << -shift
    if q >> (p - 1):
        biased = lsb + p - 1 + X80_BIAS
        if biased >= 0x7FFF:
            return overflow_x80(sign, p, s)
        return sign | (biased << 64) | (q << (64 - p))
    return sign | (q << (64 - p))
