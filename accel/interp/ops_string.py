"""String instructions: MOVS STOS LODS CMPS SCAS INS OUTS, with REP/REPE/REPNE.

Intel SDM vol. 2B, the instruction pages and "REP/REPE/REPZ/REPNE/REPNZ".  The
source is seg:rSI (DS unless overridden), the destination ES:rDI (never
overridden); the index registers and the count (rCX) have the *address* size;
DF picks the direction.  A single string instruction is emitted inline; a
repeated one (and every INS/OUTS, which are port I/O) ends the block and runs in
:func:`accel.interp.string_rt.rep_string`, which stops between two iterations when
the instruction budget runs out or an exit request comes (polled every few
thousand iterations), leaving RIP on the instruction, so it resumes where it
stopped (SDM: REP "is restartable").
INS/OUTS check the I/O permission there (IOPL, then the TSS bit map: SDM vol. 1,
19.5; :mod:`accel.interp.ioperm`) before their first iteration.
"""

from __future__ import annotations

from pyqemu.accel.interp.codegen import MASK, SEG_PREFIX, Ctx, Insn
from pyqemu.accel.interp.table import op
from pyqemu.target.i386.cpu_state import R_DS, R_ES

__all__ = ["KINDS", "MNEMONICS", "SIZES", "gen_string"]

SIZES = {"b": 1, "w": 2, "d": 4, "q": 8}
KINDS = ("movs", "stos", "lods", "cmps", "scas", "ins", "outs")
MNEMONICS = [k + s for k in KINDS for s in SIZES if not (k in ("ins", "outs") and s == "q")]


def _src_seg(i: Insn) -> int:
    for o in i.ops:
        if (o.kind == "mem" and o.seg >= 0 and o.seg != R_ES) or (o.kind == "mem" and \
                o.base_name in ("si", "esi", "rsi") and o.seg >= 0):
            return o.seg
    return next((SEG_PREFIX[p] for p in i.prefixes if p in SEG_PREFIX), R_DS)


@op(*MNEMONICS)
def gen_string(c: Ctx, i: Insn) -> None:
    kind, size = i.mnem[:-1], SIZES[i.mnem[-1]]
    if any(o.kind not in ("mem", "reg") or (o.kind == "reg" and o.reg < 0) for o in i.ops):
        raise c.unimplemented()          # e.g. SSE movsd xmm, xmm
    rep = "repne" if i.repne else "rep" if i.rep else ""
    seg = _src_seg(i)
    if rep or kind in ("ins", "outs"):
        c.sync(hex(i.ip))
        c.emit(f"rep_string(S, {kind!r}, {size}, {i.adsize}, {seg}, {rep!r}, {i.next_ip:#x})")
        c.finish_after_helper(None)
        c.end()
        return
    am = MASK[i.adsize]
    d = c.t("d")
    c.emit(f"{d} = {-size} if env.eflags & 0x400 else {size}")
    si, di = c.r(6), c.r(7)
    src = dst = None
    # CMPS reads ES:[rDI] before DS:[rSI]: when both fault, the processor reports the
    # destination's address in CR2 (measured on hardware by test_kvm_differential's
    # deep profile: `cmpsb` with both operands on a not-present page).
    if kind in ("cmps", "scas"):
        la = c.t("la")
        c.may_fault()
        c.emit(f"{la} = {c.linear(R_ES, f'{di} & {am:#x}', size)}")
        c.la_seg[la] = R_ES
        dst = c.load(la, size)
    if kind in ("movs", "lods", "cmps"):
        la = c.t("la")
        c.may_fault()
        c.emit(f"{la} = {c.linear(seg, f'{si} & {am:#x}', size)}")
        c.la_seg[la] = seg
        src = c.load(la, size)
    if kind in ("movs", "stos"):
        la = c.t("la")
        c.may_fault()
        c.emit(f"{la} = {c.linear(R_ES, f'{di} & {am:#x}', size)}")
        c.la_seg[la] = R_ES
        c.store(la, size, src if src is not None else c.gpr_read(0, size))
    if kind == "lods":
        c.gpr_write(0, size, src or "0")
    if kind in ("cmps", "scas"):
        a = src if kind == "cmps" else c.t("a")
        if kind == "scas":
            c.emit(f"{a} = {c.gpr_read(0, size)}")
        r = c.t("r")
        c.emit(f"{r} = ({a} - {dst}) & {MASK[size]:#x}")
        c.set_cc("SUB", size * 8, a or "0", dst or "0", r)
    if kind in ("movs", "lods", "cmps"):
        c.gpr_write(6, i.adsize, f"({si} + {d}) & {am:#x}")
    if kind in ("movs", "stos", "cmps", "scas"):
        c.gpr_write(7, i.adsize, f"({di} + {d}) & {am:#x}")
