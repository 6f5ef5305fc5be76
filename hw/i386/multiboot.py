"""``-kernel FILE`` as a Multiboot v1 kernel (Multiboot Specification 0.6.96).

Section 3.1 (OS image format): the header lies in the first 8192 bytes,
32-bit aligned: ``magic`` 0x1BADB002, ``flags``, ``checksum`` (the three sum
to 0 mod 2**32).  Flags bits 0..15 are requirements: bit 0 (page-align
modules: we load none) and bit 1 (memory information: always given) are
honoured, bit 2 (video mode) is accepted and answered with no video
information, any other one makes the load fail as the spec demands.  With
bit 16 the a.out-kludge fields (``header_addr``, ``load_addr``,
``load_end_addr``, ``bss_end_addr``, ``entry_addr``) say where the image
goes; without it the file must be an ELF32 i386 executable whose PT_LOAD
segments are loaded at their physical addresses (and its entry point, if
virtual, translated through the segment that holds it).  The bss is zeroed.

The kernel file is read with a bound (:func:`~pyqemu.hw.core.loader.read_image_file`):
a regular file no larger than guest RAM, since every byte of an image must fit
in it; anything else is refused with the file's name and size.  The header,
the information structure, its memory map and the ELF headers are named
structures (:class:`MultibootHeader`, :class:`MultibootInfo`,
:class:`MultibootMmapEntry`, :class:`Elf32Ehdr`, :class:`Elf32Phdr`).

Section 3.3 (boot information), built in low memory at fixed addresses:

======== ===============================================================
0x0500   the GDT of :mod:`hw.i386.loader_asm` (CS 0x08, data 0x18)
0x1000   the multiboot information structure (flags: MEM, CMDLINE, MMAP,
         LOADER_NAME)
0x1100   the memory map (``size, base_addr, length, type`` entries)
0x1200   boot_loader_name "pyqemu", then the command line (-append)
======== ===============================================================

Section 3.2 (machine state): EAX = 0x2BADB002, EBX = the information's
address, CS a flat 32-bit execute/read segment, DS/ES/FS/GS/SS flat 32-bit
read/write, A20 on, CR0.PE = 1 and PG = 0, EFLAGS.VM = IF = 0.  The
segment caches are loaded from a real GDT in guest memory, so a kernel that
reloads its segment registers before installing its own GDT keeps working.
"""

from __future__ import annotations

import os
import struct
from dataclasses import astuple, dataclass
from typing import Any, ClassVar

from pyqemu.hw.core.errors import LoaderError
from pyqemu.hw.core.loader import ImageFileError, format_size, read_image_file
from pyqemu.hw.i386.loader_asm import (
    BOOT_AREA_END,
    GDT_ADDR,
    check_loadable,
    load_bytes,
    setup_entry_state,
    zero_bytes,
)
from pyqemu.system.memory import AddressSpace
from pyqemu.target.i386.cpu_state import R_EAX, R_EBX, CPUX86State
from pyqemu.util import trace

__all__ = [
    "MULTIBOOT_BOOTLOADER_MAGIC",
    "MULTIBOOT_HEADER_MAGIC",
    "Elf32Ehdr",
    "Elf32Phdr",
    "MultibootHeader",
    "MultibootImage",
    "MultibootInfo",
    "MultibootKernel",
    "MultibootMmapEntry",
    "build_mmap",
    "find_multiboot_header",
    "load_multiboot",
    "multiboot_load",
    "multiboot_parse",
]

MULTIBOOT_HEADER_MAGIC = 0x1BADB002
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002
MULTIBOOT_SEARCH = 8192

# Header flags (3.1.2).
MB_PAGE_ALIGN = 1 << 0
MB_MEMORY_INFO = 1 << 1
MB_VIDEO_MODE = 1 << 2
MB_AOUT_KLUDGE = 1 << 16
MB_SUPPORTED_REQUIREMENTS = MB_PAGE_ALIGN | MB_MEMORY_INFO | MB_VIDEO_MODE

# Information flags (3.3).
MBI_MEMORY = 1 << 0
MBI_CMDLINE = 1 << 2
MBI_MEM_MAP = 1 << 6
MBI_LOADER_NAME = 1 << 9

MBI_ADDR = 0x1000
MMAP_ADDR = 0x1100
STRINGS_ADDR = 0x1200
STRINGS_END = 0x9000           # the long64 page tables of loader_asm follow
BOOT_LOADER_NAME = b"pyqemu"

MMAP_AVAILABLE, MMAP_RESERVED = 1, 2
LOW_MEM_END = 0x9FC00          # 639 KiB: the EBDA follows, as on a PC
BIOS_AREA = (0xF0000, 0x10000)

LINUX_HDRS_OFFSET = 0x202      # "HdrS" in a bzImage's setup header (Linux boot protocol)
FOUR_GIB = 1 << 32


# -- the named structures ----------------------------------------------------------------------

@dataclass(frozen=True)
class MultibootHeader:
    """The OS image's header (3.1.1): magic, flags, checksum; with flags bit 16 the
    a.out-kludge address fields (3.1.3) follow."""

    magic: int
    flags: int
    checksum: int
    header_addr: int = 0
    load_addr: int = 0
    load_end_addr: int = 0
    bss_end_addr: int = 0
    entry_addr: int = 0

    FORMAT: ClassVar[str] = "<3I"
    AOUT_FORMAT: ClassVar[str] = "<5I"
    SIZE: ClassVar[int] = struct.calcsize(FORMAT)
    AOUT_SIZE: ClassVar[int] = SIZE + struct.calcsize(AOUT_FORMAT)

    @classmethod
    def unpack_from(cls, data: bytes | bytearray, offset: int) -> MultibootHeader:
        """The header at ``offset``; the a.out fields are read when flags ask for them
        (the caller checks they are there: :attr:`AOUT_SIZE`)."""
        magic, flags, checksum = struct.unpack_from(cls.FORMAT, data, offset)
        if flags & MB_AOUT_KLUDGE and offset + cls.AOUT_SIZE <= len(data):
            return cls(magic, flags, checksum,
                       *struct.unpack_from(cls.AOUT_FORMAT, data, offset + cls.SIZE))
        return cls(magic, flags, checksum)

    @property
    def valid(self) -> bool:
        """The magic, and the three fields summing to 0 mod 2**32."""
        return (self.magic == MULTIBOOT_HEADER_MAGIC
                and (self.magic + self.flags + self.checksum) & 0xFFFFFFFF == 0)


@dataclass
class MultibootInfo:
    """The boot information structure (3.3), up to and including the VBE fields."""

    flags: int = 0
    mem_lower: int = 0
    mem_upper: int = 0
    boot_device: int = 0
    cmdline: int = 0
    mods_count: int = 0
    mods_addr: int = 0
    syms0: int = 0              # the a.out symbol table or ELF section header table
    syms1: int = 0
    syms2: int = 0
    syms3: int = 0
    mmap_length: int = 0
    mmap_addr: int = 0
    drives_length: int = 0
    drives_addr: int = 0
    config_table: int = 0
    boot_loader_name: int = 0
    apm_table: int = 0
    vbe_control_info: int = 0
    vbe_mode_info: int = 0
    vbe_mode: int = 0
    vbe_interface_seg: int = 0
    vbe_interface_off: int = 0
    vbe_interface_len: int = 0

    CODES: ClassVar[str] = "I" * 20 + "H" * 4          # one struct code per field
    FORMAT: ClassVar[str] = "<" + CODES
    SIZE: ClassVar[int] = struct.calcsize(FORMAT)      # 88

    def pack(self) -> bytes:
        return struct.pack(self.FORMAT, *astuple(self))

    @classmethod
    def unpack(cls, raw: bytes) -> MultibootInfo:
        return cls(*struct.unpack_from(cls.FORMAT, raw))

    @classmethod
    def offset(cls, name: str) -> int:
        """Where field ``name`` lies in the structure (the spec's offsets: cmdline 16,
        mmap_length 44, boot_loader_name 64 ...)."""
        i = list(cls.__dataclass_fields__).index(name)
        return struct.calcsize("<" + cls.CODES[:i])


@dataclass(frozen=True)
class MultibootMmapEntry:
    """One memory map entry (3.3, mmap_*): ``size`` counts the bytes after itself."""

    base_addr: int
    length: int
    type: int

    FORMAT: ClassVar[str] = "<IQQI"
    SIZE: ClassVar[int] = struct.calcsize(FORMAT)      # 24

    def pack(self) -> bytes:
        return struct.pack(self.FORMAT, self.SIZE - 4, self.base_addr, self.length, self.type)


@dataclass(frozen=True)
class Elf32Ehdr:
    """The ELF header's fields after ``e_ident`` (System V ABI, 4-3; i386 supplement)."""

    e_type: int
    e_machine: int
    e_version: int
    e_entry: int
    e_phoff: int
    e_shoff: int
    e_flags: int
    e_ehsize: int
    e_phentsize: int
    e_phnum: int

    EI_NIDENT: ClassVar[int] = 16
    FORMAT: ClassVar[str] = "<HHIIIIIHHH"
    SIZE: ClassVar[int] = 52                            # with e_shentsize .. e_shstrndx
    ET_EXEC: ClassVar[int] = 2
    EM_386: ClassVar[int] = 3

    @classmethod
    def unpack_from(cls, data: bytes | bytearray) -> Elf32Ehdr:
        return cls(*struct.unpack_from(cls.FORMAT, data, cls.EI_NIDENT))


@dataclass(frozen=True)
class Elf32Phdr:
    """A program header (System V ABI, 5-2)."""

    p_type: int
    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_flags: int
    p_align: int

    FORMAT: ClassVar[str] = "<8I"
    SIZE: ClassVar[int] = struct.calcsize(FORMAT)      # 32
    PT_LOAD: ClassVar[int] = 1

    @classmethod
    def unpack_from(cls, data: bytes | bytearray, offset: int) -> Elf32Phdr:
        return cls(*struct.unpack_from(cls.FORMAT, data, offset))


# -- the parsed image ----------------------------------------------------------------------------

@dataclass(frozen=True)
class MultibootSegment:
    """What goes where: ``data`` at ``addr``, then zeroes up to ``memsz`` (the bss)."""

    addr: int
    data: bytes
    memsz: int


@dataclass(frozen=True)
class MultibootImage:
    """A kernel file read and checked (:func:`multiboot_parse`), ready to load."""

    path: str
    header: MultibootHeader
    segments: tuple[MultibootSegment, ...]
    entry: int
    cmdline: str
    ram_size: int


@dataclass
class MultibootKernel:
    """Where the image went: segments loaded, bss, entry, the info structure."""

    path: str
    entry: int
    segments: list[tuple[int, int]]   # (addr, memsz) per loaded segment, bss included
    mbi_addr: int
    cmdline_addr: int


def _fail(path: str, why: str) -> LoaderError:
    return LoaderError(f"-kernel '{path}': {why}")


def find_multiboot_header(data: bytes | bytearray) -> int | None:
    """Offset of a valid header (magic, and flags + checksum summing to 0) or None."""
    limit = min(len(data), MULTIBOOT_SEARCH) - MultibootHeader.SIZE
    for off in range(0, limit + 1, 4):
        if MultibootHeader.unpack_from(data, off).valid:
            return off
    return None


def _aout_segments(path: str, data: bytes | bytearray, hoff: int,
                   h: MultibootHeader) -> tuple[list[MultibootSegment], int]:
    """The a.out kludge (3.1.3): one segment from the header's address fields."""
    if hoff + MultibootHeader.AOUT_SIZE > len(data):
        raise _fail(path, "multiboot header truncated (a.out kludge fields missing)")
    if h.load_addr > h.header_addr:
        raise _fail(path, f"multiboot load_addr {h.load_addr:#x} is above header_addr "
                          f"{h.header_addr:#x}")
    file_off = hoff - (h.header_addr - h.load_addr)
    if file_off < 0:
        raise _fail(path, "multiboot header_addr/load_addr put the image before the file start")
    if h.load_end_addr == 0:
        load_size = len(data) - file_off
    else:
        if h.load_end_addr < h.load_addr:
            raise _fail(path, f"multiboot load_end_addr {h.load_end_addr:#x} is below "
                              "load_addr")
        load_size = h.load_end_addr - h.load_addr
        if file_off + load_size > len(data):
            raise _fail(path, f"multiboot load_end_addr {h.load_end_addr:#x} is past the end "
                              "of the file")
    mem_size = load_size
    if h.bss_end_addr:
        if h.bss_end_addr < h.load_addr + load_size:
            raise _fail(path, f"multiboot bss_end_addr {h.bss_end_addr:#x} is below the "
                              "loaded image")
        mem_size = h.bss_end_addr - h.load_addr
    payload = bytes(data[file_off:file_off + load_size])
    return [MultibootSegment(h.load_addr, payload, mem_size)], h.entry_addr


def _elf_segments(path: str, data: bytes | bytearray) -> tuple[list[MultibootSegment], int]:
    """ELF32 i386 executable (System V ABI, i386 supplement): PT_LOAD at p_paddr."""
    if data[:4] != b"\x7fELF":
        raise _fail(path, "multiboot header without the a.out kludge, and not an ELF file")
    if len(data) < Elf32Ehdr.SIZE or data[4] != 1 or data[5] != 1:
        raise _fail(path, "not a 32-bit little-endian ELF file (ELFCLASS32, ELFDATA2LSB)")
    eh = Elf32Ehdr.unpack_from(data)
    if eh.e_type != Elf32Ehdr.ET_EXEC or eh.e_machine != Elf32Ehdr.EM_386:
        raise _fail(path, f"ELF e_type {eh.e_type} / e_machine {eh.e_machine}: not an i386 "
                          "executable (ET_EXEC, EM_386)")
    if eh.e_phentsize < Elf32Phdr.SIZE or eh.e_phoff + eh.e_phnum * eh.e_phentsize > len(data):
        raise _fail(path, "ELF program headers are truncated")
    segs: list[MultibootSegment] = []
    entry = eh.e_entry
    for i in range(eh.e_phnum):
        ph = Elf32Phdr.unpack_from(data, eh.e_phoff + i * eh.e_phentsize)
        if ph.p_type != Elf32Phdr.PT_LOAD:
            continue
        if ph.p_filesz > ph.p_memsz or ph.p_offset + ph.p_filesz > len(data):
            raise _fail(path, f"ELF segment {i} is truncated or larger in the file than "
                              "in memory")
        if ph.p_memsz == 0:
            continue
        segs.append(MultibootSegment(ph.p_paddr,
                                     bytes(data[ph.p_offset:ph.p_offset + ph.p_filesz]),
                                     ph.p_memsz))
        if ph.p_vaddr != ph.p_paddr and ph.p_vaddr <= eh.e_entry < ph.p_vaddr + ph.p_memsz:
            entry = eh.e_entry - ph.p_vaddr + ph.p_paddr
    if not segs:
        raise _fail(path, "ELF file has no PT_LOAD segment")
    return segs, entry


def build_mmap(ram_size: int) -> list[tuple[int, int, int]]:
    """The memory map (3.3, mmap_*): (base, length, type) from the PC's RAM layout."""
    low = min(ram_size, LOW_MEM_END)
    entries = [(0, low, MMAP_AVAILABLE)]
    if ram_size > LOW_MEM_END:
        entries.append((LOW_MEM_END, 0xA0000 - LOW_MEM_END, MMAP_RESERVED))
    entries.append((BIOS_AREA[0], BIOS_AREA[1], MMAP_RESERVED))
    if ram_size > 0x100000:
        entries.append((0x100000, ram_size - 0x100000, MMAP_AVAILABLE))
    return entries


def _ram_size_of(asp: AddressSpace) -> int:
    r = asp.lookup(0)
    return r.size if r is not None and r.mr.is_ram else 0


def multiboot_parse(path: str | os.PathLike[str], cmdline: str, ram_size: int) -> MultibootImage:
    """Read ``path`` (at most ``ram_size`` bytes: see the module docstring) and check
    everything a load checks but the memory itself: the header, its requirements, the
    segments (inside guest RAM ``[0, ram_size)``, clear of the boot area), the entry point
    and the command line's length.  A bad kernel raises :class:`LoaderError` naming it.
    """
    name = os.fspath(path)
    try:
        data = read_image_file(name, min(ram_size, FOUR_GIB),
                               f"the guest's {format_size(ram_size)} of RAM (-m)")
    except ImageFileError as e:
        raise _fail(name, f"cannot load the kernel: {e}") from None
    if not data:
        raise _fail(name, "the file is empty")
    hoff = find_multiboot_header(data)
    if hoff is None:
        if data[LINUX_HDRS_OFFSET:LINUX_HDRS_OFFSET + 4] == b"HdrS":
            raise _fail(name, "a Linux kernel (Linux boot protocol): pyqemu boots "
                              "multiboot (v1) kernels only, ELF or a.out kludge")
        raise _fail(name, "no multiboot header (magic 0x1BADB002 with a valid checksum) "
                          "in the first 8192 bytes: not a multiboot kernel")
    header = MultibootHeader.unpack_from(data, hoff)
    unsupported = header.flags & 0xFFFF & ~MB_SUPPORTED_REQUIREMENTS
    if unsupported:
        raise _fail(name, f"multiboot header requires features pyqemu cannot provide "
                          f"(flags {unsupported:#x}; it provides bits 0-2: page-aligned "
                          f"modules, memory information, video mode)")
    if header.flags & MB_AOUT_KLUDGE:
        segs, entry = _aout_segments(name, data, hoff, header)
    else:
        segs, entry = _elf_segments(name, data)
    del data
    cmd_room = STRINGS_END - STRINGS_ADDR - len(BOOT_LOADER_NAME) - 2
    if len(cmdline.encode()) > cmd_room:
        raise _fail(name, f"-append: the command line is longer than {cmd_room} bytes")
    for seg in segs:
        end = seg.addr + seg.memsz
        if seg.addr < BOOT_AREA_END and end > GDT_ADDR:
            raise _fail(name, f"segment [{seg.addr:#x}, {end:#x}) overlaps the boot area "
                              f"[{GDT_ADDR:#x}, {BOOT_AREA_END:#x})")
        if end > ram_size:
            raise _fail(name, f"segment [{seg.addr:#x}, {end:#x}) is not guest RAM (RAM is "
                              f"[0, {ram_size:#x}): -m {ram_size >> 20}M)")
    if not any(s.addr <= entry < s.addr + s.memsz for s in segs):
        raise _fail(name, f"entry point {entry:#x} is outside the loaded image")
    return MultibootImage(name, header, tuple(segs), entry, cmdline, ram_size)


def multiboot_load(asp: AddressSpace, env: CPUX86State,
                   kernel: str | os.PathLike[str] | MultibootImage, cmdline: str = "",
                   ram_size: int | None = None) -> MultibootKernel:
    """Load ``kernel`` into ``asp``, build the boot information, set ``env`` per section 3.2.

    ``kernel`` is a file (parsed here with ``cmdline``) or an image
    :func:`multiboot_parse` made (its own command line and RAM size then apply).
    ``ram_size`` (the -m size) fills mem_lower/mem_upper and the memory map; by
    default it is the size of the RAM mapped at 0 in ``asp``.
    """
    if isinstance(kernel, MultibootImage):
        image = kernel
    else:
        image = multiboot_parse(kernel, cmdline, _ram_size_of(asp) if ram_size is None
                                else ram_size)
    name = image.path
    with trace.span("multiboot_load", entry=image.entry):
        loaded = []
        for seg in image.segments:
            check_loadable(asp, seg.addr, seg.memsz, f"-kernel '{name}'")
            # The image, then zeroes up to memsz: the bss (3.1.3 bss_end_addr, ELF p_memsz).
            if seg.data:
                load_bytes(asp, seg.addr, seg.data, f"-kernel '{name}'")
            zero_bytes(asp, seg.addr + len(seg.data), seg.memsz - len(seg.data),
                       f"-kernel '{name}'")
            loaded.append((seg.addr, seg.memsz))
        cmd = image.cmdline.encode() + b"\0"
        mbi = _write_boot_info(asp, image.ram_size, cmd)
        setup_entry_state(env, asp, "prot32", image.entry, stack=0)
        env.regs[R_EAX] = MULTIBOOT_BOOTLOADER_MAGIC
        env.regs[R_EBX] = mbi
    return MultibootKernel(name, image.entry, loaded, mbi,
                           STRINGS_ADDR + len(BOOT_LOADER_NAME) + 1)


def _write_boot_info(asp: AddressSpace, ram_size: int, cmd: bytes) -> int:
    """The multiboot information structure (3.3) with its memory map and strings."""
    mmap = b"".join(MultibootMmapEntry(base, length, kind).pack()
                    for base, length, kind in build_mmap(ram_size))
    if MMAP_ADDR + len(mmap) > STRINGS_ADDR:
        raise AssertionError("multiboot memory map outgrew its slot")
    name_addr = STRINGS_ADDR
    cmd_addr = name_addr + len(BOOT_LOADER_NAME) + 1
    info = MultibootInfo(
        flags=MBI_MEMORY | MBI_CMDLINE | MBI_MEM_MAP | MBI_LOADER_NAME,
        mem_lower=min(ram_size, LOW_MEM_END) // 1024,     # 639 KiB, as the map says
        mem_upper=max(0, ram_size - 0x100000) // 1024,
        cmdline=cmd_addr,
        mmap_length=len(mmap), mmap_addr=MMAP_ADDR,
        boot_loader_name=name_addr)
    load_bytes(asp, MBI_ADDR, info.pack(), "multiboot info")
    load_bytes(asp, MMAP_ADDR, mmap, "multiboot memory map")
    load_bytes(asp, name_addr, BOOT_LOADER_NAME + b"\0" + cmd, "multiboot strings")
    return MBI_ADDR


def load_multiboot(ms: Any, kernel: str | os.PathLike[str] | MultibootImage,
                   cmdline: str = "") -> MultibootKernel:
    """The board's entry point: load into ``ms.address_space_memory``; boot ``ms.cpus[0].env``."""
    return multiboot_load(ms.address_space_memory, ms.cpus[0].env, kernel, cmdline, ms.ram_size)
