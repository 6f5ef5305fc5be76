"""Operands for the comparisons with the processor: edge values of each format and
seeded random bit patterns drawn where rounding, underflow, overflow and cancellation
happen."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

#: Random operand sets per instruction in the quick profile; PYQEMU_FPU_EXAMPLES=N asks
#: for more (and every edge pair under every control setting).
QUICK_EXAMPLES = 300
SEED = int(os.environ.get("PYQEMU_FPU_SEED", "20261202"))


def examples() -> int:
    """How many random cases per instruction this run compares."""
    return int(os.environ.get("PYQEMU_FPU_EXAMPLES", QUICK_EXAMPLES))


def deep() -> bool:
    """Whether the run asked for more than the quick profile."""
    return "PYQEMU_FPU_EXAMPLES" in os.environ


class Binary:
    """A binary interchange format's layout, for drawing operands."""

    def __init__(self, ebits: int, fbits: int) -> None:
        self.ebits = ebits
        self.fbits = fbits
        self.emax = (1 << ebits) - 1
        self.bias = (1 << (ebits - 1)) - 1
        self.sign = 1 << (ebits + fbits)
        self.width = 1 + ebits + fbits

    def pack(self, sign: int, exp: int, frac: int) -> int:
        return (sign and self.sign) | (exp << self.fbits) | (frac & ((1 << self.fbits) - 1))

    def edges(self) -> list[int]:
        fb = self.fbits
        top = (1 << fb) - 1
        mags = [
            0, 1, 2, 3, top, top - 1, 1 << (fb - 1),        # zero, denormals
            self.pack(0, 1, 0), self.pack(0, 1, 1), self.pack(0, 1, top),
            self.pack(0, 2, 0),
            self.pack(0, self.bias, 0), self.pack(0, self.bias, 1),     # 1, 1 + ulp
            self.pack(0, self.bias, top), self.pack(0, self.bias - 1, top),
            self.pack(0, self.bias, 1 << (fb - 1)), self.pack(0, self.bias + 1, 0x5),
            self.pack(0, self.bias - fb - 2, 0), self.pack(0, self.bias + fb + 2, 0),
            self.pack(0, self.emax - 1, top), self.pack(0, self.emax - 1, 0),
            self.pack(0, self.emax - 1, top - 1),
            self.pack(0, self.emax, 0),                                  # inf
            self.pack(0, self.emax, 1 << (fb - 1)),                      # default QNaN
            self.pack(0, self.emax, (1 << (fb - 1)) | 0x1234),           # QNaN payload
            self.pack(0, self.emax, 1), self.pack(0, self.emax, 0x5678),  # SNaNs
        ]
        out = []
        for m in mags:
            out.append(m)
            out.append(m | self.sign)
        return out

    def draw(self, rng: random.Random, near: int | None = None) -> int:
        """One operand; ``near`` (a biased exponent) draws close to it."""
        fb = self.fbits
        how = rng.randrange(10)
        sign = rng.getrandbits(1)
        if how == 0:
            return rng.getrandbits(self.width)
        if near is not None and how < 6:
            exp = near + rng.randint(-3, 3) if how < 4 else near + rng.randint(-fb - 3, fb + 3)
        elif how < 5:
            exp = self.bias + rng.randint(-40, 40)
        elif how < 7:
            exp = rng.randint(0, fb + 3)
        elif how < 9:
            exp = self.emax - 1 - rng.randint(0, fb + 3)
        else:
            exp = 0 if rng.getrandbits(1) else rng.randrange(self.emax + 1)
        exp = min(max(exp, 0), self.emax)
        return self.pack(sign, exp, _fraction(rng, fb))


def _fraction(rng: random.Random, bits: int) -> int:
    """A fraction drawn with its low bits and runs of ones and zeros in mind."""
    how = rng.randrange(6)
    if how == 0:
        return ((1 << bits) - 1) ^ rng.getrandbits(rng.randint(0, 4))
    if how == 1:
        return rng.getrandbits(rng.randint(0, 5)) << rng.randint(0, bits - 5)
    if how == 2:
        hi = rng.getrandbits(bits) & ~((1 << (bits // 2)) - 1)
        return hi | (1 << rng.randrange(bits))
    return rng.getrandbits(bits)


FLOAT32 = Binary(8, 23)
FLOAT64 = Binary(11, 52)


# -- floatx80 --

X80_BIAS = 16383


def x80(sign: int, exp: int, sig: int) -> int:
    return (sign << 79) | (exp << 64) | sig


def x80_edges() -> list[int]:
    j = 1 << 63
    ones = (1 << 64) - 1
    mags = [
        0, 1, 2, (1 << 63) - 1, 1 << 62,                     # zero, denormals
        j, j | 1, ones,                                      # pseudo-denormals (exp 0, J 1)
        x80(0, 1, j), x80(0, 1, j | 1), x80(0, 1, ones), x80(0, 2, j),
        x80(0, X80_BIAS, j), x80(0, X80_BIAS, j | 1), x80(0, X80_BIAS, ones),
        x80(0, X80_BIAS, j | (1 << 39)), x80(0, X80_BIAS, j | (1 << 10)),
        x80(0, X80_BIAS, j | (1 << 40) | (1 << 39)), x80(0, X80_BIAS, j | (3 << 10)),
        x80(0, X80_BIAS + 2, j | (1 << 61)), x80(0, X80_BIAS - 1, ones),
        x80(0, X80_BIAS + 63, j), x80(0, X80_BIAS + 62, ones), x80(0, X80_BIAS + 15, j),
        x80(0, X80_BIAS + 31, j), x80(0, X80_BIAS + 64, j),
        x80(0, 0x7FFE, ones), x80(0, 0x7FFE, j), x80(0, 0x7FFE, ones << 40),
        x80(0, 0x7FFF, j),                                    # inf
        x80(0, 0x7FFF, j | (1 << 62)),                        # QNaN (indefinite's magnitude)
        x80(0, 0x7FFF, j | (1 << 62) | 0x1234), x80(0, 0x7FFF, j | 1),  # QNaN, SNaN
        x80(0, 0x7FFF, j | 0x5678),
        x80(0, X80_BIAS, j >> 1), x80(0, 1, 1), x80(0, 0x7FFE, 0),      # unnormals
        x80(0, 0x7FFF, 0), x80(0, 0x7FFF, 1 << 62), x80(0, 0x7FFF, 5),  # pseudo-inf/NaN
    ]
    out = []
    for m in mags:
        out.append(m)
        out.append(m | (1 << 79))
    return out


def x80_draw(rng: random.Random, near: int | None = None, unsupported: bool = True) -> int:
    """One floatx80 operand (J mostly set; sometimes an unsupported encoding)."""
    how = rng.randrange(12)
    sign = rng.getrandbits(1)
    if how == 0:
        v = rng.getrandbits(80)
        return v if unsupported else v | (1 << 63)
    if near is not None and how < 6:
        exp = near + rng.randint(-3, 3) if how < 4 else near + rng.randint(-70, 70)
    elif how < 6:
        exp = X80_BIAS + rng.randint(-70, 70)
    elif how < 8:
        exp = rng.randint(0, 70)
    elif how < 10:
        exp = 0x7FFE - rng.randint(0, 70)
    else:
        exp = 0 if rng.getrandbits(1) else rng.randrange(0x8000)
    exp = min(max(exp, 0), 0x7FFF)
    sig = _fraction(rng, 63) | (1 << 63)
    if exp == 0 and rng.getrandbits(1):
        sig &= (1 << 63) - 1
    return x80(sign, exp, sig)


def pairs(edges: list[int], rng: random.Random, draw: object, n: int,
          config_count: int) -> Iterator[tuple[int, int, int]]:
    """(a, b, config index): every edge pair (under one config each in the quick profile,
    all of them in a deep run), then ``n`` random pairs with random configs."""
    k = 0
    for a in edges:
        for b in edges:
            if deep():
                for c in range(config_count):
                    yield a, b, c
            else:
                yield a, b, k % config_count
                k += 1
    for _ in range(n):
        yield *draw(rng), rng.randrange(config_count)  # type: ignore[operator]
