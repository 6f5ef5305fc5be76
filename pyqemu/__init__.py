"""pyqemu: QEMU's vCPU lifecycle re-created in Python, on KVM and on a pure-Python x86 interpreter.

The public surface is small::

    from pyqemu import Machine
    with Machine(accel="interp") as m:
        m.load_asm("mov dx, 0x3f8; mov al, 0x41; out dx, al; hlt", 0x7c00, mode="real")
        m.run(timeout=5)
        print(m.serial_output, hex(m.reg_read("rip")))

Everything pyqemu raises derives from :class:`PyQemuError`.
"""

from typing import Any

from pyqemu.errors import GuestError, MachineStateError, PyQemuError

__all__ = ["GuestError", "Machine", "MachineStateError", "PyQemuError", "RunResult"]


def __getattr__(name: str) -> Any:
    # Machine pulls in the whole board; load it on first use so that
    # `pyqemu -cpu help` and `import pyqemu.images` stay light.
    if name in ("Machine", "RunResult"):
        from pyqemu import machine
        return getattr(machine, name)
    raise AttributeError(f"module 'pyqemu' has no attribute {name!r}")
