"""Lazy condition codes (QEMU's ``cc_op``), one source for generated code and the runtime.

The arithmetic flags are defined here once, as Python expression templates over
an operation's operands ``{a}``, ``{b}`` and its (masked) result ``{r}``.  The
translator pastes them into a block only where a later instruction reads a flag;
the runtime compiles the same templates into evaluators used when a block leaves
its last flag-setting operation pending (``InterpCore.cc``).

Formulas (Intel SDM vol. 1, 3.4.3.1 and Appendix A; vol. 2 per instruction):

* the carry out of the top bit of ``a + b + cin`` is ``(a & b) | ((a | b) & ~r)``
  at bit ``w-1``; the borrow out of ``a - b - bin`` is ``(~a & b) | (~(a ^ b) & r)``
  (both hold with or without a carry-in, so ADC and SBB need no extra state);
* AF is the carry/borrow out of bit 3: bit 4 of ``a ^ b ^ r``;
* OF of an addition: the operands agree in sign and the result does not,
  ``(a ^ r) & (b ^ r)``; of a subtraction: ``(a ^ b) & (a ^ r)``;
* PF is the even parity of the result's low byte; ZF and SF read the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyqemu.target.i386.cpu_state import CC_A, CC_C, CC_O, CC_P, CC_S, CC_Z

__all__ = [
    "ARITH_MASK",
    "CC_ALIASES",
    "CONDITIONS",
    "CONDITION_FLAGS",
    "FLAG_BITS",
    "FLAG_ORDER",
    "FULL_KINDS",
    "PARITY",
    "SUB_CONDITIONS",
    "TEMPLATES",
    "LazyFlags",
    "combine",
    "expr",
]

#: flag letter -> EFLAGS bit number.
FLAG_BITS = {"C": 0, "P": 2, "A": 4, "Z": 6, "S": 7, "O": 11}
FLAG_ORDER = ("C", "P", "A", "Z", "S", "O")
ARITH_MASK = CC_C | CC_P | CC_A | CC_Z | CC_S | CC_O

#: PARITY[b] is 1 when byte b has an even number of set bits (PF, SDM vol. 1, 3.4.3.1).
PARITY = tuple(1 - bin(b).count("1") % 2 for b in range(256))

_ZSP = {
    "Z": "({r} == 0)",
    "S": "({r} >> {s} & 1)",
    "P": "PARITY[{r} & 0xFF]",
}
_ADD_AO = {
    "A": "(({a} ^ {b} ^ {r}) >> 4 & 1)",
    "O": "((({a} ^ {r}) & ({b} ^ {r})) >> {s} & 1)",
}
_SUB_AO = {
    "A": "(({a} ^ {b} ^ {r}) >> 4 & 1)",
    "O": "((({a} ^ {b}) & ({a} ^ {r})) >> {s} & 1)",
}

#: kind -> {flag: template}.  A kind defining all six flags may stay pending across blocks.
TEMPLATES: dict[str, dict[str, str]] = {
    "ADD": {"C": "({r} < {a})", **_ADD_AO, **_ZSP},
    "ADC": {"C": "((({a} & {b}) | (({a} | {b}) & ~{r})) >> {s} & 1)", **_ADD_AO, **_ZSP},
    "SUB": {"C": "({a} < {b})", **_SUB_AO, **_ZSP},
    "SBB": {"C": "(((~{a} & {b}) | (~({a} ^ {b}) & {r})) >> {s} & 1)", **_SUB_AO, **_ZSP},
    # AND/OR/XOR/TEST: CF=OF=0; AF undefined, cleared as the hardware we compare with does.
    "LOGIC": {"C": "0", "A": "0", "O": "0", **_ZSP},
    # Shifts by a constant nonzero count b (SDM vol. 2B, SAL/SAR/SHL/SHR "Operation"): CF is
    # the last bit shifted out; OF as for a 1-bit shift (undefined otherwise); AF cleared.
    "SHL": {"C": "({a} >> ({s} + 1 - {b}) & 1 if {b} <= {s} + 1 else 0)",
            "O": "(({r} >> {s} & 1) ^ ({a} >> ({s} + 1 - {b}) & 1 if {b} <= {s} + 1 else 0))",
            "A": "0", **_ZSP},
    "SHR": {"C": "({a} >> ({b} - 1) & 1)", "O": "({a} >> {s} & 1)", "A": "0", **_ZSP},
    "SAR": {"C": "((({a} ^ (1 << {s})) - (1 << {s})) >> ({b} - 1) & 1)", "O": "0", "A": "0",
            **_ZSP},
    # INC/DEC leave CF alone (SDM vol. 2A, INC/DEC "Flags Affected").
    "INC": {**_ADD_AO, **_ZSP},
    "DEC": {**_SUB_AO, **_ZSP},
}
FULL_KINDS = frozenset(k for k, t in TEMPLATES.items() if len(t) == 6)


def expr(kind: str, flag: str, width: int, a: str, b: str, r: str) -> str | None:
    """The template of ``flag`` for ``kind`` instantiated on local names; None if not defined."""
    t = TEMPLATES[kind].get(flag)
    if t is None:
        return None
    return t.format(a=a, b=b, r=r, s=width - 1)


def combine(exprs: dict[str, str]) -> str:
    """One expression giving the six arithmetic flags as EFLAGS bits."""
    parts = []
    for f in FLAG_ORDER:
        e = exprs[f]
        if e == "0":
            continue
        bit = FLAG_BITS[f]
        parts.append(f"({e})" if bit == 0 else f"(({e}) << {bit})")
    return " | ".join(parts) if parts else "0"


def _carry_of(prov: Any, env: Any) -> int:
    """CF from a carry provider: a pending full-kind state, ``2 | CF`` (an int, always
    true so the chaining ``_p[4] or _p`` keeps it), or None for ``env.eflags``."""
    if prov is None:
        return int(env.eflags & CC_C)
    if type(prov) is int:
        return prov & 1
    return int(prov[0](prov[1], prov[2], prov[3], prov[4]) & CC_C)


class LazyFlags:
    """Per-core evaluators; the INC/DEC ones need the core's ``env`` for a carry from EFLAGS."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.eval: dict[tuple[str, int], Callable[..., int]] = {}
        for kind in TEMPLATES:
            for width in (8, 16, 32, 64):
                exprs = {f: expr(kind, f, width, "a", "b", "r") or "0" for f in FLAG_ORDER}
                if kind in ("INC", "DEC"):
                    exprs["C"] = "CARRY(p, ENV)"
                src = f"lambda a, b, r, p: {combine(exprs)}"
                self.eval[kind, width] = eval(
                    src, {"PARITY": PARITY, "CARRY": _carry_of, "ENV": env})


# Condition codes (SDM vol. 1, Appendix B, Table B-1): suffix -> expression over flags.
CONDITIONS: dict[str, str] = {
    "o": "{O}", "no": "not {O}",
    "b": "{C}", "ae": "not {C}",
    "e": "{Z}", "ne": "not {Z}",
    "be": "({C} or {Z})", "a": "not ({C} or {Z})",
    "s": "{S}", "ns": "not {S}",
    "p": "{P}", "np": "not {P}",
    "l": "({S} != {O})", "ge": "({S} == {O})",
    "le": "({Z} or {S} != {O})", "g": "(not {Z} and {S} == {O})",
}
#: Flags each condition reads.
CONDITION_FLAGS = {cc: frozenset(ch for ch in "CPAZSO" if "{" + ch + "}" in e)
                   for cc, e in CONDITIONS.items()}
#: Aliases capstone may print.
CC_ALIASES = {"c": "b", "nae": "b", "nb": "ae", "nc": "ae", "z": "e", "nz": "ne",
              "na": "be", "nbe": "a", "pe": "p", "po": "np", "nge": "l", "nl": "ge",
              "ng": "le", "nle": "g"}

#: After a SUB/CMP the conditions are plain comparisons of the operands (cheaper than flags).
SUB_CONDITIONS: dict[str, str] = {
    "e": "({a} == {b})", "ne": "({a} != {b})",
    "b": "({a} < {b})", "ae": "({a} >= {b})",
    "be": "({a} <= {b})", "a": "({a} > {b})",
    "l": "(({a} ^ {m}) < ({b} ^ {m}))", "ge": "(({a} ^ {m}) >= ({b} ^ {m}))",
    "le": "(({a} ^ {m}) <= ({b} ^ {m}))", "g": "(({a} ^ {m}) > ({b} ^ {m}))",
}
