"""The one keystone wrapper (target/i386/asm.py)."""

from __future__ import annotations

import pytest

from pyqemu.target.i386.asm import assemble
from pyqemu.target.i386.errors import AssemblerError


def test_modes_by_name_or_bits_give_the_same_bytes() -> None:
    assert assemble("mov eax, 0x12345678", "prot32") == b"\xb8\x78\x56\x34\x12"
    assert assemble("mov eax, 0x12345678", 32) == assemble("mov eax, 0x12345678", "prot32")
    assert assemble("mov ax, 0x1234", "real") == b"\xb8\x34\x12"
    assert assemble("mov rax, rbx", 64) == b"\x48\x89\xd8"


def test_nasm_far_jump_does_not_change_later_intel_assembly() -> None:
    assert assemble("jmp 0x8:0x1000", "real", syntax="nasm") == b"\xea\x00\x10\x08\x00"
    # The NASM assembly ran in a child: decimal constants here stay decimal.
    assert assemble("mov al, 48", "real") == b"\xb0\x30"


def test_errors_name_the_line_and_the_mode() -> None:
    with pytest.raises(AssemblerError, match=r"assemble \(prot32\): line 3: `bogus eax`"):
        assemble("nop\nmov eax, 1\nbogus eax\nnop", "prot32")
    with pytest.raises(AssemblerError, match="unknown mode 'v86'"):
        assemble("nop", "v86")
    with pytest.raises(AssemblerError, match="unknown syntax 'att'"):
        assemble("nop", "prot32", syntax="att")
    with pytest.raises(AssemblerError, match="assembled to nothing"):
        assemble("only_a_label:", "prot32")
