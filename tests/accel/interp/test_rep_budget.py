"""A long REP string instruction never outlasts ``run(max_insns)`` or an exit request.

The instruction budget counts every REP iteration (QEMU's icount does the same; the
benchmarks count so too), and an exit request is polled between iterations.  Either
stops the instruction between two iterations, as an interrupt may (Intel SDM vol. 2B,
REP/REPE/REPZ/REPNE/REPNZ: "the registers are preserved so that the instruction can
resume"; vol. 1, 7.3.9.x): RIP stays on the instruction and rCX, rSI, rDI are as after
the last iteration done, so a restart continues exactly where it stopped.
"""

from __future__ import annotations

import pytest

from pyqemu.accel.interp.cpu_exec import EXCP_BUDGET
from pyqemu.accel.ops import EXCP_HLT, EXCP_INTERRUPT
from pyqemu.target.i386.cpu_state import ARITH_FLAGS
from tests.accel.interp.harness import CODE, Guest

BUF, BUF2 = 0x100000, 0x180000


def test_budget_stops_rep_stosd_with_ecx_all_ones_after_its_iterations() -> None:
    # The case the random-code harness hit: F3 AB with ECX = FFFFFFFFH ran for minutes.
    g = Guest(32)
    code = g.load(f"mov edi, {BUF:#x}\nmov eax, 0x11223344\nmov ecx, 0xffffffff\nrep stosd")
    rep_at = CODE + len(code) - 2
    assert g.core.run(200) == EXCP_BUDGET
    done = 200 - 3                                 # three MOVs, then REP iterations
    assert g.env.rip == rep_at and g.core.icount == 200
    assert g.env.regs[1] == 0xFFFFFFFF - done and g.env.regs[7] == BUF + 4 * done
    assert g.mem.read(BUF + 4 * (done - 1), 4) == 0x11223344
    assert g.mem.read(BUF + 4 * done, 4) == 0                  # the next one is not written
    assert g.core.run(50) == EXCP_BUDGET           # a restart goes on where it stopped
    assert g.env.rip == rep_at and g.env.regs[1] == 0xFFFFFFFF - done - 50
    assert g.core.icount == 250


def _state(g: Guest) -> tuple[object, ...]:
    e = g.env
    return (list(e.regs[:8]), e.rip, e.eflags & (ARITH_FLAGS | 0x400),
            g.mem.read_bytes(BUF, 0x200), g.mem.read_bytes(BUF2, 0x200))


PROGRAMS = {
    "rep movsb": f"mov esi, {BUF:#x}\nmov edi, {BUF2:#x}\nmov ecx, 300\nrep movsb",
    "rep movsb overlapping": f"mov esi, {BUF:#x}\nmov edi, {BUF + 3:#x}\nmov ecx, 200\n"
                             "rep movsb",
    "rep stosw 16-bit address": "mov edi, 0xfff0\nmov ecx, 0x30\nmov ax, 0xbeef\n"
                                ".byte 0x67\nrep stosw",
    "std rep stosd": f"std\nmov edi, {BUF + 0x1FC:#x}\nmov ecx, 100\nmov eax, 7\nrep stosd\ncld",
    "repne scasb": f"mov edi, {BUF:#x}\nmov ecx, 400\nmov al, 0xee\nrepne scasb",
    "repe cmpsb": f"mov esi, {BUF:#x}\nmov edi, {BUF2:#x}\nmov ecx, 400\nrepe cmpsb",
    "rep lodsd": f"mov esi, {BUF:#x}\nmov ecx, 90\nrep lodsd",
}


def _guest(text: str) -> Guest:
    g = Guest(32)
    pattern = bytes((i * 7) & 0xFF for i in range(0x200))
    g.mem.write_bytes(BUF, pattern)
    g.mem.write_bytes(BUF2, pattern[:0x150] + b"\xee" + pattern[0x151:])
    g.load(text + "\nhlt")
    return g


@pytest.mark.parametrize("name", sorted(PROGRAMS))
@pytest.mark.parametrize("budget", [1, 2, 7, 64, 4097])
def test_a_rep_instruction_run_in_slices_ends_as_it_does_in_one_run(name: str,
                                                                      budget: int) -> None:
    whole = _guest(PROGRAMS[name])
    assert whole.core.run(1 << 20) == EXCP_HLT
    sliced = _guest(PROGRAMS[name])
    for _ in range(100_000):
        reason = sliced.core.run(budget)
        if reason == EXCP_HLT:
            break
        assert reason == EXCP_BUDGET
    assert _state(sliced) == _state(whole)
    assert sliced.core.icount == whole.core.icount          # each iteration counted once


def test_repe_cmps_stopped_between_iterations_keeps_the_flags_of_before() -> None:
    # Stopped by the budget inside the comparison (the buffers agree for 150H bytes): the
    # flags are those of before the instruction, interp's choice for every stop between
    # iterations (as at the single-step trap); the count and pointers show the progress.
    g = _guest("xor eax, eax\n" + PROGRAMS["repe cmpsb"])
    before = None
    assert g.core.run(5) == EXCP_BUDGET          # XOR, three MOVs, one iteration
    before = g.env.eflags & ARITH_FLAGS
    assert g.core.run(40) == EXCP_BUDGET
    assert g.env.eflags & ARITH_FLAGS == before == 0x44          # ZF PF from the XOR
    assert g.env.regs[1] == 400 - 41 and g.env.regs[6] == BUF + 41


def test_exit_request_stops_a_long_rep_between_iterations_and_it_resumes() -> None:
    # REP INSB of 10000 bytes; the device asks the vCPU to stop at its 5th read.  The
    # request is seen at the next poll (every 4096 iterations): RIP on the instruction,
    # ECX/EDI as after 4096 iterations; running again finishes the other 5904.
    g = Guest(32)
    reads = [0]

    class KickingPort(dict[int, int]):
        def get(self, port: int, default: int | None = None) -> int:   # type: ignore[override]
            reads[0] += 1
            if reads[0] == 5:
                g.core.exit_request = True
            return reads[0] & 0xFF

    g.io_in = KickingPort()
    code = g.load(f"mov edi, {BUF:#x}\nmov edx, 0x80\nmov ecx, 10000\nrep insb\nhlt")
    rep_at = CODE + len(code) - 3
    assert g.core.run() == EXCP_INTERRUPT
    assert g.env.rip == rep_at and reads[0] == 4096
    assert g.env.regs[1] == 10000 - 4096 and g.env.regs[7] == BUF + 4096
    assert g.core.icount == 3 + 4096
    assert g.core.run() == EXCP_HLT
    assert reads[0] == 10000 and g.env.regs[1] == 0 and g.env.regs[7] == BUF + 10000
    assert g.mem.read_bytes(BUF + 9998, 2) == bytes([9999 & 0xFF, 10000 & 0xFF])
    assert g.core.icount == 3 + 10000 + 1
