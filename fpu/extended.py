"""The x87's double extended-precision format (floatx80): encodings and arithmetic.

A floatx80 is an 80-bit int: sign (bit 79), biased exponent (bits 78:64, bias 16383),
and a 64-bit significand whose bit 63 is the explicit integer bit J (Intel SDM vol. 1,
4.2.2 and 8.2.2 Table 8-3). The encodings and how the x87 treats each as an operand:

* exponent 1..0x7FFE, J = 1: normal; J = 0: *unnormal*, an unsupported encoding.
* exponent 0: zero (significand 0), denormal (J = 0), or *pseudo-denormal* (J = 1), read
  as the number with exponent 1 that it denotes (8.2.2). Both raise DE (4.9.1.2).
* exponent 0x7FFF: infinity (J = 1, fraction 0), NaN (J = 1: QNaN with bit 62 set, SNaN
  without); J = 0 is *pseudo-infinity* or *pseudo-NaN*, unsupported.

An unsupported operand raises IE and gives the real indefinite, ``0xFFFF_C000000000000000``
(4.8.3.7; 8.2.2). NaN operands (4.8.3.5 Table 4-7, x87 column): an SNaN raises
IE; of two NaNs of the same kind the one with the larger significand, and of an SNaN and
a QNaN the QNaN, is the result, quieted (two NaNs with equal significands: the positive
one, as the processor gives it). DE ranks below IE, ZE and a NaN operand (4.9.2): no DE
next to a NaN, nor in an invalid operation or a division by zero; FST m32/m64, FIST
and FISTTP report no DE at all (SDM vol. 2 lists no #D for them). Invalid operations
(inf - inf, 0 * inf, 0/0, inf/inf, the square root of a negative number) give the real
indefinite.

Add, sub, mul, div and sqrt round the significand to ``s.precision`` bits (the precision
control, 8.1.5.2) within the extended exponent range (:func:`round_pack_x80`).
"""

from __future__ import annotations

from pyqemu.fpu.binary import divide_sig, sqrt_sig
from pyqemu.fpu.rounding import (
    X80_DEFAULT_NAN,
    X80_INF,
    X80_LSB_MIN,
    X80_SIGN,
    round_pack_x80,
)
from pyqemu.fpu.status import (
    FLAG_DENORMAL,
    FLAG_DIVBYZERO,
    FLAG_INVALID,
    RELATION_EQUAL,
    RELATION_GREATER,
    RELATION_LESS,
    RELATION_UNORDERED,
    ROUND_DOWN,
    FloatStatus,
)

M64 = (1 << 64) - 1
J_BIT = 1 << 63
X80_QUIET = 1 << 62
_NOT_SPECIAL = -1


def is_unsupported(a: int) -> bool:
    """An unnormal, pseudo-infinity or pseudo-NaN (SDM vol. 1, 8.2.2 Table 8-3)."""
    return (a >> 64) & 0x7FFF != 0 and not a & J_BIT


def is_nan(a: int) -> bool:
    """A NaN: exponent 0x7FFF, J set, fraction nonzero."""
    return (a >> 64) & 0x7FFF == 0x7FFF and a & J_BIT != 0 and a & (J_BIT - 1) != 0


def is_snan(a: int) -> bool:
    """A signaling NaN: a NaN with bit 62 clear (SDM vol. 1, 4.8.3.4)."""
    return is_nan(a) and not a & X80_QUIET


def is_inf(a: int) -> bool:
    """An infinity of either sign."""
    return a & ~X80_SIGN == X80_INF


def unpack(a: int, s: FloatStatus) -> tuple[int, int]:
    """A finite supported operand as (significand, exponent of its last place); DE for a
    denormal or pseudo-denormal. value = sig * 2**exp."""
    e = (a >> 64) & 0x7FFF
    m = a & M64
    if e:
        return m, e + X80_LSB_MIN - 1
    if m:
        s.flags |= FLAG_DENORMAL
    return m, X80_LSB_MIN


def unpack_no_de(a: int) -> tuple[int, int]:
    """As :func:`unpack` for the instructions that report no DE for a denormal operand
    (FST m32/m64, FIST, FISTTP: SDM vol. 2 lists no #D for them)."""
    e = (a >> 64) & 0x7FFF
    if e:
        return a & M64, e + X80_LSB_MIN - 1
    return a & M64, X80_LSB_MIN


def denormal_check(a: int, s: FloatStatus) -> None:
    """DE for a denormal or pseudo-denormal operand."""
    if not (a >> 64) & 0x7FFF and a & M64:
        s.flags |= FLAG_DENORMAL


def propagate_nan(a: int, b: int, s: FloatStatus) -> int:
    """Two operands, one a NaN at least, neither unsupported (SDM vol. 1, 4.8.3.5 Table
    4-7, x87 column)."""
    an = is_nan(a)
    bn = is_nan(b)
    a_snan = an and not a & X80_QUIET
    b_snan = bn and not b & X80_QUIET
    if a_snan or b_snan:
        s.flags |= FLAG_INVALID
    if an and bn:
        if a_snan != b_snan:
            r = b if a_snan else a
        else:
            ma = a & M64
            mb = b & M64
            if ma != mb:
                r = a if ma > mb else b
            else:
                r = a if a < b else b
    else:
        r = a if an else b
    return r | X80_QUIET


def quiet_nan(a: int, s: FloatStatus) -> int:
    """One NaN operand: quieted, IE if it was signaling."""
    if not a & X80_QUIET:
        s.flags |= FLAG_INVALID
    return a | X80_QUIET


def prelude2(a: int, b: int, s: FloatStatus) -> int:
    """The result when an operand is unsupported or a NaN, else ``_NOT_SPECIAL``."""
    if is_unsupported(a) or is_unsupported(b):
        s.flags |= FLAG_INVALID
        return X80_DEFAULT_NAN
    if is_nan(a) or is_nan(b):
        return propagate_nan(a, b, s)
    return _NOT_SPECIAL


def _normal2(a: int, b: int) -> bool:
    """Both operands normal: the common case, with nothing to check."""
    ea = (a >> 64) & 0x7FFF
    eb = (b >> 64) & 0x7FFF
    return 0 < ea < 0x7FFF and 0 < eb < 0x7FFF and (a & b & J_BIT) != 0


# -- add and subtract --

def _add(a: int, b: int, s: FloatStatus, flip: int) -> int:
    if not _normal2(a, b):
        r = prelude2(a, b, s)
        if r >= 0:
            return r
        if is_inf(a):
            if is_inf(b):
                if (a ^ b ^ flip) & X80_SIGN:
                    s.flags |= FLAG_INVALID
                    return X80_DEFAULT_NAN
                return a
            denormal_check(b, s)
            return a
        if is_inf(b):
            denormal_check(a, s)
            return b ^ flip
    b ^= flip
    ma, xa = unpack(a, s)
    mb, xb = unpack(b, s)
    sa = a & X80_SIGN
    sb = b & X80_SIGN
    if xa < xb:
        xa, xb = xb, xa
        ma, mb = mb, ma
        sa, sb = sb, sa
    d = xa - xb
    if not mb:
        sig = ma
        xb = xa
    elif d > 70:
        # b lies more than three places below a's last place: a sticky bit.
        sig = (ma << 4) + 1 if sa == sb else (ma << 4) - 1
        xb = xa - 4
    else:
        sig = (ma << d) + mb if sa == sb else (ma << d) - mb
    if sig <= 0:
        if not sig:
            if sa == sb:
                return sa
            return X80_SIGN if s.rounding == ROUND_DOWN else 0
        sig = -sig
        sa ^= X80_SIGN
    return round_pack_x80(sa, sig, xb, s.precision, s)


def floatx80_add(a: int, b: int, s: FloatStatus) -> int:
    """FADD (IEEE 754-2008, 5.4.1 addition), to ``s.precision`` bits."""
    return _add(a, b, s, 0)


def floatx80_sub(a: int, b: int, s: FloatStatus) -> int:
    """FSUB: ``a - b`` (FSUBR is ``floatx80_sub(b, a, s)``)."""
    return _add(a, b, s, X80_SIGN)


# -- multiply, divide, square root --

def floatx80_mul(a: int, b: int, s: FloatStatus) -> int:
    """FMUL (IEEE 754-2008, 5.4.1 multiplication), to ``s.precision`` bits."""
    sign = (a ^ b) & X80_SIGN
    if not _normal2(a, b):
        r = prelude2(a, b, s)
        if r >= 0:
            return r
        ia = is_inf(a)
        ib = is_inf(b)
        if ia or ib:
            za = not ia and not a & ((0x7FFF << 64) | M64)
            zb = not ib and not b & ((0x7FFF << 64) | M64)
            if za or zb:
                s.flags |= FLAG_INVALID
                return X80_DEFAULT_NAN
            denormal_check(a, s)
            denormal_check(b, s)
            return sign | X80_INF
    ma, xa = unpack(a, s)
    mb, xb = unpack(b, s)
    if not ma or not mb:
        return sign
    return round_pack_x80(sign, ma * mb, xa + xb, s.precision, s)


def floatx80_div(a: int, b: int, s: FloatStatus) -> int:
    """FDIV: ``a / b`` (IEEE 754-2008, 5.4.1 division), to ``s.precision`` bits; FDIVR
    is ``floatx80_div(b, a, s)``."""
    sign = (a ^ b) & X80_SIGN
    if not _normal2(a, b):
        r = prelude2(a, b, s)
        if r >= 0:
            return r
        if is_inf(a):
            if is_inf(b):
                s.flags |= FLAG_INVALID
                return X80_DEFAULT_NAN
            denormal_check(b, s)
            return sign | X80_INF
        if is_inf(b):
            denormal_check(a, s)
            return sign
    mb, xb = unpack(b, s)
    if not mb:
        # 0/0 is invalid, x/0 a division by zero: both rank above a denormal dividend
        # (SDM vol. 1, 4.9.2), which then raises no DE.
        s.flags |= FLAG_DIVBYZERO if a & ~X80_SIGN else FLAG_INVALID
        return sign | X80_INF if a & ~X80_SIGN else X80_DEFAULT_NAN
    ma, xa = unpack(a, s)
    if not ma:
        return sign
    q, k = divide_sig(ma, mb, 64)
    return round_pack_x80(sign, q, xa - xb - k, s.precision, s)


def floatx80_sqrt(a: int, s: FloatStatus) -> int:
    """FSQRT (IEEE 754-2008, 5.4.1 squareRoot), to ``s.precision`` bits."""
    if is_unsupported(a):
        s.flags |= FLAG_INVALID
        return X80_DEFAULT_NAN
    if is_nan(a):
        return quiet_nan(a, s)
    sign = a & X80_SIGN
    if is_inf(a):
        if sign:
            s.flags |= FLAG_INVALID
            return X80_DEFAULT_NAN
        return a
    if not a & ~X80_SIGN:
        return a
    if sign:
        # Invalid ranks above a denormal operand (SDM vol. 1, 4.9.2): no DE.
        s.flags |= FLAG_INVALID
        return X80_DEFAULT_NAN
    m, x = unpack(a, s)
    r, x = sqrt_sig(m, x, 64)
    return round_pack_x80(0, r, x, s.precision, s)


# -- compare (FCOM, FUCOM, FCOMI, FUCOMI: SDM vol. 1, 8.3.7) --

def value_key(a: int) -> int:
    """An int ordered as the value of supported non-NaN ``a`` (both zeros 0; a
    pseudo-denormal equal to the normal number it denotes)."""
    e = (a >> 64) & 0x7FFF
    m = a & M64
    if not e and not m:
        return 0
    k = ((e or 1) << 64) | m
    return -k if a & X80_SIGN else k


def _compare(a: int, b: int, s: FloatStatus, signaling: bool) -> int:
    if is_unsupported(a) or is_unsupported(b):
        s.flags |= FLAG_INVALID
        return RELATION_UNORDERED
    if is_nan(a) or is_nan(b):
        if signaling or is_snan(a) or is_snan(b):
            s.flags |= FLAG_INVALID
        return RELATION_UNORDERED
    denormal_check(a, s)
    denormal_check(b, s)
    ka = value_key(a)
    kb = value_key(b)
    if ka < kb:
        return RELATION_LESS
    return RELATION_EQUAL if ka == kb else RELATION_GREATER


def floatx80_compare(a: int, b: int, s: FloatStatus) -> int:
    """FCOM/FCOMI: IE for any NaN (IEEE 754-2008, 5.11 compareSignaling*)."""
    return _compare(a, b, s, True)


def floatx80_compare_quiet(a: int, b: int, s: FloatStatus) -> int:
    """FUCOM/FUCOMI: IE for an SNaN only (IEEE 754-2008, 5.11 compareQuiet*)."""
    return _compare(a, b, s, False)
