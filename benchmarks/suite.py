"""The benchmark workloads: guest sources in ``workloads/*.s`` and, for each, a Python model.

Every workload is a small guest program whose size (an iteration count ``n``) is
substituted into its source (``{N}`` and a few addresses derived from it) and
which leaves its result in a register before writing to isa-debug-exit (port
0xf4).  :meth:`Workload.model` computes, in Python, the value the guest must
leave there and how many guest instructions it executes (counted from the
program's loop structure; a REP-prefixed string instruction counts once, as a
hardware instructions-retired counter counts it, and the final ``out`` counts).
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from collections.abc import Callable
from functools import cache, lru_cache
from pathlib import Path

WORKLOAD_DIR = Path(__file__).parent / "workloads"

LOAD_ADDR = 0x10000          # code; the boot area (GDT, page tables) ends at 0xF000
STACK_TOP = 0x80000          # initial stack pointer (grows down, away from the code)
DATA_BASE = 0x100000         # buffers start at 1 MiB
EXIT_VALUE = 0x2a            # what every workload writes to port 0xf4
EXIT_CODE = (EXIT_VALUE << 1) | 1  # isa-debug-exit's exit status for it
DEBUG_EXIT = "isa-debug-exit,iobase=0xf4,iosize=0x04"

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF


def _align(x: int, a: int = 0x1000) -> int:
    return (x + a - 1) // a * a


# --- models: (expected result, guest instructions) for size n --------------------------------
def _loop_core(n: int) -> tuple[int, int]:
    eax = edx = 0
    for ecx in range(n, 0, -1):
        eax = (eax + ecx) & M32
        edx ^= eax
    return edx, 3 + 4 * n + 3


def model_loop(n: int) -> tuple[int, int]:
    return _loop_core(n)


def model_loop_pg32(n: int) -> tuple[int, int]:
    result, insns = _loop_core(n)
    return result, 3 + 5 * 0x400 + 7 + insns


def model_memcpy(n: int) -> tuple[int, int]:
    ebx, edx = 0, 0x12345678
    for _ in range(n):
        ebx = (((ebx << 5) | (ebx >> 27)) & M32) + edx & M32
        edx = (edx + 0x9E3779B9) & M32
    return ebx, 3 + 5 * n + 3 + 6 * 4 * n + 3 + 6 * n + 3 + 5 * n + 2


def model_sieve(n: int) -> tuple[int, int]:
    flags = bytearray([1]) * n
    insns = 2 + 4 * n + 2
    b = 2
    while b * b < n:
        insns += 6
        if flags[b]:
            flags[b * b::b] = bytes(len(range(b * b, n, b)))
            insns += 4 * len(range(b * b, n, b))
        insns += 2
        b += 1
    insns += 4                                # the last outer check leaves at jae
    insns += 2 + 5 * (n - 2) + 3
    return sum(flags[2:]), insns


def _crc_data(n: int) -> bytes:
    out = bytearray(n)
    edx = 0x1234567
    for i in range(n):
        edx = (edx * 0x41C64E6D + 0x3039) & M32
        out[i] = (edx >> 16) & 0xFF
    return bytes(out)


def model_crc32(n: int) -> tuple[int, int]:
    data = _crc_data(n)
    crc, carries = M32, 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0xEDB88320
                carries += 1
            else:
                crc >>= 1
    result = crc ^ M32
    assert result == zlib.crc32(data)
    return result, 3 + 8 * n + 3 + n * (3 + 8 * 4 + 3) + carries + 4


FIB_K = 18


@cache
def _fib(k: int) -> tuple[int, int]:
    """(fib(k), instructions inside fib(k) from its first instruction to its ret)."""
    if k < 2:
        return k, 4
    a, ia = _fib(k - 1)
    b, ib = _fib(k - 2)
    return a + b, 12 + ia + ib


def model_fib(n: int) -> tuple[int, int]:
    value, inside = _fib(FIB_K)
    return (n * value) & M64, 2 + n * (5 + inside) + 2


def model_string(n: int) -> tuple[int, int]:
    ebx = 0
    for i in range(n, 0, -1):
        pos = i & 0x3FF
        left = 0x400 - (pos + 1)
        after = (i & 0x7F) if pos < 0x3FF else 0   # B + 0x400 is never written
        ebx = (ebx + left + after) & M32
    return ebx, 5 + 22 * n + 2


def string_rep_extra(n: int) -> int:
    """How many more instructions string.s executes if each REP iteration counts as one
    (QEMU's icount counts them so): per round 0x100 + 0x400 + (i & 0x3ff) + 1 iterations
    for three instructions."""
    return sum(0x100 + 0x400 + (i & 0x3FF) + 1 - 3 for i in range(n, 0, -1))


# --- placeholders -----------------------------------------------------------------------------
def params_loop(n: int) -> dict[str, int]:
    return {"N": n}


def params_loop_pg32(n: int) -> dict[str, int]:
    pt, pd = DATA_BASE, DATA_BASE + 0x1000
    return {"N": n, "PT": pt, "PD": pd, "PDE": pt | 3}


def params_memcpy(n: int) -> dict[str, int]:
    size = _align(4 * n)
    return {"N": n, "NBYTES": 4 * n, "SRC": DATA_BASE, "DST1": DATA_BASE + size,
            "DST2": DATA_BASE + 2 * size}


def params_buf(n: int) -> dict[str, int]:
    return {"N": n, "BUF": DATA_BASE}


def params_fib(n: int) -> dict[str, int]:
    return {"N": n, "K": FIB_K}


def params_string(n: int) -> dict[str, int]:
    return {"N": n, "BUF_A": DATA_BASE, "BUF_B": DATA_BASE + 0x1000}


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    title: str
    mode: str                      # "long64" (at CPL 3 when user) or "prot32"
    user: bool
    default_n: int
    min_n: int                     # smallest meaningful size (tests, probes)
    model_fn: Callable[[int], tuple[int, int]]
    params_fn: Callable[[int], dict[str, int]]
    data_bytes: Callable[[int], int]   # bytes of buffers above DATA_BASE
    result_reg: str = "rbx"
    #: Set when the host may not run this mode at all: a failed tiny probe then skips
    #: the accelerator for this workload (with the reason) instead of failing.
    may_be_unsupported: str | None = None
    #: Instructions added when every REP iteration counts as one (0: no REP in the workload).
    rep_extra: Callable[[int], int] = lambda n: 0

    @property
    def path(self) -> Path:
        return WORKLOAD_DIR / f"{self.name}.s"

    def size(self, scale: float) -> int:
        return max(self.min_n, round(self.default_n * scale))

    def model(self, n: int) -> tuple[int, int]:
        """(the result the guest must leave in :attr:`result_reg`, guest instructions)."""
        return _cached_model(self.name, n)

    def source(self, n: int) -> str:
        """The program text for size ``n``: every ``{NAME}`` replaced by its value in hex."""
        values = self.params_fn(n)
        text = self.path.read_text()

        def sub(m: re.Match[str]) -> str:
            key = m.group(1)
            if key not in values:
                raise KeyError(f"{self.path.name}: no value for placeholder {{{key}}}")
            return hex(values[key])
        return re.sub(r"\{([A-Z_0-9]+)\}", sub, text)

    def memory(self, n: int) -> str:
        """Guest RAM for size ``n`` (at least 32 MiB), as a ``-m`` size."""
        need = DATA_BASE + self.data_bytes(n) + (1 << 20)
        return f"{max(32, _align(need, 1 << 20) >> 20)}M"

    @property
    def result_mask(self) -> int:
        return M64 if self.result_reg.startswith("r") else M32


WORKLOADS: tuple[Workload, ...] = (
    Workload("loop", "tight integer loop", "long64", True, 1_250_000, 4,
             model_loop, params_loop, lambda n: 0),
    Workload("memcpy", "memory copy (byte/dword)", "long64", True, 125_000, 4,
             model_memcpy, params_memcpy, lambda n: 3 * _align(4 * n)),
    Workload("sieve", "sieve of primes", "long64", True, 250_000, 64,
             model_sieve, params_buf, lambda n: _align(n)),
    Workload("crc32", "bitwise CRC-32", "long64", True, 100_000, 8,
             model_crc32, params_buf, lambda n: _align(n)),
    Workload("fib", f"recursive fib({FIB_K})", "long64", True, 80, 1,
             model_fib, params_fib, lambda n: 0),
    Workload("string", "rep movsb/stosd, repne scasb", "long64", True, 1500, 4,
             model_string, params_string, lambda n: 0x2000, rep_extra=string_rep_extra),
    Workload("loop_pg32", "tight loop, prot32 + paging", "prot32", False, 1_250_000, 4,
             model_loop_pg32, params_loop_pg32, lambda n: 0x2000, result_reg="ebx",
             may_be_unsupported="32-bit protected mode with legacy paging"),
)

BY_NAME = {w.name: w for w in WORKLOADS}

_MODELS = {w.name: w.model_fn for w in WORKLOADS}


@lru_cache(maxsize=64)
def _cached_model(name: str, n: int) -> tuple[int, int]:
    return _MODELS[name](n)
