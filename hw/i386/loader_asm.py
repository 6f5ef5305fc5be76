"""Python-API loaders: assemble guest code with keystone and set a vCPU up to run it.

These work on a :class:`~pyqemu.target.i386.cpu_state.CPUX86State` and an
:class:`~system.memory.AddressSpace`, never on an accelerator, so the same
entry state serves kvm and interp (under kvm the caller marks the vCPU dirty).

:func:`setup_entry_state` builds what a direct-boot VMM (Firecracker,
kvmtool) builds before the first instruction, at fixed low addresses:

============  =========================================================
0x0500        GDT, 7 descriptors (the layout Linux uses):
              0x08 code32 DPL0, 0x10 code64 DPL0, 0x18 data DPL0,
              0x20 code32 DPL3, 0x28 data DPL3, 0x30 code64 DPL3
0x9000        PML4 (long64 only)
0xA000        PDPT
0xB000-0xEFFF 4 page directories of 2 MiB pages: identity map of 0..4 GiB
============  =========================================================

so guest code and data belong at 0x10000 and above (0x1000..0x8FFF is free
for real-mode programs).  Descriptors are written with the accessed bit set,
and the hidden segment caches are loaded from the very descriptors in memory,
so a guest that reloads a segment register gets what it already had.
"""

from __future__ import annotations

import struct
from typing import Literal

from pyqemu.hw.core.errors import LoaderError
from pyqemu.system.memory import AddressSpace
from pyqemu.target.i386 import asm as x86_asm
from pyqemu.target.i386.cpu_state import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    DESC_A_MASK,
    DESC_B_MASK,
    DESC_CS_MASK,
    DESC_DPL_SHIFT,
    DESC_G_MASK,
    DESC_L_MASK,
    DESC_P_MASK,
    DESC_R_MASK,
    DESC_S_MASK,
    DESC_TYPE_SHIFT,
    DESC_W_MASK,
    EFER_LMA,
    EFER_LME,
    EFLAGS_FIXED,
    IOPL_MASK,
    R_CS,
    R_DS,
    R_ES,
    R_ESP,
    R_FS,
    R_GS,
    R_SS,
    CPUX86State,
    SegmentCache,
)
from pyqemu.target.i386.descriptors import SYS_TSS32_BUSY, descriptor_cache, segment_descriptor
from pyqemu.target.i386.errors import AssemblerError
from pyqemu.target.i386.paging import PTE_P, PTE_PS, PTE_RW, PTE_US

__all__ = [
    "BOOT_AREA_END",
    "GDT_ADDR",
    "GDT_ENTRIES",
    "MODES",
    "PML4_ADDR",
    "SEL_CODE32",
    "SEL_CODE64",
    "SEL_DATA",
    "SEL_USER_CODE32",
    "SEL_USER_CODE64",
    "SEL_USER_DATA",
    "Mode",
    "assemble",
    "build_page_tables",
    "check_loadable",
    "descriptor_to_cache",
    "load_bytes",
    "load_flat_segments",
    "make_descriptor",
    "setup_entry_state",
    "write_gdt",
    "zero_bytes",
]

Mode = Literal["real", "prot32", "long64"]
MODES = ("real", "prot32", "long64")

# --- fixed boot-area layout -----------------------------------------------------------------
GDT_ADDR = 0x500
PML4_ADDR = 0x9000
PDPT_ADDR = 0xA000
PD_ADDR = 0xB000
PD_COUNT = 4                      # 4 x 1 GiB: the whole 32-bit space, MMIO included
BOOT_AREA_END = PD_ADDR + PD_COUNT * 0x1000

SEL_CODE32 = 0x08
SEL_CODE64 = 0x10
SEL_DATA = 0x18
SEL_USER_CODE32 = 0x20 | 3
SEL_USER_DATA = 0x28 | 3
SEL_USER_CODE64 = 0x30 | 3


def make_descriptor(base: int, limit: int, flags: int) -> int:
    """A code/data segment descriptor as a quadword (``segment_descriptor``, SDM vol. 3A,
    Figure 3-8); ``flags`` in :class:`SegmentCache`'s encoding, ``limit`` the 20-bit field."""
    return segment_descriptor(base, limit, flags)


def descriptor_to_cache(selector: int, desc: int) -> SegmentCache:
    """The hidden part a segment load caches (SDM 3.4.3): base, scaled limit, flags, from
    the descriptor's quadword (``descriptor_cache`` takes its low and high dwords)."""
    lo, hi = struct.unpack("<II", struct.pack("<Q", desc))
    return descriptor_cache(selector, lo, hi)


#: TR's hidden part while no task has been loaded: a present, busy 32-bit TSS at 0 (what
#: x86_cpu_reset leaves; VM entry demands a usable TR).
_RESET_TR_FLAGS = DESC_P_MASK | (SYS_TSS32_BUSY << DESC_TYPE_SHIFT)


_CODE = DESC_P_MASK | DESC_S_MASK | DESC_CS_MASK | DESC_R_MASK | DESC_A_MASK | DESC_G_MASK
_DATA = DESC_P_MASK | DESC_S_MASK | DESC_W_MASK | DESC_A_MASK | DESC_G_MASK | DESC_B_MASK
_DPL3 = 3 << DESC_DPL_SHIFT

#: The GDT, indexed by selector >> 3.
GDT_ENTRIES: tuple[int, ...] = (
    0,
    make_descriptor(0, 0xFFFFF, _CODE | DESC_B_MASK),            # 0x08 code32
    make_descriptor(0, 0xFFFFF, _CODE | DESC_L_MASK),            # 0x10 code64
    make_descriptor(0, 0xFFFFF, _DATA),                          # 0x18 data
    make_descriptor(0, 0xFFFFF, _CODE | DESC_B_MASK | _DPL3),    # 0x23 user code32
    make_descriptor(0, 0xFFFFF, _DATA | _DPL3),                  # 0x2b user data
    make_descriptor(0, 0xFFFFF, _CODE | DESC_L_MASK | _DPL3),    # 0x33 user code64
)


# --- memory helpers ---------------------------------------------------------------------------
def check_loadable(asp: AddressSpace, addr: int, size: int, what: str) -> None:
    """Raise :class:`LoaderError` unless [addr, addr+size) is all RAM or ROM in ``asp``."""
    end = addr + size
    pos = addr
    while pos < end:
        r = asp.lookup(pos)
        if r is None or not r.mr.is_ram:
            raise LoaderError(f"{what}: [{addr:#x}, {end:#x}) is not guest RAM "
                              f"(nothing loadable at {pos:#x})")
        pos = r.end


def load_bytes(asp: AddressSpace, addr: int, data: bytes, what: str = "load") -> None:
    """Copy ``data`` into guest memory at ``addr`` (ROM included, as a loader may)."""
    if addr < 0 or not data:
        raise LoaderError(f"{what}: nothing to load at {addr:#x}" if addr >= 0
                          else f"{what}: negative address {addr}")
    check_loadable(asp, addr, len(data), what)
    asp.write_bytes(addr, bytes(data), force=True)


def zero_bytes(asp: AddressSpace, addr: int, size: int, what: str = "load") -> None:
    """Zero ``size`` bytes of guest memory at ``addr`` (a bss), a MiB at a time, so a large
    bss never becomes one large host buffer."""
    if size <= 0:
        return
    check_loadable(asp, addr, size, what)
    chunk = bytes(min(size, 1 << 20))
    pos = 0
    while pos < size:
        n = min(len(chunk), size - pos)
        asp.write_bytes(addr + pos, chunk[:n] if n < len(chunk) else chunk, force=True)
        pos += n


# --- assembly -----------------------------------------------------------------------------------
def assemble(source: str, mode: str, addr: int = 0, *, syntax: str = "intel") -> bytes:
    """Assemble ``source`` for ``mode`` (``real``, ``prot32``, ``long64``) as if placed at
    ``addr``, with :func:`pyqemu.target.i386.asm.assemble`; an error is a
    :class:`LoaderError` (what a loader raises) with the assembler's message."""
    if mode not in ("real", "prot32", "long64"):
        raise LoaderError(f"assemble: unknown mode '{mode}' (real, prot32, long64)")
    try:
        return x86_asm.assemble(source, mode, addr, syntax=syntax)
    except AssemblerError as e:
        raise LoaderError(str(e)) from None


# --- entry state ---------------------------------------------------------------------------------
def write_gdt(asp: AddressSpace, env: CPUX86State) -> None:
    """Put :data:`GDT_ENTRIES` at :data:`GDT_ADDR` and point GDTR at it."""
    data = b"".join(struct.pack("<Q", d) for d in GDT_ENTRIES)
    load_bytes(asp, GDT_ADDR, data, "GDT")
    env.gdt = SegmentCache(0, GDT_ADDR, len(data) - 1, 0)


def load_flat_segments(env: CPUX86State, code_sel: int, data_sel: int) -> None:
    """Load CS and DS/ES/FS/GS/SS caches from the GDT's descriptors (as a far jump + mov would)."""
    env.segs[R_CS] = descriptor_to_cache(code_sel, GDT_ENTRIES[code_sel >> 3])
    for r in (R_DS, R_ES, R_FS, R_GS, R_SS):
        env.segs[r] = descriptor_to_cache(data_sel, GDT_ENTRIES[data_sel >> 3])


def _valid_system_segments(env: CPUX86State) -> None:
    # VM entry wants a present busy TSS in TR and an LDT that is either unusable or
    # valid; keep the reset values unless someone broke them.  An empty IDT
    # (limit 0) makes any exception a triple fault: a clean, visible stop.
    if not env.tr.flags & DESC_P_MASK:
        env.tr = SegmentCache(0, 0, 0xFFFF, _RESET_TR_FLAGS)
    env.idt = SegmentCache(0, 0, 0, 0)


def build_page_tables(asp: AddressSpace, user: bool = False) -> int:
    """Identity-map 0..4 GiB with 2 MiB pages (SDM vol. 3A, 4.5, Figure 4-9); return CR3.

    PML4[0] -> PDPT; PDPT[i] -> PD i (i < 4); PD i entry j maps 2 MiB page
    (i * 512 + j).  Entries are present and writable, and user-accessible
    (U/S) at every level when ``user``, since U/S is ANDed along the walk.
    """
    flags = PTE_P | PTE_RW | (PTE_US if user else 0)
    load_bytes(asp, PML4_ADDR, struct.pack("<Q", PDPT_ADDR | flags) + bytes(4088), "PML4")
    pdpt = b"".join(struct.pack("<Q", (PD_ADDR + i * 0x1000) | flags) for i in range(PD_COUNT))
    load_bytes(asp, PDPT_ADDR, pdpt + bytes(4096 - len(pdpt)), "PDPT")
    for i in range(PD_COUNT):
        pd = b"".join(struct.pack("<Q", ((i * 512 + j) << 21) | flags | PTE_PS)
                      for j in range(512))
        load_bytes(asp, PD_ADDR + i * 0x1000, pd, "page directory")
    return PML4_ADDR


def setup_entry_state(env: CPUX86State, asp: AddressSpace, mode: str, entry: int,
                      stack: int | None = None, *, privilege: int = 0,
                      iopl: int | None = None) -> None:
    """Make ``env`` start executing at linear address ``entry`` in ``mode``.

    ``real``: ``entry`` below 1 MiB.  Below 64 KiB every segment is 0 and
    IP = entry (a boot sector at 0x7C00 runs as 0000:7C00); above, every
    segment is ``entry >> 4`` and IP = ``entry & 0xF``.  Default stack:
    SS:SP = CS:IP, i.e. just below ``entry`` (above 64 KiB that is SP = IP,
    a few bytes, and the first push wraps to the top of the segment).

    ``prot32``: CR0.PE, the GDT above, CS = 0x08 (flat 32-bit code),
    DS/ES/FS/GS/SS = 0x18 (flat data), EFLAGS.IF = 0, no paging.

    ``long64``: the GDT and identity page tables above, CR3 = 0x9000,
    CR4.PAE, EFER.LME|LMA, CR0.PE|PG, CS = 0x10 (L = 1); with
    ``privilege=3`` CS = 0x33 and SS/DS/ES = 0x2B (DPL 3), user-accessible
    pages and, unless ``iopl`` says otherwise, IOPL 3 so that IN/OUT reach
    the devices instead of faulting.

    ``stack`` is the initial stack pointer as a linear address (default:
    ``entry``, so the stack grows down below the code).
    """
    if mode not in MODES:
        raise LoaderError(f"entry state: unknown mode '{mode}' (real, prot32, long64)")
    if privilege not in (0, 3):
        raise LoaderError(f"entry state: privilege must be 0 or 3, not {privilege}")
    if privilege and mode != "long64":
        raise LoaderError("entry state: privilege=3 is supported for long64 only")
    if iopl is None:
        iopl = 3 if privilege else 0
    if not 0 <= iopl <= 3:
        raise LoaderError(f"entry state: iopl must be 0..3, not {iopl}")
    sp = entry if stack is None else stack
    env.eflags = EFLAGS_FIXED | (iopl << 12 & IOPL_MASK)
    env.a20_mask = -1
    if mode == "real":
        _setup_real(env, entry, sp)
        return
    if mode == "prot32":
        if not 0 <= entry <= 0xFFFFFFFF or not 0 <= sp <= 0x100000000:
            raise LoaderError(f"entry state: prot32 entry {entry:#x} or stack {sp:#x} "
                              "is beyond 4 GiB")
        write_gdt(asp, env)
        load_flat_segments(env, SEL_CODE32, SEL_DATA)
        env.cr[0] = CR0_PE | CR0_ET
        env.cr[3] = 0
        env.cr[4] = 0
        env.efer = 0
        env.rip = entry
        env.regs[R_ESP] = sp & 0xFFFFFFFF
        _valid_system_segments(env)
        return
    write_gdt(asp, env)
    user = privilege == 3
    env.cr[3] = build_page_tables(asp, user)
    env.cr[4] = CR4_PAE
    env.efer = EFER_LME | EFER_LMA
    env.cr[0] = CR0_PE | CR0_ET | CR0_PG
    if user:
        load_flat_segments(env, SEL_USER_CODE64, SEL_USER_DATA)
    else:
        load_flat_segments(env, SEL_CODE64, SEL_DATA)
    env.rip = entry
    env.regs[R_ESP] = sp & 0xFFFFFFFFFFFFFFFF
    _valid_system_segments(env)


def _setup_real(env: CPUX86State, entry: int, sp: int) -> None:
    if not 0 <= entry < 0x100000:
        raise LoaderError(f"entry state: real-mode entry {entry:#x} is not below 1 MiB")
    seg = 0 if entry < 0x10000 else entry >> 4
    base = seg << 4
    if not base <= sp <= base + 0x10000:
        raise LoaderError(f"entry state: real-mode stack {sp:#x} is outside the 64 KiB "
                          f"segment at {base:#x}")
    code = DESC_P_MASK | DESC_S_MASK | DESC_CS_MASK | DESC_R_MASK | DESC_A_MASK
    data = DESC_P_MASK | DESC_S_MASK | DESC_W_MASK | DESC_A_MASK
    env.segs[R_CS] = SegmentCache(seg, base, 0xFFFF, code)
    for r in (R_DS, R_ES, R_FS, R_GS, R_SS):
        env.segs[r] = SegmentCache(seg, base, 0xFFFF, data)
    env.cr[0] = CR0_ET
    env.cr[3] = env.cr[4] = 0
    env.efer = 0
    env.gdt = SegmentCache(0, 0, 0xFFFF, 0)
    env.idt = SegmentCache(0, 0, 0x3FF, 0)  # the real-mode IVT at 0 (SDM 20.1.4)
    env.rip = entry - base
    env.regs[R_ESP] = (sp - base) & 0xFFFF
    if not env.tr.flags & DESC_P_MASK:
        env.tr = SegmentCache(0, 0, 0xFFFF, _RESET_TR_FLAGS)
