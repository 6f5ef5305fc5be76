"""``CPUState``/``CPUClass``: what every vCPU has, whatever its target (``hw/core/cpu-common.c``).

The fields are QEMU's (``include/hw/core/cpu.h``) and mean what they mean there:
``created`` is set by the vCPU thread once the accelerator has initialised the
vCPU; ``stop`` asks the thread to stop and ``stopped`` says it has; ``unplug``
asks it to leave its loop and destroy the vCPU; ``exit_request`` asks the
execution loop to return at its next chance; ``halted`` is set by HLT.
``halt_cond`` is a condition on the big lock that an idle vCPU thread waits on.
All of these are read and written under the big lock
(:data:`pyqemu.system.cpus.qemu_global_mutex`), except ``exit_request``, which a kick
sets from any thread and the execution loop polls without the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyqemu.hw.core.qdev import TYPE_DEVICE, DeviceClass, DeviceState
from pyqemu.qom import Object, ObjectClass, TypeInfo, object_property_add_uint, type_init
from pyqemu.system.cpus import QueuedWork
from pyqemu.util import trace

if TYPE_CHECKING:
    from pyqemu.system.memory import AddressSpace

TYPE_CPU = "cpu"

class CPUClass(DeviceClass):
    """``CPUClass``: per-target hooks."""

    has_work: Callable[[CPUState], bool] | None = None
    dump_state: Callable[[CPUState], str] | None = None
    reset_hook: Callable[[CPUState], None] | None = None
    class_by_name: Callable[[str], ObjectClass | None] | None = None
    parse_features: Callable[[str, str], None] | None = None


class CPUState(DeviceState):
    """``CPUState``."""

    cpu_index: int
    nr_cores: int
    nr_threads: int
    thread: threading.Thread | None
    thread_id: int | None
    created: bool
    stop: bool
    stopped: bool
    unplug: bool
    exit_request: bool
    halted: bool
    running: bool
    vcpu_dirty: bool
    halt_cond: threading.Condition | None
    work_list: list[QueuedWork]
    accel_ops: Any             # the machine's AccelOps (accel is above hw: not imported)
    accel: Any                 # the accelerator's per-vCPU state (AccelCPUState)
    as_: AddressSpace | None  # memory address space (cpu->as)
    io_as: AddressSpace | None
    machine: Any
    singlestep_enabled: bool
    exception_index: int

    def has_work(self) -> bool:
        """``cpu_has_work``: the target's hook says whether a halted vCPU would wake."""
        return cpu_has_work(self)


def cpu_common_initfn(obj: Object) -> None:
    """``cpu_common_initfn``: defaults; nothing outside the object is touched."""
    cpu = obj
    assert isinstance(cpu, CPUState)
    cpu.cpu_index = -1
    cpu.nr_cores = 1
    cpu.nr_threads = 1
    cpu.thread = None
    cpu.thread_id = None
    cpu.created = False
    cpu.stop = False
    cpu.stopped = True
    cpu.unplug = False
    cpu.exit_request = False
    cpu.halted = False
    cpu.running = False
    cpu.vcpu_dirty = False
    cpu.halt_cond = None
    cpu.work_list = []
    cpu.accel_ops = None
    cpu.accel = None
    cpu.as_ = None
    cpu.io_as = None
    cpu.machine = None
    cpu.singlestep_enabled = False
    cpu.exception_index = -1

    def get_index(o: Object) -> int:
        assert isinstance(o, CPUState)
        return o.cpu_index

    object_property_add_uint(obj, "cpu-index", 32, get_index, None)


def cpu_common_realizefn(dev: DeviceState) -> None:
    """``cpu_common_realizefn``: the last step of a CPU's realize chain."""
    with trace.span("cpu_common_realizefn", cpu=dev.cpu_index):  # type: ignore[attr-defined]
        pass


def cpu_common_unrealizefn(dev: DeviceState) -> None:
    pass


def cpu_class_init(klass: ObjectClass, data: Any) -> None:
    assert isinstance(klass, CPUClass)
    klass.realize = cpu_common_realizefn
    klass.unrealize = cpu_common_unrealizefn
    klass.user_creatable = False
    klass.category = "cpu"


def cpu_reset(cpu: CPUState) -> None:
    """``cpu_reset``: the target's reset hook (QEMU's ``cpu_reset`` in ``hw/core/cpu-common.c``)."""
    with trace.span("cpu_reset", cpu=cpu.cpu_index):
        hook = cpu.klass.reset_hook  # type: ignore[attr-defined]
        if hook is not None:
            hook(cpu)


def cpu_has_work(cpu: CPUState) -> bool:
    hook = cpu.klass.has_work  # type: ignore[attr-defined]
    return bool(hook(cpu)) if hook is not None else False


type_init(TypeInfo(
    name=TYPE_CPU, parent=TYPE_DEVICE, abstract=True,
    instance_type=CPUState, class_type=CPUClass,
    instance_init=cpu_common_initfn, class_init=cpu_class_init,
))
