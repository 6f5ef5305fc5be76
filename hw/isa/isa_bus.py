"""ISA I/O port claims (QEMU's ``isa_register_ioport`` in ``hw/isa/isa-bus.c``).

An ISA device maps its register window in the machine's port I/O space.  Two
devices decoding the same port is a configuration error on a real bus and a
silent loss of one of them in a flat region tree (the later mapping wins), so
:func:`isa_register_ioport` refuses a window that overlaps one already claimed
and names both devices.  :func:`isa_unregister_ioport` is realize's undo.
"""

from __future__ import annotations

import weakref

from pyqemu.hw.core.errors import DeviceError
from pyqemu.system.memory import MemoryRegion

__all__ = ["isa_port_owner", "isa_register_ioport", "isa_unregister_ioport"]

#: who claimed each mapped window (the description names the device for messages)
_owners: weakref.WeakKeyDictionary[MemoryRegion, str] = weakref.WeakKeyDictionary()


def _ports(start: int, size: int) -> str:
    return f"{start:#x}" if size == 1 else f"{start:#x}-{start + size - 1:#x}"


def isa_port_owner(system_io: MemoryRegion, port: int) -> str | None:
    """The description of the device whose window holds ``port``, or None."""
    for addr, _, sub in system_io.subregions:
        if addr <= port < addr + sub.size:
            return _owners.get(sub, f"region '{sub.name}'")
    return None


def isa_register_ioport(system_io: MemoryRegion, start: int, mr: MemoryRegion,
                        owner: str) -> None:
    """Map ``mr`` at port ``start`` of ``system_io`` for the device described by ``owner``.

    Raises :class:`DeviceError` naming both devices if any port of the window is
    already claimed, or if the window does not fit in the I/O space; nothing is
    mapped then.
    """
    end = start + mr.size
    if start < 0 or end > system_io.size:
        raise DeviceError(f"{owner}: iobase={start:#x}: I/O ports {_ports(start, mr.size)} "
                          f"are outside the I/O space (0x0-{system_io.size - 1:#x})")
    for addr, _, sub in system_io.subregions:
        if addr < end and start < addr + sub.size:
            other = _owners.get(sub, f"region '{sub.name}'")
            raise DeviceError(f"{owner}: iobase={start:#x}: I/O ports {_ports(start, mr.size)} "
                              f"clash with {other} (ports {_ports(addr, sub.size)})")
    system_io.add_subregion(start, mr)
    _owners[mr] = owner


def isa_unregister_ioport(mr: MemoryRegion) -> None:
    """Unmap ``mr`` if mapped (realize's undo, and unrealize)."""
    if mr.container is not None:
        mr.container.del_subregion(mr)
    _owners.pop(mr, None)
