"""How many cases each comparison with the processor ran and matched, for the summary
that tests/fpu/conftest.py prints after the run."""

from __future__ import annotations

#: instruction -> [cases compared, cases matching bit for bit, flags included]
TALLY: dict[str, list[int]] = {}


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
    return lines
