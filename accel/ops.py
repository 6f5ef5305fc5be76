"""The accelerator interface: ``AccelOps`` and the registry (``include/sysemu/accel-ops.h``).

An accelerator is chosen by name (``-accel kvm|interp``); :func:`accel_init`
builds it for a machine (``kvm_init`` opens /dev/kvm and creates the VM).  The
machine and the CPUs meet it only through :class:`AccelOps` and the shared
register file ``cpu.env``.

Thread notes on every method: the *main thread* is the one that built the
machine and calls ``Machine.run``; a *vCPU thread* is the one
``create_vcpu_thread`` started for that CPU.  "BQL" is
:data:`pyqemu.system.cpus.qemu_global_mutex`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, Protocol

from pyqemu.system.cpus import VCpu
from pyqemu.target.i386.cpu_state import CPUX86State
from pyqemu.util.error import PyQemuError

__all__ = [
    "EXCP_ATOMIC",
    "EXCP_DEBUG",
    "EXCP_HALTED",
    "EXCP_HLT",
    "EXCP_INTERRUPT",
    "EXCP_SHUTDOWN",
    "EXCP_YIELD",
    "GDB_BREAKPOINT_HW",
    "GDB_BREAKPOINT_SW",
    "AccelCPU",
    "AccelError",
    "AccelOps",
    "AccelState",
    "accel_init",
    "accel_list",
    "register_accel",
]

# What cpu_exec returns (QEMU's include/exec/cpu-all.h): part of this contract, so the
# vCPU loops of both accelerators and whoever drives them agree on one set of values.
EXCP_INTERRUPT = 0x10000   # async interruption: kick, exit_request
EXCP_HLT = 0x10001         # the CPU executed HLT
EXCP_DEBUG = 0x10002       # breakpoint or single step
EXCP_HALTED = 0x10003      # the CPU is halted; nothing to run
EXCP_YIELD = 0x10004
EXCP_ATOMIC = 0x10005
EXCP_SHUTDOWN = 0x10010    # pyqemu: the guest asked for a shutdown / triple fault


class AccelCPU(VCpu, Protocol):
    """A vCPU as an accelerator sees it: the bookkeeping of :class:`~pyqemu.system.cpus.VCpu`,
    the x86 register file, the address spaces and the CPU model's CPUID.

    ``hw``'s ``X86CPU`` implements it; ``accel`` names only this, never ``hw``.
    """

    env: CPUX86State

    def cpuid(self, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        """CPUID.(EAX=leaf, ECX=subleaf) as the guest sees it (``cpu_x86_cpuid``)."""


CPUState = AccelCPU   # QEMU's name in the prototypes below

# Breakpoint kinds (include/exec/gdbstub.h GDB_BREAKPOINT_SW/HW).
GDB_BREAKPOINT_SW = 0
GDB_BREAKPOINT_HW = 1


class AccelError(PyQemuError, RuntimeError):
    """An accelerator could not be initialised or failed; the message names it."""


class AccelOps(abc.ABC):
    """What an accelerator does for each vCPU (``AccelOpsClass``)."""

    #: short name used in thread names ("CPU 0/KVM") and traces.
    name: str = "?"

    # -- required -------------------------------------------------------------------
    @abc.abstractmethod
    def create_vcpu_thread(self, cpu: CPUState) -> None:
        """Start ``cpu``'s thread.  Main thread, BQL held, from ``qemu_init_vcpu``.

        The thread must initialise the vCPU, then call
        :func:`system.cpus.cpu_thread_signal_created`; ``qemu_init_vcpu`` waits for that.
        """

    @abc.abstractmethod
    def cpu_exec(self, cpu: CPUState) -> int:
        """Run guest code until something needs the loop; return an ``EXCP_*``.

        vCPU thread, called with the BQL held; drops it while guest code runs.
        """

    @abc.abstractmethod
    def synchronize_state(self, cpu: CPUState) -> None:
        """Make ``cpu.env`` hold the vCPU's current registers (and mark it dirty).

        Any thread, BQL held, while the vCPU is stopped.  After writing ``cpu.env``
        a caller sets ``cpu.vcpu_dirty = True`` so the accelerator pushes it back
        before the vCPU runs again.
        """

    # -- with defaults ------------------------------------------------------------------
    def kick_vcpu_thread(self, cpu: CPUState) -> None:
        """Make the vCPU leave guest code soon.  Any thread.  Default: ``cpu_exit``."""
        cpu.exit_request = True

    def cpu_thread_is_idle(self, cpu: CPUState) -> bool:
        """Whether a halted vCPU's thread may sleep.  vCPU thread, BQL held.  Default: yes."""
        return True

    def synchronize_post_reset(self, cpu: CPUState) -> None:
        """After ``cpu_reset`` wrote ``cpu.env``.  Main thread, BQL.  Default: nothing."""

    def synchronize_post_init(self, cpu: CPUState) -> None:
        """After the machine is built, before the first run.  Main thread, BQL.
        Default: nothing."""

    def synchronize_pre_loadvm(self, cpu: CPUState) -> None:
        """Before a snapshot overwrites ``cpu.env``.  Main thread, BQL.  Default: nothing."""

    def cpus_are_resettable(self) -> bool:
        """Whether a system reset may reset the vCPUs in place.  Default: yes."""
        return True

    def supports_guest_debug(self) -> bool:
        """Whether breakpoints and single-step are available.  Default: no."""
        return False

    def insert_breakpoint(self, cpu: CPUState, kind: int, addr: int, length: int) -> None:
        """Main thread, vCPUs paused.  Default: unsupported."""
        raise AccelError(f"{self.name}: breakpoints are not supported")

    def remove_breakpoint(self, cpu: CPUState, kind: int, addr: int, length: int) -> None:
        """Main thread, vCPUs paused.  Default: unsupported."""
        raise AccelError(f"{self.name}: breakpoints are not supported")

    def remove_all_breakpoints(self, cpu: CPUState) -> None:
        """Main thread, vCPUs paused.  Default: nothing to remove."""

    def update_guest_debug(self, cpu: CPUState) -> None:
        """Apply ``cpu.singlestep_enabled`` and the breakpoints.  Main thread.  Default: nothing."""

    def close(self) -> None:
        """Release the accelerator's resources (fds, mappings).  Main thread, all vCPUs gone."""


class AccelState:
    """One accelerator instance for one machine (``AccelState``): its name and ops."""

    name: str
    ops: AccelOps

    def setup_machine(self, machine: Any) -> None:
        """Called once the board has created its memory map, before the vCPUs exist."""

    def get_supported_cpuid(self, function: int, index: int, reg: str) -> int | None:
        """The CPUID bits this accelerator can give a guest (``kvm_arch_get_supported_cpuid``).

        ``reg`` is ``"eax"``, ``"ebx"``, ``"ecx"`` or ``"edx"``.  ``x86_cpu_filter_features``
        drops every model feature outside this mask, with a warning naming it.  None
        means no limit.  Main thread, during realize.
        """
        return None

    def close(self) -> None:
        self.ops.close()


#: name -> (description, factory(machine) -> AccelState, availability probe)
_accels: dict[str, tuple[str, Callable[[Any], AccelState], Callable[[], str | None]]] = {}


def register_accel(name: str, description: str, factory: Callable[[Any], AccelState],
                   unavailable: Callable[[], str | None] = lambda: None) -> None:
    """Register an accelerator; ``unavailable()`` returns a reason, or None when usable."""
    _accels[name] = (description, factory, unavailable)


def _load_builtin_accels() -> None:
    # Importing registers them; deferred so that ``accel`` never imports ``hw`` at import time.
    import pyqemu.accel.interp
    import pyqemu.accel.kvm  # noqa: F401


def accel_list() -> list[tuple[str, str, str | None]]:
    """(name, description, reason it is unavailable or None) for ``-accel help``."""
    _load_builtin_accels()
    return [(n, d, u()) for n, (d, _, u) in sorted(_accels.items())]


def accel_init(name: str, machine: Any) -> AccelState:
    """Build accelerator ``name`` for ``machine`` (``accel_init_machine``)."""
    _load_builtin_accels()
    entry = _accels.get(name)
    if entry is None:
        raise AccelError(f"invalid accelerator '{name}'; -accel help lists them")
    return entry[1](machine)
