"""Random bytes as guest code never crash the interpreter.

Hypothesis draws up to 32 random bytes (plus a few edge-value registers) and runs
them as code in real mode (16-bit), flat 32-bit protected mode and 64-bit long
mode on a bare :class:`InterpCore` (the harness guests), with a fixed instruction
budget per example so nothing hangs.  Every example must end in one of:

* the budget ran out, HLT, a breakpoint, or a triple fault (the harness guests
  have no IDT in protected/long mode, so a fault escalates: #GP -> #DF -> shutdown;
  in real mode faults go through the all-zero IVT) -- all architectural outcomes;
* :class:`UnimplementedInstruction` whose message names the instruction, its
  bytes and its address;
* :class:`InterpError` for a documented unimplemented *feature* (see the
  interpreter section of README.md), whose message starts with ``interp:``.

Anything else (an ``IndexError``, a ``KeyError``, a ``TypeError`` from generated
code) is a bug in the interpreter.  ``PYQEMU_FUZZ_EXAMPLES`` sets the number of
examples per mode (default 100, derandomized).  The budget bounds every example, REP
string instructions included (it counts their iterations).

A failure is shrunk for at most ``PYQEMU_FUZZ_SHRINK_SECONDS`` (default 60) of wall
time (:class:`ShrinkBudget`), then reported with the smallest example found by then;
only one failure is shrunk (``report_multiple_bugs=False``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Hashable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyqemu.accel.interp.cpu_exec import EXCP_BUDGET
from pyqemu.accel.interp.errors import InterpError, UnimplementedInstruction
from pyqemu.accel.ops import EXCP_DEBUG, EXCP_HLT, EXCP_INTERRUPT, EXCP_SHUTDOWN
from tests.accel.interp.harness import CODE, Guest

_EXAMPLES = int(os.environ.get("PYQEMU_FUZZ_EXAMPLES", "100"))
_SHRINK_SECONDS = float(os.environ.get("PYQEMU_FUZZ_SHRINK_SECONDS", "60"))
FUZZ = settings(max_examples=_EXAMPLES, deadline=None, derandomize=_EXAMPLES <= 100,
                suppress_health_check=list(HealthCheck), database=None,
                report_multiple_bugs=False)
BUDGET = 200
ARCHITECTURAL = {EXCP_BUDGET, EXCP_HLT, EXCP_DEBUG, EXCP_SHUTDOWN, EXCP_INTERRUPT}
_UNIMPL = re.compile(r"^interp: unimplemented instruction '.+' \(([0-9a-f]{2} ?)+\) "
                     r"at 0x[0-9a-f]+ \(cs:ip [0-9a-f]{4}:[0-9a-f]+\)$")

edge = st.sampled_from([0, 1, 0x7F, 0x80, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                        2**63, 2**64 - 1, 0x2000, CODE])


class ShrinkBudget:
    """A wall-clock bound on hypothesis's shrink phase (whose own limit, five minutes
    per failure, counts only between examples and suits fast examples).

    :meth:`run` runs each example's check.  Once a check has failed, shrinking may go
    on for ``seconds``; after that, an example not already seen failing passes without
    being run, so the shrinker finds nothing smaller and stops at once.  The examples
    that did fail keep failing, so hypothesis's final replay of the smallest one fails
    as before and reports it (a shrunk example, never a flaky-test error)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.first_failure: float | None = None
        self.failing: set[Hashable] = set()

    def spent(self) -> bool:
        return (self.first_failure is not None
                and self.clock() - self.first_failure > self.seconds)

    def run(self, key: Hashable, check: Callable[[], object]) -> None:
        if key not in self.failing and self.spent():
            return
        try:
            check()
        except BaseException:
            if self.first_failure is None:
                self.first_failure = self.clock()
            self.failing.add(key)
            raise


@pytest.fixture
def shrink_budget() -> ShrinkBudget:
    """One budget per test run (hypothesis runs every example under the same fixture)."""
    return ShrinkBudget(_SHRINK_SECONDS)


def run_random(bits: int, code: bytes, regs: list[int]) -> str:
    """Run ``code`` on a fresh guest (random code may change modes, tables, anything);
    return the outcome's kind, or raise what the interpreter raised."""
    g = Guest(bits, ram_size=2 << 20)
    g.mem.write_bytes(CODE, code)
    env = g.env
    wide = (1 << 64) - 1 if bits == 64 else 0xFFFFFFFF
    env.regs[:8] = [v & wide for v in regs]
    env.regs[4] = 0x8000
    env.rip = CODE
    env.eflags = 2
    g.core.tb_flush()
    g.core.cc = None
    try:
        reason = g.core.run(BUDGET)
    except UnimplementedInstruction as e:
        assert _UNIMPL.match(str(e)), f"unclear message: {e}"
        assert e.text and e.code, str(e)
        return "unimplemented"
    except InterpError as e:
        assert str(e).startswith("interp:"), f"unclear message: {e}"
        return "unsupported feature"
    assert reason in ARCHITECTURAL, f"run() returned {reason:#x}"
    return {EXCP_SHUTDOWN: "fault"}.get(reason, "ran")


@FUZZ
@given(bits=st.sampled_from([16, 32, 64]), code=st.binary(min_size=1, max_size=32),
       regs=st.lists(st.one_of(edge, st.integers(0, 2**64 - 1)), min_size=8, max_size=8))
def test_random_code_runs_faults_or_names_the_unimplemented_instruction(
        shrink_budget: ShrinkBudget, bits: int, code: bytes, regs: list[int]) -> None:
    shrink_budget.run((bits, code, tuple(regs)), lambda: run_random(bits, code, regs))


def test_rep_stosd_with_ecx_all_ones_stays_within_the_budget() -> None:
    # F3 AB (REP STOSD) with ECX = FFFFFFFFH ran for minutes before REP iterations
    # counted against the budget; now it stops after BUDGET iterations.
    regs = [0, 0xFFFFFFFF, 0, 0, 0, 0, 0, 0x2000]
    assert run_random(32, bytes.fromhex("f3ab"), regs) == "ran"
    assert run_random(64, bytes.fromhex("f348ab"), regs) == "ran"


def test_shrinking_ends_at_its_budget_and_reports_a_shrunk_example() -> None:
    # A property that fails on any example holding an F4 byte; the fake clock advances a
    # second per check, so a 5-second budget allows five more checks after the first
    # failure.  The failure is still reported, with an example that fails.
    now = [0.0]

    def clock() -> float:
        return now[0]

    budget = ShrinkBudget(5, clock)
    checked_after_failure: list[bytes] = []

    @settings(max_examples=200, database=None, derandomize=True, deadline=None,
              report_multiple_bugs=False, suppress_health_check=list(HealthCheck))
    @given(st.binary(min_size=1, max_size=64))
    def prop(code: bytes) -> None:
        def check() -> None:
            if budget.spent():                      # only known failures run by now
                assert code in budget.failing
            now[0] += 1
            if budget.first_failure is not None:
                checked_after_failure.append(code)
            assert 0xF4 not in code, "an F4 byte"
        budget.run(code, check)

    with pytest.raises(AssertionError, match="an F4 byte") as e:
        prop()
    assert budget.first_failure is not None and budget.spent()
    passing = [c for c in checked_after_failure if c not in budget.failing]
    assert len(passing) <= 5                        # what the shrinker could try in time
    notes = "\n".join(getattr(e.value, "__notes__", []))
    assert re.search(r"(Falsifying example|Failing test case): prop\(", notes), notes
    assert "\\xf4" in notes


def test_unimplemented_instruction_message_names_instruction_and_address() -> None:
    # An x87 transcendental: capstone decodes it, interp has no FPU.
    assert run_random(32, bytes.fromhex("d9fe"), [0] * 8) == "unimplemented"
