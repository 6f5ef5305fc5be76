"""Exceptions of the KVM binding and accelerator."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pyqemu.accel.ops import AccelError
from pyqemu.util.error import PyQemuError

if TYPE_CHECKING:
    from pyqemu.accel.kvm.binding import VcpuExit

__all__ = ["KvmError", "KvmExitError", "KvmUnavailableError"]


class KvmError(PyQemuError, OSError):
    """A KVM ioctl (or the open/mmap around one) failed.

    Keeps the kernel's ``errno`` (so ``except OSError`` and ``e.errno`` work as
    for any system call) and names the operation, e.g.
    ``KVM_CREATE_VCPU: [Errno 17] File exists``.
    """

    def __init__(self, ioctl: str, errno: int, strerror: str | None = None) -> None:
        super().__init__(errno, strerror if strerror is not None else os.strerror(errno))
        self.ioctl = ioctl

    def __str__(self) -> str:
        return f"{self.ioctl}: [Errno {self.errno}] {self.strerror}"

    def __reduce__(self) -> tuple[type[KvmError], tuple[str, int | None, str | None]]:
        # keep pickling (e.g. across threads/processes) working
        return (type(self), (self.ioctl, self.errno, self.strerror))


class KvmUnavailableError(KvmError):
    """``/dev/kvm`` is missing, not accessible, or speaks the wrong API version."""


class KvmExitError(AccelError):
    """The guest stopped on an exit the vCPU loop cannot continue from.

    KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_FAIL_ENTRY or an exit pyqemu does not
    model (a failed KVM_RUN ioctl is a :class:`KvmError`).  QEMU prints the
    registers and stops the VM with
    RUN_STATE_INTERNAL_ERROR; pyqemu raises this from the vCPU thread, which
    stops the VM and re-raises it to the caller of ``Machine.run``.
    ``exit`` is the decoded exit (or None), ``rip`` the guest's RIP.
    """

    def __init__(self, message: str, exit_: VcpuExit | None = None,
                 rip: int | None = None) -> None:
        super().__init__(message)
        self.exit = exit_
        self.rip = rip
