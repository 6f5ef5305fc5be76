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
examples per mode (default 100, derandomized).
"""

from __future__ import annotations

import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyqemu.accel.interp.cpu_exec import EXCP_BUDGET
from pyqemu.accel.interp.errors import InterpError, UnimplementedInstruction
from pyqemu.accel.ops import EXCP_DEBUG, EXCP_HLT, EXCP_INTERRUPT, EXCP_SHUTDOWN
from tests.accel.interp.harness import CODE, Guest

_EXAMPLES = int(os.environ.get("PYQEMU_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=_EXAMPLES, deadline=None, derandomize=_EXAMPLES <= 100,
                suppress_health_check=list(HealthCheck), database=None)
BUDGET = 200
ARCHITECTURAL = {EXCP_BUDGET, EXCP_HLT, EXCP_DEBUG, EXCP_SHUTDOWN, EXCP_INTERRUPT}
_UNIMPL = re.compile(r"^interp: unimplemented instruction '.+' \(([0-9a-f]{2} ?)+\) "
                     r"at 0x[0-9a-f]+ \(cs:ip [0-9a-f]{4}:[0-9a-f]+\)$")

edge = st.sampled_from([0, 1, 0x7F, 0x80, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                        2**63, 2**64 - 1, 0x2000, CODE])


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
        bits: int, code: bytes, regs: list[int]) -> None:
    run_random(bits, code, regs)


def test_unimplemented_instruction_message_names_instruction_and_address() -> None:
    # An x87 transcendental: capstone decodes it, interp has no FPU.
    assert run_random(32, bytes.fromhex("d9fe"), [0] * 8) == "unimplemented"
