"""binary32 and binary64 comparisons, MINSS/MAXSS and their double forms.

A comparison returns one of the four relations of IEEE 754-2008, 5.11 (``RELATION_*``
of :mod:`pyqemu.fpu.status`), from which COMISS/UCOMISS set ZF, PF and CF and CMPSS
builds its mask (Intel SDM vol. 2, COMISS, UCOMISS, CMPSS). The quiet form raises IE
only for an SNaN operand (IEEE 754-2008, 5.11 compareQuiet*; UCOMISS, CMPSS's *_Q
predicates); the signaling form for any NaN (compareSignaling*; COMISS, the *_S
predicates). A denormal operand raises DE, or reads as zero under DAZ (SDM vol. 1,
10.2.3.4); -0 equals +0.
"""

from __future__ import annotations

from pyqemu.fpu.binary import reads_as_zero
from pyqemu.fpu.rounding import FLOAT32, FLOAT64, BinaryFormat
from pyqemu.fpu.status import (
    FLAG_INVALID,
    RELATION_EQUAL,
    RELATION_GREATER,
    RELATION_LESS,
    RELATION_UNORDERED,
    FloatStatus,
)


def _key(a: int, zero: bool, f: BinaryFormat) -> int:
    """An int ordered as the value of non-NaN ``a`` (both zeros 0)."""
    if zero:
        return 0
    m = a & ~f.sign
    return -m if a & f.sign else m


def _compare(a: int, b: int, s: FloatStatus, f: BinaryFormat, signaling: bool) -> int:
    mag = ~f.sign
    inf = f.inf
    if (a & mag) > inf or (b & mag) > inf:
        if signaling or ((a & mag) > inf and not a & f.quiet) or (
                (b & mag) > inf and not b & f.quiet):
            s.flags |= FLAG_INVALID
        return RELATION_UNORDERED
    ka = _key(a, reads_as_zero(a, f, s), f)
    kb = _key(b, reads_as_zero(b, f, s), f)
    if ka < kb:
        return RELATION_LESS
    return RELATION_EQUAL if ka == kb else RELATION_GREATER


def float32_compare(a: int, b: int, s: FloatStatus) -> int:
    """COMISS, and CMPSS's signaling predicates: IE for any NaN."""
    return _compare(a, b, s, FLOAT32, True)


def float32_compare_quiet(a: int, b: int, s: FloatStatus) -> int:
    """UCOMISS, and CMPSS's quiet predicates: IE for an SNaN only."""
    return _compare(a, b, s, FLOAT32, False)


def float64_compare(a: int, b: int, s: FloatStatus) -> int:
    """COMISD, and CMPSD's signaling predicates: IE for any NaN."""
    return _compare(a, b, s, FLOAT64, True)


def float64_compare_quiet(a: int, b: int, s: FloatStatus) -> int:
    """UCOMISD, and CMPSD's quiet predicates: IE for an SNaN only."""
    return _compare(a, b, s, FLOAT64, False)


def _minmax(a: int, b: int, s: FloatStatus, f: BinaryFormat, want_max: bool) -> int:
    """x86 MIN/MAX (SDM vol. 2, MINSS/MAXSS): ``a`` (the destination, first source) if
    it is strictly less (greater) than ``b``, else ``b`` unchanged: so a NaN on either
    side, or two zeros of any signs, give ``b``, and any NaN raises IE (these are not
    IEEE 754-2008's minNum/maxNum, 5.3.1)."""
    mag = ~f.sign
    inf = f.inf
    if (a & mag) > inf or (b & mag) > inf:
        s.flags |= FLAG_INVALID
        if s.daz and not b & f.inf:
            return b & f.sign      # a denormal b reads as zero (SDM vol. 1, 10.2.3.4)
        return b
    za = reads_as_zero(a, f, s)
    zb = reads_as_zero(b, f, s)
    ka = _key(a, za, f)
    kb = _key(b, zb, f)
    if (ka > kb) if want_max else (ka < kb):
        return a & f.sign if za else a
    return b & f.sign if zb else b


def float32_min(a: int, b: int, s: FloatStatus) -> int:
    """MINSS: ``a < b ? a : b`` (see ``_minmax``)."""
    return _minmax(a, b, s, FLOAT32, False)


def float32_max(a: int, b: int, s: FloatStatus) -> int:
    """MAXSS: ``a > b ? a : b`` (see ``_minmax``)."""
    return _minmax(a, b, s, FLOAT32, True)


def float64_min(a: int, b: int, s: FloatStatus) -> int:
    """MINSD: ``a < b ? a : b`` (see ``_minmax``)."""
    return _minmax(a, b, s, FLOAT64, False)


def float64_max(a: int, b: int, s: FloatStatus) -> int:
    """MAXSD: ``a > b ? a : b`` (see ``_minmax``)."""
    return _minmax(a, b, s, FLOAT64, True)
