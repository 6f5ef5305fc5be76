"""Data movement: MOV MOVZX MOVSX MOVSXD LEA XCHG XADD CMPXCHG, the stack (PUSH POP PUSHF POPF
PUSHA POPA ENTER LEAVE), conversions (CBW CWDE CDQE CWD CDQ CQO), BSWAP, XLAT, LAHF SAHF,
CMOVcc, SETcc, NOP/PAUSE.

Intel SDM vol. 2A/2B, the instruction pages of those names; stack behaviour from
vol. 1, 6.2 and 6.5 (ENTER/LEAVE).  Moves involving segment and control registers
are system instructions (:mod:`accel.interp.ops_system`).
"""

from __future__ import annotations

from pyqemu.accel.interp.codegen import MASK, SEG_PREFIX, SIGN, Ctx, Insn, Op, stack_size
from pyqemu.accel.interp.flags import (
    ARITH_MASK,
    CC_ALIASES,
    CONDITIONS,
    FLAG_BITS,
    FLAG_ORDER,
)
from pyqemu.accel.interp.ops_system import gen_mov_system, gen_pop_seg
from pyqemu.accel.interp.table import op
from pyqemu.target.i386.cpu_state import R_DS, RF_MASK, VM_MASK

__all__ = ["CCS", "CONVERT", "SIGN_SPLIT", "gen_bswap", "gen_cbw", "gen_cmov", "gen_cmpxchg",
           "gen_cmpxchg8b", "gen_cwd", "gen_enter", "gen_lahf", "gen_lds", "gen_lea", "gen_leave",
           "gen_mov", "gen_movsx", "gen_movzx", "gen_nop", "gen_pop", "gen_popa", "gen_popf",
           "gen_push", "gen_pusha", "gen_pushf", "gen_sahf", "gen_setcc", "gen_xadd", "gen_xchg",
           "gen_xlat"]


@op("mov", "movabs")
def gen_mov(c: Ctx, i: Insn) -> None:
    dst, src = i.ops
    if dst.kind in ("seg", "cr", "dr") or src.kind in ("cr", "dr"):
        gen_mov_system(c, i)
        return
    if src.kind == "seg":
        v = c.t("v")
        c.emit(f"{v} = env.segs[{src.reg}].selector")
        # A selector stored to a register zero-extends; to memory it is 16 bits.
        if dst.kind == "mem":
            c.store(c.addr(dst), 2, v)
        else:
            c.reg_write(dst, v)
        return
    c.write(dst, c.read(src, dst.size))


@op("movzx")
def gen_movzx(c: Ctx, i: Insn) -> None:
    dst, src = i.ops
    c.reg_write(dst, c.read(src))


@op("movsx", "movsxd")
def gen_movsx(c: Ctx, i: Insn) -> None:
    dst, src = i.ops
    v = c.t("v")
    c.emit(f"{v} = {c.read(src)}")
    s = SIGN[src.size]
    c.reg_write(dst, f"(({v} ^ {s:#x}) - {s:#x}) & {MASK[dst.size]:#x}")


@op("lea")
def gen_lea(c: Ctx, i: Insn) -> None:
    dst, src = i.ops
    c.reg_write(dst, f"({c.ea(src)}) & {MASK[dst.size]:#x}")


@op("xchg")
def gen_xchg(c: Ctx, i: Insn) -> None:
    a, b = i.ops
    if a.kind == "mem":
        a, b = b, a
    x = c.t("x")
    c.emit(f"{x} = {c.read(a)}")
    bv, put = c.rmw(b)
    y = c.t("y")
    c.emit(f"{y} = {bv}")
    put(x)                   # memory first: it can fault
    c.reg_write(a, y)


@op("xadd")
def gen_xadd(c: Ctx, i: Insn) -> None:
    """XADD: dst = dst + src, src = old dst, flags as ADD (SDM vol. 2B, XADD)."""
    dst, src = i.ops
    val, put = c.rmw(dst)
    a, b, r = c.t("a"), c.t("b"), c.t("r")
    c.emit(f"{a} = {val}")
    c.emit(f"{b} = {c.reg_read(src)}")
    c.emit(f"{r} = ({a} + {b}) & {MASK[dst.size]:#x}")
    put(r)
    c.reg_write(src, a)
    if dst.kind == "reg" and dst.reg == src.reg:
        c.reg_write(dst, r)
    c.set_cc("ADD", dst.size * 8, a, b, r)


@op("cmpxchg")
def gen_cmpxchg(c: Ctx, i: Insn) -> None:
    """CMPXCHG: compare the accumulator with dst (flags as CMP); equal: dst = src, else
    acc = dst.  A memory destination is always written (SDM vol. 2A, CMPXCHG)."""
    dst, src = i.ops
    size = dst.size
    val, put = c.rmw(dst)
    a, b, r, s = c.t("a"), c.t("b"), c.t("r"), c.t("s")
    c.emit(f"{a} = {c.gpr_read(0, size)}")
    c.emit(f"{b} = {val}")
    c.emit(f"{s} = {c.reg_read(src)}")
    c.emit(f"{r} = ({a} - {b}) & {MASK[size]:#x}")
    if dst.kind == "mem":
        put(f"{s} if {a} == {b} else {b}")
        # The accumulator is written only when the comparison fails: with a 32-bit
        # operand in 64-bit mode an equal compare leaves RAX's upper half alone (the
        # processor does; found by the deep KVM differential).
        c.emit(f"if {a} != {b}:")
        c.ind += 1
        c.gpr_write(0, size, b)
        c.ind -= 1
    else:
        c.emit(f"if {a} == {b}:")
        c.ind += 1
        put(s)
        c.ind -= 1
        c.emit("else:")
        c.ind += 1
        c.gpr_write(0, size, b)
        c.ind -= 1
    c.set_cc("SUB", size * 8, a, b, r)


# -- the stack ----------------------------------------------------------------------------
@op("push")
def gen_push(c: Ctx, i: Insn) -> None:
    (src,) = i.ops
    size = stack_size(c, i)
    if src.kind == "seg":
        v = f"env.segs[{src.reg}].selector"
    elif src.kind == "imm":
        v = hex(src.imm & MASK[size])
    else:
        v = c.read(src)
    t = c.t("v")
    c.emit(f"{t} = {v}")
    c.set_sp(c.push([(t, size)]))


@op("pop")
def gen_pop(c: Ctx, i: Insn) -> None:
    (dst,) = i.ops
    if dst.kind == "seg":
        gen_pop_seg(c, i)
        return
    size = stack_size(c, i)
    (v,), sp = c.pop([size])
    if dst.kind == "mem":
        # The destination address uses the incremented RSP (SDM vol. 2B, POP); RSP itself
        # is committed after the store, so a faulting store leaves it unchanged.
        c.alias[4] = sp
        la = c.addr(dst)
        del c.alias[4]
        c.store(la, size, v)
        c.set_sp(sp)
    else:
        c.set_sp(sp)
        c.reg_write(dst, v)        # after RSP: "pop rsp" loads the popped value


@op("pushf", "pushfd", "pushfq")
def gen_pushf(c: Ctx, i: Insn) -> None:
    """The image has RF and VM cleared (SDM vol. 2B, PUSHF)."""
    size = stack_size(c, i)
    v = c.t("v")
    c.emit(f"{v} = (env.eflags & ~{ARITH_MASK | RF_MASK | VM_MASK:#x} | {c.flags_value()})"
           f" & {MASK[size]:#x}")
    c.set_sp(c.push([(v, size)]))


@op("popf", "popfd", "popfq")
def gen_popf(c: Ctx, i: Insn) -> None:
    """POPF may change IF/TF/DF: it ends the block (SDM vol. 2B, POPF)."""
    size = stack_size(c, i)
    (v,), sp = c.pop([size])
    c.set_sp(sp)
    c.emit(f"load_eflags(S, {v}, {size})")
    c.flags = dict.fromkeys(FLAG_ORDER)
    c.full = c.partial = None
    c.exit(hex(i.next_ip))


@op("pusha", "pushal", "pushaw")
def gen_pusha(c: Ctx, i: Insn) -> None:
    """Push AX CX DX BX, the original SP, BP SI DI (SDM vol. 2B, PUSHA/PUSHAD)."""
    size = i.opsize
    vals = []
    for r in range(8):
        t = c.t("v")
        c.emit(f"{t} = {c.gpr_read(r, size)}")
        vals.append((t, size))
    c.set_sp(c.push(vals))


@op("popa", "popal", "popaw")
def gen_popa(c: Ctx, i: Insn) -> None:
    """Pop DI SI BP, skip SP, BX DX CX AX (SDM vol. 2B, POPA/POPAD)."""
    size = i.opsize
    vals, sp = c.pop([size] * 8)
    c.set_sp(sp)
    for v, r in zip(vals, (7, 6, 5, 4, 3, 2, 1, 0), strict=True):
        if r != 4:
            c.gpr_write(r, size, v)


@op("enter")
def gen_enter(c: Ctx, i: Insn) -> None:
    """ENTER imm16, imm8 with nesting levels 0..31 (SDM vol. 2A, ENTER, Operation)."""
    alloc, level = i.ops[0].imm & 0xFFFF, i.ops[1].imm & 31
    size = stack_size(c, i)
    m = c.stack_mask()
    bp = c.t("bp")
    c.emit(f"{bp} = {c.gpr_read(5, size)}")
    frame = c.t("fr")
    c.emit(f"{frame} = ({c.r(4)} - {size}) & {m:#x}")
    vals = [(bp, size)]
    for n in range(1, level):
        la = c.t("la")
        c.may_fault()
        c.emit(f"{la} = {c.linear(2, f'({c.r(5)} - {n * size}) & {m:#x}', size)}")
        vals.append((c.load(la, size), size))
    if level:
        vals.append((frame, size))
    sp = c.push(vals)
    c.set_sp(f"({sp} - {alloc}) & {m:#x}")
    c.gpr_write(5, size, f"{frame} & {MASK[size]:#x}")


@op("leave")
def gen_leave(c: Ctx, i: Insn) -> None:
    """RSP = RBP, then pop RBP (SDM vol. 2A, LEAVE)."""
    size = stack_size(c, i)
    m = c.stack_mask()
    la = c.t("la")
    c.may_fault()
    c.emit(f"{la} = {c.linear(2, f'{c.r(5)} & {m:#x}', size)}")
    v = c.load(la, size)
    c.set_sp(f"({c.r(5)} + {size}) & {m:#x}")
    c.gpr_write(5, size, v)


# -- conversions, byte order, table lookup ----------------------------------------------------
CONVERT = {"cbw": (1, 2), "cwde": (2, 4), "cdqe": (4, 8)}
SIGN_SPLIT = {"cwd": 2, "cdq": 4, "cqo": 8}


@op(*CONVERT)
def gen_cbw(c: Ctx, i: Insn) -> None:
    """Opcode 98: the operand size picks CBW/CWDE/CDQE (capstone names 16-bit forms wrongly)."""
    to = i.opsize
    frm = to // 2
    v = c.t("v")
    c.emit(f"{v} = {c.gpr_read(0, frm)}")
    c.gpr_write(0, to, f"(({v} ^ {SIGN[frm]:#x}) - {SIGN[frm]:#x}) & {MASK[to]:#x}")


@op(*SIGN_SPLIT)
def gen_cwd(c: Ctx, i: Insn) -> None:
    """Opcode 99: CWD/CDQ/CQO by operand size (not by capstone's mnemonic)."""
    size = i.opsize
    c.gpr_write(2, size, f"{MASK[size]:#x} if {c.gpr_read(0, size)} >> {size * 8 - 1} else 0")


@op("bswap")
def gen_bswap(c: Ctx, i: Insn) -> None:
    (dst,) = i.ops
    if dst.size not in (4, 8):
        raise c.unimplemented()      # 16-bit BSWAP is undefined (SDM vol. 2A, BSWAP)
    c.reg_write(dst, f"int.from_bytes({c.reg_read(dst)}.to_bytes({dst.size}, 'little'), 'big')")


@op("xlatb")
def gen_xlat(c: Ctx, i: Insn) -> None:
    """AL = [seg:rBX + AL], DS unless overridden (SDM vol. 2B, XLAT)."""
    seg = next((SEG_PREFIX[p] for p in i.prefixes if p in SEG_PREFIX), R_DS)
    la = c.t("la")
    c.may_fault()
    c.emit(f"{la} = {c.linear(seg, f'({c.r(3)} + ({c.r(0)} & 0xFF)) & {MASK[i.adsize]:#x}', 1)}")
    c.la_seg[la] = seg
    c.gpr_write(0, 1, c.load(la, 1))


@op("lahf")
def gen_lahf(c: Ctx, i: Insn) -> None:
    """AH = SF:ZF:0:AF:0:PF:1:CF (SDM vol. 2A, LAHF)."""
    v = c.t("v")
    c.emit(f"{v} = ({c.flags_value()}) & 0xD5 | 2")
    ah = Op("reg", 1)
    ah.reg, ah.shift = 0, 8
    c.reg_write(ah, v)


@op("sahf")
def gen_sahf(c: Ctx, i: Insn) -> None:
    """SF ZF AF PF CF = AH bits 7 6 4 2 0 (SDM vol. 2B, SAHF); OF unchanged."""
    v = c.t("ah")
    c.emit(f"{v} = {c.r(0)} >> 8 & 0xFF")
    for f in "CPAZS":
        bit = FLAG_BITS[f]
        c.set_flag(f, f"({v} >> {bit} & 1)" if bit else f"({v} & 1)")


# -- conditional moves and sets -------------------------------------------------------------
def _cc_suffix(mnem: str, prefix: str) -> str:
    return mnem[len(prefix):]


CCS = list(CONDITIONS) + list(CC_ALIASES)


@op(*("cmov" + cc for cc in CCS))
def gen_cmov(c: Ctx, i: Insn) -> None:
    """CMOVcc reads the source either way; a 32-bit form zero-extends in 64-bit mode
    even when the condition is false (SDM vol. 2A, CMOVcc)."""
    dst, src = i.ops
    v = c.t("v")
    c.emit(f"{v} = {c.read(src)}")
    c.reg_write(dst, f"{v} if {c.cond(_cc_suffix(i.mnem, 'cmov'))} else {c.reg_read(dst)}")


@op(*("set" + cc for cc in CCS))
def gen_setcc(c: Ctx, i: Insn) -> None:
    (dst,) = i.ops
    c.write(dst, f"1 if {c.cond(_cc_suffix(i.mnem, 'set'))} else 0")


@op("nop", "pause", "endbr32", "endbr64", "prefetch", "prefetchw", "prefetcht0",
    "prefetcht1", "prefetcht2", "prefetchnta", "clflush", "clflushopt", "lfence", "sfence",
    "mfence")
def gen_nop(c: Ctx, i: Insn) -> None:
    """No architectural effect here: PAUSE is a spin-loop hint, prefetches are hints, and
    with one in-order vCPU and no cache model CLFLUSH and the fences change nothing."""


@op("cmpxchg8b", "cmpxchg16b")
def gen_cmpxchg8b(c: Ctx, i: Insn) -> None:
    """Compare rDX:rAX with m64/m128: equal -> ZF=1, store rCX:rBX; else ZF=0, load
    rDX:rAX.  The destination is always written (SDM vol. 2A, CMPXCHG8B/CMPXCHG16B)."""
    (m,) = i.ops
    half = 8 if i.mnem == "cmpxchg16b" else 4
    if half == 8:
        c.may_fault()
        c.emit(f"if {c.addr(m)} & 15: raise Fault(13, 0, why='cmpxchg16b unaligned')")
    la = c.addr(m, 2 * half)
    lo, hi = c.load(la, half), c.load(f"({la} + {half}) & {MASK[8]:#x}", half)
    eq = c.t("eq")
    c.emit(f"{eq} = {lo} == {c.gpr_read(0, half)} and {hi} == {c.gpr_read(2, half)}")
    c.store(la, half, f"{c.gpr_read(3, half)} if {eq} else {lo}")
    c.store(f"({la} + {half}) & {MASK[8]:#x}", half, f"{c.gpr_read(1, half)} if {eq} else {hi}")
    # rDX:rAX are written only when the comparison fails (SDM vol. 2A, CMPXCHG8B
    # "Operation"): CMPXCHG8B in 64-bit mode leaves the upper halves of RAX and RDX
    # alone when equal, as the processor does.
    c.emit(f"if not {eq}:")
    c.ind += 1
    c.gpr_write(0, half, lo)
    c.gpr_write(2, half, hi)
    c.ind -= 1
    c.set_flag("Z", f"(1 if {eq} else 0)")


@op("lds", "les", "lfs", "lgs", "lss")
def gen_lds(c: Ctx, i: Insn) -> None:
    """Load a far pointer: offset to the register, selector to the segment register, the
    selector through the segment-load checks (SDM vol. 2A, LDS/LES/LFS/LGS/LSS)."""
    dst, m = i.ops
    seg = {"lds": 3, "les": 0, "lfs": 4, "lgs": 5, "lss": 2}[i.mnem]
    la = c.addr(m, dst.size + 2)
    off = c.load(la, dst.size)
    sel = c.load(f"({la} + {dst.size}) & {MASK[8]:#x}", 2)
    c.sync(hex(i.ip))
    c.emit(f"load_seg(S, {seg}, {sel})")
    c.emit(f"R[{dst.reg}] = R[{dst.reg}] & ~{MASK[dst.size]:#x} | {off}" if dst.size < 4
           else f"R[{dst.reg}] = {off}")
    c.finish_after_helper(hex(i.next_ip))
    c.end()
