"""vCPU bookkeeping shared by every accelerator (``system/cpus.c``, ``cpus-common.c``).

The big lock (QEMU's BQL, ``qemu_global_mutex``) guards devices and the fields
of every vCPU (:class:`VCpu`, which ``hw/core``'s ``CPUState`` implements).  A
vCPU thread holds it except while it runs guest code (``KVM_RUN``, or a run of
translation blocks) and while it waits on a condition.  Conditions on it:

* ``qemu_cpu_cond``: a vCPU thread was created or destroyed;
* ``qemu_pause_cond``: a vCPU thread has stopped;
* ``qemu_work_cond``: a ``run_on_cpu`` item was done;
* each ``cpu.halt_cond``: an idle vCPU thread sleeps on it until kicked.

Nothing here may hang: every wait loops on a predicate with a timeout and
gives up with :class:`VcpuThreadError` if a vCPU thread died or never answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from pyqemu.util import trace
from pyqemu.util.error import PyQemuError

if TYPE_CHECKING:
    from pyqemu.system.memory import AddressSpace

#: The big QEMU lock.  Re-entrant: device callbacks may be reached from code that holds it.
qemu_global_mutex = threading.RLock()
qemu_cpu_cond = threading.Condition(qemu_global_mutex)
qemu_pause_cond = threading.Condition(qemu_global_mutex)
qemu_work_cond = threading.Condition(qemu_global_mutex)

#: How long a main-thread wait for a vCPU thread may take before it is a bug.
VCPU_WAIT_TIMEOUT = 30.0


class QueuedWork:
    """One ``run_on_cpu`` item (``struct qemu_work_item``): a function run on the vCPU
    thread, and its outcome."""

    __slots__ = ("done", "error", "func", "result")

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func
        self.done = False
        self.error: BaseException | None = None
        self.result: Any = None


class VCpu(Protocol):
    """The fields of a vCPU that the bookkeeping here and the accelerators use.

    ``hw/core``'s ``CPUState`` implements it; this layer and ``accel`` name only
    the protocol, so neither imports the device layer above them.  The fields
    mean what QEMU's ``CPUState`` fields of the same name mean (``created``,
    ``stop``/``stopped``, ``unplug``, ``exit_request``, ``halted``, ...); all
    are read and written under the big lock except ``exit_request``, which a
    kick sets from any thread.
    """

    cpu_index: int
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
    accel_ops: Any          # the machine's AccelOps (accel/ops.py), set by qemu_init_vcpu
    accel: Any              # the accelerator's per-vCPU state (AccelCPUState)
    as_: AddressSpace | None
    io_as: AddressSpace | None
    machine: Any
    singlestep_enabled: bool
    nr_cores: int
    nr_threads: int

    def has_work(self) -> bool:
        """``cpu_has_work``: an interrupt or event would wake this halted vCPU."""


CPUState = VCpu   # the name QEMU's prototypes use, for the annotations below


class VcpuThreadError(PyQemuError, RuntimeError):
    """A vCPU thread failed to start, to stop, or to answer in time."""


class bql:  # noqa: N801 - QEMU's name (bql_lock/bql_unlock)
    """``with bql():`` takes the big lock (``bql_lock``/``bql_unlock``)."""

    def __enter__(self) -> None:
        qemu_global_mutex.acquire()

    def __exit__(self, *exc: object) -> None:
        qemu_global_mutex.release()


def _wait(cond: threading.Condition, predicate: Callable[[], bool], what: str,
          cpus: Iterable[CPUState] = (), timeout: float = VCPU_WAIT_TIMEOUT) -> None:
    """Wait on ``cond`` (lock held) until ``predicate``; fail instead of hanging."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for cpu in cpus:
            if cpu.thread is not None and not cpu.thread.is_alive() and not predicate():
                raise VcpuThreadError(f"vCPU {cpu.cpu_index} thread died while {what}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise VcpuThreadError(f"timed out after {timeout:.0f}s {what}")
        cond.wait(min(left, 0.1))


# -- the vCPU side ---------------------------------------------------------------


def cpu_is_stopped(cpu: CPUState) -> bool:
    """``cpu_is_stopped``: stopped, or the VM is not running (or is about to stop:
    a pending shutdown, reset or error keeps vCPUs from re-entering guest code)."""
    rc = cpu.machine.runctl
    return cpu.stopped or not rc.is_running() or rc.pending


def cpu_can_run(cpu: CPUState) -> bool:
    """``cpu_can_run`` (QEMU's ``system/cpus.c``): neither asked to stop nor stopped."""
    if cpu.stop:
        return False
    return not cpu_is_stopped(cpu)


def cpu_thread_is_idle(cpu: CPUState) -> bool:
    """``cpu_thread_is_idle``: nothing to do until kicked."""
    if cpu.stop or cpu.work_list:
        return False
    if cpu_is_stopped(cpu):
        return True
    if cpu.unplug:
        return False
    if not cpu.halted or cpu.has_work():
        return False
    ops = cpu.accel_ops
    if ops is not None:
        return ops.cpu_thread_is_idle(cpu)
    return True


def cpu_thread_signal_created(cpu: CPUState) -> None:
    """``cpu_thread_signal_created``: the vCPU is initialised; wake ``qemu_init_vcpu``."""
    with qemu_cpu_cond:
        cpu.created = True
        trace.event("created = true; qemu_cond_signal(qemu_cpu_cond)", cpu=cpu.cpu_index)
        qemu_cpu_cond.notify_all()


def cpu_thread_signal_destroyed(cpu: CPUState) -> None:
    with qemu_cpu_cond:
        cpu.created = False
        trace.event("created = false; qemu_cond_signal(qemu_cpu_cond)", cpu=cpu.cpu_index)
        qemu_cpu_cond.notify_all()


def process_queued_cpu_work(cpu: CPUState) -> None:
    """Run the ``run_on_cpu`` items queued for ``cpu`` (on its thread, lock held)."""
    while cpu.work_list:
        item = cpu.work_list.pop(0)
        try:
            item.result = item.func(cpu)
        except BaseException as e:  # handed back to the caller of run_on_cpu
            item.error = e
        item.done = True
        qemu_work_cond.notify_all()


def qemu_wait_io_event_common(cpu: CPUState) -> None:
    """Acknowledge a stop request and run queued work (``qemu_wait_io_event_common``)."""
    if cpu.stop:
        cpu.stop = False
        cpu.stopped = True
        qemu_pause_cond.notify_all()
    process_queued_cpu_work(cpu)


def qemu_wait_io_event(cpu: CPUState) -> None:
    """``qemu_wait_io_event``: sleep on ``halt_cond`` while idle, then the common part."""
    assert cpu.halt_cond is not None
    while cpu_thread_is_idle(cpu):
        cpu.machine.runctl.notify()  # the main loop watches for all-halted
        cpu.halt_cond.wait(0.5)
    qemu_wait_io_event_common(cpu)


def cpu_exit(cpu: CPUState) -> None:
    """``cpu_exit``: ask the execution loop to return at its next check."""
    cpu.exit_request = True


# -- the main-thread side ------------------------------------------------------------


def qemu_cpu_kick(cpu: CPUState) -> None:
    """``qemu_cpu_kick``: wake the thread from ``halt_cond`` and out of guest code."""
    if cpu.halt_cond is not None:
        with cpu.halt_cond:
            cpu.halt_cond.notify_all()
    if cpu.accel_ops is not None and cpu.created:
        cpu.accel_ops.kick_vcpu_thread(cpu)
    else:
        cpu_exit(cpu)


def qemu_init_vcpu(cpu: CPUState) -> None:
    """``qemu_init_vcpu``: start the vCPU thread and wait until it has set ``created``."""
    with trace.span("qemu_init_vcpu", cpu=cpu.cpu_index):
        ms = cpu.machine
        cpu.nr_cores = ms.smp.cores
        cpu.nr_threads = ms.smp.threads
        cpu.stopped = True
        if cpu.as_ is None:
            with trace.span("cpu_address_space_init", name="cpu-memory"):
                cpu.as_ = ms.address_space_memory
                cpu.io_as = ms.address_space_io
        ops = ms.accel.ops
        cpu.accel_ops = ops
        with qemu_global_mutex:
            cpu.halt_cond = threading.Condition(qemu_global_mutex)
            with trace.span(f"{ops.name}_start_vcpu_thread (create_vcpu_thread)",
                            cpu=cpu.cpu_index):
                ops.create_vcpu_thread(cpu)
            with trace.span("while (!cpu->created) qemu_cond_wait(&qemu_cpu_cond)"):
                try:
                    _wait(qemu_cpu_cond,
                          lambda: cpu.created or cpu.machine.runctl.error is not None,
                          f"waiting for vCPU {cpu.cpu_index} to be created", [cpu])
                except VcpuThreadError:
                    if cpu.machine.runctl.error is not None:
                        raise cpu.machine.runctl.error from None
                    raise
                if not cpu.created:
                    err = cpu.machine.runctl.error
                    assert err is not None
                    raise err


def all_vcpus_paused(cpus: Iterable[CPUState]) -> bool:
    return all(cpu.stopped or not cpu.created for cpu in cpus)


def pause_all_vcpus(cpus: list[CPUState]) -> None:
    """``pause_all_vcpus``: ask every vCPU to stop and wait until each has."""
    with qemu_global_mutex:
        for cpu in cpus:
            if cpu.thread is threading.current_thread():
                cpu.stop = False
                cpu.stopped = True  # QEMU's qemu_cpu_stop(cpu, true) on its own thread
            elif not cpu.stopped:
                cpu.stop = True
                qemu_cpu_kick(cpu)
        _wait(qemu_pause_cond, lambda: all_vcpus_paused(cpus), "pausing the vCPUs",
              cpus)


def resume_all_vcpus(cpus: list[CPUState]) -> None:
    """``resume_all_vcpus``: clear stop/stopped and kick every vCPU."""
    with qemu_global_mutex:
        for cpu in cpus:
            cpu.stop = False
            cpu.stopped = False
            cpu.exit_request = False
            qemu_cpu_kick(cpu)


def run_on_cpu(cpu: CPUState, func: Callable[[CPUState], Any]) -> Any:
    """``run_on_cpu``: run ``func`` on ``cpu``'s thread and wait for it."""
    if cpu.thread is threading.current_thread() or cpu.thread is None or not cpu.created:
        return func(cpu)
    with qemu_global_mutex:
        item = QueuedWork(func)
        cpu.work_list.append(item)
        qemu_cpu_kick(cpu)
        _wait(qemu_work_cond, lambda: item.done, f"running work on vCPU {cpu.cpu_index}",
              [cpu])
    if item.error is not None:
        raise item.error
    return item.result


def cpu_remove_sync(cpu: CPUState, timeout: float = VCPU_WAIT_TIMEOUT) -> None:
    """Unplug ``cpu`` and join its thread (``cpu_remove_sync``), with a timeout."""
    with qemu_global_mutex:
        cpu.unplug = True
        cpu.stop = True
        qemu_cpu_kick(cpu)
    thread = cpu.thread
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)
        if thread.is_alive():
            raise VcpuThreadError(
                f"vCPU {cpu.cpu_index} thread did not exit within {timeout:.0f}s")
    cpu.thread = None


def vcpu_thread_main(cpu: CPUState, body: Callable[[], None], parent_depth: int) -> None:
    """Run a vCPU thread's body; an exception stops the VM and reaches ``Machine.run``.

    Accelerators call this as the thread target, so that every vCPU thread
    reports failures the same way and prints its lifecycle under its creator.
    """
    trace.set_depth(parent_depth)
    try:
        body()
    except BaseException as e:
        with qemu_global_mutex:
            cpu.machine.runctl.report_error(e)
            cpu.created = False
            cpu.stopped = True
            qemu_cpu_cond.notify_all()
            qemu_pause_cond.notify_all()
            qemu_work_cond.notify_all()
            for item in cpu.work_list:
                item.error = e
                item.done = True
            cpu.work_list.clear()
