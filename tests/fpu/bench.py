"""Operations per second of pyqemu.fpu's binary64 add, mul, div and sqrt (and their
floatx80 forms), on normal operands in round-to-nearest: the interpreter's common path.

    .venv/bin/python -m tests.fpu.bench [--seconds S] [--profile OP]

Prints one line per operation; ``--profile OP`` runs that one under cProfile and prints
where the time goes. Not part of the suite: it only measures.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import time
from collections.abc import Callable

from pyqemu import fpu

Binop = Callable[[int, int, fpu.FloatStatus], int]


def _operands(n: int, bits: int, rng: random.Random) -> list[tuple[int, int]]:
    if bits == 64:
        def one() -> int:
            return (rng.getrandbits(1) << 63) | (rng.randint(1023 - 30, 1023 + 30) << 52) | \
                rng.getrandbits(52)
    else:
        def one() -> int:
            return (rng.getrandbits(1) << 79) | (rng.randint(16383 - 30, 16383 + 30) << 64) | \
                (1 << 63) | rng.getrandbits(63)
    return [(one(), one()) for _ in range(n)]


def _sqrt64(a: int, b: int, s: fpu.FloatStatus) -> int:
    return fpu.float64_sqrt(a & ~(1 << 63), s)


def _sqrt80(a: int, b: int, s: fpu.FloatStatus) -> int:
    return fpu.floatx80_sqrt(a & ~(1 << 79), s)


OPS: dict[str, tuple[int, Binop]] = {
    "float64_add": (64, fpu.float64_add),
    "float64_mul": (64, fpu.float64_mul),
    "float64_div": (64, fpu.float64_div),
    "float64_sqrt": (64, _sqrt64),
    "floatx80_add": (80, fpu.floatx80_add),
    "floatx80_mul": (80, fpu.floatx80_mul),
    "floatx80_div": (80, fpu.floatx80_div),
    "floatx80_sqrt": (80, _sqrt80),
}


def measure(name: str, seconds: float) -> float:
    """Operations per second of one operation over a fixed set of operands."""
    bits, op = OPS[name]
    pairs = _operands(4096, bits, random.Random(1))
    s = fpu.FloatStatus()
    done = 0
    start = time.perf_counter()
    while True:
        for a, b in pairs:
            op(a, b, s)
        done += len(pairs)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--profile", choices=list(OPS))
    args = parser.parse_args()
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        measure(args.profile, args.seconds)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(8)
        return
    for name in OPS:
        print(f"{name:<14} {measure(name, args.seconds) / 1e6:6.3f} M ops/s")


if __name__ == "__main__":
    main()
