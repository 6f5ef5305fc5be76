"""Flags the manuals leave *undefined*, per instruction: what a comparison must mask.

One table for every differential test (interp vs Unicorn vs KVM).  Sources: the
"Flags Affected" section of each instruction in Intel SDM vol. 2A/2B (AMD APM
vol. 3, Appendix E agrees on these):

* AND/OR/XOR/TEST: "The state of the AF flag is undefined."
* MUL/IMUL: "The SF, ZF, AF, and PF flags are undefined."
* DIV/IDIV: "The CF, OF, SF, ZF, AF, and PF flags are undefined."
* SAL/SAR/SHL/SHR: "The OF flag is affected only on 1-bit shifts ... For a
  non-zero count, the AF flag is undefined"; "The CF flag is undefined for SHL
  and SHR instructions where the count is greater than or equal to the size (in
  bits) of the destination operand."
* RCL/RCR/ROL/ROR: "The OF flag is defined only for the 1-bit rotates; it is
  undefined in all other cases (except RCL and RCR instructions only: a zero-bit
  rotate does nothing ...)."
* BT/BTS/BTR/BTC: "The OF, SF, AF, and PF flags are undefined."
* BSF/BSR: "The CF, OF, SF, AF, and PF flags are undefined."
* SHLD/SHRD: "For shifts greater than 1 bit, the OF flag is undefined. If a shift
  occurs, the AF flag is undefined. If the count operand is 0, the flags are not
  affected. If the count is greater than the operand size, the flags are undefined."
* DAA/DAS: "The OF flag is undefined."
* AAA/AAS: "The OF, SF, ZF, and PF flags are undefined."
* AAM/AAD: "The OF, AF, and CF flags are undefined."
"""

from __future__ import annotations

from pyqemu.target.i386.cpu_state import CC_A, CC_C, CC_O, CC_P, CC_S, CC_Z

__all__ = ["undefined_flags"]

_STATIC: dict[str, int] = {
    **dict.fromkeys(("and", "or", "xor", "test"), CC_A),
    **dict.fromkeys(("mul", "imul"), CC_S | CC_Z | CC_A | CC_P),
    **dict.fromkeys(("div", "idiv"), CC_C | CC_O | CC_S | CC_Z | CC_A | CC_P),
    **dict.fromkeys(("bt", "bts", "btr", "btc"), CC_O | CC_S | CC_A | CC_P),
    **dict.fromkeys(("bsf", "bsr"), CC_C | CC_O | CC_S | CC_A | CC_P),
    **dict.fromkeys(("daa", "das"), CC_O),
    **dict.fromkeys(("aaa", "aas"), CC_O | CC_S | CC_Z | CC_P),
    **dict.fromkeys(("aam", "aad"), CC_O | CC_A | CC_C),
}
_ALL = CC_C | CC_P | CC_A | CC_Z | CC_S | CC_O
_DOUBLE_SHIFTS = frozenset(("shld", "shrd"))
_SHIFTS = frozenset(("shl", "sal", "shr", "sar"))
_ROTATES = frozenset(("rol", "ror", "rcl", "rcr"))


def undefined_flags(mnemonic: str, width: int = 32, count: int | None = None) -> int:
    """EFLAGS bits left undefined by ``mnemonic`` on a ``width``-bit operand.

    ``count`` is the shift/rotate count *after* the 5/6-bit masking (None when
    unknown: then every flag the count could make undefined is included).
    """
    m = mnemonic.lower()
    if m in _STATIC:
        return _STATIC[m]
    if m in _SHIFTS:
        if count == 0:
            return 0
        undef = CC_A
        if count is None or count != 1:
            undef |= CC_O
        if m in ("shl", "sal", "shr") and (count is None or count >= width):
            undef |= CC_C
        return undef
    if m in _DOUBLE_SHIFTS:
        if count == 0:
            return 0
        if count is None or count > width:
            return _ALL
        return CC_A | (0 if count == 1 else CC_O)
    if m in _ROTATES:
        if count == 0:
            return 0
        return CC_O if count is None or count != 1 else 0
    return 0
