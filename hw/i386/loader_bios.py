"""``-bios FILE``: the PC firmware ROM at the top of 4 GiB (QEMU's ``x86_bios_rom_init``).

A PC starts at 0xFFFFFFF0 (SDM vol. 3A, 9.1.4), so the firmware image is
mapped read-only to end exactly at 4 GiB.  Its last 128 KiB (or all of it if
smaller) also appear at 0xE0000..0xFFFFF, the "isa-bios" window where real-mode
code and old OSes find the BIOS; that window is an alias of the same ROM and
lies over RAM, so it is mapped with a priority above RAM's.

The image must be a regular file, a non-empty multiple of 64 KiB of at most
16 MiB, the conditions QEMU checks; otherwise the load fails with "could not
load PC BIOS 'FILE'" and the reason.  The file is read with that bound
(:func:`~pyqemu.hw.core.loader.read_image_file`): a FIFO, a directory or
``/dev/zero`` is refused without reading it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pyqemu.hw.core.errors import LoaderError
from pyqemu.hw.core.loader import ImageFileError, read_image_file
from pyqemu.system.memory import MemoryMapError, MemoryRegion
from pyqemu.util import trace

__all__ = ["BIOS_MAX_SIZE", "BiosImage", "pc_system_firmware_init", "read_bios_image",
           "x86_bios_rom_init"]

BIOS_ALIGN = 64 * 1024
BIOS_MAX_SIZE = 16 * 1024 * 1024
ISA_BIOS_MAX_SIZE = 128 * 1024
ISA_BIOS_END = 0x100000
FOUR_GIB = 0x1_0000_0000
#: Above RAM (priority 0) so the window shadows the RAM below 1 MiB.
ISA_BIOS_PRIORITY = 1


@dataclass
class BiosImage:
    """The mapped firmware: the ROM at 4 GiB - size and its alias below 1 MiB."""

    path: str
    rom: MemoryRegion
    isa_bios: MemoryRegion

    @property
    def size(self) -> int:
        return self.rom.size

    @property
    def base(self) -> int:
        return FOUR_GIB - self.rom.size

    @property
    def isa_bios_base(self) -> int:
        return ISA_BIOS_END - self.isa_bios.size

    def unmap(self) -> None:
        """Remove both mappings (the board calls this when it tears down)."""
        for mr in (self.isa_bios, self.rom):
            if mr.container is not None:
                mr.container.del_subregion(mr)


def read_bios_image(path: str | os.PathLike[str]) -> bytes:
    """Read and check a firmware file; a bad one raises :class:`LoaderError` naming it."""
    name = os.fspath(path)
    prefix = f"could not load PC BIOS '{name}'"
    try:
        data = bytes(read_image_file(name, BIOS_MAX_SIZE,
                                     f"the {BIOS_MAX_SIZE >> 20} MiB a PC BIOS may have"))
    except ImageFileError as e:
        raise LoaderError(f"{prefix}: {e}") from None
    if not data:
        raise LoaderError(f"{prefix}: the file is empty")
    if len(data) % BIOS_ALIGN:
        raise LoaderError(f"{prefix}: size {len(data)} is not a multiple of 64 KiB")
    return data


def x86_bios_rom_init(system_memory: MemoryRegion,
                      path: str | os.PathLike[str]) -> BiosImage:
    """Map the firmware in ``system_memory`` (a 4 GiB container): ROM and isa-bios alias."""
    data = read_bios_image(path)
    size = len(data)
    with trace.span("x86_bios_rom_init", size=size):
        rom = MemoryRegion.rom_new("pc.bios", size)
        rom.ram()[:] = data
        isa_size = min(size, ISA_BIOS_MAX_SIZE)
        isa_bios = MemoryRegion.alias_new("isa-bios", rom, size - isa_size, isa_size)
        try:
            system_memory.add_subregion(FOUR_GIB - size, rom)
            system_memory.add_subregion(ISA_BIOS_END - isa_size, isa_bios, ISA_BIOS_PRIORITY)
        except MemoryMapError as e:
            if rom.container is not None:
                system_memory.del_subregion(rom)
            rom.close()
            raise LoaderError(f"could not load PC BIOS '{os.fspath(path)}': {e}") from None
        return BiosImage(os.fspath(path), rom, isa_bios)


def pc_system_firmware_init(ms: Any, path: str | os.PathLike[str]) -> BiosImage:
    """The board's entry point: map ``-bios FILE`` in ``ms.system_memory``; kept as ``ms.bios``."""
    image = x86_bios_rom_init(ms.system_memory, path)
    ms.bios = image
    return image
