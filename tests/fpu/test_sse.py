"""binary32/binary64 operations compared bit for bit, MXCSR flags included, with the
SSE instructions of this processor: every rounding mode, DAZ and FTZ on and off.

Quick profile (with the suite): every pair of edge values under one control setting
each, and 300 random operand sets per instruction. ``PYQEMU_FPU_EXAMPLES=N`` compares N
random sets and every edge pair under every setting; ``PYQEMU_FPU_SEED`` picks the
seed. A mismatch prints the operands and the controls that replay it."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from pyqemu import fpu
from tests.fpu import cases, tally
from tests.fpu.cases import FLOAT32, FLOAT64, Binary
from tests.fpu.oracle import MXCSR_DAZ, MXCSR_FTZ, MXCSR_MASKED, Oracle

CONFIGS = [(rc, daz, ftz) for rc in range(4) for daz in (False, True) for ftz in (False, True)]

Op = Callable[[int, int, fpu.FloatStatus], int]

# ZF, PF, CF as COMISS/UCOMISS leave them (SDM vol. 2, COMISS), per relation
_EFLAGS = {fpu.RELATION_LESS: 0b001, fpu.RELATION_EQUAL: 0b100,
           fpu.RELATION_GREATER: 0b000, fpu.RELATION_UNORDERED: 0b111}


def _rel(f: Callable[[int, int, fpu.FloatStatus], int]) -> Op:
    return lambda a, b, s: _EFLAGS[f(a, b, s)]


def _unary(f: Callable[[int, fpu.FloatStatus], int]) -> Op:
    return lambda a, b, s: f(a, s)


def _round(f: Callable[[int, fpu.FloatStatus, int, bool], int], imm: int) -> Op:
    def op(a: int, b: int, s: fpu.FloatStatus) -> int:
        rounding = s.rounding if imm & 4 else imm & 3
        return f(a, s, rounding, not imm & 8)
    return op


# instruction -> (format of a, format of b or None, result width, our operation)
OPS: dict[str, tuple[Binary | int, Binary | None, int, Op]] = {
    "addss": (FLOAT32, FLOAT32, 32, fpu.float32_add),
    "subss": (FLOAT32, FLOAT32, 32, fpu.float32_sub),
    "mulss": (FLOAT32, FLOAT32, 32, fpu.float32_mul),
    "divss": (FLOAT32, FLOAT32, 32, fpu.float32_div),
    "sqrtss": (FLOAT32, None, 32, _unary(fpu.float32_sqrt)),
    "minss": (FLOAT32, FLOAT32, 32, fpu.float32_min),
    "maxss": (FLOAT32, FLOAT32, 32, fpu.float32_max),
    "comiss": (FLOAT32, FLOAT32, 3, _rel(fpu.float32_compare)),
    "ucomiss": (FLOAT32, FLOAT32, 3, _rel(fpu.float32_compare_quiet)),
    "addsd": (FLOAT64, FLOAT64, 64, fpu.float64_add),
    "subsd": (FLOAT64, FLOAT64, 64, fpu.float64_sub),
    "mulsd": (FLOAT64, FLOAT64, 64, fpu.float64_mul),
    "divsd": (FLOAT64, FLOAT64, 64, fpu.float64_div),
    "sqrtsd": (FLOAT64, None, 64, _unary(fpu.float64_sqrt)),
    "minsd": (FLOAT64, FLOAT64, 64, fpu.float64_min),
    "maxsd": (FLOAT64, FLOAT64, 64, fpu.float64_max),
    "comisd": (FLOAT64, FLOAT64, 3, _rel(fpu.float64_compare)),
    "ucomisd": (FLOAT64, FLOAT64, 3, _rel(fpu.float64_compare_quiet)),
    "cvtss2sd": (FLOAT32, None, 64, _unary(fpu.float32_to_float64)),
    "cvtsd2ss": (FLOAT64, None, 32, _unary(fpu.float64_to_float32)),
    "cvtss2si32": (FLOAT32, None, 32, _unary(fpu.float32_to_int32)),
    "cvtss2si64": (FLOAT32, None, 64, _unary(fpu.float32_to_int64)),
    "cvttss2si32": (FLOAT32, None, 32, _unary(fpu.float32_to_int32_round_to_zero)),
    "cvttss2si64": (FLOAT32, None, 64, _unary(fpu.float32_to_int64_round_to_zero)),
    "cvtsd2si32": (FLOAT64, None, 32, _unary(fpu.float64_to_int32)),
    "cvtsd2si64": (FLOAT64, None, 64, _unary(fpu.float64_to_int64)),
    "cvttsd2si32": (FLOAT64, None, 32, _unary(fpu.float64_to_int32_round_to_zero)),
    "cvttsd2si64": (FLOAT64, None, 64, _unary(fpu.float64_to_int64_round_to_zero)),
    "cvtsi32ss": (32, None, 32, _unary(fpu.int32_to_float32)),
    "cvtsi64ss": (64, None, 32, _unary(fpu.int64_to_float32)),
    "cvtsi32sd": (32, None, 64, _unary(fpu.int32_to_float64)),
    "cvtsi64sd": (64, None, 64, _unary(fpu.int64_to_float64)),
}
for _imm in (0, 1, 2, 3, 4, 8, 9, 10, 11, 12):
    OPS[f"roundss_{_imm}"] = (FLOAT32, None, 32, _round(fpu.float32_round_to_int, _imm))
    OPS[f"roundsd_{_imm}"] = (FLOAT64, None, 64, _round(fpu.float64_round_to_int, _imm))


def _mxcsr(config: int) -> int:
    rc, daz, ftz = CONFIGS[config]
    return MXCSR_MASKED | (rc << 13) | (MXCSR_DAZ if daz else 0) | (MXCSR_FTZ if ftz else 0)


def _draw_int(rng: random.Random, bits: int) -> int:
    return rng.getrandbits(rng.randint(0, bits)) * rng.choice((1, -1)) & ((1 << bits) - 1)


def _int_edges(bits: int) -> list[int]:
    top = 1 << (bits - 1)
    vals = [0, 1, 2, 3, top - 1, top, top + 1, (1 << 24) + 1, (1 << 53) + 1, (1 << 25) - 1,
            (1 << 31) - 1, 0xFFFFFF01]
    return sorted({v & ((1 << bits) - 1) for v in vals} | {-v & ((1 << bits) - 1) for v in vals})


def _draw_for(op: str, fa: Binary, rng: random.Random) -> int:
    """An operand drawn where the instruction's own edges are."""
    if op.startswith(("cvtss2si", "cvttss2si", "cvtsd2si", "cvttsd2si")) and rng.randrange(2):
        return fa.draw(rng, near=fa.bias + rng.randint(-2, 66))
    if op.startswith("round") and rng.randrange(2):
        return fa.draw(rng, near=fa.bias + rng.randint(-3, fa.fbits + 2))
    return fa.draw(rng)


def _near_boundary(op: str, f: Binary, a: int, rng: random.Random) -> int:
    """A second operand putting a * b (or a / b) within a few units in the last place
    of the smallest normal or of the largest finite number: where tininess after
    rounding and overflow after rounding decide."""
    div = fpu.float32_div if f.width == 32 else fpu.float64_div
    target = f.pack(0, 1, 0) if rng.randrange(3) else f.pack(0, f.emax - 1, (1 << f.fbits) - 1)
    a &= ~f.sign
    if not a:
        return f.draw(rng)
    s = fpu.FloatStatus()
    b = div(target, a, s) if op.startswith("mul") else div(a, target, s)
    if (b >> f.fbits) & f.emax in (0, f.emax):
        return f.draw(rng)
    return (b + rng.randint(-3, 3)) | (f.sign if rng.getrandbits(1) else 0)


def _compare_one(oracle: Oracle, op: str, a: int, b: int, config: int) -> str | None:
    _fa, _fb, width, ours = OPS[op]
    mxcsr = _mxcsr(config)
    cpu_r, cpu_csr = oracle.sse(op, a, b, mxcsr)
    rc, daz, ftz = CONFIGS[config]
    s = fpu.FloatStatus(rc, ftz=ftz, daz=daz)
    r = ours(a, b, s)
    flags = s.flags & fpu.FLAGS_EXCEPTIONS
    if r == cpu_r and flags == cpu_csr & 0x3F:
        return None
    digits = (width + 3) // 4
    return (f"{op}({a:#x}, {b:#x}) rc={rc} daz={int(daz)} ftz={int(ftz)}: "
            f"fpu {r:#0{digits + 2}x} flags {flags:#04x}, "
            f"cpu {cpu_r:#0{digits + 2}x} flags {cpu_csr & 0x3F:#04x}")


def test_the_oracle_honours_the_rounding_mode_daz_and_ftz(oracle: Oracle) -> None:
    one, three = 0x3FF0000000000000, 0x4008000000000000
    down, _ = oracle.sse("divsd", one, three, MXCSR_MASKED | (1 << 13))
    up, _ = oracle.sse("divsd", one, three, MXCSR_MASKED | (2 << 13))
    assert up == down + 1
    assert oracle.sse("addsd", 1, 0, MXCSR_MASKED) == (1, MXCSR_MASKED | fpu.FLAG_DENORMAL)
    assert oracle.sse("addsd", 1, 0, MXCSR_MASKED | MXCSR_DAZ) == (0, MXCSR_MASKED | MXCSR_DAZ)
    r, csr = oracle.sse("mulsd", 0x0010000000000000, 0x3FE0000000000000,
                        MXCSR_MASKED | MXCSR_FTZ)
    assert (r, csr & 0x3F) == (0, fpu.FLAG_UNDERFLOW | fpu.FLAG_INEXACT)


@pytest.mark.parametrize("op", list(OPS))
def test_sse_instruction_matches_the_processor(oracle: Oracle, op: str) -> None:
    fa, fb, _width, _ours = OPS[op]
    rng = random.Random(f"{cases.SEED}-{op}")
    if isinstance(fa, int):
        edges = _int_edges(fa)
        pool = cases.pairs(edges, rng, lambda r: (_draw_int(r, fa), 0),
                           cases.examples(), len(CONFIGS))
        pool = ((a, 0, c) for a, b, c in pool if b == edges[0])
    elif fb is None:
        edges = fa.edges()
        pool = cases.pairs(edges, rng, lambda r: (_draw_for(op, fa, r), 0),
                           cases.examples() * 4, len(CONFIGS))
        pool = ((a, b, c) for a, b, c in pool if b == edges[0])
    else:
        f2: Binary = fb

        def draw(r: random.Random) -> tuple[int, int]:
            a = fa.draw(r)
            if op[:3] in ("mul", "div") and r.randrange(4) == 0:
                return a, _near_boundary(op, fa, a, r)
            ea = (a >> fa.fbits) & fa.emax
            how = r.randrange(3)
            near = ea if how == 0 else (2 * fa.bias - ea if how == 1 else None)
            return a, f2.draw(r, near=near)
        pool = cases.pairs(fa.edges(), rng, draw, cases.examples(), len(CONFIGS))
    mismatches = []
    n = 0
    for a, b, config in pool:
        n += 1
        m = _compare_one(oracle, op, a, b, config)
        if m is not None:
            mismatches.append(m)
    tally.record(op, n, n - len(mismatches))
    assert not mismatches, f"{len(mismatches)} of {n} differ:\n" + "\n".join(mismatches[:25])
