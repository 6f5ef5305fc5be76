"""The one table of undefined flags (accel/interp/undefined_flags.py) says what the SDM says."""

from __future__ import annotations

import pytest

from pyqemu.accel.interp.undefined_flags import undefined_flags
from pyqemu.target.i386.cpu_state import CC_A, CC_C, CC_O, CC_P, CC_S, CC_Z

ALL = CC_C | CC_P | CC_A | CC_Z | CC_S | CC_O


@pytest.mark.parametrize("mnemonic, undefined", [
    ("and", CC_A), ("mul", CC_S | CC_Z | CC_A | CC_P), ("div", ALL), ("idiv", ALL),
    ("bsf", CC_C | CC_O | CC_S | CC_A | CC_P), ("daa", CC_O), ("das", CC_O),
    ("aaa", CC_O | CC_S | CC_Z | CC_P), ("aas", CC_O | CC_S | CC_Z | CC_P),
    ("aam", CC_O | CC_A | CC_C), ("aad", CC_O | CC_A | CC_C), ("add", 0), ("cmp", 0),
])
def test_fixed_rules(mnemonic: str, undefined: int) -> None:
    assert undefined_flags(mnemonic) == undefined
    assert undefined_flags(mnemonic.upper()) == undefined


@pytest.mark.parametrize("count, width, undefined", [
    (0, 32, 0), (1, 32, CC_A), (2, 32, CC_A | CC_O), (32, 32, CC_A | CC_O),
    (17, 16, ALL), (None, 16, ALL),
])
def test_double_shifts(count: int | None, width: int, undefined: int) -> None:
    # SDM vol. 2B, SHLD/SHRD: no flags for a zero count; AF for any shift; OF beyond one
    # bit; everything when the count exceeds the operand size.
    assert undefined_flags("shld", width, count) == undefined
    assert undefined_flags("shrd", width, count) == undefined


def test_shifts_and_rotates_depend_on_the_count() -> None:
    assert undefined_flags("shl", 32, 0) == 0
    assert undefined_flags("shl", 32, 1) == CC_A
    assert undefined_flags("shr", 8, 9) == CC_A | CC_O | CC_C
    assert undefined_flags("sar", 8, 9) == CC_A | CC_O
    assert undefined_flags("rol", 32, 1) == 0 and undefined_flags("rcr", 32, 3) == CC_O
