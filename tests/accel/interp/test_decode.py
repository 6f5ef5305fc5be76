"""Decoding: the SIB byte without an index, and what a decoder surprise becomes.

Intel SDM vol. 2A, 2.1.5, Table 2-3 ("32-Bit Addressing Forms with the SIB Byte"): an
index field of 100b means no index register ("none"), whatever the scale; in 64-bit
mode REX.X extends the field, so 100b with REX.X = 1 is R12 (2.2.1.2, Table 2-4).
capstone reports the absent index as the pseudo-register "riz" (64-bit addressing) or
"eiz" (32-bit addressing); it must decode as no index at all.
"""

from __future__ import annotations

from typing import Any

import pytest

from pyqemu.accel.interp import translate
from pyqemu.accel.interp.errors import InterpError
from pyqemu.accel.ops import EXCP_HLT
from pyqemu.util.error import PyQemuError
from tests.accel.interp.harness import Guest

AT = 0x10000


def run_bytes(bits: int, code: bytes, **regs: int) -> Guest:
    g = Guest(bits)
    g.mem.write_bytes(AT, code)
    g.env.rip = AT
    for name, value in regs.items():
        g.env.set_reg(name, value)
    g.core.tb_flush()
    assert g.core.run(100) == EXCP_HLT
    assert g.env.rip == AT + len(code)
    return g


def test_sib_without_index_in_64_bit_mode_is_the_base_alone() -> None:
    # 8D 04 A0: LEA EAX, [RAX + (none)*4] -- ModRM 04 (SIB follows), SIB A0: scale 4,
    # index 100b (none), base 000b (RAX).  The reported case: it raised KeyError 'riz'.
    g = run_bytes(64, bytes.fromhex("8d04a0f4"), rax=0x123456789, rbx=0x55)
    assert g.env.regs[0] == 0x23456789           # a 32-bit destination zero-extends


def test_sib_index_100b_with_rex_x_is_r12() -> None:
    # 4A 8D 04 A0: REX.W and REX.X, LEA RAX, [RAX + R12*4].
    g = run_bytes(64, bytes.fromhex("4a8d04a0f4"), rax=0x1000, r12=0x10)
    assert g.env.regs[0] == 0x1040


def test_sib_without_index_with_32_bit_addressing_in_64_bit_mode() -> None:
    # 67 8D 04 A0: LEA EAX, [EAX + (none)*4] ("eiz"): the address wraps to 32 bits.
    g = run_bytes(64, bytes.fromhex("678d04a0f4"), rax=0xFFFF_FFFF_0000_1234)
    assert g.env.regs[0] == 0x1234


def test_sib_without_index_addresses_memory() -> None:
    # 8B 04 A0: MOV EAX, [RAX + (none)*4] in 64-bit mode, and the same bytes in 32-bit mode.
    for bits in (64, 32):
        g = Guest(bits)
        g.mem.write(0x3000, 0xCAFEF00D, 4)
        g.mem.write_bytes(AT, bytes.fromhex("8b04a0f4"))
        g.env.rip, g.env.regs[0] = AT, 0x3000
        g.core.tb_flush()
        assert g.core.run(100) == EXCP_HLT
        assert g.env.regs[0] == 0xCAFEF00D, bits


def test_a_decoder_surprise_is_an_interp_error_naming_the_instruction(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def surprise(self: Any, ci: Any, o: Any) -> Any:
        raise KeyError("xyz")

    monkeypatch.setattr(translate.Translator, "_operand", surprise)
    g = Guest(64)
    g.mem.write_bytes(AT, bytes.fromhex("8d04a0f4"))
    g.env.rip = AT
    g.core.tb_flush()
    with pytest.raises(InterpError) as e:
        g.core.run(100)
    assert isinstance(e.value, PyQemuError)
    assert str(e.value).startswith(
        "interp: cannot translate 'lea eax, [rax + riz*4]' (8d 04 a0) at 0x10000 (cs:ip ")
    assert "KeyError" in str(e.value)
