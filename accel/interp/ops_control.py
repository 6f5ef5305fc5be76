"""Control transfer: JMP Jcc LOOP/LOOPE/LOOPNE JCXZ/JECXZ/JRCXZ CALL RET, far JMP/CALL/RET,
INT n / INT3 / INTO / INT1, IRET, HLT.

Intel SDM vol. 2A/2B, the instruction pages of those names; far transfers and
IRET go through descriptor-loading helpers (:mod:`accel.interp.seg`,
:mod:`accel.interp.excp`) after the block has written its state back.  Every
instruction here ends the block.
"""

from __future__ import annotations

from pyqemu.accel.interp.codegen import MASK, Ctx, Insn, stack_size
from pyqemu.accel.interp.errors import EXCP_GP
from pyqemu.accel.interp.table import op
from pyqemu.accel.ops import EXCP_HLT

__all__ = ["JCC", "gen_call", "gen_far", "gen_hlt", "gen_int", "gen_iret", "gen_jcc", "gen_jcxz",
           "gen_jmp", "gen_loop", "gen_ret", "gen_retf"]

# Conditional jumps as capstone spells them.
JCC = {"jo": "o", "jno": "no", "jb": "b", "jae": "ae", "je": "e", "jne": "ne", "jbe": "be",
       "ja": "a", "js": "s", "jns": "ns", "jp": "p", "jnp": "np", "jl": "l", "jge": "ge",
       "jle": "le", "jg": "g"}


def _ipmask(c: Ctx, i: Insn) -> int:
    """Near branches wrap to the operand size (SDM vol. 2A, JMP: "tempEIP AND 0000FFFFH")."""
    return MASK[8] if c.mode.code == 64 else MASK[i.opsize]


def _target(c: Ctx, i: Insn) -> str:
    (t,) = i.ops
    if t.kind == "imm":
        return hex(t.imm & _ipmask(c, i))
    v = c.t("tg")
    size = 8 if c.mode.code == 64 else i.opsize
    c.emit(f"{v} = {c.read(t)} & {MASK[size]:#x}")
    return v


def _branch(c: Ctx, cond: str, target: str, i: Insn) -> None:
    """A conditional branch is a side exit: the taken path leaves the block, the
    fall-through goes on translating (a superblock; QEMU ends its TBs here, but a
    Python block pays a fixed cost per call, so longer blocks run faster).  Nothing of
    the state changes on the fall-through path, so the block's bookkeeping holds."""
    c.emit(f"if {cond}:")
    c.ind += 1
    c.exit(target)
    c.ind -= 1


@op("jmp")
def gen_jmp(c: Ctx, i: Insn) -> None:
    if i.modrm is not None and i.ops[0].kind == "mem" and (i.modrm >> 3) & 7 == 5:
        gen_far(c, i)
        return
    c.exit(_target(c, i))
    c.end()


@op(*JCC)
def gen_jcc(c: Ctx, i: Insn) -> None:
    _branch(c, c.cond(JCC[i.mnem]), _target(c, i), i)


@op("loop", "loope", "loopne")
def gen_loop(c: Ctx, i: Insn) -> None:
    """Decrement the count register of the address size; no flags (SDM vol. 2A, LOOPcc)."""
    target = _target(c, i)
    cnt = c.t("cnt")
    c.emit(f"{cnt} = ({c.gpr_read(1, i.adsize)} - 1) & {MASK[i.adsize]:#x}")
    cond = cnt
    if i.mnem == "loope":
        cond = f"{cnt} and {c.cond('e')}"
    elif i.mnem == "loopne":
        cond = f"{cnt} and {c.cond('ne')}"
    c.gpr_write(1, i.adsize, cnt)
    _branch(c, cond, target, i)


@op("jcxz", "jecxz", "jrcxz")
def gen_jcxz(c: Ctx, i: Insn) -> None:
    size = i.adsize                       # the count register has the address size
    _branch(c, f"{c.gpr_read(1, size)} == 0", _target(c, i), i)


@op("call")
def gen_call(c: Ctx, i: Insn) -> None:
    if i.modrm is not None and i.ops[0].kind == "mem" and (i.modrm >> 3) & 7 == 3:
        gen_far(c, i)
        return
    target = _target(c, i)          # read an indirect target before pushing
    size = stack_size(c, i)
    c.set_sp(c.push([(hex(i.next_ip & MASK[size]), size)]))
    c.exit(target)
    c.end()


@op("ret")
def gen_ret(c: Ctx, i: Insn) -> None:
    size = stack_size(c, i)
    extra = i.ops[0].imm & 0xFFFF if i.ops else 0
    (v,), sp = c.pop([size], extra)
    c.set_sp(sp)
    c.exit(v)
    c.end()


@op("ljmp", "lcall")
def gen_far(c: Ctx, i: Insn) -> None:
    """Far JMP/CALL: ptr16:16/32 immediates or an m16:16/32/64 operand (SDM vol. 2A, JMP, CALL)."""
    call = i.mnem in ("lcall", "call")
    ops = i.ops
    if len(ops) == 2:
        sel, off = hex(ops[0].imm & 0xFFFF), hex(ops[1].imm & MASK[i.opsize])
    else:
        m = ops[0]
        size = i.opsize if not (c.mode.code == 64 and i.rex_w) else 8
        la = c.addr(m, size + 2)
        off = c.load(la, size)
        sel = c.load(f"({la} + {size}) & {MASK[8]:#x}", 2)
    c.sync(hex(i.ip))
    if call:
        c.emit(f"far_call(S, {sel}, {off}, {i.opsize if c.mode.code != 64 else max(i.opsize, 4)},"
               f" {i.next_ip:#x})")
    else:
        c.emit(f"far_jump(S, {sel}, {off}, {i.next_ip:#x})")   # a task switch saves it
    c.finish_after_helper(None)
    c.end()


@op("retf", "lret", "retfq")
def gen_retf(c: Ctx, i: Insn) -> None:
    extra = i.ops[0].imm & 0xFFFF if i.ops else 0
    size = 8 if i.rex_w else i.opsize
    c.sync(hex(i.ip))
    c.emit(f"far_return(S, {size}, {extra})")
    c.finish_after_helper(None)
    c.end()


@op("iret", "iretd", "iretq")
def gen_iret(c: Ctx, i: Insn) -> None:
    size = i.opsize                       # from the encoding: 0x66 / REX.W
    c.sync(hex(i.ip))
    c.emit(f"iret(S, {size}, {i.next_ip:#x})")      # a task return saves it in the old TSS
    c.finish_after_helper(None)
    c.end()


@op("int", "int3", "into", "int1")
def gen_int(c: Ctx, i: Insn) -> None:
    """Software interrupts are traps: the saved RIP is the next instruction (SDM vol. 3A, 6.4.2)."""
    if i.mnem == "int":
        vector = str(i.ops[0].imm & 0xFF)
    else:
        vector = {"int3": "3", "into": "4", "int1": "1"}[i.mnem]
    of = None
    if i.mnem == "into":
        # OF as the block has it now: after sync the flags may be pending in S.cc, not
        # in env.eflags.
        of = c.t("of")
        c.emit(f"{of} = {c.cond('o')}")
    c.sync(hex(i.ip))
    if of is not None:
        c.emit(f"if not {of}:")
        c.ind += 1
        c.finish_after_helper(hex(i.next_ip))
        c.ind -= 1
    c.emit(f"soft_int(S, {vector}, {i.next_ip:#x}, {'True' if i.mnem != 'int1' else 'False'})")
    c.finish_after_helper(None)
    c.end()


@op("hlt")
def gen_hlt(c: Ctx, i: Insn) -> None:
    """HLT is privileged: #GP(0) at CPL > 0 (SDM vol. 2A, HLT)."""
    if c.mode.pe and c.mode.cpl:
        c.may_fault()
        c.emit(f"raise Fault({EXCP_GP}, 0, why='hlt at CPL {c.mode.cpl}')")
        c.end()
        return
    c.exit(hex(i.next_ip), stop=f"CpuStop({EXCP_HLT})")
    c.end()
