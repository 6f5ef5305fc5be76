"""Lockstep cross-checking: one guest on kvm and interp, compared after every instruction.

The *leader* runs on ``kvm`` (the hardware is the oracle), the *follower* on
``interp`` with the CPU the leader got.  Both load the same guest; lockstep
single-steps each and compares their architectural state after every instruction.
Only the leader's devices see I/O; the follower is given the leader's device reads
and non-deterministic results.  The run ends at the first divergence, with a report
naming the instruction, both states side by side and the fields that differ.

The package, one job per module:

* :mod:`~pyqemu.lockstep.state`: what is captured and compared (registers, RFLAGS
  with the undefined flags masked, segments with their hidden parts, CRs, EFER,
  the memory an instruction wrote), read without side effects;
* :mod:`~pyqemu.lockstep.replay`: feeding the follower the leader's device reads,
  RDTSC and CPUID answers, and checking the follower's device writes;
* :mod:`~pyqemu.lockstep.report`: the textual report;
* :mod:`~pyqemu.lockstep.driver`: :class:`Lockstep`, :func:`lockstep` and the
  stepping loop (what the host's KVM does when it single-steps is described there);
* :mod:`~pyqemu.lockstep.insn`: the stepped instruction, decoded once;
* :mod:`~pyqemu.lockstep.errors`: :class:`LockstepError`.

``from pyqemu.lockstep import lockstep`` for the library; ``pyqemu -lockstep`` for
the command line (:func:`lockstep_main`).
"""

from __future__ import annotations

from pyqemu.lockstep.driver import (
    Lockstep,
    LockstepOptions,
    LockstepResult,
    StepHook,
    lockstep,
    lockstep_main,
)
from pyqemu.lockstep.errors import LockstepError
from pyqemu.lockstep.replay import Replay
from pyqemu.lockstep.report import Divergence
from pyqemu.lockstep.state import arch_state

__all__ = [
    "Divergence",
    "Lockstep",
    "LockstepError",
    "LockstepOptions",
    "LockstepResult",
    "Replay",
    "StepHook",
    "arch_state",
    "lockstep",
    "lockstep_main",
]

#: The former module's name for :class:`Replay`, still importable from here.
_Replay = Replay
