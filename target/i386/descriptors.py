"""Segment and gate descriptors and the TSS layouts, as named structures (Intel SDM vol. 3A).

Descriptors (8 bytes; 16 for system descriptors and gates in IA-32e mode) are
handled as their two (or four) dwords, as the processor reads them:

* code, data and system segment descriptors: 3.4.5, Figure 3-8 "Segment
  Descriptor"; the 16-byte TSS/LDT descriptor of IA-32e mode: 8.2.3, Figure 8-4
  (7.2.3 in older editions);
* call gates: 5.8.3, Figure 5-8 (16-byte IA-32e form: 5.8.3.1, Figure 5-9);
  interrupt, trap and task gates in the IDT: 6.11, Figure 6-2 (IA-32e: 6.14.1,
  Figure 6-8).

The TSS layouts give each field's offset and width by name:

* :data:`TSS32`: the 32-bit TSS, Figure 7-2 (8.2.1 in newer editions);
* :data:`TSS16`: the 16-bit TSS, Figure 7-10 ("16-Bit TSS Format", 7.6);
* :data:`TSS64`: the 64-bit TSS, Figure 8-11 ("64-Bit TSS Format"; 7.7,
  Figure 7-11 in older editions).

``SegmentCache.flags`` keeps a descriptor's attribute bits where its high dword
has them (type at bit 8 ... G at 23), so a descriptor's attributes are
``hi & DESCRIPTOR_ATTR_MASK``.
"""

from __future__ import annotations

from typing import NamedTuple

from pyqemu.target.i386.cpu_state import DESC_DPL_SHIFT, DESC_G_MASK, DESC_P_MASK, SegmentCache

__all__ = [
    "DESCRIPTOR_ATTR_MASK",
    "GATE_CALL16",
    "GATE_CALL32",
    "GATE_INT16",
    "GATE_INT32",
    "GATE_TASK",
    "GATE_TRAP16",
    "GATE_TRAP32",
    "SYS_LDT",
    "SYS_TSS16",
    "SYS_TSS16_BUSY",
    "SYS_TSS32",
    "SYS_TSS32_BUSY",
    "TSS16",
    "TSS32",
    "TSS64",
    "Gate",
    "TssField",
    "TssLayout",
    "descriptor_base",
    "descriptor_cache",
    "descriptor_limit",
    "gate_descriptor",
    "segment_descriptor",
]

#: the attribute bits of a descriptor's high dword (type, S, DPL, P, AVL, L, D/B, G)
DESCRIPTOR_ATTR_MASK = 0x00F0FF00

# System-segment and gate types, S = 0 (SDM vol. 3A, 3.5, Table 3-2).  In IA-32e mode
# the 32-bit types name the 64-bit TSS, call, interrupt and trap gates.
SYS_TSS16, SYS_LDT, SYS_TSS16_BUSY, GATE_CALL16 = 0x1, 0x2, 0x3, 0x4
GATE_TASK, GATE_INT16, GATE_TRAP16 = 0x5, 0x6, 0x7
SYS_TSS32, SYS_TSS32_BUSY, GATE_CALL32, GATE_INT32, GATE_TRAP32 = 0x9, 0xB, 0xC, 0xE, 0xF


# -- segment descriptors (Figure 3-8) ---------------------------------------------------------

def descriptor_base(lo: int, hi: int) -> int:
    """Base 31:0: bits 15:0 in the low dword's upper half, 23:16 and 31:24 in the high dword."""
    return (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)


def descriptor_limit(lo: int, hi: int) -> int:
    """The limit in bytes: the 20-bit field, scaled by 4 KiB (low 12 bits set) when G = 1."""
    limit = (lo & 0xFFFF) | (hi & 0xF0000)
    return (limit << 12) | 0xFFF if hi & DESC_G_MASK else limit


def descriptor_cache(selector: int, lo: int, hi: int) -> SegmentCache:
    """What loading ``selector`` with this descriptor puts in the hidden part (3.4.3)."""
    return SegmentCache(selector, descriptor_base(lo, hi), descriptor_limit(lo, hi),
                        hi & DESCRIPTOR_ATTR_MASK)


def segment_descriptor(base: int, limit: int, flags: int) -> int:
    """The 8-byte descriptor, as one little-endian quadword, of a segment at ``base``
    with the 20-bit ``limit`` field (in 4 KiB units when ``flags`` has G) and the
    attribute bits ``flags`` in ``SegmentCache.flags``' encoding."""
    if not 0 <= limit <= 0xFFFFF:
        raise ValueError(f"descriptor limit field {limit:#x} does not fit 20 bits")
    lo = ((base & 0xFFFF) << 16) | (limit & 0xFFFF)
    hi = ((base >> 16) & 0xFF) | (flags & DESCRIPTOR_ATTR_MASK) | (limit & 0xF0000) \
        | (base & 0xFF000000)
    return lo | (hi << 32)


# -- gates (Figures 5-8, 5-9, 6-2, 6-8) ---------------------------------------------------------

class Gate(NamedTuple):
    """A call, interrupt, trap or task gate, decoded."""

    selector: int        # the target code segment (the TSS for a task gate)
    offset: int          # entry point (bits 63:32 from the upper 8 bytes in IA-32e mode)
    type: int            # GATE_* (Table 3-2)
    dpl: int
    present: bool
    param_count: int     # call gates: dwords/words copied to the new stack (5.8.5)
    ist: int             # IA-32e interrupt and trap gates: the IST index, 0 for none

    @classmethod
    def decode(cls, lo: int, hi: int, upper: int = 0) -> Gate:
        """From the descriptor's low and high dwords and, in IA-32e mode, the low dword
        of its upper 8 bytes (offset 63:32)."""
        offset = (lo & 0xFFFF) | (hi & 0xFFFF0000) | ((upper & 0xFFFFFFFF) << 32)
        return cls(lo >> 16 & 0xFFFF, offset, hi >> 8 & 0x1F, hi >> DESC_DPL_SHIFT & 3,
                   bool(hi & DESC_P_MASK), hi & 0x1F, hi & 0x7)


def gate_descriptor(selector: int, offset: int, gate_type: int, dpl: int = 0, *,
                    present: bool = True, param_count: int = 0, ist: int = 0,
                    ia32e: bool = False) -> bytes:
    """The 8-byte gate (16 bytes with ``ia32e``), as the bytes a descriptor table holds.
    ``param_count`` goes in bits 4:0 of a call gate's high dword, ``ist`` in bits 2:0 of
    an IA-32e interrupt or trap gate's."""
    lo = (selector & 0xFFFF) << 16 | (offset & 0xFFFF)
    hi = (offset & 0xFFFF0000) | (gate_type & 0x1F) << 8 | (dpl & 3) << DESC_DPL_SHIFT \
        | (DESC_P_MASK if present else 0) | (param_count & 0x1F) | (ist & 0x7)
    raw = lo.to_bytes(4, "little") + hi.to_bytes(4, "little")
    if ia32e:
        raw += ((offset >> 32) & 0xFFFFFFFF).to_bytes(4, "little") + bytes(4)
    return raw


# -- task-state segments (Figures 7-2, 7-10, 8-11) -------------------------------------------

class TssField(NamedTuple):
    offset: int
    size: int


class TssLayout:
    """One TSS format: its fields by name, its size and the smallest limit a task
    switch accepts (7.2.2: 67H for a 32-bit TSS; 2BH for a 16-bit one, 7.6)."""

    def __init__(self, name: str, size: int, fields: dict[str, TssField],
                 stack_sp: tuple[str, ...], stack_ss: tuple[str, ...]) -> None:
        self.name = name
        self.size = size
        self.min_limit = size - 1
        self.fields = fields
        self._stack_sp = stack_sp
        self._stack_ss = stack_ss

    def __getitem__(self, name: str) -> TssField:
        return self.fields[name]

    def offset(self, name: str) -> int:
        return self.fields[name].offset

    def stack(self, level: int) -> tuple[TssField, TssField | None]:
        """The stack pointer and stack segment fields for privilege ``level`` 0-2 (the
        64-bit TSS has no SSn: IA-32e mode loads a null SS)."""
        sp = self.fields[self._stack_sp[level]]
        ss = self.fields[self._stack_ss[level]] if self._stack_ss else None
        return sp, ss

    def unpack(self, raw: bytes) -> dict[str, int]:
        """Every field of a TSS image (``raw`` at least :attr:`size` bytes)."""
        if len(raw) < self.size:
            raise ValueError(f"{self.name}: {len(raw)} bytes, the format has {self.size}")
        return {n: int.from_bytes(raw[f.offset:f.offset + f.size], "little")
                for n, f in self.fields.items()}

    def pack(self, **values: int) -> bytes:
        """A TSS image with the named fields set and everything else zero."""
        out = bytearray(self.size)
        for name, value in values.items():
            f = self.fields[name]
            out[f.offset:f.offset + f.size] = (value & ((1 << (8 * f.size)) - 1)).to_bytes(
                f.size, "little")
        return bytes(out)


_GPRS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
_SEGS = ("es", "cs", "ss", "ds", "fs", "gs")

TSS32 = TssLayout(
    "32-bit TSS", 0x68,
    {"link": TssField(0x00, 2),
     "esp0": TssField(0x04, 4), "ss0": TssField(0x08, 2),
     "esp1": TssField(0x0C, 4), "ss1": TssField(0x10, 2),
     "esp2": TssField(0x14, 4), "ss2": TssField(0x18, 2),
     "cr3": TssField(0x1C, 4), "eip": TssField(0x20, 4), "eflags": TssField(0x24, 4),
     **{r: TssField(0x28 + 4 * i, 4) for i, r in enumerate(_GPRS)},
     **{s: TssField(0x48 + 4 * i, 2) for i, s in enumerate(_SEGS)},
     "ldt": TssField(0x60, 2), "trap": TssField(0x64, 2), "iomap_base": TssField(0x66, 2)},
    ("esp0", "esp1", "esp2"), ("ss0", "ss1", "ss2"))

TSS16 = TssLayout(
    "16-bit TSS", 0x2C,
    {"link": TssField(0x00, 2),
     "sp0": TssField(0x02, 2), "ss0": TssField(0x04, 2),
     "sp1": TssField(0x06, 2), "ss1": TssField(0x08, 2),
     "sp2": TssField(0x0A, 2), "ss2": TssField(0x0C, 2),
     "ip": TssField(0x0E, 2), "flags": TssField(0x10, 2),
     **{r[1:]: TssField(0x12 + 2 * i, 2) for i, r in enumerate(_GPRS)},
     **{s: TssField(0x22 + 2 * i, 2) for i, s in enumerate(_SEGS[:4])},
     "ldt": TssField(0x2A, 2)},
    ("sp0", "sp1", "sp2"), ("ss0", "ss1", "ss2"))

TSS64 = TssLayout(
    "64-bit TSS", 0x68,
    {"rsp0": TssField(0x04, 8), "rsp1": TssField(0x0C, 8), "rsp2": TssField(0x14, 8),
     **{f"ist{n}": TssField(0x24 + 8 * (n - 1), 8) for n in range(1, 8)},
     "iomap_base": TssField(0x66, 2)},
    ("rsp0", "rsp1", "rsp2"), ())
