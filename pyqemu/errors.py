"""Exceptions of the public facade; everything pyqemu raises derives from :class:`PyQemuError`."""

from pyqemu.util.error import PyQemuError

__all__ = ["GuestError", "MachineStateError", "MemoryAccessError", "PyQemuError"]


class MachineStateError(PyQemuError, RuntimeError):
    """An operation that the machine's current state does not allow (e.g. reading
    registers while the vCPUs run, or using a closed machine)."""


class GuestError(PyQemuError, RuntimeError):
    """The guest did something the machine cannot continue from (e.g. KVM reported an
    internal error or a failed entry); the message says what and where."""


class MemoryAccessError(PyQemuError, ValueError):
    """A :meth:`~pyqemu.Machine.mem_read` / ``mem_write`` of guest-physical memory
    outside guest RAM and ROM (an MMIO window, an unassigned address, beyond 4 GiB) or
    with a negative address or size; the message names the range and what lies there."""
