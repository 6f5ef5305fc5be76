"""The lockstep driver: two machines, one guest, stepped and compared instruction by instruction.

:class:`Lockstep` builds the *leader* on ``kvm`` (the hardware is the oracle) and the
*follower* on ``interp`` with the CPU the leader got: the same model with ``-flag`` for
every feature the leader's accelerator filtered out (QEMU's ``x86_cpu_filter_features``).
Both load the same guest and run with ``no_reboot``.  Each iteration of the stepping
loop (:meth:`Lockstep.run`):

1. reads and decodes the leader's next instruction from the state before it;
2. single-steps the leader (:meth:`pyqemu.machine.Machine.step`: QEMU's
   ``cpu_single_step``, KVM_SET_GUEST_DEBUG with KVM_GUESTDBG_SINGLESTEP), whose devices
   run and whose accesses are recorded (:mod:`pyqemu.lockstep.replay`);
3. single-steps the follower, its device accesses replayed from the leader's;
4. if the leader made a device access and its trap came later than one instruction
   (below), steps the follower on to the leader's RIP: those instructions are one step;
5. copies the leader's non-deterministic results into the follower;
6. compares the two (:mod:`pyqemu.lockstep.state`) and ends at the first difference
   with a report (:mod:`pyqemu.lockstep.report`).

What the host's KVM does when it single-steps, and how it is read:

* A REP string instruction traps after every iteration (Intel SDM vol. 3B, 18.3.1.4:
  the single-step trap of a repeated string instruction comes after each iteration):
  it is stepped until RIP leaves it.
* After a port I/O exit some KVMs (this host's, through the PVM module) finish the
  instruction when the guest is re-entered (KVM's ``complete_fast_pio_out`` ->
  ``kvm_skip_emulated_instruction``) without the trap that belongs to it, and trap
  after the next instruction: item 4 above.
* HLT under single-stepping ends in the trap, not in a halt exit (KVM's
  ``kvm_emulate_halt`` skips the instruction first, and the skip's single-step exit
  wins): after a step whose *last* instruction was HLT the leader is halted (SDM vol.
  2A, "HLT").  Last, not first: an OUT followed by HLT is one step on such a host.
* An instruction KVM cannot emulate (an internal error), a step without a trap
  within ``step_timeout`` seconds and a shutdown while stepping CPL3 code end the run
  as ``"unsupported"``: the host cannot be the oracle there.

The run also ends when the guest shuts down (isa-debug-exit, a triple fault) or halts,
or after ``max_steps`` instructions; before it returns, all of RAM is compared.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, Self

from pyqemu.accel.ops import accel_list
from pyqemu.hw.core.machine import find_machine_class
from pyqemu.hw.i386.cpu import X86_CPU_TYPE_SUFFIX, x86_cpu_filtered_feature_names
from pyqemu.lockstep import report
from pyqemu.lockstep.errors import LockstepError
from pyqemu.lockstep.insn import Insn, decode
from pyqemu.lockstep.replay import NondeterministicResults, Replay
from pyqemu.lockstep.report import Divergence
from pyqemu.lockstep.state import (
    GuestMemory,
    adopt_undefined_flags,
    arch_state,
    board_part,
    code_bits,
    compare,
    first_ram_difference,
    snapshot,
    undefined_flags_of,
    written_ranges,
)
from pyqemu.machine import Machine, RunResult
from pyqemu.system.memory import AddressSpace
from pyqemu.target.i386 import cpu_state as cs
from pyqemu.target.i386.cpu_state import CPUX86State
from pyqemu.util.error import PyQemuError

__all__ = [
    "Lockstep",
    "LockstepOptions",
    "LockstepResult",
    "StepHook",
    "lockstep",
    "lockstep_main",
]

RAM_CHECK_INTERVAL = 4096
#: the most instructions a KVM is taken to run past an I/O instruction before its trap
_MAX_CATCH_UP = 4
_MAX_REP_STEPS = 1 << 22
_HALTED = RunResult("halted")

#: ``on_step(lockstep, step)``: after both machines executed step ``step``, before comparing.
StepHook = Callable[["Lockstep", int], None]
#: One instruction of a step: what was decoded, and the state before it ran.
_Executed = tuple[Insn | None, CPUX86State]


@dataclasses.dataclass
class LockstepResult:
    """How a lockstep run ended.

    ``reason``: ``"shutdown"`` (the guest shut down; ``exit_code`` as QEMU's),
    ``"halted"``, ``"max-steps"``, ``"divergence"`` (see ``divergence``) or
    ``"unsupported"`` (the host's KVM could not execute or single-step an
    instruction: ``report`` says which and why).
    """

    steps: int
    reason: str
    divergence: Divergence | None
    report: str
    exit_code: int | None = None
    seconds: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


class Lockstep:
    """Two machines, one guest: ``leader`` (kvm) and ``follower`` (interp).

    Build with the options of :class:`~pyqemu.machine.Machine` (``cpu``, ``memory``,
    ``bios``/``kernel``/``append``, ``devices``...), load a guest with
    :meth:`load_asm` or :meth:`setup` if it has no ``bios``/``kernel``, then :meth:`run`.
    ``on_step(lockstep, step)`` is called after both machines executed instruction
    ``step`` and before they are compared (tests use it to plant a divergence).
    A step that takes longer than ``step_timeout`` seconds means the accelerator
    gave no single-step trap (the run ends "unsupported").
    """

    def __init__(self, machine: str = "pc", cpu: str | None = None, memory: str | int | None = None,
                 *, bios: str | None = None, kernel: str | None = None, append: str = "",
                 devices: Sequence[str] = (), serial: str | None = "memory",
                 leader_accel: str = "kvm", follower_accel: str = "interp",
                 on_step: StepHook | None = None,
                 ram_check_interval: int = RAM_CHECK_INTERVAL,
                 step_timeout: float = 5.0) -> None:
        self.on_step = on_step
        self.ram_check_interval = ram_check_interval
        #: seconds one step may take before the accelerator is taken not to trap
        self.step_timeout = step_timeout
        self.notes: list[str] = []
        self.steps = 0
        self.leader: Machine | None = None
        self.follower: Machine | None = None
        common: dict[str, Any] = {"machine": machine, "memory": memory, "bios": bios,
                                  "kernel": kernel, "append": append,
                                  "devices": list(devices), "no_reboot": True}
        try:
            self.leader = Machine(accel=leader_accel, cpu=cpu, serial=serial, **common)
            filtered = x86_cpu_filtered_feature_names(self.leader.cpu(0))
            self.follower_cpu = ",".join([cpu or self._default_model(machine)]
                                         + [f"-{f}" for f in filtered])
            self.follower = Machine(accel=follower_accel, cpu=self.follower_cpu,
                                    serial="null", **common)
            self._lmem = GuestMemory(self.leader)
            self._fmem = GuestMemory(self.follower)
        except BaseException:
            self.close()
            raise
        self._replay = Replay()
        self.leader.hook_add_io(self._replay.record)
        fs = self.follower.state
        for space in ("address_space_io", "address_space_memory"):
            board_part(fs, space, AddressSpace).replay = self._replay
        # The table KVM_SET_CPUID2 gave the leader: a leaf it answers otherwise, the host
        # answered itself (replay.py).
        self._results = NondeterministicResults(self.leader.cpu(0).cpuid)
        self._overshoot_noted = False

    @staticmethod
    def _default_model(machine: str) -> str:
        return str(find_machine_class(machine).default_cpu_type).removesuffix(X86_CPU_TYPE_SUFFIX)

    # -- setup ------------------------------------------------------------------------
    def load_asm(self, source: str, addr: int, mode: str = "real", **kwargs: Any) -> bytes:
        """:meth:`Machine.load_asm` on both machines."""
        code = self._machines[0].load_asm(source, addr, mode, **kwargs)
        self._machines[1].load_asm(source, addr, mode, **kwargs)
        return code

    def setup(self, fn: Callable[[Machine], None]) -> None:
        """Call ``fn(machine)`` on both machines (to load a guest any other way)."""
        for m in self._machines:
            fn(m)

    @property
    def _machines(self) -> tuple[Machine, Machine]:
        assert self.leader is not None and self.follower is not None
        return self.leader, self.follower

    # -- stepping ---------------------------------------------------------------------
    @staticmethod
    def _fetch(mem: GuestMemory, pre: CPUX86State) -> Insn | None:
        """The instruction at ``pre``'s CS:RIP, read through ``pre``'s page tables."""
        bits = code_bits(pre)
        pc = pre.rip if bits == 64 else (pre.segs[cs.R_CS].base + pre.rip) & 0xFFFFFFFF
        return decode(mem.read_linear(pre, pc, 15), pre.rip, bits)

    def _step_one(self, m: Machine, pre_rip: int, insn: Insn | None) -> RunResult:
        """One instruction; a REP string instruction the accelerator steps per iteration
        (or that stops on itself with RF set) is stepped until RIP leaves it."""
        r = m.step(timeout=self.step_timeout)
        if insn is not None and insn.rep:
            for _ in range(_MAX_REP_STEPS):
                if r.reason != "debug" or m.env().rip != pre_rip:
                    break
                r = m.step(timeout=self.step_timeout)
        return r

    def _catch_up(self, rf: RunResult, executed: list[_Executed]) -> RunResult:
        """The leader made a device access and stopped later than the follower (its trap,
        or a HLT exit, after the next instruction): step the follower on to the leader's
        RIP (at most :data:`_MAX_CATCH_UP` instructions), each one counted and added to
        ``executed``."""
        leader, follower = self._machines
        target = leader.env().rip
        for _ in range(_MAX_CATCH_UP):
            if rf.reason != "debug":
                break
            fe = follower.env()
            if fe.rip == target:
                break
            pre = snapshot(fe)
            insn = self._fetch(self._fmem, pre)
            rf = self._step_one(follower, pre.rip, insn)
            self.steps += 1
            executed.append((insn, pre))
        if len(executed) > 1 and not self._overshoot_noted:
            self._overshoot_noted = True
            self.notes.append(
                f"the host's KVM ran on past an I/O instruction before its single-step "
                f"trap (first at step {self.steps - len(executed) + 1}); the follower was "
                f"stepped to the leader's RIP and both instructions were checked together")
        return rf

    def run(self, max_steps: int = 100_000) -> LockstepResult:
        """Step both machines until a divergence, a shutdown or halt, or ``max_steps``."""
        leader, follower = self._machines
        with leader.single_stepping(), follower.single_stepping():
            return self._run(max_steps)

    def _run(self, max_steps: int) -> LockstepResult:
        leader, follower = self._machines
        replay = self._replay
        t0 = time.perf_counter()
        reason, div, exit_code, extra = "max-steps", None, None, ""
        next_ram_check = self.steps + self.ram_check_interval
        pre = snapshot(leader.env())
        last: _Executed = (None, pre)
        while self.steps < max_steps:
            insn = self._fetch(self._lmem, pre)
            replay.clear()
            try:
                rl = self._step_one(leader, pre.rip, insn)
            except PyQemuError as e:
                reason, extra = "unsupported", (
                    f"the host's KVM could not execute {report.describe(insn, pre)}: {e}")
                break
            if rl.reason == "timeout":
                reason, extra = "unsupported", (
                    f"the host's KVM gave no single-step trap within {self.step_timeout:g}s "
                    f"after {report.describe(insn, pre)} at CPL{pre.cpl}: it cannot step "
                    f"this code")
                break
            if rl.reason == "shutdown" and rl.cause != "guest-shutdown" and pre.cpl == 3:
                reason, extra = "unsupported", (
                    f"the host's KVM ended single-stepping CPL3 code in a shutdown "
                    f"({rl.cause}) at {report.describe(insn, pre)}: it cannot step user mode")
                break
            replay.begin(replay.recorded)
            rf = self._step_one(follower, pre.rip, insn)
            self.steps += 1
            executed: list[_Executed] = [(insn, pre)]
            if replay.recorded and rl.reason in ("debug", "halted"):
                rf = self._catch_up(rf, executed)
            replay.finish()
            last = executed[-1]
            if rl.reason == "debug" and last[0] is not None and last[0].name == "hlt":
                rl = _HALTED            # the trap of a HLT: the leader is halted
            self._copy_results(executed)
            if self.on_step is not None:
                self.on_step(self, self.steps)
            div = self._compare(executed, rl, rf)
            if div is not None:
                reason = "divergence"
                break
            pre = snapshot(leader.env())
            if rl.reason == "shutdown":
                reason, exit_code = "shutdown", rl.exit_code
                break
            if rl.reason == "halted":
                reason = "halted"
                break
            if rl.reason != "debug":
                reason, extra = "unsupported", f"the leader stopped stepping: {rl}"
                break
            if self.ram_check_interval and self.steps >= next_ram_check:
                next_ram_check = self.steps + self.ram_check_interval
                div = self._compare_all_ram(last)
                if div is not None:
                    reason = "divergence"
                    break
        if div is None and reason != "unsupported":
            div = self._compare_all_ram(last)
            if div is not None:
                reason = "divergence"
        seconds = time.perf_counter() - t0
        text = div.report if div is not None else report.summary(self.steps, reason,
                                                                 exit_code, extra)
        notes = self.notes + self._results.notes
        return LockstepResult(self.steps, reason, div,
                              report.finish(text, self.steps, seconds, notes),
                              exit_code, seconds, notes)

    def _copy_results(self, executed: list[_Executed]) -> None:
        """The leader's non-deterministic results, into the follower."""
        leader, follower = self._machines
        le = leader.env()
        names = [n for i, (insn, pre) in enumerate(executed)
                 for n in self._results.registers(
                     insn, pre, executed[i + 1][1] if i + 1 < len(executed) else le)]
        if names:
            self._results.copy(names, leader.env(), follower.env())
            follower.env_changed()

    # -- comparing ----------------------------------------------------------------------
    def _compare(self, executed: list[_Executed], rl: RunResult,
                 rf: RunResult) -> Divergence | None:
        leader, follower = self._machines
        le, fe = leader.env(), follower.env()
        undef = 0
        ranges: list[tuple[int, int]] = []
        for i, (insn, pre) in enumerate(executed):
            undef |= undefined_flags_of(insn, pre)
            post = executed[i + 1][1] if i + 1 < len(executed) else le
            ranges += written_ranges(insn, pre, post)
        diff = compare(le, fe, undef, ranges, self._lmem, self._fmem)
        fields = diff.fields
        details: list[str] = []
        if undef:
            details.append(report.undefined_detail(
                undef, [insn.name for insn, _ in executed if insn is not None]))
            if adopt_undefined_flags(le, fe, undef):
                follower.env_changed()
        details += [report.memory_detail(a, lb, fb) for a, lb, fb in diff.memory]
        if self._replay.mismatches:
            fields.append("io")
            details += [f"I/O: {m}" for m in self._replay.mismatches]
        lstop = "halted" if rl.reason == "halted" else "running"
        fstop = "halted" if rf.reason == "halted" else "running"
        if lstop != fstop:
            fields.append("halted")
            details.append(f"run state: leader {lstop}, follower {fstop}")
        if not fields:
            return None
        if len(executed) > 1:
            details.append("the leader's step ran on to: " + "; ".join(
                report.describe(insn, pre) for insn, pre in executed[1:]))
        insn, pre = executed[0]
        return report.divergence(self.steps, report.describe(insn, pre), fields,
                                 diff.leader, diff.follower, details, self._names)

    def _compare_all_ram(self, last: _Executed) -> Divergence | None:
        first = first_ram_difference(self._lmem, self._fmem)
        if first is None:
            return None
        leader, follower = self._machines
        lv, fv = self._lmem.ram(), self._fmem.ram()
        insn, pre = last
        return report.divergence(
            self.steps, report.describe(insn, pre), [f"ram[{first:#x}]"],
            arch_state(leader.env()), arch_state(follower.env()),
            [report.ram_detail(first, bytes(lv[first:first + 16]),
                               bytes(fv[first:first + 16]), self.steps)], self._names)

    @property
    def _names(self) -> tuple[str, str]:
        leader, follower = self._machines
        return leader.accel_name, follower.accel_name

    # -- teardown ---------------------------------------------------------------------
    def close(self) -> None:
        for m in (self.follower, self.leader):
            if m is not None:
                m.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def lockstep(*, machine: str = "pc", cpu: str | None = None, memory: str | int | None = None,
             bios: str | None = None, kernel: str | None = None, append: str = "",
             devices: Sequence[str] = (), asm: str | None = None, load: int = 0x7C00,
             mode: str = "real", setup: Callable[[Machine], None] | None = None,
             max_steps: int = 100_000, serial: str | None = "memory",
             on_step: StepHook | None = None,
             ram_check_interval: int = RAM_CHECK_INTERVAL,
             step_timeout: float = 5.0) -> LockstepResult:
    """Run one guest on kvm (leader) and interp (follower) in lockstep; see the package.

    The guest is ``bios``/``kernel`` (as ``-bios``/``-kernel``), or ``asm`` assembled
    for ``mode`` at ``load``, or whatever ``setup(machine)`` loads into each machine.
    """
    with Lockstep(machine, cpu, memory, bios=bios, kernel=kernel, append=append,
                  devices=devices, serial=serial, on_step=on_step,
                  ram_check_interval=ram_check_interval, step_timeout=step_timeout) as ls:
        if asm is not None:
            ls.load_asm(asm, load, mode)
        if setup is not None:
            ls.setup(setup)
        return ls.run(max_steps)


class LockstepOptions(Protocol):
    """What ``pyqemu -lockstep`` reads of the parsed command line (``pyqemu.cli.Options``)."""

    machine: str
    accel: str | None
    cpu: str | None
    smp: str
    memory: str | None
    bios: str | None
    kernel: str | None
    append: str
    devices: list[str]
    serial: str | None
    lockstep_max_steps: int


def lockstep_main(o: LockstepOptions) -> int:
    """``pyqemu -lockstep``: exit status 0 without a divergence, 2 with one; the report
    goes to stdout."""
    why = next((w for n, _, w in accel_list() if n == "kvm"), "not registered")
    if why:
        raise LockstepError(f"-lockstep needs kvm as the oracle, unavailable here: {why}")
    if o.accel is not None:
        raise LockstepError("-lockstep runs kvm and interp side by side; drop -accel")
    if str(o.smp).split(",")[0].removeprefix("cpus=") not in ("1", ""):
        raise LockstepError("-lockstep steps one vCPU; use -smp 1")
    if o.bios is None and o.kernel is None:
        raise LockstepError("nothing to run: give -bios FILE or -kernel FILE")
    serial = "null" if o.serial == "none" else (o.serial or "stdio")
    result = lockstep(machine=o.machine, cpu=o.cpu, memory=o.memory, bios=o.bios,
                      kernel=o.kernel, append=o.append, devices=o.devices,
                      max_steps=o.lockstep_max_steps, serial=serial)
    sys.stdout.flush()
    print(("\n" if serial == "stdio" else "") + result.report)
    return 2 if result.divergence is not None else 0
