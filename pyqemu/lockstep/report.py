"""The textual report of a lockstep run.

A divergence is reported as QEMU's ``x86_cpu_dump_state`` shows a CPU ("info
registers"), twice, side by side: the step number, the instruction (address as
CS:IP or the 64-bit RIP, disassembled, its bytes, the mode), the fields that differ,
then every compared field with the leader's and the follower's value (the differing
ones marked ``<--``), then what the field names alone do not say (memory bytes, the
I/O mismatch, the run state, the flags that were not compared).  A run without a
divergence is summed up in one line; both end with the speed and the notes.
"""

from __future__ import annotations

import dataclasses

from pyqemu.lockstep.insn import Insn
from pyqemu.target.i386 import cpu_state as cs
from pyqemu.target.i386.cpu_state import CPUX86State

__all__ = [
    "Divergence",
    "describe",
    "divergence",
    "finish",
    "flag_names",
    "memory_detail",
    "ram_detail",
    "summary",
    "undefined_detail",
]

_FLAG_NAMES = ((cs.CC_C, "CF"), (cs.CC_P, "PF"), (cs.CC_A, "AF"), (cs.CC_Z, "ZF"),
               (cs.CC_S, "SF"), (cs.CC_O, "OF"))


@dataclasses.dataclass
class Divergence:
    """The first instruction after which the two accelerators' states differ."""

    step: int
    insn: str                          # "0008:0x10005: add eax, 1  (83 c0 01) [prot32]"
    fields: list[str]                  # the differing fields ("rax", "rflags", "mem[0x7ffc]", "io")
    leader: dict[str, int]
    follower: dict[str, int]
    details: list[str]
    report: str


def _hex(v: int | None) -> str:
    return "-" if v is None else f"{v:#x}"


def flag_names(mask: int) -> str:
    """``CF,AF,OF`` for the arithmetic flags in ``mask`` (SDM vol. 1, 3.4.3.1)."""
    return ",".join(n for bit, n in _FLAG_NAMES if mask & bit)


def describe(insn: Insn | None, pre: CPUX86State) -> str:
    """Where and what the instruction is: ``0008:0x10005: add eax, 1  (83 c0 01) [prot32]``."""
    cs_ = pre.segs[cs.R_CS]
    where = f"{cs_.selector:04x}:{pre.rip:#x}" if not pre.code64 else f"{pre.rip:#x}"
    if insn is None:
        return f"{where}: (cannot decode) [{pre.mode_name}]"
    return f"{where}: {insn.text}  ({insn.bytes.hex(' ')}) [{pre.mode_name}]"


def undefined_detail(undef: int, mnemonics: list[str]) -> str:
    return f"rflags compared without {flag_names(undef)} (undefined after {', '.join(mnemonics)})"


def memory_detail(addr: int, leader: bytes, follower: bytes) -> str:
    return f"memory at {addr:#x}: leader {leader.hex(' ')}, follower {follower.hex(' ')}"


def ram_detail(pa: int, leader: bytes, follower: bytes, step: int) -> str:
    return (f"guest RAM differs first at physical {pa:#x}: leader {leader.hex(' ')}, "
            f"follower {follower.hex(' ')} (found by the whole-RAM check after step {step}; "
            f"the write was not one lockstep checks per instruction)")


def divergence(step: int, where: str, fields: list[str], leader: dict[str, int],
               follower: dict[str, int], details: list[str], names: tuple[str, str]) -> Divergence:
    """The divergence at ``step`` and its report; ``names`` are the two accelerators."""
    lines = [f"lockstep: divergence after step {step}",
             f"instruction: {where}",
             f"differs: {', '.join(fields)}", "",
             f"{'':<12} {'leader (' + names[0] + ')':>20}  {'follower (' + names[1] + ')':>20}"]
    marked = set(fields)
    for k in dict.fromkeys([*leader, *follower]):
        mark = "  <--" if k in marked else ""
        lines.append(f"{k:<12} {_hex(leader.get(k)):>20}  {_hex(follower.get(k)):>20}{mark}")
    if details:
        lines.append("")
        lines += details
    return Divergence(step, where, fields, leader, follower, details, "\n".join(lines))


def summary(steps: int, reason: str, exit_code: int | None, extra: str) -> str:
    """A run that ended without a divergence."""
    return (f"lockstep: {steps} instructions, no divergence; stopped: {reason}"
            + (f" (exit code {exit_code})" if exit_code is not None else "")
            + (f"\n{extra}" if extra else ""))


def finish(text: str, steps: int, seconds: float, notes: list[str]) -> str:
    """``text`` with the speed and the notes appended."""
    text += f"\n{steps} steps in {seconds:.2f}s ({steps / max(seconds, 1e-9):.0f}/s)"
    for n in notes:
        text += f"\nnote: {n}"
    return text
