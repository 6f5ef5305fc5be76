"""Software floating point for the interpreter, as QEMU's ``fpu/softfloat.c`` is for TCG.

binary32, binary64 (IEEE 754-2008, 3.6) and the x87's 80-bit double extended format,
with x86's rounding, flags, NaNs, DAZ/FTZ and precision control, bit for bit with the
processor. The arithmetic is pure Python on ints: no Python ``float`` takes part
(a float rounds to nearest and raises no flags).

Why pure Python and not a binding of Berkeley SoftFloat. What PyPI offers (looked at
on 2026-12-02):

* ``softfloatpy`` 1.2.3 (MIT, maintained, CPython 3.11 x86-64 wheels) binds SoftFloat 3e
  but leaves out the 80-bit extended format on purpose;
* ``sfpy`` 0.6.0 (2019, no licence stated, wheels up to CPython 3.7): binary16/32/64 only;
* ``softfloat`` 0.1.4.1 (2019, a SWIG source distribution that runs ``make`` when it
  installs, no wheels): has extF80 but no access to the rounding precision, and one
  process-wide flag word.

None covers binary32, binary64 *and* floatx80 with the four rounding modes and the
flags; and SoftFloat itself has no denormal-operand flag (x86's DE), no DAZ or FTZ, no
FSCALE and no FPREM partial remainder, all of which the interpreter needs. So the
library is written here, from the IEEE standard and the Intel SDM.

The API (every function takes and returns plain ints; nothing is allocated per call
beyond the ints themselves):

* a value is its raw bit pattern: binary32 a 32-bit int, binary64 a 64-bit int,
  floatx80 an 80-bit int (sign bit 79, exponent 78:64, significand 63:0 with the
  explicit integer bit); an integer operand or result is its two's-complement pattern;
* one :class:`FloatStatus` per context carries ``rounding`` (the RC encoding of MXCSR
  and the x87 control word), ``flags`` (MXCSR/FSW bits 5:0, plus C1 at 0x200),
  ``ftz`` and ``daz`` (SSE formats only) and ``precision`` (24/53/64, the x87's PC);
  operations read it and OR into ``flags``, QEMU's float_status shape;
* names follow QEMU's softfloat: ``float64_add(a, b, s)``, ``float64_to_int32(a, s)``,
  ``float64_to_int32_round_to_zero``, ``int64_to_float32``, ``float32_to_float64``,
  ``float64_round_to_int(a, s, rounding, inexact)``, ``float64_compare[_quiet]`` (a
  ``RELATION_*`` value), ``float64_min``/``float64_max`` (MINSD/MAXSD), the same for
  ``float32``; ``floatx80_add``/``sub``/``mul``/``div``/``sqrt``/``compare[_quiet]``,
  ``floatx80_round_to_int``, ``floatx80_scale`` (FSCALE), ``floatx80_fprem``/
  ``floatx80_fprem1`` (returning the result and the C0-C3 bits), and the conversions
  ``float32/64_to_floatx80`` (FLD), ``floatx80_to_float32/64`` (FST),
  ``int16/32/64_to_floatx80`` (FILD), ``floatx80_to_int16/32/64[_round_to_zero]``
  (FIST, FISTTP).

Where each behaviour comes from: :mod:`pyqemu.fpu.rounding` (rounding, tininess after
rounding, overflow), :mod:`pyqemu.fpu.binary` (SSE arithmetic, NaN rules, DAZ),
:mod:`pyqemu.fpu.compare`, :mod:`pyqemu.fpu.convert`, :mod:`pyqemu.fpu.extended`
(floatx80 encodings and arithmetic) and :mod:`pyqemu.fpu.x87`. tests/fpu compares every
operation with the processor it runs on.

The flags are the *masked* responses (SDM vol. 1, 4.9.2, 11.5.2). What an unmasked
exception changes is the caller's: SSE writes no result and raises #XM; the x87 with
OE or UE unmasked stores the result with its exponent biased by 24576 (8.5.4 and
8.5.5), which this library does not compute yet.
"""

from pyqemu.fpu.binary import (
    float32_add,
    float32_div,
    float32_mul,
    float32_sqrt,
    float32_sub,
    float64_add,
    float64_div,
    float64_mul,
    float64_sqrt,
    float64_sub,
)
from pyqemu.fpu.compare import (
    float32_compare,
    float32_compare_quiet,
    float32_max,
    float32_min,
    float64_compare,
    float64_compare_quiet,
    float64_max,
    float64_min,
)
from pyqemu.fpu.convert import (
    float32_round_to_int,
    float32_to_float64,
    float32_to_int32,
    float32_to_int32_round_to_zero,
    float32_to_int64,
    float32_to_int64_round_to_zero,
    float64_round_to_int,
    float64_to_float32,
    float64_to_int32,
    float64_to_int32_round_to_zero,
    float64_to_int64,
    float64_to_int64_round_to_zero,
    int32_to_float32,
    int32_to_float64,
    int64_to_float32,
    int64_to_float64,
)
from pyqemu.fpu.extended import (
    floatx80_add,
    floatx80_compare,
    floatx80_compare_quiet,
    floatx80_div,
    floatx80_mul,
    floatx80_sqrt,
    floatx80_sub,
)
from pyqemu.fpu.status import (
    FLAG_C1,
    FLAG_DENORMAL,
    FLAG_DIVBYZERO,
    FLAG_INEXACT,
    FLAG_INVALID,
    FLAG_OVERFLOW,
    FLAG_UNDERFLOW,
    FLAGS_EXCEPTIONS,
    FSW_C0,
    FSW_C1,
    FSW_C2,
    FSW_C3,
    RELATION_EQUAL,
    RELATION_GREATER,
    RELATION_LESS,
    RELATION_UNORDERED,
    ROUND_DOWN,
    ROUND_NEAREST_EVEN,
    ROUND_TO_ZERO,
    ROUND_UP,
    FloatStatus,
)
from pyqemu.fpu.x87 import (
    float32_to_floatx80,
    float64_to_floatx80,
    floatx80_fprem,
    floatx80_fprem1,
    floatx80_round_to_int,
    floatx80_scale,
    floatx80_to_float32,
    floatx80_to_float64,
    floatx80_to_int16,
    floatx80_to_int16_round_to_zero,
    floatx80_to_int32,
    floatx80_to_int32_round_to_zero,
    floatx80_to_int64,
    floatx80_to_int64_round_to_zero,
    int16_to_floatx80,
    int32_to_floatx80,
    int64_to_floatx80,
)

__all__ = [
    "FLAGS_EXCEPTIONS",
    "FLAG_C1",
    "FLAG_DENORMAL",
    "FLAG_DIVBYZERO",
    "FLAG_INEXACT",
    "FLAG_INVALID",
    "FLAG_OVERFLOW",
    "FLAG_UNDERFLOW",
    "FSW_C0",
    "FSW_C1",
    "FSW_C2",
    "FSW_C3",
    "RELATION_EQUAL",
    "RELATION_GREATER",
    "RELATION_LESS",
    "RELATION_UNORDERED",
    "ROUND_DOWN",
    "ROUND_NEAREST_EVEN",
    "ROUND_TO_ZERO",
    "ROUND_UP",
    "FloatStatus",
    "float32_add",
    "float32_compare",
    "float32_compare_quiet",
    "float32_div",
    "float32_max",
    "float32_min",
    "float32_mul",
    "float32_round_to_int",
    "float32_sqrt",
    "float32_sub",
    "float32_to_float64",
    "float32_to_floatx80",
    "float32_to_int32",
    "float32_to_int32_round_to_zero",
    "float32_to_int64",
    "float32_to_int64_round_to_zero",
    "float64_add",
    "float64_compare",
    "float64_compare_quiet",
    "float64_div",
    "float64_max",
    "float64_min",
    "float64_mul",
    "float64_round_to_int",
    "float64_sqrt",
    "float64_sub",
    "float64_to_float32",
    "float64_to_floatx80",
    "float64_to_int32",
    "float64_to_int32_round_to_zero",
    "float64_to_int64",
    "float64_to_int64_round_to_zero",
    "floatx80_add",
    "floatx80_compare",
    "floatx80_compare_quiet",
    "floatx80_div",
    "floatx80_fprem",
    "floatx80_fprem1",
    "floatx80_mul",
    "floatx80_round_to_int",
    "floatx80_scale",
    "floatx80_sqrt",
    "floatx80_sub",
    "floatx80_to_float32",
    "floatx80_to_float64",
    "floatx80_to_int16",
    "floatx80_to_int16_round_to_zero",
    "floatx80_to_int32",
    "floatx80_to_int32_round_to_zero",
    "floatx80_to_int64",
    "floatx80_to_int64_round_to_zero",
    "int16_to_floatx80",
    "int32_to_float32",
    "int32_to_float64",
    "int32_to_floatx80",
    "int64_to_float32",
    "int64_to_float64",
    "int64_to_floatx80",
]
