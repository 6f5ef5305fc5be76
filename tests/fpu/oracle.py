"""The host processor as the reference: tests/fpu/oracle.c built with the machine's gcc
and called through ctypes, one SSE or x87 instruction per call."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("oracle.c")

# The instruction numbers of oracle.c's enums, in order.
SSE_OPS = [
    "addss", "subss", "mulss", "divss", "sqrtss", "minss", "maxss", "comiss", "ucomiss",
    "addsd", "subsd", "mulsd", "divsd", "sqrtsd", "minsd", "maxsd", "comisd", "ucomisd",
    "cvtss2sd", "cvtsd2ss",
    "cvtss2si32", "cvtss2si64", "cvttss2si32", "cvttss2si64",
    "cvtsd2si32", "cvtsd2si64", "cvttsd2si32", "cvttsd2si64",
    "cvtsi32ss", "cvtsi64ss", "cvtsi32sd", "cvtsi64sd",
    *(f"roundss_{i}" for i in (0, 1, 2, 3, 4, 8, 9, 10, 11, 12)),
    *(f"roundsd_{i}" for i in (0, 1, 2, 3, 4, 8, 9, 10, 11, 12)),
]
X87_OPS = [
    "fadd", "fsub", "fmul", "fdiv", "fsqrt", "fprem", "fprem1", "fscale", "frndint", "fcom",
    "fucom", "fld32", "fld64", "fst32", "fst64", "fild16", "fild32", "fild64",
    "fist16", "fist32", "fist64", "fistt16", "fistt32", "fistt64",
]

MXCSR_MASKED = 0x1F80      # every exception masked, round to nearest
MXCSR_DAZ = 0x0040
MXCSR_FTZ = 0x8000
FCW_MASKED = 0x003F        # every exception masked
PC_BITS = {24: 0, 53: 2, 64: 3}


def gcc_path() -> str | None:
    """The machine's C compiler, or None."""
    return shutil.which("gcc")


class Oracle:
    """oracle.c loaded: ``sse(...)`` and ``x87(...)`` run one instruction each."""

    def __init__(self, library: Path) -> None:
        lib = ctypes.CDLL(str(library))
        if lib.sse_op_count() != len(SSE_OPS) or lib.x87_op_count() != len(X87_OPS):
            raise RuntimeError("oracle.c's instruction lists differ from oracle.py's")
        self._sse = lib.sse
        self._sse.restype = ctypes.c_uint32
        self._sse.argtypes = [ctypes.c_int, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint32,
                              ctypes.POINTER(ctypes.c_uint64)]
        self._x87 = lib.x87
        self._x87.restype = ctypes.c_uint16
        self._x87.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint16,
                              ctypes.c_char_p]
        self._out = ctypes.c_uint64()
        self._out_ref = ctypes.byref(self._out)
        self._buf = ctypes.create_string_buffer(16)
        self._sse_index = {name: i for i, name in enumerate(SSE_OPS)}
        self._x87_index = {name: i for i, name in enumerate(X87_OPS)}

    def sse(self, op: str, a: int, b: int, mxcsr: int) -> tuple[int, int]:
        """(result bits, MXCSR after); for comis*: ZF<<2 | PF<<1 | CF."""
        after = self._sse(self._sse_index[op], a, b, mxcsr, self._out_ref)
        return self._out.value, after

    def x87(self, op: str, a: int, b: int, cw: int) -> tuple[int, int]:
        """(result as an int of the stored bytes, status word after)."""
        sw = self._x87(self._x87_index[op], a.to_bytes(16, "little"), b.to_bytes(16, "little"),
                       cw, self._buf)
        raw = self._buf.raw
        return int.from_bytes(raw[:10], "little"), sw


def build(directory: Path) -> Oracle:
    """Compile oracle.c into ``directory`` and load it."""
    gcc = gcc_path()
    if gcc is None:
        raise RuntimeError("no gcc")
    library = directory / "oracle.so"
    subprocess.run([gcc, "-O1", "-shared", "-fPIC", "-o", str(library), str(SOURCE)],
                   check=True, capture_output=True, timeout=120)
    return Oracle(library)
