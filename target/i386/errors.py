"""The x86 CPU's errors: user errors that name the model, feature or value at fault.

They derive from :class:`~pyqemu.util.error.PyQemuError` and ``ValueError`` (a
lookup failure also from ``LookupError``), like every configuration error.
"""

from __future__ import annotations

from pyqemu.util.error import PyQemuError

__all__ = [
    "AssemblerError",
    "CPUFeatureValueError",
    "FeatureFilterError",
    "HostCPUModelError",
    "UnknownCPUModelError",
    "UnknownFeatureError",
    "X86CPUError",
]


class X86CPUError(PyQemuError, ValueError):
    """An x86 CPU could not be configured or realized; the message names the cause."""


class UnknownCPUModelError(X86CPUError, LookupError):
    """``-cpu NAME`` names no registered model."""


class UnknownFeatureError(X86CPUError, LookupError):
    """A ``-cpu`` option names a feature or property the x86 CPU does not have."""


class CPUFeatureValueError(X86CPUError):
    """A ``-cpu`` option gives a bad value (``sse4.2=maybe``, ``level=abc``)."""


class FeatureFilterError(X86CPUError):
    """``enforce`` is on and the accelerator cannot give some requested features."""


class HostCPUModelError(X86CPUError):
    """The ``host`` model was asked for without KVM."""


class AssemblerError(PyQemuError, ValueError):
    """Guest assembly source did not assemble; the message has keystone's reason and,
    when one line alone is at fault, that line."""
