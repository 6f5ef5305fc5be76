"""Shifts, rotates and bit operations: SHL SAL SHR SAR ROL ROR RCL RCR, BT BTS BTR BTC, BSF BSR.

Intel SDM vol. 2B, "SAL/SAR/SHL/SHR", "RCL/RCR/ROL/ROR", "BT", "BTS", "BTR",
"BTC", "BSF", "BSR".  The count is masked to 5 bits (6 with a 64-bit operand);
a masked count of 0 changes nothing, flags included.  RCL/RCR of 8/16-bit
operands rotate through CF modulo 9/17.  OF is defined for a count of 1 only; for
larger counts we compute the same expression (the SDM leaves it undefined, see
:mod:`accel.interp.undefined_flags`).  AF after a shift is undefined; we clear it.
"""

from __future__ import annotations

from collections.abc import Callable

from pyqemu.accel.interp.codegen import MASK, Ctx, Insn, Op
from pyqemu.accel.interp.flags import FLAG_BITS
from pyqemu.accel.interp.table import op

__all__ = ["ROTATES", "SHIFTS", "gen_bsf", "gen_bt", "gen_popcnt", "gen_rotate",
           "gen_rotate_carry", "gen_shift", "gen_shld", "gen_tzcnt"]

# Each template computes r (result) and, where the kind defines them, cf and of,
# from a (operand), n (effective count, nonzero), w (width), m (mask), s (w-1), ci (CF in).
SHIFTS = {
    "shl": ("{r} = ({a} << {n}) & {m}",
            "{cf} = {a} >> ({w} - {n}) & 1 if {n} <= {w} else 0",
            "{of} = ({r} >> {s} & 1) ^ {cf}"),
    "shr": ("{r} = {a} >> {n}",
            "{cf} = {a} >> ({n} - 1) & 1",
            "{of} = {a} >> {s} & 1"),
    "sar": ("{r} = (({a} ^ {sign}) - {sign} >> {n}) & {m}",
            "{cf} = (({a} ^ {sign}) - {sign}) >> ({n} - 1) & 1",
            "{of} = 0"),
}
SHIFTS["sal"] = SHIFTS["shl"]

ROTATES = {
    "rol": ("{k} = {n} % {w}",
            "{r} = (({a} << {k}) | ({a} >> ({w} - {k}))) & {m}",
            "{cf} = {r} & 1",
            "{of} = ({r} >> {s} & 1) ^ {cf}"),
    "ror": ("{k} = {n} % {w}",
            "{r} = (({a} >> {k}) | ({a} << ({w} - {k}))) & {m}",
            "{cf} = {r} >> {s} & 1",
            "{of} = ({r} >> {s} ^ {r} >> ({s} - 1)) & 1"),
}


def _count(c: Ctx, i: Insn) -> tuple[str, int | None]:
    dst = i.ops[0]
    cmask = 0x3F if dst.size == 8 else 0x1F
    if len(i.ops) == 1:
        return "1", 1
    src = i.ops[1]
    if src.kind == "imm":
        return str(src.imm & cmask), src.imm & cmask
    n = c.t("n")
    c.emit(f"{n} = {c.read(src)} & {cmask:#x}")
    return n, None


def _apply(c: Ctx, static: int | None, n: str, body: Callable[[], None],
           dst: Op | None = None) -> None:
    """Run ``body`` directly for a known nonzero count, under ``if n:`` for CL.

    A zero count still writes a 32-bit register destination in 64-bit mode, so its
    upper half is cleared as for any 32-bit write (what hardware and QEMU do).
    """
    if static is not None:
        if static:
            body()
        return
    c.emit(f"if {n}:")
    c.ind += 1
    body()
    c.ind -= 1
    if dst is not None and dst.kind == "reg" and dst.size == 4 and c.mode.code == 64:
        c.emit("else:")
        c.ind += 1
        c.reg_write(dst, c.reg_read(dst))
        c.ind -= 1


def _zero_count(c: Ctx, dst: Op) -> None:
    if dst.kind == "reg" and dst.size == 4 and c.mode.code == 64:
        c.reg_write(dst, c.reg_read(dst))


def _commit_flags(c: Ctx, static: int | None, fl: str, defs: dict[str, str]) -> None:
    """After a shift: flags from ``defs`` (static count) or from the local ``fl`` (CL count)."""
    if static is not None:
        for f, e in defs.items():
            c.set_flag(f, e)
        return
    for f in defs:
        bit = FLAG_BITS[f]
        c.set_flag(f, f"({fl} >> {bit} & 1)" if bit else f"({fl} & 1)")


def _flags_into(c: Ctx, fl: str, defs: dict[str, str]) -> None:
    mask = sum(1 << FLAG_BITS[f] for f in defs)
    parts = " | ".join(f"(({e}) << {FLAG_BITS[f]})" for f, e in defs.items())
    c.emit(f"{fl} = {fl} & ~{mask:#x} | {parts}")


@op("shl", "sal", "shr", "sar")
def gen_shift(c: Ctx, i: Insn) -> None:
    dst = i.ops[0]
    size, w = dst.size, dst.size * 8
    val, put = c.rmw(dst)
    n, static = _count(c, i)
    if static == 0:
        _zero_count(c, dst)
        return
    a, r, cf, of, fl = c.t("a"), c.t("r"), c.t("cf"), c.t("of"), c.t("FL")
    fmt = {"a": a, "n": n, "w": w, "m": hex(MASK[size]), "s": w - 1, "r": r, "cf": cf,
           "of": of, "sign": hex(1 << (w - 1))}
    defs = {"C": cf, "P": f"PARITY[{r} & 0xFF]", "A": "0", "Z": f"({r} == 0)",
            "S": f"({r} >> {w - 1} & 1)", "O": of}
    if static is None:
        c.emit(f"{fl} = {c.flags_value()}")

    def body() -> None:
        c.emit(f"{a} = {val}")
        for line in SHIFTS[i.mnem] if static is None else SHIFTS[i.mnem][:1]:
            c.emit(line.format(**fmt))
        put(r)
        if static is None:
            _flags_into(c, fl, defs)
    _apply(c, static, n, body, dst)
    if static is None:
        _commit_flags(c, static, fl, defs)
    else:
        # A constant count: the flags stay lazy (flags.TEMPLATES["SHL"/"SHR"/"SAR"]).
        c.set_cc("SHL" if i.mnem == "sal" else i.mnem.upper(), w, a, str(static), r)


@op("rol", "ror")
def gen_rotate(c: Ctx, i: Insn) -> None:
    """ROL/ROR change CF and OF only (SDM vol. 2B, RCL/RCR/ROL/ROR "Flags Affected")."""
    dst = i.ops[0]
    size, w = dst.size, dst.size * 8
    val, put = c.rmw(dst)
    n, static = _count(c, i)
    if static == 0:
        _zero_count(c, dst)
        return
    a, r, k, cf, of, fl = c.t("a"), c.t("r"), c.t("k"), c.t("cf"), c.t("of"), c.t("FL")
    fmt = {"a": a, "n": n, "w": w, "m": hex(MASK[size]), "s": w - 1, "r": r, "k": k,
           "cf": cf, "of": of}
    defs = {"C": cf, "O": of}
    if static is None:
        c.emit(f"{fl} = {c.flags_value()}")

    def body() -> None:
        c.emit(f"{a} = {val}")
        for line in ROTATES[i.mnem]:
            c.emit(line.format(**fmt))
        put(r)
        if static is None:
            _flags_into(c, fl, defs)
    _apply(c, static, n, body, dst)
    _commit_flags(c, static, fl, defs)


@op("rcl", "rcr")
def gen_rotate_carry(c: Ctx, i: Insn) -> None:
    """RCL/RCR rotate the (w+1)-bit value CF:dest; counts are taken mod 9/17 for 8/16 bits.
    A count that is 0 after that modulo changes nothing, flags included (as QEMU does;
    the SDM leaves OF undefined there)."""
    dst = i.ops[0]
    size, w = dst.size, dst.size * 8
    val, put = c.rmw(dst)
    n, static = _count(c, i)
    modulo = w + 1 if size <= 2 else None
    if static is not None and modulo:
        static %= modulo
        n = str(static)
    if static == 0:
        _zero_count(c, dst)
        return
    a, r, k, x, cf, of, fl = (c.t("a"), c.t("r"), c.t("k"), c.t("x"), c.t("cf"), c.t("of"),
                              c.t("FL"))
    ci = c.t("ci")
    c.emit(f"{ci} = {c.flag('C')}")
    if static is None:
        c.emit(f"{fl} = {c.flags_value()}")
        if modulo:
            c.emit(f"{k} = {n} % {modulo}")
            n = k
    m1 = (1 << (w + 1)) - 1
    defs = {"C": cf, "O": of}

    def body() -> None:
        c.emit(f"{a} = {val}")
        c.emit(f"{x} = ({ci} << {w}) | {a}")
        if i.mnem == "rcl":
            c.emit(f"{x} = (({x} << {n}) | ({x} >> ({w + 1} - {n}))) & {m1:#x}")
            c.emit(f"{r} = {x} & {MASK[size]:#x}")
            c.emit(f"{cf} = {x} >> {w}")
            c.emit(f"{of} = ({r} >> {w - 1} & 1) ^ {cf}")
        else:
            c.emit(f"{of} = ({a} >> {w - 1} & 1) ^ {ci}")
            c.emit(f"{x} = (({x} >> {n}) | ({x} << ({w + 1} - {n}))) & {m1:#x}")
            c.emit(f"{r} = {x} & {MASK[size]:#x}")
            c.emit(f"{cf} = {x} >> {w}")
        put(r)
        if static is None:
            _flags_into(c, fl, defs)
    _apply(c, static, n, body, dst)
    _commit_flags(c, static, fl, defs)


@op("bt", "bts", "btr", "btc")
def gen_bt(c: Ctx, i: Insn) -> None:
    """Bit test: CF = the bit; ZF unchanged; OF SF AF PF undefined (left unchanged here).

    With a register offset and a memory operand the offset is a signed bit index
    into a bit string starting at the operand (SDM vol. 2A, BT, Table 3-2 note).
    """
    dst, src = i.ops
    size, w = dst.size, dst.size * 8
    bit = c.t("bit")
    if src.kind == "imm":
        c.emit(f"{bit} = {src.imm & (w - 1)}")
        if dst.kind == "mem" and i.mnem != "bt":
            val, put = c.rmw(dst)
        elif dst.kind == "mem":
            val, put = c.read(dst), (lambda v: None)        # BT only reads
        else:
            val, put = c.reg_read(dst), (lambda v: c.reg_write(dst, v))
    else:
        off = c.t("off")
        c.emit(f"{off} = {c.read(src)}")
        c.emit(f"{bit} = {off} & {w - 1}")
        if dst.kind == "mem":
            la = c.t("la")
            c.may_fault()
            sign = 1 << (w - 1)
            if c.mode.checks:
                # The limit applies to the byte offset the bit offset reaches (SDM vol. 3A,
                # 5.3), wrapped to the address size.
                c.limit_check(c.default_seg(dst), f"(({c.ea(dst)}) + ((({off} ^ {sign:#x})"
                              f" - {sign:#x}) >> {(w).bit_length() - 1}) * {size}) & "
                              f"{MASK[i.adsize]:#x}", size)
            base = c.linear(c.default_seg(dst), c.ea(dst))
            c.emit(f"{la} = ({base} + ((({off} ^ {sign:#x}) - {sign:#x}) >> {(w).bit_length() - 1})"
                   f" * {size}) & {MASK[8 if c.mode.code == 64 else 4]:#x}")
            if i.mnem == "bt":
                val = c.load(la, size)
            else:
                val = c.t()
                c.emit(f"{val} = lw{size}({la})")      # read with write intent
            def put(v: str) -> None:
                c.store(la, size, v)
        else:
            val, put = c.reg_read(dst), (lambda v: c.reg_write(dst, v))
    v, cf = c.t("v"), c.t("cf")
    c.emit(f"{v} = {val}")
    c.emit(f"{cf} = {v} >> {bit} & 1")
    new = {"bts": f"{v} | (1 << {bit})", "btr": f"{v} & ~(1 << {bit}) & {MASK[size]:#x}",
           "btc": f"{v} ^ (1 << {bit})"}.get(i.mnem)
    if new is not None:
        put(new)
    c.set_flag("C", cf)


@op("bsf", "bsr")
def gen_bsf(c: Ctx, i: Insn) -> None:
    """Bit scan: ZF = (source == 0); the destination is left unchanged for a zero source
    (what Intel and AMD processors do; the SDM calls it undefined)."""
    dst, src = i.ops
    v = c.t("v")
    c.emit(f"{v} = {c.read(src)}")
    c.emit(f"if {v}:")
    c.ind += 1
    expr = f"({v} & -{v}).bit_length() - 1" if i.mnem == "bsf" else f"{v}.bit_length() - 1"
    c.reg_write(dst, expr)
    c.ind -= 1
    c.set_flag("Z", f"({v} == 0)")





@op("popcnt")
def gen_popcnt(c: Ctx, i: Insn) -> None:
    """POPCNT: ZF = (source == 0); OF SF AF CF PF cleared (SDM vol. 2B, POPCNT)."""
    dst, src = i.ops
    v = c.t("v")
    c.emit(f"{v} = {c.read(src)}")
    c.reg_write(dst, f"{v}.bit_count()")
    for f in "COSAP":
        c.set_flag(f, "0")
    c.set_flag("Z", f"({v} == 0)")


@op("shld", "shrd")
def gen_shld(c: Ctx, i: Insn) -> None:
    """Double-precision shifts (SDM vol. 2B, SHLD, SHRD): the destination shifts, bits from
    the source fill in; CF is the last bit shifted out of the destination; OF is defined
    for a count of 1 (the sign changed); AF undefined (cleared); a masked count of 0
    changes nothing.  A count above the operand size (16-bit forms) is undefined; we
    shift through dst:src:dst as QEMU does."""
    dst, src, cnt = i.ops
    size, w = dst.size, dst.size * 8
    val, put = c.rmw(dst)
    cmask = 0x3F if size == 8 else 0x1F
    if cnt.kind == "imm":
        n, static = str(cnt.imm & cmask), cnt.imm & cmask
    else:
        n, static = c.t("n"), None
        c.emit(f"{n} = {c.read(cnt)} & {cmask:#x}")
    if static == 0:
        _zero_count(c, dst)
        return
    a, b, x, r, cf, of, fl = (c.t(s) for s in ("a", "b", "x", "r", "cf", "of", "FL"))
    m = MASK[size]
    defs = {"C": cf, "P": f"PARITY[{r} & 0xFF]", "A": "0", "Z": f"({r} == 0)",
            "S": f"({r} >> {w - 1} & 1)", "O": of}
    if static is None:
        c.emit(f"{fl} = {c.flags_value()}")

    def body() -> None:
        c.emit(f"{a} = {val}")
        c.emit(f"{b} = {c.reg_read(src)}")
        if w == 16:
            # Intel's behaviour past 16: shift through dst:src:dst (48 bits), as QEMU does.
            c.emit(f"{x} = ({a} << 32) | ({b} << 16) | {a}")
            if i.mnem == "shld":
                c.emit(f"{r} = ({x} << {n}) >> 32 & 0xFFFF")
                c.emit(f"{cf} = {x} >> (48 - {n}) & 1")
            else:
                c.emit(f"{r} = ({x} >> {n}) & 0xFFFF")
                c.emit(f"{cf} = {x} >> ({n} - 1) & 1")
        elif i.mnem == "shld":
            c.emit(f"{x} = ({a} << {w}) | {b}")
            c.emit(f"{r} = ({x} << {n}) >> {w} & {m:#x}")
            c.emit(f"{cf} = {a} >> ({w} - {n}) & 1")
        else:
            c.emit(f"{x} = ({b} << {w}) | {a}")
            c.emit(f"{r} = ({x} >> {n}) & {m:#x}")
            c.emit(f"{cf} = {a} >> ({n} - 1) & 1")
        c.emit(f"{of} = (({a} ^ {r}) >> {w - 1}) & 1")
        put(r)
        if static is None:
            _flags_into(c, fl, defs)
    _apply(c, static, n, body, dst)
    _commit_flags(c, static, fl, defs)


@op("tzcnt", "lzcnt")
def gen_tzcnt(c: Ctx, i: Insn) -> None:
    """F3 0F BC/BD on a CPU that does not report BMI1/ABM (we report neither): the F3
    prefix is ignored and the instruction is BSF/BSR (SDM vol. 2A, TZCNT/LZCNT: "on
    processors that do not support TZCNT, the instruction byte encoding is executed
    as BSF").  Compilers rely on this for ``rep bsf``."""
    i.mnem = "bsf" if i.mnem == "tzcnt" else "bsr"
    gen_bsf(c, i)
