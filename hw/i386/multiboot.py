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
from dataclasses import dataclass
from typing import Any

from pyqemu.hw.core.errors import LoaderError
from pyqemu.hw.i386.loader_asm import (
    BOOT_AREA_END,
    GDT_ADDR,
    check_loadable,
    load_bytes,
    setup_entry_state,
)
from pyqemu.system.memory import AddressSpace
from pyqemu.target.i386.cpu_state import R_EAX, R_EBX, CPUX86State
from pyqemu.util import trace

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
MBI_SIZE = 88                  # up to and including the VBE fields
MMAP_ADDR = 0x1100
STRINGS_ADDR = 0x1200
STRINGS_END = 0x9000           # the long64 page tables of loader_asm follow
BOOT_LOADER_NAME = b"pyqemu"

MMAP_AVAILABLE, MMAP_RESERVED = 1, 2
LOW_MEM_END = 0x9FC00          # 639 KiB: the EBDA follows, as on a PC
BIOS_AREA = (0xF0000, 0x10000)

LINUX_HDRS_OFFSET = 0x202


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


def find_multiboot_header(data: bytes) -> int | None:
    """Offset of a valid header (magic, and flags + checksum summing to 0) or None."""
    limit = min(len(data), MULTIBOOT_SEARCH) - 12
    for off in range(0, limit + 1, 4):
        magic, flags, checksum = struct.unpack_from("<III", data, off)
        if magic == MULTIBOOT_HEADER_MAGIC and (magic + flags + checksum) & 0xFFFFFFFF == 0:
            return off
    return None


def _aout_segments(path: str, data: bytes, hoff: int) -> tuple[list[tuple[int, bytes, int]], int]:
    """The a.out kludge (3.1.3): one segment from the header's address fields."""
    if hoff + 32 > len(data):
        raise _fail(path, "multiboot header truncated (a.out kludge fields missing)")
    header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr = struct.unpack_from(
        "<5I", data, hoff + 12)
    if load_addr > header_addr:
        raise _fail(path, f"multiboot load_addr {load_addr:#x} is above header_addr "
                          f"{header_addr:#x}")
    file_off = hoff - (header_addr - load_addr)
    if file_off < 0:
        raise _fail(path, "multiboot header_addr/load_addr put the image before the file start")
    if load_end_addr == 0:
        load_size = len(data) - file_off
    else:
        if load_end_addr < load_addr:
            raise _fail(path, f"multiboot load_end_addr {load_end_addr:#x} is below load_addr")
        load_size = load_end_addr - load_addr
        if file_off + load_size > len(data):
            raise _fail(path, f"multiboot load_end_addr {load_end_addr:#x} is past the end "
                              "of the file")
    mem_size = load_size
    if bss_end_addr:
        if bss_end_addr < load_addr + load_size:
            raise _fail(path, f"multiboot bss_end_addr {bss_end_addr:#x} is below the "
                              "loaded image")
        mem_size = bss_end_addr - load_addr
    return [(load_addr, data[file_off:file_off + load_size], mem_size)], entry_addr


def _elf_segments(path: str, data: bytes) -> tuple[list[tuple[int, bytes, int]], int]:
    """ELF32 i386 executable (System V ABI, i386 supplement): PT_LOAD at p_paddr."""
    if data[:4] != b"\x7fELF":
        raise _fail(path, "multiboot header without the a.out kludge, and not an ELF file")
    if len(data) < 52 or data[4] != 1 or data[5] != 1:
        raise _fail(path, "not a 32-bit little-endian ELF file (ELFCLASS32, ELFDATA2LSB)")
    (e_type, e_machine, _ver, e_entry, e_phoff, _shoff, _flags, _ehsize, e_phentsize,
     e_phnum) = struct.unpack_from("<HHIIIIIHHH", data, 16)
    if e_type != 2 or e_machine != 3:
        raise _fail(path, f"ELF e_type {e_type} / e_machine {e_machine}: not an i386 "
                          "executable (ET_EXEC, EM_386)")
    if e_phentsize < 32 or e_phoff + e_phnum * e_phentsize > len(data):
        raise _fail(path, "ELF program headers are truncated")
    segs: list[tuple[int, bytes, int]] = []
    entry = e_entry
    for i in range(e_phnum):
        p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, _pf, _pa = struct.unpack_from(
            "<8I", data, e_phoff + i * e_phentsize)
        if p_type != 1:  # PT_LOAD
            continue
        if p_filesz > p_memsz or p_offset + p_filesz > len(data):
            raise _fail(path, f"ELF segment {i} is truncated or larger in the file than "
                              "in memory")
        if p_memsz == 0:
            continue
        segs.append((p_paddr, data[p_offset:p_offset + p_filesz], p_memsz))
        if p_vaddr != p_paddr and p_vaddr <= e_entry < p_vaddr + p_memsz:
            entry = e_entry - p_vaddr + p_paddr
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


def multiboot_load(asp: AddressSpace, env: CPUX86State, path: str | os.PathLike[str],
                   cmdline: str = "", ram_size: int | None = None) -> MultibootKernel:
    """Load ``path`` into ``asp``, build the boot information, set ``env`` per section 3.2.

    ``ram_size`` (the -m size) fills mem_lower/mem_upper and the memory map;
    by default it is the size of the RAM mapped at 0 in ``asp``.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as e:
        raise _fail(name, f"could not read the kernel: {e.strerror}") from None
    if not data:
        raise _fail(name, "the file is empty")
    hoff = find_multiboot_header(data)
    if hoff is None:
        if data[LINUX_HDRS_OFFSET:LINUX_HDRS_OFFSET + 4] == b"HdrS":
            raise _fail(name, "a Linux kernel: Linux boot protocol not supported yet "
                              "(only multiboot v1 kernels are)")
        raise _fail(name, "no multiboot header (magic 0x1BADB002 with a valid checksum) "
                          "in the first 8192 bytes: not a multiboot kernel")
    flags = struct.unpack_from("<I", data, hoff + 4)[0]
    unsupported = flags & 0xFFFF & ~MB_SUPPORTED_REQUIREMENTS
    if unsupported:
        raise _fail(name, f"multiboot header requires features pyqemu cannot provide "
                          f"(flags {unsupported:#x})")
    if flags & MB_AOUT_KLUDGE:
        segs, entry = _aout_segments(name, data, hoff)
    else:
        segs, entry = _elf_segments(name, data)
    if ram_size is None:
        r = asp.lookup(0)
        ram_size = r.size if r is not None and r.mr.is_ram else 0
    cmd = cmdline.encode() + b"\0"
    strings_end = STRINGS_ADDR + len(BOOT_LOADER_NAME) + 1 + len(cmd)
    if strings_end > STRINGS_END:
        raise _fail(name, f"-append: the command line is longer than "
                          f"{STRINGS_END - (strings_end - len(cmd)) - 1} bytes")
    boot_end = BOOT_AREA_END
    with trace.span("multiboot_load", entry=entry):
        loaded = []
        for addr, payload, memsz in segs:
            if addr < boot_end and addr + memsz > GDT_ADDR:
                raise _fail(name, f"segment [{addr:#x}, {addr + memsz:#x}) overlaps the "
                                  f"boot area [{GDT_ADDR:#x}, {boot_end:#x})")
            check_loadable(asp, addr, memsz, f"-kernel '{name}'")
            # The image, then zeroes up to memsz: the bss (3.1.3 bss_end_addr, ELF p_memsz).
            load_bytes(asp, addr, payload + bytes(memsz - len(payload)), f"-kernel '{name}'")
            loaded.append((addr, memsz))
        if not any(a <= entry < a + m for a, m in loaded):
            raise _fail(name, f"entry point {entry:#x} is outside the loaded image")
        mbi = _write_boot_info(asp, ram_size, cmd)
        setup_entry_state(env, asp, "prot32", entry, stack=0)
        env.regs[R_EAX] = MULTIBOOT_BOOTLOADER_MAGIC
        env.regs[R_EBX] = mbi
    return MultibootKernel(name, entry, loaded, mbi, STRINGS_ADDR + len(BOOT_LOADER_NAME) + 1)


def _write_boot_info(asp: AddressSpace, ram_size: int, cmd: bytes) -> int:
    """The multiboot information structure (3.3) with its memory map and strings."""
    mmap = b"".join(struct.pack("<IQQI", 20, base, length, kind)
                    for base, length, kind in build_mmap(ram_size))
    if MMAP_ADDR + len(mmap) > STRINGS_ADDR:
        raise AssertionError("multiboot memory map outgrew its slot")
    name_addr = STRINGS_ADDR
    cmd_addr = name_addr + len(BOOT_LOADER_NAME) + 1
    mem_lower = min(ram_size, LOW_MEM_END) // 1024   # 639 KiB, as the map says
    mem_upper = max(0, ram_size - 0x100000) // 1024
    info = bytearray(MBI_SIZE)
    struct.pack_into("<III", info, 0, MBI_MEMORY | MBI_CMDLINE | MBI_MEM_MAP | MBI_LOADER_NAME,
                     mem_lower, mem_upper)
    struct.pack_into("<I", info, 16, cmd_addr)              # cmdline
    struct.pack_into("<II", info, 44, len(mmap), MMAP_ADDR)  # mmap_length, mmap_addr
    struct.pack_into("<I", info, 64, name_addr)             # boot_loader_name
    load_bytes(asp, MBI_ADDR, bytes(info), "multiboot info")
    load_bytes(asp, MMAP_ADDR, mmap, "multiboot memory map")
    load_bytes(asp, name_addr, BOOT_LOADER_NAME + b"\0" + cmd, "multiboot strings")
    return MBI_ADDR


def load_multiboot(ms: Any, path: str | os.PathLike[str], cmdline: str = "") -> MultibootKernel:
    """The board's entry point: load into ``ms.address_space_memory``; boot ``ms.cpus[0].env``."""
    return multiboot_load(ms.address_space_memory, ms.cpus[0].env, path, cmdline, ms.ram_size)
