"""Guest loaders: -bios mapping, multiboot v1 kernels, keystone assembly and entry states."""

from __future__ import annotations

import os
import re
import resource
import struct
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[3]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, Cs  # noqa: E402

from pyqemu.hw.core.errors import LoaderError  # noqa: E402
from pyqemu.hw.i386 import loader_asm as la  # noqa: E402
from pyqemu.hw.i386.loader_bios import x86_bios_rom_init  # noqa: E402
from pyqemu.hw.i386.multiboot import MULTIBOOT_BOOTLOADER_MAGIC, multiboot_load  # noqa: E402
from pyqemu.system.memory import AddressSpace, MemoryRegion  # noqa: E402
from pyqemu.target.i386.cpu_state import (  # noqa: E402
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    DESC_B_MASK,
    DESC_CS_MASK,
    DESC_L_MASK,
    EFER_LMA,
    EFER_LME,
    IF_MASK,
    IOPL_MASK,
    R_CS,
    R_DS,
    R_EAX,
    R_EBX,
    R_ES,
    R_ESP,
    R_FS,
    R_GS,
    R_SS,
    VM_MASK,
    CPUX86State,
    x86_reset_state,
)
from pyqemu.target.i386.paging import page_walk  # noqa: E402

RAM = 4 << 20


@pytest.fixture
def board():
    """4 MiB of RAM at 0 in a 4 GiB container, and a CPU state at reset."""
    root = MemoryRegion.container_new("system", 1 << 32)
    ram = MemoryRegion.ram_new("pc.ram", RAM)
    root.add_subregion(0, ram)
    asp = AddressSpace("memory", root)
    env = CPUX86State()
    x86_reset_state(env)
    yield root, asp, env
    root.close()


# -- -bios ----------------------------------------------------------------------------------

def test_bios_maps_at_4g_minus_size_and_aliases_last_128k_below_1m(board, tmp_path):
    root, asp, _ = board
    image = bytes((i * 7) & 0xFF for i in range(256 * 1024))
    path = tmp_path / "bios.bin"
    path.write_bytes(image)
    bios = x86_bios_rom_init(root, path)
    assert bios.base == 0x1_0000_0000 - 256 * 1024
    assert asp.read_bytes(0xFFFFFFF0, 16) == image[-16:]
    assert asp.read_bytes(0xFFFC0000, 64) == image[:64]
    # The isa-bios alias: the last 128 KiB at 0xE0000..0xFFFFF, over RAM.
    assert asp.read_bytes(0xE0000, 128 * 1024) == image[-128 * 1024:]
    assert asp.read_bytes(0xDFFF0, 16) == bytes(16)   # RAM below the window
    asp.write_bytes(0xFFFF0, b"\xAA" * 16)            # the guest cannot write ROM
    assert asp.read_bytes(0xFFFF0, 16) == image[-16:]
    bios.unmap()
    assert asp.read_bytes(0xFFFF0, 1) == b"\0"         # RAM shows through again


def test_small_bios_is_aliased_whole(board, tmp_path):
    root, asp, _ = board
    path = tmp_path / "bios64k.bin"
    path.write_bytes(b"\x90" * 0xFFF0 + b"\xEA" + bytes(15))
    x86_bios_rom_init(root, path)
    assert asp.read_bytes(0xF0000, 2) == b"\x90\x90"
    assert asp.read(0xFFFF0, 1) == 0xEA
    assert asp.read(0xEFFFF, 1) == 0                   # window is only 64 KiB


@pytest.mark.parametrize("size,reason", [
    (None, "No such file"),
    (0, "empty"),
    (1000, "not a multiple of 64 KiB"),
    (17 << 20, r"17825792 bytes \(17.0 MiB\), more than the 16 MiB a PC BIOS may have"),
], ids=["missing", "empty", "unaligned", "too-big"])
def test_bad_bios_files_name_the_file_and_reason(board, tmp_path, size, reason):
    root, _, _ = board
    path = tmp_path / "bad.rom"
    if size is not None:
        path.write_bytes(bytes(size))
    with pytest.raises(LoaderError, match=f"could not load PC BIOS '{path}'.*{reason}"):
        x86_bios_rom_init(root, path)
    assert len(root.subregions) == 1                   # only RAM: nothing half-mapped


# -- assembly ---------------------------------------------------------------------------------

def test_assemble_modes_disassemble_back():
    code = la.assemble("mov eax, 0x12345678\nhlt", "prot32", 0x100000)
    insns = [(i.mnemonic, i.op_str) for i in Cs(CS_ARCH_X86, CS_MODE_32).disasm(code, 0x100000)]
    assert insns == [("mov", "eax, 0x12345678"), ("hlt", "")]
    real = la.assemble("mov ax, 0x1234", "real", 0x7C00)
    assert [i.op_str for i in Cs(CS_ARCH_X86, CS_MODE_16).disasm(real, 0)] == ["ax, 0x1234"]
    far = la.assemble("jmp 0x8:0x1000", "real", 0, syntax="nasm")
    assert far == b"\xEA\x00\x10\x08\x00"


def test_assemble_error_names_the_line():
    with pytest.raises(LoaderError, match=r"line 3: `bogus eax`"):
        la.assemble("nop\nmov eax, 1\nbogus eax\nnop", "prot32")
    with pytest.raises(LoaderError, match="unknown mode 'v86'"):
        la.assemble("nop", "v86")


def test_load_bytes_refuses_unmapped_memory(board):
    _, asp, _ = board
    la.load_bytes(asp, 0x2000, b"\x01\x02")
    assert asp.read_bytes(0x2000, 2) == b"\x01\x02"
    with pytest.raises(LoaderError, match="not guest RAM"):
        la.load_bytes(asp, RAM - 1, b"\x01\x02")


# -- entry states -------------------------------------------------------------------------------

def _gdt_entry(asp, env, sel):
    assert (sel & ~7) + 7 <= env.gdt.limit
    return asp.read(env.gdt.base + (sel & ~7), 8)


def test_real_mode_entry_below_and_above_64k(board):
    _, asp, env = board
    la.setup_entry_state(env, asp, "real", 0x7C00)
    assert (env.segs[R_CS].selector, env.segs[R_CS].base, env.rip) == (0, 0, 0x7C00)
    assert env.regs[R_ESP] == 0x7C00 and not env.cr[0] & CR0_PE
    la.setup_entry_state(env, asp, "real", 0x12345)
    assert (env.segs[R_CS].selector, env.rip) == (0x1234, 0x5)
    assert all(env.segs[r].selector == 0x1234 for r in (R_DS, R_ES, R_SS))
    with pytest.raises(LoaderError, match="not below 1 MiB"):
        la.setup_entry_state(env, asp, "real", 0x100000)


def test_prot32_entry_flat_segments_match_gdt_in_memory(board):
    _, asp, env = board
    la.setup_entry_state(env, asp, "prot32", 0x100000, stack=0x90000)
    assert env.cr[0] & CR0_PE and not env.cr[0] & CR0_PG
    assert env.rip == 0x100000 and env.regs[R_ESP] == 0x90000
    cs = env.segs[R_CS]
    assert cs.selector == 0x08 and cs.base == 0 and cs.limit == 0xFFFFFFFF
    assert cs.flags & DESC_CS_MASK and cs.flags & DESC_B_MASK
    for r in (R_CS, R_DS, R_ES, R_FS, R_GS, R_SS):
        seg = env.segs[r]
        assert la.descriptor_to_cache(seg.selector, _gdt_entry(asp, env, seg.selector)) == seg
    assert env.mode_name == "prot32"


def _walk(asp, env, va):
    """Translate ``va`` through ``env``'s paging (target/i386/paging.py); returns (pa,
    user-accessible at every level), asserting that a 2 MiB page maps it."""
    walk = page_walk(asp.read, env.cr[0], env.cr[3], env.cr[4], env.efer, va)
    assert walk.pa is not None, f"not present at level {len(walk.entries) - 1} for {va:#x}"
    assert walk.page_size == 2 << 20, "2 MiB page expected in the PD"
    return walk.pa, walk.user


def test_long64_identity_maps_and_sets_cr_efer(board):
    _, asp, env = board
    la.setup_entry_state(env, asp, "long64", 0x200000, stack=0x300000)
    assert env.cr[0] & (CR0_PE | CR0_PG) == CR0_PE | CR0_PG
    assert env.cr[4] & CR4_PAE and env.cr[3] == la.PML4_ADDR
    assert env.efer & (EFER_LME | EFER_LMA) == EFER_LME | EFER_LMA
    assert env.segs[R_CS].flags & DESC_L_MASK and not env.segs[R_CS].flags & DESC_B_MASK
    assert env.segs[R_CS].selector == 0x10 and env.cpl == 0 and env.mode_name == "long64"
    for va in (0, 0x1234, 0x200000, 0x3FFFFFFF, 0x40000000, 0xFEE00000, 0xFFFFFFF0):
        pa, user = _walk(asp, env, va)
        assert pa == va and not user
    assert la.descriptor_to_cache(0x10, _gdt_entry(asp, env, 0x10)) == env.segs[R_CS]


def test_long64_user_privilege_uses_dpl3_segments_and_user_pages(board):
    _, asp, env = board
    la.setup_entry_state(env, asp, "long64", 0x200000, privilege=3)
    assert env.segs[R_CS].selector == 0x33 and env.segs[R_SS].selector == 0x2B
    assert env.segs[R_CS].dpl == 3 and env.cpl == 3
    assert env.eflags & IOPL_MASK == IOPL_MASK
    assert _walk(asp, env, 0x200123) == (0x200123, True)
    with pytest.raises(LoaderError, match="long64 only"):
        la.setup_entry_state(env, asp, "prot32", 0x200000, privilege=3)


# -- multiboot ------------------------------------------------------------------------------------

KERNEL_SRC = "mov eax, 0xCAFE\nmov [0x180000], eax\nhlt\n"


def _check_multiboot_state(asp, env, entry, cmdline):
    assert env.regs[R_EAX] == MULTIBOOT_BOOTLOADER_MAGIC == 0x2BADB002
    mbi = env.regs[R_EBX]
    flags, mem_lower, mem_upper = struct.unpack("<III", asp.read_bytes(mbi, 12))
    assert flags & 0x245 == 0x245          # MEM, CMDLINE, MMAP, LOADER_NAME
    assert mem_lower == 639 and mem_upper == (RAM - 0x100000) // 1024
    cmd = asp.read_bytes(asp.read(mbi + 16, 4), len(cmdline) + 1)
    assert cmd == cmdline.encode() + b"\0"
    assert asp.read_bytes(asp.read(mbi + 64, 4), 7) == b"pyqemu\0"
    mmap_len, mmap_addr = asp.read(mbi + 44, 4), asp.read(mbi + 48, 4)
    entries = []
    pos = mmap_addr
    while pos < mmap_addr + mmap_len:
        size, base, length, kind = struct.unpack("<IQQI", asp.read_bytes(pos, 24))
        entries.append((base, length, kind))
        pos += size + 4
    assert (0x100000, RAM - 0x100000, 1) in entries and entries[0] == (0, 0x9FC00, 1)
    assert env.rip == entry
    assert env.cr[0] & CR0_PE and not env.cr[0] & CR0_PG
    assert not env.eflags & (VM_MASK | IF_MASK)
    assert env.a20_mask == -1
    cs = env.segs[R_CS]
    assert (cs.base, cs.limit) == (0, 0xFFFFFFFF) and cs.flags & DESC_CS_MASK
    for r in (R_DS, R_ES, R_FS, R_GS, R_SS):
        seg = env.segs[r]
        assert (seg.base, seg.limit) == (0, 0xFFFFFFFF) and not seg.flags & DESC_CS_MASK
        assert seg.flags & DESC_B_MASK
    for r in (R_CS, R_DS, R_SS):
        seg = env.segs[r]
        assert la.descriptor_to_cache(seg.selector, _gdt_entry(asp, env, seg.selector)) == seg


def test_multiboot_aout_kludge_kernel_loads_and_clears_bss(board, tmp_path):
    _, asp, env = board
    load = 0x100000
    code = la.assemble(KERNEL_SRC, "prot32", load + 32)
    magic, flags = 0x1BADB002, 0x00010003
    header = struct.pack("<8I", magic, flags, (-(magic + flags)) & 0xFFFFFFFF,
                         load, load, load + 32 + len(code), load + 0x3000, load + 32)
    kernel = tmp_path / "kernel.aout"
    kernel.write_bytes(header + code)
    asp.write_bytes(load + 0x2000, b"\xFF" * 16)           # stale data where the bss goes
    k = multiboot_load(asp, env, kernel, "console=ttyS0 debug")
    assert asp.read_bytes(load + 32, len(code)) == code
    assert asp.read_bytes(load + 0x2000, 16) == bytes(16)
    assert k.entry == load + 32
    _check_multiboot_state(asp, env, load + 32, "console=ttyS0 debug")


def _elf32(segments, entry):
    """A minimal ELF32 i386 executable: header, program headers, then segment data."""
    phoff, phnum = 52, len(segments)
    off = phoff + 32 * phnum
    ph, body = b"", b""
    for vaddr, paddr, data, memsz in segments:
        ph += struct.pack("<8I", 1, off + len(body), vaddr, paddr, len(data), memsz, 5, 0x1000)
        body += data
    ehdr = (b"\x7fELF\x01\x01\x01" + bytes(9)
            + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, entry, phoff, 0, 0, 52, 32, phnum, 40, 0, 0))
    return ehdr + ph + body


def test_multiboot_elf_kernel_loads_at_physical_addresses(board, tmp_path):
    _, asp, env = board
    paddr, vaddr = 0x100000, 0xC0100000
    code = la.assemble(KERNEL_SRC, "prot32", paddr + 12)
    magic, flags = 0x1BADB002, 0x3
    header = struct.pack("<3I", magic, flags, (-(magic + flags)) & 0xFFFFFFFF)
    data_seg = b"DATA"
    elf = _elf32([(vaddr, paddr, header + code, len(header + code) + 0x100),
                  (0x200000, 0x200000, data_seg, 0x1000)], vaddr + 12)
    # The header must be in the first 8 KiB: here it follows the ELF headers.
    kernel = tmp_path / "kernel.elf"
    kernel.write_bytes(elf)
    k = multiboot_load(asp, env, kernel)
    assert asp.read_bytes(paddr, len(header + code)) == header + code
    assert asp.read_bytes(0x200000, 8) == b"DATA" + bytes(4)
    assert k.entry == paddr + 12                       # virtual entry translated
    _check_multiboot_state(asp, env, paddr + 12, "")


def test_file_without_multiboot_magic_is_rejected_by_name(board, tmp_path):
    _, asp, env = board
    path = tmp_path / "plain.bin"
    path.write_bytes(b"\x90" * 4096)
    with pytest.raises(LoaderError, match=f"'{path}'.*no multiboot header"):
        multiboot_load(asp, env, path)
    bz = bytearray(8192)
    bz[0x202:0x206] = b"HdrS"
    path.write_bytes(bz)
    with pytest.raises(LoaderError, match=r"a Linux kernel \(Linux boot protocol\): pyqemu "
                                          "boots multiboot \\(v1\\) kernels only"):
        multiboot_load(asp, env, path)
    with pytest.raises(LoaderError, match=r"missing.elf'.*cannot load the kernel: No such file"):
        multiboot_load(asp, env, tmp_path / "missing.elf")


def test_multiboot_bad_checksum_and_kernel_outside_ram(board, tmp_path):
    _, asp, env = board
    path = tmp_path / "k"
    path.write_bytes(struct.pack("<3I", 0x1BADB002, 0x10000, 0) + bytes(64))
    with pytest.raises(LoaderError, match="no multiboot header"):
        multiboot_load(asp, env, path)
    magic, flags = 0x1BADB002, 0x10000
    hdr = struct.pack("<8I", magic, flags, (-(magic + flags)) & 0xFFFFFFFF,
                      0x800000, 0x800000, 0, 0, 0x800000)
    path.write_bytes(hdr + b"\xF4")
    with pytest.raises(LoaderError, match="not guest RAM"):
        multiboot_load(asp, env, path)


# -- bounded reads: -kernel and -bios read at most what fits ------------------------------------

def _special_files(tmp_path):
    """A FIFO (no writer: opening it must not wait), a directory and /dev/zero."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return [(fifo, "a FIFO"), (tmp_path, "a directory"), (Path("/dev/zero"), "a character device")]


def test_kernel_that_is_not_a_regular_file_is_refused_without_reading(board, tmp_path):
    _, asp, env = board
    for path, kind in _special_files(tmp_path):
        with pytest.raises(LoaderError, match=f"-kernel '{re.escape(str(path))}': cannot load "
                                              f"the kernel: {kind}.*not a regular file"):
            multiboot_load(asp, env, path)


def test_bios_that_is_not_a_regular_file_is_refused_without_reading(board, tmp_path):
    root, _, _ = board
    for path, kind in _special_files(tmp_path):
        with pytest.raises(LoaderError, match=f"could not load PC BIOS '{re.escape(str(path))}'"
                                              f": {kind}.*not a regular file"):
            x86_bios_rom_init(root, path)
    assert len(root.subregions) == 1


def test_kernel_larger_than_guest_ram_is_refused_by_its_size_unread(board, tmp_path):
    """A 5 GiB sparse file costs nothing to make; reading it would cost 5 GiB."""
    _, asp, env = board
    path = tmp_path / "huge.mb"
    with open(path, "wb") as f:
        f.truncate(5 << 30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(LoaderError, match=f"-kernel '{re.escape(str(path))}': cannot load the "
                                          r"kernel: the file is 5368709120 bytes \(5.0 GiB\), "
                                          r"more than the guest's 4194304 bytes \(4.0 MiB\) "
                                          r"of RAM \(-m\)"):
        multiboot_load(asp, env, path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 << 10  # KiB


def test_kernel_read_is_bounded_even_when_the_size_is_not_known(tmp_path):
    """/proc files report size 0; the read still stops at the limit."""
    from pyqemu.hw.core.loader import ImageFileError, read_image_file
    data = read_image_file("/proc/self/status", 1 << 20, "1 MiB")
    assert data.startswith(b"Name:")
    with pytest.raises(ImageFileError, match="the file is larger than 16 bytes"):
        read_image_file("/proc/self/status", 16, "16 bytes")


def test_multiboot_image_beyond_ram_or_bss_too_big_is_refused_before_loading(board, tmp_path):
    _, asp, env = board
    magic, flags = 0x1BADB002, 0x10000
    hdr = struct.pack("<8I", magic, flags, (-(magic + flags)) & 0xFFFFFFFF,
                      0x100000, 0x100000, 0, 0xF0000000, 0x100020)
    path = tmp_path / "bigbss.mb"
    path.write_bytes(hdr + b"\xF4")
    with pytest.raises(LoaderError, match=r"segment \[0x100000, 0xf0000000\) is not guest RAM"):
        multiboot_load(asp, env, path)


def test_multiboot_structures_have_the_spec_s_offsets():
    from pyqemu.hw.i386.multiboot import MultibootHeader, MultibootInfo, MultibootMmapEntry
    assert MultibootInfo.SIZE == 88
    assert {f: MultibootInfo.offset(f) for f in ("cmdline", "mods_addr", "mmap_length",
                                                 "mmap_addr", "boot_loader_name", "vbe_mode",
                                                 "vbe_interface_len")} == {
        "cmdline": 16, "mods_addr": 24, "mmap_length": 44, "mmap_addr": 48,
        "boot_loader_name": 64, "vbe_mode": 80, "vbe_interface_len": 86}
    info = MultibootInfo(flags=0x245, cmdline=0x1207, mmap_addr=0x1100)
    assert struct.unpack_from("<I", info.pack(), 16)[0] == 0x1207
    assert MultibootInfo.unpack(info.pack()) == info
    assert MultibootMmapEntry(0x100000, 0x300000, 1).pack() == struct.pack(
        "<IQQI", 20, 0x100000, 0x300000, 1)
    assert MultibootHeader.AOUT_SIZE == 32
