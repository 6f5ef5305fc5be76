"""The floating-point status every operation reads and accumulates into.

One :class:`FloatStatus` per vCPU context (QEMU's ``float_status``): the operations
read the rounding mode and the DAZ/FTZ/precision controls from it and OR the
exceptions they detect into ``flags``; nothing is allocated per operation.

Encodings are the processor's, so the interpreter copies fields straight from MXCSR
and the x87 control/status words:

* ``rounding``: the RC field of MXCSR (bits 14:13) and of the x87 control word
  (bits 11:10), Intel SDM vol. 1, 4.8.4 Table 4-8: 0 nearest (ties to even), 1 down
  (toward -inf), 2 up (toward +inf), 3 toward zero (IEEE 754-2008, 4.3).
* ``flags``: MXCSR bits 5:0 / x87 status word bits 5:0 (SDM vol. 1, 8.1.3 and
  10.2.3): IE 0x01, DE 0x02, ZE 0x04, OE 0x08, UE 0x10, PE 0x20; plus the x87's C1
  (0x200, status word bit 9), set when an inexact result was rounded up in magnitude
  (SDM vol. 1, 8.1.3.2). An SSE caller keeps ``flags & 0x3F``.
* ``precision``: the x87 precision control (SDM vol. 1, 8.1.5.2) as the number of
  significand bits, 24, 53 or 64; it affects only floatx80 add, sub, mul, div and
  sqrt, as on the x87.
* ``ftz`` / ``daz``: MXCSR.FTZ (bit 15) and MXCSR.DAZ (bit 6), SDM vol. 1, 10.2.3.3
  and 10.2.3.4; read by the binary32/binary64 operations only (the x87 has neither).

Every flag is the *masked* response (SDM vol. 1, 4.9.2): the operation always
delivers the result the processor writes when the exception is masked. A caller
with an exception unmasked checks ``flags`` and raises #XM / #MF instead of
writing the result (see the package docstring for what remains to do there).
"""

from __future__ import annotations

ROUND_NEAREST_EVEN = 0
ROUND_DOWN = 1
ROUND_UP = 2
ROUND_TO_ZERO = 3

FLAG_INVALID = 0x01
FLAG_DENORMAL = 0x02
FLAG_DIVBYZERO = 0x04
FLAG_OVERFLOW = 0x08
FLAG_UNDERFLOW = 0x10
FLAG_INEXACT = 0x20
FLAG_C1 = 0x200
#: the six IEEE/x86 exception flags (MXCSR bits 5:0)
FLAGS_EXCEPTIONS = 0x3F

# The result of a comparison (QEMU's FloatRelation values): what COMISS/UCOMISS
# put in ZF, PF, CF and FCOM/FUCOM in C3, C2, C0 (SDM vol. 2, COMISS; vol. 1, 8.3.7).
RELATION_LESS = -1
RELATION_EQUAL = 0
RELATION_GREATER = 1
RELATION_UNORDERED = 2

# x87 condition-code bits of the status word, as FPREM/FPREM1 return them.
FSW_C0 = 0x0100
FSW_C1 = 0x0200
FSW_C2 = 0x0400
FSW_C3 = 0x4000


class FloatStatus:
    """Rounding controls in, accumulated exception flags out (see the module doc)."""

    __slots__ = ("daz", "flags", "ftz", "precision", "rounding")

    def __init__(self, rounding: int = ROUND_NEAREST_EVEN, flags: int = 0, *,
                 ftz: bool = False, daz: bool = False, precision: int = 64) -> None:
        if rounding not in (0, 1, 2, 3):
            raise ValueError(f"rounding must be an RC value 0..3, not {rounding!r}")
        if precision not in (24, 53, 64):
            raise ValueError(f"precision must be 24, 53 or 64 bits, not {precision!r}")
        self.rounding = rounding
        self.flags = flags
        self.ftz = ftz
        self.daz = daz
        self.precision = precision

    def __repr__(self) -> str:
        return (f"FloatStatus(rounding={self.rounding}, flags={self.flags:#x}, "
                f"ftz={self.ftz}, daz={self.daz}, precision={self.precision})")
