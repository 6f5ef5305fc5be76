"""The run state of one virtual machine and the requests that change it (``system/runstate.c``).

QEMU keeps one global run state; pyqemu keeps one :class:`RunControl` per
machine so that two machines (kvm and interp side by side) can live in one
process.  vCPU threads and devices *request* things (a shutdown, a stop on
error) and notify the main loop; :meth:`pyqemu.Machine.run` waits on
:attr:`RunControl.cond` and acts on them.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable

from pyqemu.system.cpus import qemu_global_mutex


class RunState(enum.Enum):
    """``RunState`` (qapi/run-state.json), the states pyqemu uses."""

    PRELAUNCH = "prelaunch"
    RUNNING = "running"
    PAUSED = "paused"
    DEBUG = "debug"
    INTERNAL_ERROR = "internal-error"
    SHUTDOWN = "shutdown"
    GUEST_PANICKED = "guest-panicked"


class ShutdownCause(enum.Enum):
    """``ShutdownCause``: why the guest or the host asked to stop."""

    NONE = "none"
    HOST_QMP_QUIT = "host-qmp-quit"
    HOST_ERROR = "host-error"
    GUEST_SHUTDOWN = "guest-shutdown"      # e.g. isa-debug-exit, ACPI poweroff
    GUEST_RESET = "guest-reset"            # a triple fault with -no-reboot
    GUEST_PANIC = "guest-panic"
    SUBSYSTEM_RESET = "subsystem-reset"


class RunControl:
    """Run state, pending requests and the main loop's condition for one machine."""

    def __init__(self) -> None:
        self.state = RunState.PRELAUNCH
        self.cond = threading.Condition(qemu_global_mutex)
        self.shutdown_cause = ShutdownCause.NONE
        self.exit_code: int | None = None
        self.reset_requested = False
        self.debug_requested = False
        self.error: BaseException | None = None
        self.no_reboot = False
        self.no_shutdown = False
        #: set by the machine: kicks every vCPU out of guest code.  A request stops the
        #: vCPUs at the instruction that made it (the I/O write to isa-debug-exit, say),
        #: so the state a run ends in is the same on every accelerator.
        self.kick_all: Callable[[], None] | None = None

    def _kick(self) -> None:
        if self.kick_all is not None:
            self.kick_all()

    def is_running(self) -> bool:
        return self.state is RunState.RUNNING

    def notify(self) -> None:
        """``qemu_notify_event``: wake the main loop."""
        with self.cond:
            self.cond.notify_all()

    def request_shutdown(self, cause: ShutdownCause, exit_code: int | None = None) -> None:
        """``qemu_system_shutdown_request``: the first request wins."""
        with self.cond:
            if self.shutdown_cause is ShutdownCause.NONE:
                self.shutdown_cause = cause
                self.exit_code = exit_code
            self._kick()
            self.cond.notify_all()

    def request_reset(self) -> None:
        """``qemu_system_reset_request``: with -no-reboot a reset is a shutdown."""
        if self.no_reboot:
            self.request_shutdown(ShutdownCause.GUEST_RESET, 0)
        else:
            with self.cond:
                self.reset_requested = True
                self._kick()
                self.cond.notify_all()

    def report_error(self, error: BaseException) -> None:
        """An exception in a vCPU thread or a device callback: stop and hand it to run()."""
        with self.cond:
            if self.error is None:
                self.error = error
            self._kick()
            self.cond.notify_all()

    def request_debug(self) -> None:
        with self.cond:
            self.debug_requested = True
            self._kick()
            self.cond.notify_all()

    @property
    def pending(self) -> bool:
        return (self.error is not None or self.shutdown_cause is not ShutdownCause.NONE
                or self.reset_requested or self.debug_requested)
