"""Differential tests: the interpreter against Unicorn (QEMU's TCG) on random operands.

For each family, hypothesis draws an instruction form, an operand size and
register/flag values; both emulators execute the one instruction and must agree
on every general register and every *defined* flag (undefined ones are masked
per instruction by :mod:`accel.interp.undefined_flags`).  Modes: real (16-bit),
flat 32-bit protected and 64-bit long mode.  ~200 examples per family.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

unicorn = pytest.importorskip("unicorn")
from unicorn import x86_const as ux  # noqa: E402

from pyqemu.accel.interp.cpu_exec import EXCP_BUDGET  # noqa: E402
from pyqemu.accel.interp.undefined_flags import undefined_flags  # noqa: E402
from pyqemu.target.i386.cpu_state import ARITH_FLAGS, DF_MASK  # noqa: E402
from tests.accel.interp.harness import CODE, Guest, asm  # noqa: E402

# ~200 examples per family by default (derandomized: the same cases every run);
# INTERP_DIFF_EXAMPLES=5000 hunts deeper with fresh random cases.
_EXAMPLES = int(os.environ.get("INTERP_DIFF_EXAMPLES", "200"))
QUICK = settings(max_examples=_EXAMPLES, deadline=None, derandomize=_EXAMPLES <= 200,
                 suppress_health_check=[HealthCheck.too_slow])

UC_MODES = {16: unicorn.UC_MODE_16, 32: unicorn.UC_MODE_32, 64: unicorn.UC_MODE_64}
UC_REGS = [ux.UC_X86_REG_RAX, ux.UC_X86_REG_RCX, ux.UC_X86_REG_RDX, ux.UC_X86_REG_RBX,
           ux.UC_X86_REG_RSP, ux.UC_X86_REG_RBP, ux.UC_X86_REG_RSI, ux.UC_X86_REG_RDI]
UC_REGS32 = [ux.UC_X86_REG_EAX, ux.UC_X86_REG_ECX, ux.UC_X86_REG_EDX, ux.UC_X86_REG_EBX,
             ux.UC_X86_REG_ESP, ux.UC_X86_REG_EBP, ux.UC_X86_REG_ESI, ux.UC_X86_REG_EDI]
REGS = {8: ("al", "bl", "cl", "dl"), 16: ("ax", "bx", "cx", "dx"),
        32: ("eax", "ebx", "ecx", "edx"), 64: ("rax", "rbx", "rcx", "rdx")}
HIGH8 = ("ah", "bh", "ch", "dh")

_guests: dict[int, Guest] = {}
_ucs: dict[int, Any] = {}


def _guest(bits: int) -> Guest:
    if bits not in _guests:
        _guests[bits] = Guest(bits)
    return _guests[bits]


def _uc(bits: int) -> Any:
    if bits not in _ucs:
        uc = unicorn.Uc(unicorn.UC_ARCH_X86, UC_MODES[bits])
        uc.mem_map(0, 2 << 20)
        _ucs[bits] = uc
    return _ucs[bits]


def run_both(bits: int, text: str, regs: list[int], flags: int) -> tuple[list[int], int,
                                                                          list[int], int]:
    code = asm(text, bits)
    wide = 64 if bits == 64 else 32
    regs = [v & ((1 << wide) - 1) for v in regs]
    g = _guest(bits)
    g.mem.write_bytes(CODE, code)
    g.core.tb_flush()
    env = g.env
    env.regs[:8] = regs
    env.regs[4] = 0x8000
    env.rip = CODE
    env.eflags = (flags & ARITH_FLAGS) | 2
    g.core.cc = None
    assert g.core.run(1) == EXCP_BUDGET
    ours = list(env.regs[:8])
    our_flags = env.eflags
    uc = _uc(bits)
    uc.mem_write(CODE, code)
    table = UC_REGS if bits == 64 else UC_REGS32
    for r, v in zip(table, regs, strict=True):
        uc.reg_write(r, v)
    uc.reg_write(table[4], 0x8000)
    uc.reg_write(ux.UC_X86_REG_EFLAGS, (flags & ARITH_FLAGS) | 2)
    uc.emu_start(CODE, CODE + len(code), count=1)
    theirs = [uc.reg_read(r) for r in table]
    their_flags = uc.reg_read(ux.UC_X86_REG_EFLAGS)
    return ours, our_flags, theirs, their_flags


def check(bits: int, text: str, regs: list[int], flags: int, undefined: int) -> None:
    ours, of, theirs, tf = run_both(bits, text, regs, flags)
    names = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi")
    diffs = [f"{n}: interp {a:#x} unicorn {b:#x}"
             for n, a, b in zip(names, ours, theirs, strict=True) if a != b]
    mask = ARITH_FLAGS & ~undefined
    if of & mask != tf & mask:
        diffs.append(f"flags: interp {of & mask:#x} unicorn {tf & mask:#x} (mask {mask:#x})")
    assert not diffs, f"{bits}-bit '{text}' with regs {[hex(r) for r in regs]} " \
                      f"flags {flags:#x}: " + "; ".join(diffs)


values = st.one_of(st.integers(0, 2**64 - 1),
                   st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF,
                                    0x80000000, 0xFFFFFFFF, 2**63 - 1, 2**63, 2**64 - 1]))
reg_values = st.lists(values, min_size=8, max_size=8)
flag_values = st.integers(0, 0xFFF)
modes_sizes = st.sampled_from([(16, 8), (16, 16), (16, 32), (32, 8), (32, 16), (32, 32),
                               (64, 8), (64, 16), (64, 32), (64, 64)])


@QUICK
@given(ms=modes_sizes, mnem=st.sampled_from(["add", "adc", "sub", "sbb", "cmp", "and", "or",
                                             "xor", "test"]),
       form=st.sampled_from(["rr", "ri", "rh"]), imm=st.integers(-128, 0xFFFF),
       regs=reg_values, flags=flag_values)
def test_alu_matches_unicorn(ms: tuple[int, int], mnem: str, form: str, imm: int,
                             regs: list[int], flags: int) -> None:
    bits, size = ms
    d, s = REGS[size][0], REGS[size][1]
    if form == "rh" and size == 8:
        text = f"{mnem} {HIGH8[0]}, {HIGH8[1]}"
    elif form == "ri":
        imm &= (1 << size) - 1 if size < 64 else 0x7FFFFFFF   # imm32 sign-extends for r64
        text = f"{mnem} {d}, {hex(imm)}"
    else:
        text = f"{mnem} {d}, {s}"
    check(bits, text, regs, flags, undefined_flags(mnem, size))


@QUICK
@given(ms=modes_sizes, mnem=st.sampled_from(["inc", "dec", "neg", "not"]), regs=reg_values,
       flags=flag_values)
def test_unary_matches_unicorn(ms: tuple[int, int], mnem: str, regs: list[int],
                               flags: int) -> None:
    bits, size = ms
    check(bits, f"{mnem} {REGS[size][0]}", regs, flags, 0)


@QUICK
@given(ms=modes_sizes, mnem=st.sampled_from(["shl", "shr", "sar", "rol", "ror", "rcl", "rcr"]),
       count=st.one_of(st.integers(0, 3), st.integers(0, 255)), by_cl=st.booleans(),
       regs=reg_values, flags=flag_values)
def test_shifts_match_unicorn(ms: tuple[int, int], mnem: str, count: int, by_cl: bool,
                              regs: list[int], flags: int) -> None:
    bits, size = ms
    d = REGS[size][0] if size != 8 else "bl"
    if by_cl:
        regs[1] = (regs[1] & ~0xFF) | count
        text = f"{mnem} {REGS[size][1] if size != 8 else 'bl'}, cl"
        d = REGS[size][1] if size != 8 else "bl"
    else:
        text = f"{mnem} {d}, {hex(count)}"
    masked = count & (0x3F if size == 64 else 0x1F)
    if mnem in ("rcl", "rcr") and size in (8, 16):
        eff = masked % (size + 1)
        undef = 0 if eff == 0 else undefined_flags(mnem, size, masked)
    else:
        undef = undefined_flags(mnem, size, masked)
    check(bits, text, regs, flags, undef)


@QUICK
@given(ms=modes_sizes, form=st.sampled_from(["mul", "imul1", "imul2", "imul3"]),
       imm=st.integers(-128, 127), regs=reg_values, flags=flag_values)
def test_mul_matches_unicorn(ms: tuple[int, int], form: str, imm: int, regs: list[int],
                             flags: int) -> None:
    bits, size = ms
    src = REGS[size][1]
    if form in ("imul2", "imul3") and size == 8:
        form = "imul1"
    text = {"mul": f"mul {src}", "imul1": f"imul {src}",
            "imul2": f"imul {REGS[size][0]}, {src}",
            "imul3": f"imul {REGS[size][0]}, {src}, {imm}"}[form]
    check(bits, text, regs, flags, undefined_flags("mul", size))


@QUICK
@given(ms=modes_sizes, signed=st.booleans(), regs=reg_values, flags=flag_values)
def test_div_matches_unicorn(ms: tuple[int, int], signed: bool, regs: list[int],
                             flags: int) -> None:
    bits, size = ms
    wide = 64 if bits == 64 else 32
    regs = [v & ((1 << wide) - 1) for v in regs]
    m = (1 << size) - 1
    divisor = regs[3] & m
    if size == 8:
        dividend = regs[0] & 0xFFFF
    else:
        dividend = ((regs[2] & m) << size) | (regs[0] & m)
    if divisor == 0:
        regs[3] |= 1
        divisor |= 1
    if signed:
        sd = dividend - (1 << (2 * size)) if dividend >> (2 * size - 1) else dividend
        sv = divisor - (1 << size) if divisor >> (size - 1) else divisor
        q = abs(sd) // abs(sv) * (1 if (sd < 0) == (sv < 0) else -1)
        ok = -(1 << (size - 1)) <= q < (1 << (size - 1))
    else:
        ok = dividend // divisor <= m
    if not ok:                      # keep #DE out of the comparison: tested in test_faults
        if size == 8:
            regs[0] &= ~0xFF00
        else:
            regs[2] &= ~m
        if signed:
            regs[3] = regs[3] & ~m | 0x7F
    text = f"{'idiv' if signed else 'div'} {REGS[size][1]}"
    check(bits, text, regs, flags, undefined_flags("div", size))


@QUICK
@given(ms=modes_sizes, mnem=st.sampled_from(["bt", "bts", "btr", "btc", "bsf", "bsr", "bswap",
                                             "xadd", "cmpxchg", "xchg", "movzx", "movsx"]),
       imm=st.booleans(), regs=reg_values, flags=flag_values)
def test_bit_and_move_match_unicorn(ms: tuple[int, int], mnem: str, imm: bool,
                                    regs: list[int], flags: int) -> None:
    bits, size = ms
    d, s = REGS[size][0], REGS[size][1]
    if mnem in ("bt", "bts", "btr", "btc", "bsf", "bsr") and size == 8:
        size = 16
        d, s = REGS[16][0], REGS[16][1]
    if mnem == "bswap":
        if size < 32:
            return
        text = f"bswap {d}"
    elif mnem in ("bt", "bts", "btr", "btc") and imm:
        text = f"{mnem} {d}, {hex(regs[7] & 0x7F)}"
    elif mnem in ("movzx", "movsx"):
        if size == 8:
            return
        text = f"{mnem} {d}, {REGS[8][1] if imm or size == 16 else REGS[16][1]}"
    else:
        text = f"{mnem} {d}, {s}"
    check(bits, text, regs, flags, undefined_flags(mnem, size))


CCS = ["o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"]


@QUICK
@given(bits=st.sampled_from([16, 32, 64]), cc=st.sampled_from(CCS),
       kind=st.sampled_from(["set", "cmov"]), regs=reg_values, flags=flag_values)
def test_conditions_match_unicorn(bits: int, cc: str, kind: str, regs: list[int],
                                  flags: int) -> None:
    text = f"set{cc} bl" if kind == "set" else f"cmov{cc} {'eax, ebx' if bits != 16 else 'ax, bx'}"
    check(bits, text, regs, flags, 0)


@QUICK
@given(bits=st.sampled_from([16, 32, 64]),
       text=st.sampled_from(["cbw", "cwde", "cwd", "cdq", "lahf", "sahf", "clc", "stc", "cmc",
                             "cdqe", "cqo", "xlatb"]),
       regs=reg_values, flags=flag_values)
def test_misc_match_unicorn(bits: int, text: str, regs: list[int], flags: int) -> None:
    if text in ("cdqe", "cqo") and bits != 64:
        return
    if text == "xlatb":
        regs[3] = 0x3000 + (regs[3] & 0xFF)
    check(bits, text, regs, flags, 0)


def test_df_is_not_an_arith_flag() -> None:
    assert not DF_MASK & ARITH_FLAGS


# -- sequences: flags flowing between instructions inside one block ---------------------
ALL_FLAGS = {"C": 0x1, "P": 0x4, "A": 0x10, "Z": 0x40, "S": 0x80, "O": 0x800}
SEQ_ALU = ["add", "adc", "sub", "sbb", "cmp", "and", "or", "xor", "test"]
SEQ_SHIFT = ["shl", "shr", "sar", "rol", "ror", "rcl", "rcr"]
CC_READS = {"o": "O", "no": "O", "b": "C", "ae": "C", "e": "Z", "ne": "Z", "be": "CZ",
            "a": "CZ", "s": "S", "ns": "S", "p": "P", "np": "P", "l": "SO", "ge": "SO",
            "le": "ZSO", "g": "ZSO"}


@st.composite
def sequences(draw: st.DrawFn) -> tuple[int, list[str], int]:
    """A block of 2-6 instructions that never reads a flag the SDM leaves undefined;
    returns (mode, lines, flags undefined at the end)."""
    bits = draw(st.sampled_from([16, 32, 64]))
    size = draw(st.sampled_from([8, 16, 32] + ([64] if bits == 64 else [])))
    regs = REGS[size]
    undefined = 0
    lines: list[str] = []
    for _ in range(draw(st.integers(2, 6))):
        kind = draw(st.sampled_from(["alu", "alu", "unary", "shift", "set", "cmov", "jcc"]))
        d, s = draw(st.sampled_from(regs)), draw(st.sampled_from(regs))
        if kind == "alu":
            m = draw(st.sampled_from(SEQ_ALU))
            reads, sets = ("C" if m in ("adc", "sbb") else ""), "CPAZSO"
            src = s if draw(st.booleans()) else hex(draw(st.integers(0, 0x7F)))
            line, undef = f"{m} {d}, {src}", undefined_flags(m, size)
        elif kind == "unary":
            m = draw(st.sampled_from(["inc", "dec", "neg", "not"]))
            reads, sets = "", {"inc": "PAZSO", "dec": "PAZSO", "neg": "CPAZSO", "not": ""}[m]
            line, undef = f"{m} {d}", 0
        elif kind == "shift":
            m = draw(st.sampled_from(SEQ_SHIFT))
            n = draw(st.integers(1, 3))
            reads = "C" if m in ("rcl", "rcr") else ""
            sets = "CO" if m in SEQ_SHIFT[3:] else "CPAZSO"
            line, undef = f"{m} {d}, {n}", undefined_flags(m, size, n)
        elif kind == "jcc":
            # A forward conditional branch over one ALU instruction: a side exit in the
            # middle of a block.  Either path may be taken: undefined = union of both.
            cc = draw(st.sampled_from(list(CC_READS)))
            if any(ALL_FLAGS[f] & undefined for f in CC_READS[cc]):
                continue
            m = draw(st.sampled_from(SEQ_ALU))
            if m in ("adc", "sbb") and undefined & ALL_FLAGS["C"]:
                continue
            label = f"skip{len(lines)}"
            lines += [f"j{cc} {label}", f"{m} {d}, {s}", f"{label}:"]
            undefined |= undefined_flags(m, size)
            continue
        else:
            cc = draw(st.sampled_from(list(CC_READS)))
            reads, sets, undef = CC_READS[cc], "", 0
            if kind == "set":
                line = f"set{cc} {REGS[8][regs.index(d)]}"
            else:
                if size == 8:
                    continue
                line = f"cmov{cc} {d}, {s}"
        if any(ALL_FLAGS[f] & undefined for f in reads):
            continue                 # reading an undefined flag: no defined answer to compare
        for f in sets:
            undefined &= ~ALL_FLAGS[f]
        undefined |= undef
        lines.append(line)
    return bits, lines, undefined


@QUICK
@given(seq=sequences(), regs=reg_values, flags=flag_values)
def test_blocks_with_flag_flow_match_unicorn(seq: tuple[int, list[str], int], regs: list[int],
                                             flags: int) -> None:
    bits, lines, undefined = seq
    if not lines:
        return
    text = "\n".join(lines)
    code = asm(text + "\nhlt", bits)
    wide = 64 if bits == 64 else 32
    regs = [v & ((1 << wide) - 1) for v in regs]
    g = _guest(bits)
    g.mem.write_bytes(CODE, code)
    g.core.tb_flush()
    g.env.regs[:8] = regs
    g.env.regs[4] = 0x8000
    g.env.rip = CODE
    g.env.eflags = (flags & ARITH_FLAGS) | 2
    g.core.run(100)
    # A fresh Unicorn: its own block cache is not reliably invalidated by mem_write when
    # the same address gets new code with branches in it (seen as irreproducible cases).
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, UC_MODES[bits])
    uc.mem_map(0, 2 << 20)
    uc.mem_write(CODE, code)
    table = UC_REGS if bits == 64 else UC_REGS32
    for r, v in zip(table, regs, strict=True):
        uc.reg_write(r, v)
    uc.reg_write(table[4], 0x8000)
    uc.reg_write(ux.UC_X86_REG_EFLAGS, (flags & ARITH_FLAGS) | 2)
    uc.emu_start(CODE, CODE + len(code) - 1)
    theirs = [uc.reg_read(r) for r in table]
    assert g.env.regs[:8] == theirs, f"{bits}-bit block {lines}"
    mask = ARITH_FLAGS & ~undefined
    tf = uc.reg_read(ux.UC_X86_REG_EFLAGS)
    assert g.env.eflags & mask == tf & mask, f"{bits}-bit block {lines}: flags"


@QUICK
@given(ms=st.sampled_from([(16, 16), (16, 32), (32, 16), (32, 32), (64, 16), (64, 32), (64, 64)]),
       mnem=st.sampled_from(["shld", "shrd"]), count=st.integers(0, 63), by_cl=st.booleans(),
       regs=reg_values, flags=flag_values)
def test_double_shifts_match_unicorn(ms: tuple[int, int], mnem: str, count: int, by_cl: bool,
                                     regs: list[int], flags: int) -> None:
    bits, size = ms
    masked = count & (0x3F if size == 64 else 0x1F)
    if size == 16 and masked > 16:
        return                                   # undefined result (SDM vol. 2B, SHLD)
    d, s = REGS[size][0], REGS[size][1]
    if by_cl:
        regs[1] = (regs[1] & ~0xFF) | count
        text = f"{mnem} {d}, {s}, cl"
    else:
        text = f"{mnem} {d}, {s}, {hex(count)}"
    undef = undefined_flags(mnem, size, min(masked, size))
    if (mnem == "shld" and size == 16 and masked == 16) or masked > size:
        undef |= 0x1                # beyond the size only CF differs from Unicorn: masked
    check(bits, text, regs, flags, undef)
