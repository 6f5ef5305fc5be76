"""The interp accelerator's glue: ``AccelState``/``AccelOps`` and the vCPU thread.

The thread function mirrors QEMU's vCPU thread functions
(``qemu_kvm_cpu_thread_fn`` in ``accel/kvm/kvm-accel-ops.c``; ``mttcg_cpu_thread_fn``
in ``accel/tcg/tcg-accel-ops-mttcg.c`` for TCG): take the BQL,
initialise the vCPU (here: build its :class:`~accel.interp.cpu_exec.InterpCore`
and block cache), signal ``created``, then loop ``cpu_can_run`` -> ``cpu_exec``
-> ``qemu_wait_io_event`` until unplugged, and destroy the vCPU.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from pyqemu.accel.interp.cpu_exec import EXCP_BUDGET, InterpCore
from pyqemu.accel.ops import (
    EXCP_DEBUG,
    EXCP_HALTED,
    EXCP_HLT,
    GDB_BREAKPOINT_HW,
    GDB_BREAKPOINT_SW,
    AccelError,
    AccelOps,
    AccelState,
)
from pyqemu.system.cpus import (
    cpu_can_run,
    cpu_thread_signal_created,
    cpu_thread_signal_destroyed,
    qemu_global_mutex,
    qemu_wait_io_event,
    vcpu_thread_main,
)
from pyqemu.target.i386.cpu_features import feature_mask
from pyqemu.util import trace

__all__ = [
    "EXT1_ECX",
    "EXT1_EDX",
    "INTERP_FEATURES",
    "LEAF1_ECX",
    "LEAF1_EDX",
    "SUPPORTED",
    "InterpAccelOps",
    "InterpAccelState",
    "interp_accel_factory",
]

if TYPE_CHECKING:
    from pyqemu.accel.ops import CPUState

#: The CPUID features the interpreter implements, by their names in
#: target/i386/cpu_features.py (Intel SDM vol. 2A, CPUID, Tables 3-10/3-11; AMD APM
#: vol. 3, E.3.6 for the 80000001H leaf).  No FPU, no MMX/SSE.
INTERP_FEATURES = (
    # leaf 1 EDX
    "pse", "tsc", "msr", "pae", "cx8", "apic", "pge", "cmov",
    "pat",          # the MSR; memory types are not modelled
    "clflush",      # no cache model: a no-op
    # leaf 1 ECX; no SSE3..AVX
    "cx16", "popcnt",
    "hypervisor",   # a guest does run under us
    # leaf 80000001H EDX: the 64-bit SYSCALL/SYSRET, NX, RDTSCP, long mode
    "syscall", "nx", "rdtscp", "lm",
    # leaf 80000001H ECX: LAHF/SAHF in 64-bit mode
    "lahf-lm",
)
_WORDS = feature_mask(*INTERP_FEATURES)
LEAF1_EDX = _WORDS["FEAT_1_EDX"]
LEAF1_ECX = _WORDS["FEAT_1_ECX"]
EXT1_EDX = _WORDS["FEAT_8000_0001_EDX"]
EXT1_ECX = _WORDS["FEAT_8000_0001_ECX"]
#: (leaf, register) -> the bits interp implements there; a leaf absent here carries no
#: feature bits to limit (vendor, brand, topology).  Leaf 7 and the XSAVE leaf 0DH
#: have no feature interp implements.
SUPPORTED: dict[tuple[int, str], int] = {
    (1, "edx"): LEAF1_EDX, (1, "ecx"): LEAF1_ECX,
    (7, "ebx"): 0, (7, "ecx"): 0, (7, "edx"): 0,
    (0xD, "eax"): 0, (0xD, "edx"): 0,
    (0x80000001, "edx"): EXT1_EDX, (0x80000001, "ecx"): EXT1_ECX,
}


class InterpAccelOps(AccelOps):
    """``AccelOpsClass`` of the interpreter."""

    name = "interp"

    def create_vcpu_thread(self, cpu: CPUState) -> None:
        """Main thread, BQL held: start "CPU n/INTERP" (``rr/mttcg_start_vcpu_thread``)."""
        depth = trace.depth()
        cpu.thread = threading.Thread(
            name=f"CPU {cpu.cpu_index}/INTERP",
            target=lambda: vcpu_thread_main(cpu, lambda: self._thread_fn(cpu), depth),
            daemon=True)
        cpu.thread.start()

    def _thread_fn(self, cpu: CPUState) -> None:
        with qemu_global_mutex:
            with trace.span("interp_init_vcpu", cpu=cpu.cpu_index):
                self.init_vcpu(cpu)
            cpu_thread_signal_created(cpu)
            while True:
                if cpu_can_run(cpu):
                    r = self.cpu_exec(cpu)
                    if r == EXCP_DEBUG:
                        # QEMU's cpu_handle_guest_debug: stop the VM for the debugger.
                        cpu.stopped = True
                        cpu.machine.runctl.request_debug()
                qemu_wait_io_event(cpu)
                if cpu.unplug and not cpu_can_run(cpu):
                    break
            with trace.span("interp_destroy_vcpu", cpu=cpu.cpu_index):
                cpu.accel = None
            cpu_thread_signal_destroyed(cpu)

    def init_vcpu(self, cpu: CPUState) -> None:
        """Build the core (registers are ``cpu.env`` itself) and its empty block cache."""
        machine = cpu.machine

        def triple_fault() -> None:
            machine.runctl.request_reset()

        cpuid = getattr(cpu, "cpuid", None)
        cpu.accel = InterpCore(cpu.env, cpu.as_, cpu.io_as, cpuid, kick=cpu,
                               on_triple_fault=triple_fault)
        cpu.accel.breakpoints.update(getattr(self, "_pending_bps", {}).get(cpu.cpu_index, ()))

    def cpu_exec(self, cpu: CPUState) -> int:
        """vCPU thread, BQL held; the BQL is dropped while blocks run (devices retake it)."""
        if cpu.halted:
            return EXCP_HALTED
        core: InterpCore = cpu.accel
        if cpu.vcpu_dirty:
            # Someone wrote env (and maybe loaded code with it, bypassing our store path):
            # translated blocks may be stale.
            core.tb_flush()
            cpu.vcpu_dirty = False
        qemu_global_mutex.release()
        try:
            if cpu.singlestep_enabled:
                r = core.run(1)
                if r == EXCP_BUDGET:
                    r = EXCP_DEBUG
            else:
                r = core.run()
        finally:
            qemu_global_mutex.acquire()
        if r == EXCP_HLT:
            cpu.halted = True
        return r

    def synchronize_state(self, cpu: CPUState) -> None:
        """Nothing to pull: ``cpu.env`` is the interpreter's state (flags are materialised
        whenever ``run`` returns)."""

    def synchronize_post_reset(self, cpu: CPUState) -> None:
        """After a reset the guest code may differ (ROM reloaded): drop every block."""
        core = cpu.accel
        if isinstance(core, InterpCore):
            core.cc = None
            core.tb_flush()

    def synchronize_post_init(self, cpu: CPUState) -> None:
        self.synchronize_post_reset(cpu)

    def supports_guest_debug(self) -> bool:
        return True

    def insert_breakpoint(self, cpu: CPUState, kind: int, addr: int, length: int) -> None:
        """Breakpoints are RIP values (CS-relative, as gdb gives them) that end a block."""
        if kind not in (GDB_BREAKPOINT_SW, GDB_BREAKPOINT_HW):
            raise AccelError(f"interp: breakpoint kind {kind} is not supported")
        self._bps(cpu).add(addr)
        self._flush(cpu)

    def remove_breakpoint(self, cpu: CPUState, kind: int, addr: int, length: int) -> None:
        bps = self._bps(cpu)
        if addr not in bps:
            raise AccelError(f"interp: no breakpoint at {addr:#x}")
        bps.discard(addr)
        self._flush(cpu)

    def remove_all_breakpoints(self, cpu: CPUState) -> None:
        self._bps(cpu).clear()
        self._flush(cpu)

    def update_guest_debug(self, cpu: CPUState) -> None:
        """Single-step is read from ``cpu.singlestep_enabled`` at every ``cpu_exec``."""

    def _bps(self, cpu: CPUState) -> set[int]:
        core = cpu.accel
        if isinstance(core, InterpCore):
            return core.breakpoints
        pending: dict[int, set[int]] = self.__dict__.setdefault("_pending_bps", {})
        return pending.setdefault(cpu.cpu_index, set())

    @staticmethod
    def _flush(cpu: CPUState) -> None:
        if isinstance(cpu.accel, InterpCore):
            cpu.accel.tb_flush()   # blocks were cut at the old breakpoints


class InterpAccelState(AccelState):
    """The interp accelerator of one machine."""

    def __init__(self, machine: Any) -> None:
        self.name = "interp"
        self.ops = InterpAccelOps()
        self.machine = machine

    def get_supported_cpuid(self, function: int, index: int, reg: str) -> int | None:
        """The CPUID feature bits the interpreter implements; None (no limit) for the
        leaves that carry no feature bits (vendor, brand, topology)."""
        if reg not in ("eax", "ebx", "ecx", "edx"):
            raise AccelError(f"interp: unknown CPUID register {reg!r}")
        return SUPPORTED.get((function, reg))


def interp_accel_factory(machine: Any) -> AccelState:
    return InterpAccelState(machine)
