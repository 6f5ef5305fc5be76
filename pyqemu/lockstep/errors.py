"""The lockstep package's exception."""

from __future__ import annotations

from pyqemu.util.error import PyQemuError

__all__ = ["LockstepError"]


class LockstepError(PyQemuError, RuntimeError):
    """Lockstep cannot run here (no /dev/kvm as the oracle, more than one vCPU, bad options)."""
