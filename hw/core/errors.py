"""Exceptions of the device core and the machine."""

from pyqemu.util.error import PyQemuError


class DeviceError(PyQemuError, ValueError):
    """A device could not be created, configured or realized; the message names it."""


class MachineError(PyQemuError, ValueError):
    """A bad machine configuration (-machine, -smp, -m) or a board that failed to build."""


class LoaderError(PyQemuError, ValueError):
    """A guest image (-bios, -kernel, assembly source) is missing or malformed."""
