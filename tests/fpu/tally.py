"""How many cases each comparison with the processor ran and matched, for the summary
that tests/fpu/conftest.py prints after the run."""

from __future__ import annotations

#: instruction -> [cases compared, cases matching bit for bit, flags included]
TALLY: dict[str, list[int]] = {}


#: What the manuals leave to the processor, where this host chose otherwise than
#: pyqemu.fpu: name -> (the sections that leave it open, pyqemu.fpu's choice).
HOST_CHOICES: dict[str, tuple[str, str]] = {
    "fprem-partial-bits": (
        "SDM vol. 2, FPREM and FPREM1, Operation: N, by how much a partial remainder "
        "(C2 = 1) reduces the exponent difference, is implementation-dependent (32..63)",
        "N = 32 + (exponent difference mod 32): pyqemu.fpu.x87.fprem_partial_bits"),
}
#: name -> the cases this host chose otherwise (reported, not failed)
HOST_CASES: dict[str, list[str]] = {}


def host_chose(name: str, case: str) -> None:
    """Record a case where the host took another choice the manuals leave open."""
    if name not in HOST_CHOICES:
        raise KeyError(f"{name!r} is not listed in tests/fpu/tally.py HOST_CHOICES")
    HOST_CASES.setdefault(name, []).append(case)


def record(op: str, cases: int, matched: int) -> None:
    entry = TALLY.setdefault(op, [0, 0])
    entry[0] += cases
    entry[1] += matched


def summary_lines() -> list[str]:
    if not TALLY:
        return []
    total = sum(c for c, _ in TALLY.values())
    good = sum(m for _, m in TALLY.values())
    lines = [f"{op:<14} {c:>8} cases  {m:>8} bit-exact  {100.0 * m / c:7.3f} %"
             for op, (c, m) in sorted(TALLY.items())]
    lines.append(f"{'all':<14} {total:>8} cases  {good:>8} bit-exact  "
                 f"{100.0 * good / total:7.3f} %")
    for name, found in HOST_CASES.items():
        where, ours = HOST_CHOICES[name]
        lines.append(f"* {name}: {len(found)} case(s) where this host chose otherwise "
                     f"(reported, not failed): {where}; pyqemu.fpu: {ours}")
        lines.extend(f"    {case}" for case in found[:5])
    return lines
