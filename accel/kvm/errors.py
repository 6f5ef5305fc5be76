"""Exceptions of the KVM binding and accelerator."""

from __future__ import annotations

import os

from pyqemu.util.error import PyQemuError

__all__ = ["KvmError", "KvmUnavailableError"]


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

    def __reduce__(self):  # keep pickling (e.g. across threads/processes) working
        return (type(self), (self.ioctl, self.errno, self.strerror))


class KvmUnavailableError(KvmError):
    """``/dev/kvm`` is missing, not accessible, or speaks the wrong API version."""
