"""pyqemu: QEMU's vCPU lifecycle re-created in Python, on KVM and on a pure-Python x86 interpreter.

The public surface is small::

    from pyqemu import Machine
    with Machine(accel="interp") as m:
        m.load_asm("mov dx, 0x3f8; mov al, 0x41; out dx, al; hlt", 0x7c00, mode="real")
        m.run(timeout=5)
        print(m.serial_output, hex(m.reg_read("rip")))

Everything pyqemu raises derives from :class:`PyQemuError`.  Warnings are logged
on the ``pyqemu`` logger (silent by default in a library; the command line prints
them as ``pyqemu: warning: ...``).
"""

import logging
from typing import Any

from pyqemu.errors import GuestError, MachineStateError, MemoryAccessError, PyQemuError

__all__ = ["GuestError", "Machine", "MachineStateError", "MemoryAccessError", "PyQemuError",
           "RunResult"]

# Warnings (a CPU feature the accelerator cannot give, an ambiguous -cpu string) go to
# the "pyqemu" logger.  A library stays quiet unless its user configures logging
# (logging.getLogger("pyqemu"), pytest's caplog); the command line installs a handler
# that prints them as "pyqemu: warning: ...".
logging.getLogger("pyqemu").addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    # Machine pulls in the whole board; load it on first use so that
    # `pyqemu -cpu help` and `import pyqemu.images` stay light.
    if name in ("Machine", "RunResult"):
        from pyqemu import machine
        return getattr(machine, name)
    raise AttributeError(f"module 'pyqemu' has no attribute {name!r}")
