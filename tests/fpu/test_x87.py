"""floatx80 operations compared bit for bit, status-word flags and condition codes
included, with this processor's x87: every rounding mode and precision control.

Quick profile (with the suite): every pair of edge values under one control setting
each, and 300 random operand sets per instruction. ``PYQEMU_FPU_EXAMPLES=N`` compares N
random sets and every edge pair under every setting; ``PYQEMU_FPU_SEED`` picks the
seed. A mismatch prints the operands and the controls that replay it."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from pyqemu import fpu
from pyqemu.fpu import x87
from tests.fpu import cases, tally
from tests.fpu.cases import FLOAT32, FLOAT64, X80_BIAS, Binary
from tests.fpu.oracle import FCW_MASKED, PC_BITS, Oracle

CONFIGS = [(rc, pc) for rc in range(4) for pc in (24, 53, 64)]

C0, C1, C2, C3 = fpu.FSW_C0, fpu.FSW_C1, fpu.FSW_C2, fpu.FSW_C3
# C3, C2, C0 as FCOM/FUCOM leave them (SDM vol. 1, 8.3.7 Table 8-7), per relation
_CC = {fpu.RELATION_LESS: C0, fpu.RELATION_EQUAL: C3, fpu.RELATION_GREATER: 0,
       fpu.RELATION_UNORDERED: C3 | C2 | C0}

# An x87 operation of ours: (a, b, status) -> (result, condition bits)
Op = Callable[[int, int, fpu.FloatStatus], tuple[int, int]]


def _c1(s: fpu.FloatStatus) -> int:
    return s.flags & fpu.FLAG_C1


def _bin(f: Callable[[int, int, fpu.FloatStatus], int]) -> Op:
    def op(a: int, b: int, s: fpu.FloatStatus) -> tuple[int, int]:
        r = f(a, b, s)
        return r, _c1(s)
    return op


def _un(f: Callable[[int, fpu.FloatStatus], int]) -> Op:
    def op(a: int, b: int, s: fpu.FloatStatus) -> tuple[int, int]:
        r = f(a, s)
        return r, _c1(s)
    return op


def _cmp(f: Callable[[int, int, fpu.FloatStatus], int]) -> Op:
    def op(a: int, b: int, s: fpu.FloatStatus) -> tuple[int, int]:
        return a, _CC[f(a, b, s)]
    return op


def _prem(f: Callable[[int, int, fpu.FloatStatus], tuple[int, int]]) -> Op:
    def op(a: int, b: int, s: fpu.FloatStatus) -> tuple[int, int]:
        return f(a, b, s)
    return op


CC_C1 = C1
CC_ALL = C0 | C1 | C2 | C3
CC_COM = C0 | C1 | C2 | C3

# instruction -> (kind of a, kind of b or None, result bits, condition bits compared, ours)
OPS: dict[str, tuple[str, str | None, int, int, Op]] = {
    "fadd": ("x80", "x80", 80, CC_C1, _bin(fpu.floatx80_add)),
    "fsub": ("x80", "x80", 80, CC_C1, _bin(fpu.floatx80_sub)),
    "fmul": ("x80", "x80", 80, CC_C1, _bin(fpu.floatx80_mul)),
    "fdiv": ("x80", "x80", 80, CC_C1, _bin(fpu.floatx80_div)),
    "fsqrt": ("x80", None, 80, CC_C1, _un(fpu.floatx80_sqrt)),
    "fprem": ("x80", "x80", 80, CC_ALL, _prem(fpu.floatx80_fprem)),
    "fprem1": ("x80", "x80", 80, CC_ALL, _prem(fpu.floatx80_fprem1)),
    "fscale": ("x80", "x80", 80, CC_C1, _bin(fpu.floatx80_scale)),
    "frndint": ("x80", None, 80, CC_C1, _un(fpu.floatx80_round_to_int)),
    "fcom": ("x80", "x80", 0, CC_COM, _cmp(fpu.floatx80_compare)),
    "fucom": ("x80", "x80", 0, CC_COM, _cmp(fpu.floatx80_compare_quiet)),
    "fld32": ("f32", None, 80, CC_C1, _un(fpu.float32_to_floatx80)),
    "fld64": ("f64", None, 80, CC_C1, _un(fpu.float64_to_floatx80)),
    "fst32": ("x80", None, 32, CC_C1, _un(fpu.floatx80_to_float32)),
    "fst64": ("x80", None, 64, CC_C1, _un(fpu.floatx80_to_float64)),
    "fild16": ("i16", None, 80, CC_C1, _un(fpu.int16_to_floatx80)),
    "fild32": ("i32", None, 80, CC_C1, _un(fpu.int32_to_floatx80)),
    "fild64": ("i64", None, 80, CC_C1, _un(fpu.int64_to_floatx80)),
    "fist16": ("x80", None, 16, CC_C1, _un(fpu.floatx80_to_int16)),
    "fist32": ("x80", None, 32, CC_C1, _un(fpu.floatx80_to_int32)),
    "fist64": ("x80", None, 64, CC_C1, _un(fpu.floatx80_to_int64)),
    "fistt16": ("x80", None, 16, CC_C1, _un(fpu.floatx80_to_int16_round_to_zero)),
    "fistt32": ("x80", None, 32, CC_C1, _un(fpu.floatx80_to_int32_round_to_zero)),
    "fistt64": ("x80", None, 64, CC_C1, _un(fpu.floatx80_to_int64_round_to_zero)),
}

_BINARY: dict[str, Binary] = {"f32": FLOAT32, "f64": FLOAT64}


def _cw(config: int) -> int:
    rc, pc = CONFIGS[config]
    return FCW_MASKED | 0x40 | (PC_BITS[pc] << 8) | (rc << 10)


def _int_edges(bits: int) -> list[int]:
    top = 1 << (bits - 1)
    vals = [0, 1, 2, 3, top - 1, top, top + 1, 0x7FFF, 0x8000]
    return sorted({v & ((1 << bits) - 1) for v in vals} | {-v & ((1 << bits) - 1) for v in vals})


def _exp(a: int) -> int:
    return (a >> 64) & 0x7FFF


def _draw_a(op: str, rng: random.Random) -> int:
    """The first operand, drawn where the instruction's own edges are."""
    kind = OPS[op][0]
    if kind in _BINARY:
        return _BINARY[kind].draw(rng)
    if kind.startswith("i"):
        bits = int(kind[1:])
        return rng.getrandbits(rng.randint(0, bits)) * rng.choice((1, -1)) & ((1 << bits) - 1)
    if rng.randrange(2):
        if op.startswith("fist") or op == "frndint":
            return cases.x80_draw(rng, near=X80_BIAS + rng.randint(-3, 66))
        if op == "fst32":
            return cases.x80_draw(rng, near=X80_BIAS + rng.choice((-126, -149, 127, 0)))
        if op == "fst64":
            return cases.x80_draw(rng, near=X80_BIAS + rng.choice((-1022, -1074, 1023, 0)))
    return cases.x80_draw(rng)


def _draw_b(op: str, a: int, rng: random.Random) -> int:
    how = rng.randrange(4)
    if op == "fscale" and how < 3:
        return cases.x80_draw(rng, near=X80_BIAS + rng.randint(-2, 16), unsupported=False)
    if op.startswith("fprem") and how < 3:
        return cases.x80_draw(rng, near=_exp(a) - rng.choice((0, 1, 5, 40, 62, 63, 64, 65, 200)))
    if op in ("fmul", "fdiv") and how == 3 and rng.getrandbits(1):
        return _near_boundary(op, a, rng)
    if how == 0:
        return cases.x80_draw(rng, near=_exp(a))
    if how == 1:
        return cases.x80_draw(rng, near=2 * X80_BIAS - _exp(a))
    return cases.x80_draw(rng)


def _near_boundary(op: str, a: int, rng: random.Random) -> int:
    """A second operand putting a * b (or a / b) within a few units of the 24-, 53- or
    64-bit last place of the smallest normal or the largest finite floatx80."""
    pc = rng.choice((24, 53, 64))
    if rng.randrange(3):
        target = cases.x80(0, 1, 1 << 63)
    else:
        target = cases.x80(0, 0x7FFE, ((1 << pc) - 1) << (64 - pc))
    a &= ~(1 << 79)
    if not 0 < _exp(a) < 0x7FFF or not a >> 63 & 1:
        return cases.x80_draw(rng)
    s = fpu.FloatStatus()
    b = fpu.floatx80_div(target, a, s) if op == "fmul" else fpu.floatx80_div(a, target, s)
    if not 0 < _exp(b) < 0x7FFF:
        return cases.x80_draw(rng)
    return (b + (rng.randint(-3, 3) << (64 - pc))) | (rng.getrandbits(1) << 79)


def _other_partial(op: str, a: int, b: int, rc: int, pc: int, cpu_r: int,
                   cpu_flags: int) -> bool:
    """Whether the processor's partial remainder is the one of another N the SDM allows
    (vol. 2, FPREM, Operation: 32 <= N <= 63)."""
    for n in range(32, 64):
        s = fpu.FloatStatus(rc, precision=pc)
        r, cc = x87.partial_remainder(a, b, s, op == "fprem1", lambda d, n=n: n)
        if r == cpu_r and (s.flags & fpu.FLAGS_EXCEPTIONS) | (cc & CC_ALL) == cpu_flags:
            return True
    return False


def _compare_one(oracle: Oracle, op: str, a: int, b: int, config: int) -> str | None:
    _ka, _kb, bits, ccmask, ours = OPS[op]
    cpu_r, cpu_sw = oracle.x87(op, a, b, _cw(config))
    cpu_r &= (1 << bits) - 1
    cpu_flags = cpu_sw & (0x3F | ccmask)
    rc, pc = CONFIGS[config]
    s = fpu.FloatStatus(rc, precision=pc)
    r, cc = ours(a, b, s)
    r &= (1 << bits) - 1
    flags = (s.flags & fpu.FLAGS_EXCEPTIONS) | (cc & ccmask)
    if r == cpu_r and flags == cpu_flags:
        return None
    if op.startswith("fprem") and cc & cpu_sw & C2 and _other_partial(op, a, b, rc, pc,
                                                                        cpu_r, cpu_flags):
        tally.host_chose("fprem-partial-bits", f"{op}({a:#x}, {b:#x}) -> {cpu_r:#x}")
        return None
    digits = (bits + 3) // 4 + 2
    return (f"{op}({a:#x}, {b:#x}) rc={rc} pc={pc}: fpu {r:#0{digits}x} sw {flags:#06x}, "
            f"cpu {cpu_r:#0{digits}x} sw {cpu_flags:#06x}")


def test_the_oracle_honours_the_rounding_and_precision_controls(oracle: Oracle) -> None:
    one, three = 0x3FFF8000000000000000, 0x4000C000000000000000
    down, _ = oracle.x87("fdiv", one, three, FCW_MASKED | 0x300 | (1 << 10))
    up, _ = oracle.x87("fdiv", one, three, FCW_MASKED | 0x300 | (2 << 10))
    assert up == down + 1
    single, _ = oracle.x87("fdiv", one, three, FCW_MASKED)
    assert single == 0x3FFDAAAAAB0000000000


@pytest.mark.parametrize("op", list(OPS))
def test_x87_instruction_matches_the_processor(oracle: Oracle, op: str) -> None:
    ka, kb, _bits, _cc, _ours = OPS[op]
    rng = random.Random(f"{cases.SEED}-{op}")
    if ka in _BINARY:
        edges = _BINARY[ka].edges()
    elif ka.startswith("i"):
        edges = _int_edges(int(ka[1:]))
    else:
        edges = cases.x80_edges()
    if kb is None:
        pool = cases.pairs(edges, rng, lambda r: (_draw_a(op, r), 0),
                           cases.examples() * 4, len(CONFIGS))
        pool = ((a, b, c) for a, b, c in pool if b == edges[0])
    else:
        def draw(r: random.Random) -> tuple[int, int]:
            a = _draw_a(op, r)
            return a, _draw_b(op, a, r)
        pool = cases.pairs(edges, rng, draw, cases.examples(), len(CONFIGS))
    mismatches = []
    n = 0
    for a, b, config in pool:
        n += 1
        m = _compare_one(oracle, op, a, b, config)
        if m is not None:
            mismatches.append(m)
    tally.record(op, n, n - len(mismatches))
    assert not mismatches, f"{len(mismatches)} of {n} differ:\n" + "\n".join(mismatches[:25])
