"""Decimal arithmetic: DAA DAS AAA AAS AAM AAD (legacy modes only; #UD in 64-bit mode,
where capstone does not decode them).

Intel SDM vol. 2A, the "Operation" sections of DAA, DAS, AAA, AAS, AAM, AAD.
Flags: DAA/DAS set CF AF SF ZF PF (OF undefined, left unchanged); AAA/AAS set
AF CF (OF SF ZF PF undefined: we take SF ZF PF from AL); AAM/AAD set SF ZF PF
from AL (OF AF CF undefined, cleared).
"""

from __future__ import annotations

from pyqemu.accel.interp.codegen import Ctx, Insn
from pyqemu.accel.interp.errors import EXCP_DE, Fault
from pyqemu.accel.interp.table import op

__all__ = ["bcd_adjust", "gen_bcd"]


def bcd_adjust(kind: str, ax: int, cf: int, af: int, imm: int) -> tuple[int, int, int]:
    """One decimal adjust; returns (new AX, CF, AF).  Generated code calls it as ``BCD``
    (accel/interp/namespace.py)."""
    al, ah = ax & 0xFF, ax >> 8 & 0xFF
    if kind in ("daa", "das"):
        old_al, old_cf = al, cf
        cf = 0
        sign = 1 if kind == "daa" else -1
        if al & 0xF > 9 or af:
            t = al + sign * 6
            cf = old_cf | (t > 0xFF or t < 0)
            al = t & 0xFF
            af = 1
        else:
            af = 0
        if old_al > 0x99 or old_cf:
            al = (al + sign * 0x60) & 0xFF
            cf = 1
        else:
            cf = 0 if kind == "daa" else cf
        return ah << 8 | al, int(cf), af
    if kind in ("aaa", "aas"):
        if al & 0xF > 9 or af:
            if kind == "aaa":
                ax = (ax + 0x106) & 0xFFFF
            else:
                ax = ((ax - 6) & 0xFF) | (((ax >> 8) - 1) & 0xFF) << 8
            return ax & 0xFF0F, 1, 1
        return ax & 0xFF0F, 0, 0
    if kind == "aam":
        if imm == 0:
            raise Fault(EXCP_DE, why="aam 0")
        return (al // imm) << 8 | al % imm, 0, 0
    # aad
    return (al + ah * imm) & 0xFF, 0, 0


@op("daa", "das", "aaa", "aas", "aam", "aad")
def gen_bcd(c: Ctx, i: Insn) -> None:
    imm = i.ops[0].imm & 0xFF if i.ops else 10
    ax, cf, af = c.t("ax"), c.t("cf"), c.t("af")
    if i.mnem == "aam":
        c.may_fault()
    c.emit(f"{ax}, {cf}, {af} = BCD({i.mnem!r}, {c.gpr_read(0, 2)}, {c.flag('C')}, "
           f"{c.flag('A')}, {imm})")
    c.gpr_write(0, 2, ax)
    if i.mnem in ("daa", "das", "aaa", "aas"):
        c.set_flag("C", cf)
        c.set_flag("A", af)
    else:
        c.set_flag("C", "0")
        c.set_flag("A", "0")
        c.set_flag("O", "0")
    c.set_flag("Z", f"(({ax} & 0xFF) == 0)")
    c.set_flag("S", f"({ax} >> 7 & 1)")
    c.set_flag("P", f"PARITY[{ax} & 0xFF]")
