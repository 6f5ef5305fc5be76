"""Descriptor and TSS structures (target/i386/descriptors.py) against the SDM's figures."""

from __future__ import annotations

import pytest

from pyqemu.target.i386.cpu_state import (
    DESC_A_MASK,
    DESC_B_MASK,
    DESC_CS_MASK,
    DESC_G_MASK,
    DESC_P_MASK,
    DESC_R_MASK,
    DESC_S_MASK,
    SegmentCache,
)
from pyqemu.target.i386.descriptors import (
    GATE_CALL32,
    GATE_INT32,
    TSS16,
    TSS32,
    TSS64,
    Gate,
    descriptor_cache,
    gate_descriptor,
    segment_descriptor,
)

CODE32 = DESC_P_MASK | DESC_S_MASK | DESC_CS_MASK | DESC_R_MASK | DESC_A_MASK | DESC_B_MASK


def test_segment_descriptor_fields_sit_where_figure_3_8_puts_them() -> None:
    d = segment_descriptor(0x12345678, 0xABCDE, CODE32 | DESC_G_MASK)
    lo, hi = d & 0xFFFFFFFF, d >> 32
    assert lo == 0x5678_BCDE                          # base 15:0, limit 15:0
    assert hi & 0xFF == 0x34 and hi >> 24 == 0x12     # base 23:16, base 31:24
    assert hi >> 16 & 0xF == 0xA                      # limit 19:16
    assert descriptor_cache(0x08, lo, hi) == SegmentCache(
        0x08, 0x12345678, 0xABCDEFFF, CODE32 | DESC_G_MASK)
    # The flat 4 GiB code segment every loader uses.
    assert segment_descriptor(0, 0xFFFFF, CODE32 | DESC_G_MASK) == 0x00CF9B000000FFFF
    with pytest.raises(ValueError, match="20 bits"):
        segment_descriptor(0, 0x100000, CODE32)


def test_gate_round_trip_legacy_and_ia32e() -> None:
    raw = gate_descriptor(0x08, 0x12345678, GATE_CALL32, dpl=3, param_count=2)
    g = Gate.decode(int.from_bytes(raw[:4], "little"), int.from_bytes(raw[4:], "little"))
    assert (g.selector, g.offset, g.type, g.dpl, g.present, g.param_count) == \
        (0x08, 0x12345678, GATE_CALL32, 3, True, 2)
    raw = gate_descriptor(0x10, 0xFFFF_8000_1234_5678, GATE_INT32, ist=5, ia32e=True)
    assert len(raw) == 16
    words = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, 16, 4)]
    g = Gate.decode(words[0], words[1], words[2])
    assert g.offset == 0xFFFF_8000_1234_5678 and g.ist == 5 and g.type == GATE_INT32


def test_tss_layouts_match_the_figures() -> None:
    # Figure 7-2: ESP0 at 4, CR3 at 1CH, EIP at 20H, EAX at 28H, ES at 48H, LDT at 60H.
    assert [TSS32.offset(n) for n in ("esp0", "ss0", "cr3", "eip", "eax", "edi", "es", "gs",
                                      "ldt", "trap", "iomap_base")] == \
        [0x04, 0x08, 0x1C, 0x20, 0x28, 0x44, 0x48, 0x5C, 0x60, 0x64, 0x66]
    assert TSS32.min_limit == 0x67 and TSS16.min_limit == 0x2B
    # Figure 7-10: SP0 at 2, IP at 0EH, AX at 12H, ES at 22H, LDT at 2AH.
    assert [TSS16.offset(n) for n in ("sp0", "ss2", "ip", "flags", "ax", "di", "es", "ds",
                                      "ldt")] == [2, 0x0C, 0x0E, 0x10, 0x12, 0x20, 0x22, 0x28, 0x2A]
    # Figure 8-11: RSP0 at 4, IST1 at 24H, IST7 at 54H, the I/O map base at 66H.
    assert [TSS64.offset(n) for n in ("rsp0", "rsp2", "ist1", "ist7", "iomap_base")] == \
        [0x04, 0x14, 0x24, 0x54, 0x66]
    assert TSS32.stack(1) == (TSS32["esp1"], TSS32["ss1"])
    assert TSS64.stack(2) == (TSS64["rsp2"], None)


def test_tss_pack_and_unpack_are_inverse() -> None:
    raw = TSS32.pack(esp0=0x9000, ss0=0x10, eip=0x1234, eflags=0x202, cs=0x08, ldt=0x28)
    assert len(raw) == 0x68
    got = TSS32.unpack(raw)
    assert (got["esp0"], got["ss0"], got["eip"], got["cs"], got["ldt"], got["eax"]) == \
        (0x9000, 0x10, 0x1234, 0x08, 0x28, 0)
    with pytest.raises(ValueError, match="16-bit TSS"):
        TSS16.unpack(b"\0" * 10)
