"""pyqemu.fpu's interface and the results the manuals spell out, without the processor
(test_sse.py and test_x87.py compare everything else with it)."""

from __future__ import annotations

import pytest

from pyqemu import fpu
from pyqemu.fpu import x87

ONE64 = 0x3FF0000000000000
TWO64 = 0x4000000000000000
ONE80 = 0x3FFF8000000000000000
F64_DEFAULT_NAN = 0xFFF8000000000000
X80_INDEFINITE = 0xFFFFC000000000000000


def test_status_refuses_a_rounding_mode_outside_RC() -> None:
    with pytest.raises(ValueError, match="rounding must be an RC value"):
        fpu.FloatStatus(4)


def test_status_refuses_a_precision_the_x87_has_not() -> None:
    with pytest.raises(ValueError, match="precision must be 24, 53 or 64"):
        fpu.FloatStatus(precision=32)


def test_flags_accumulate_across_operations() -> None:
    s = fpu.FloatStatus()
    fpu.float64_div(ONE64, 0x4008000000000000, s)        # 1/3: inexact
    fpu.float64_div(ONE64, 0, s)                         # 1/0: divide by zero
    assert s.flags & fpu.FLAGS_EXCEPTIONS == fpu.FLAG_INEXACT | fpu.FLAG_DIVBYZERO


def test_an_exact_sum_raises_no_flag() -> None:
    s = fpu.FloatStatus()
    assert fpu.float64_add(ONE64, TWO64, s) == 0x4008000000000000
    assert s.flags == 0


def test_invalid_sse_operation_gives_the_negative_default_nan() -> None:
    s = fpu.FloatStatus()
    assert fpu.float64_sqrt(0xBFF0000000000000, s) == F64_DEFAULT_NAN
    assert fpu.float32_sub(0x7F800000, 0x7F800000, s) == 0xFFC00000
    assert s.flags == fpu.FLAG_INVALID


def test_sse_propagates_the_first_source_nan_quieted() -> None:
    s = fpu.FloatStatus()
    snan, qnan = 0x7FF0000000000001, 0xFFF8000000000002
    assert fpu.float64_mul(snan, qnan, s) == 0x7FF8000000000001
    assert s.flags == fpu.FLAG_INVALID


def test_min_and_max_return_the_second_operand_for_nans_and_zeros() -> None:
    s = fpu.FloatStatus()
    assert fpu.float64_min(0, 1 << 63, s) == 1 << 63
    assert fpu.float64_max(1 << 63, 0, s) == 0
    assert s.flags == 0
    snan = 0x7FF0000000000001
    assert fpu.float64_min(snan, ONE64, s) == ONE64
    assert fpu.float64_max(ONE64, snan, s) == snan          # returned as it is, not quieted
    assert s.flags == fpu.FLAG_INVALID


def test_daz_reads_a_denormal_as_zero_without_de() -> None:
    s = fpu.FloatStatus(daz=True)
    assert fpu.float64_add(1, 0, s) == 0
    assert s.flags == 0
    s = fpu.FloatStatus()
    assert fpu.float64_add(1, 0, s) == 1
    assert s.flags == fpu.FLAG_DENORMAL


def test_ftz_flushes_a_tiny_result_with_underflow_and_inexact() -> None:
    s = fpu.FloatStatus(ftz=True)
    min_normal = 0x0010000000000000
    assert fpu.float64_mul(min_normal, 0x3FE0000000000000, s) == 0     # 2**-1023
    assert s.flags == fpu.FLAG_UNDERFLOW | fpu.FLAG_INEXACT


def test_a_tiny_exact_result_raises_no_underflow_with_ftz_off() -> None:
    s = fpu.FloatStatus()
    assert fpu.float64_mul(0x0010000000000000, 0x3FE0000000000000, s) == 0x0008000000000000
    assert s.flags == 0


def test_conversion_out_of_range_gives_the_integer_indefinite() -> None:
    s = fpu.FloatStatus()
    assert fpu.float64_to_int32(0x41E0000000000000, s) == 0x80000000     # 2**31
    assert s.flags == fpu.FLAG_INVALID
    s = fpu.FloatStatus()
    assert fpu.float64_to_int32(0xC1E0000000000000, s) == 0x80000000     # -2**31 fits
    assert s.flags == 0


def test_integer_operands_take_patterns_or_negative_ints() -> None:
    s = fpu.FloatStatus()
    assert fpu.int32_to_float64(-1, s) == fpu.int32_to_float64(0xFFFFFFFF, s) == 0xBFF0000000000000


def test_round_to_int_takes_its_mode_and_can_suppress_inexact() -> None:
    s = fpu.FloatStatus(fpu.ROUND_NEAREST_EVEN)
    two_and_half = 0x4004000000000000
    assert fpu.float64_round_to_int(two_and_half, s, fpu.ROUND_UP, inexact=False) == \
        0x4008000000000000
    assert s.flags == 0
    assert fpu.float64_round_to_int(two_and_half, s, fpu.ROUND_NEAREST_EVEN) == TWO64
    assert s.flags == fpu.FLAG_INEXACT


def test_x87_unsupported_encoding_is_invalid_and_gives_the_indefinite() -> None:
    s = fpu.FloatStatus()
    unnormal = 0x3FFF4000000000000000
    assert fpu.floatx80_add(unnormal, ONE80, s) == X80_INDEFINITE
    assert s.flags == fpu.FLAG_INVALID


def test_x87_keeps_the_nan_with_the_larger_significand() -> None:
    s = fpu.FloatStatus()
    small, large = 0x7FFFC000000000000001, 0xFFFFC000000000000002
    assert fpu.floatx80_add(small, large, s) == large
    assert fpu.floatx80_add(large, small, s) == large
    assert s.flags == 0


def test_precision_control_rounds_the_significand_only() -> None:
    third = fpu.floatx80_div(ONE80, 0x4000C000000000000000, fpu.FloatStatus(precision=24))
    assert third == 0x3FFDAAAAAB0000000000


def test_fscale_multiplies_by_a_power_of_two_of_the_truncated_scale() -> None:
    s = fpu.FloatStatus()
    three_and_half = 0x4000E000000000000000
    assert fpu.floatx80_scale(ONE80, three_and_half, s) == 0x40028000000000000000  # 8
    assert s.flags == 0


def test_fprem_reports_the_quotients_low_bits() -> None:
    s = fpu.FloatStatus()
    seven, two = 0x4001E000000000000000, 0x40008000000000000000
    r, cc = fpu.floatx80_fprem(seven, two, s)
    assert r == ONE80                                       # 7 = 3 * 2 + 1
    assert cc == fpu.FSW_C1 | fpu.FSW_C3                   # Q = 3: Q0 -> C1, Q1 -> C3


def test_fprem_far_apart_is_partial_with_C2() -> None:
    s = fpu.FloatStatus()
    big = 0x40C8C000000000000000                          # 1.5 * 2**201
    r, cc = fpu.floatx80_fprem(big, ONE80, s)
    assert cc == fpu.FSW_C2
    assert (r >> 64) - 0x3FFF <= 201 - x87.fprem_partial_bits(201)
