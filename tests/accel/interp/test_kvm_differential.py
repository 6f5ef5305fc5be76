"""Differential tests: interp against the real CPU (KVM at CPL3) on generated programs.

A generator draws programs of a few instructions from every integer family (ALU in
register, immediate and memory forms, INC/DEC/NEG/NOT, shifts and rotates through
carry, SHLD/SHRD, MUL/IMUL/DIV/IDIV with #DE, BT*/BSF/BSR/POPCNT, SETcc/CMOVcc/Jcc,
XCHG/XADD/CMPXCHG with LOCK, MOVZX/MOVSX/MOVSXD, BSWAP, LEA, PUSH/POP forms,
PUSHF/POPF, string instructions with REP prefixes and DF, LAHF/SAHF, the CBW
family), an operand size (8/16/32/64), a mode (64-bit, 32- and 16-bit
compatibility mode), edge values in the registers and the scratch memory, and a
base address that sometimes makes the memory operand fault (#PF not present, #PF
write to a read-only page, #PF on a supervisor page, #GP non-canonical).  The
program runs on the host CPU (:class:`~tests.accel.interp.cpl3_oracle.KvmCpl3`)
and on interp from the same state; registers, RFLAGS (the flags the SDM leaves
undefined masked, :mod:`accel.interp.undefined_flags`), the scratch memory and
user stack, and the fault (vector, error code, pushed frame, CR2) must match.
Hypothesis shrinks a divergence to a minimal program.

TZCNT/LZCNT are left out: interp's CPU model has neither BMI1 nor ABM, so it runs
their encodings as REP BSF/BSR (as such a CPU does), while a host CPU may have them.
A program with POPCNT or LAHF/SAHF in 64-bit mode is compared only where the host CPU
has them (probed once: a CPU without them answers #UD).  What the tests know about the host is in
tests/host_behaviour.py (KNOWN_REFERENCE_ERRORS: where its KVM is not the processor).

Profiles: the default runs a few hundred programs drawn by hypothesis (derandomized:
the same ones every run; a divergence shrinks to a minimal program).  ``PYQEMU_DEEP=N``
runs ``test_deep_random_programs``: N fresh programs of up to ``PYQEMU_DEEP_LEN``
(6) draws from the same generator, fed by a seeded RNG instead of hypothesis (seven
times faster: hypothesis's draws cost more than running the program on both CPUs);
it prints how many instructions it compared, and shrinks a divergence by dropping
lines and zeroing registers.  Without a usable /dev/kvm the comparisons skip with the
probed reason; the regression tests at the end run on interp alone, against the
outcome the hardware gave.
"""

from __future__ import annotations

import copy
import os
import random
import struct
import time

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from pyqemu.accel.interp.undefined_flags import undefined_flags
from tests import host_behaviour
from tests.accel.interp.cpl3_oracle import (
    CLEAN,
    CODE,
    DATA,
    DATA_SIZE,
    RDONLY,
    STACK,
    InterpCpl3,
    KvmCpl3,
    Outcome,
    entry_ip,
)
from tests.accel.interp.harness import asm
from tests.accel.kvm.kvm_support import kvm_usable
from tests.host_behaviour import KNOWN_REFERENCE_ERRORS

C, P, A, Z, S, O = 0x1, 0x4, 0x10, 0x40, 0x80, 0x800  # noqa: E741 - the SDM's flag letters
ARITH = C | P | A | Z | S | O
DF, RF = 0x400, 0x10000
_FLAG = {"C": C, "P": P, "A": A, "Z": Z, "S": S, "O": O}

_QUICK = int(os.environ.get("PYQEMU_DIFF_EXAMPLES", "300"))
_DEEP = int(os.environ.get("PYQEMU_DEEP", "0"))

# -- the two machines, built once per session -------------------------------------------------
_machines: dict[str, object] = {}


def machines() -> tuple[KvmCpl3, InterpCpl3]:
    ok, why = kvm_usable()
    if not ok:
        pytest.skip(why)
    if "kvm" not in _machines:
        _machines["kvm"] = KvmCpl3()
        _machines["interp"] = InterpCpl3()
        _probe_optional(_machines["kvm"])  # type: ignore[arg-type]
    return _machines["kvm"], _machines["interp"]  # type: ignore[return-value]


#: Instructions the generator draws that an x86-64 processor may lack in 64-bit mode
#: (CPUID.01H:ECX.POPCNT, CPUID.80000001H:ECX.LAHF-LM; without them: #UD, SDM vol. 2A/2B
#: under each instruction).  Probed once on the host CPU; a program using one it lacks is
#: not compared (the host cannot answer it), everything else is.
_OPTIONAL_64 = {"popcnt": "popcnt eax, ecx", "lahf": "lahf", "sahf": "sahf"}
_host_lacks: set[str] = set()


def _probe_optional(kvm: KvmCpl3) -> None:
    regs = [0] * 16
    regs[4] = STACK
    for name, text in _OPTIONAL_64.items():
        out = kvm.run(64, asm(text, 64, CODE), regs, 0x202, bytes(DATA_SIZE))
        if out.fault == (6, None):
            _host_lacks.add(name)


def host_cannot_run(prog: Program) -> str | None:
    """The instruction of ``prog`` that the host CPU lacks (probed), or None."""
    if prog.bits != 64:
        return None
    return next((m for m in sorted(_host_lacks)
                 if any(ln.split(" ", 1)[0] == m for ln in prog.lines)), None)


def interp_only() -> InterpCpl3:
    if "interp_only" not in _machines:
        _machines["interp_only"] = InterpCpl3()
    return _machines["interp_only"]  # type: ignore[return-value]


# -- program model ------------------------------------------------------------------------------
class Program:
    """A generated program with its initial state (a plain class: its repr stays short)."""

    def __init__(self, bits: int, lines: list[str], regs: list[int], rflags: int, data: bytes,
                 undefined: int, ever_undefined: int) -> None:
        self.bits, self.lines, self.regs, self.rflags = bits, lines, regs, rflags
        self.data = data
        self.undefined = undefined            # flags undefined at the end
        self.ever_undefined = ever_undefined  # undefined at any point (a fault may stop there)

    def __str__(self) -> str:
        regs = ", ".join(f"{n}={v:#x}" for n, v in zip(GPR_NAMES, self.regs, strict=False) if v)
        return (f"[{self.bits}-bit] " + "; ".join(self.lines)
                + f"  | {regs} rflags={self.rflags:#x} "
                + f"window={self.data[WINDOW - 16:WINDOW + 48].hex()}")

    __repr__ = __str__


GPR_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
_R64 = list(GPR_NAMES)
_R32 = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"] + [f"r{i}d" for i in range(8, 16)]
_R16 = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di"] + [f"r{i}w" for i in range(8, 16)]
_R8_64 = ["al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil"] + [f"r{i}b" for i in range(8, 16)]
_R8_LEGACY = ["al", "cl", "dl", "bl", "ah", "ch", "dh", "bh"]
PTR = {8: "byte ptr", 16: "word ptr", 32: "dword ptr", 64: "qword ptr"}
CCS = {"o": "O", "no": "O", "b": "C", "ae": "C", "e": "Z", "ne": "Z", "be": "CZ", "a": "CZ",
       "s": "S", "ns": "S", "p": "P", "np": "P", "l": "SO", "ge": "SO", "le": "ZSO", "g": "ZSO"}

EDGES = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
         0x80000000, 0xFFFFFFFF, 0x100000000, 2**63 - 1, 2**63, 2**64 - 1, 2**64 - 2,
         0x8000000000000001, 0x5555555555555555, 0xAAAAAAAAAAAAAAAA]
values = st.one_of(st.sampled_from(EDGES), st.integers(0, 2**64 - 1),
                   st.integers(0, 0xFF), st.integers(-64, 64).map(lambda v: v % 2**64))


class Choices:
    """Where a program's choices come from: hypothesis (the quick profile: derandomized,
    shrinking) or a seeded :class:`random.Random` (the deep profile: hypothesis spends
    about 0.15 ms per draw, five times what running a program on both CPUs costs)."""

    def pick(self, seq: list) -> object:
        raise NotImplementedError

    def integer(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def flip(self) -> bool:
        raise NotImplementedError

    def value(self) -> int:
        """An interesting 64-bit register or memory value (``values``)."""
        raise NotImplementedError


class DrawChoices(Choices):
    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def pick(self, seq: list) -> object:
        return self.draw(st.sampled_from(seq))

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def flip(self) -> bool:
        return self.draw(st.booleans())

    def value(self) -> int:
        return self.draw(values)


class RandomChoices(Choices):
    """The same distribution as ``values`` and the strategies, from a seeded RNG."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, seq: list) -> object:
        return seq[self.rng.randrange(len(seq))]

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def flip(self) -> bool:
        return self.rng.random() < 0.5

    def value(self) -> int:
        rng = self.rng
        kind = rng.randrange(4)
        if kind == 0:
            return EDGES[rng.randrange(len(EDGES))]
        if kind == 1:
            return rng.getrandbits(64)
        if kind == 2:
            return rng.randrange(0x100)
        return rng.randint(-64, 64) % 2**64


def regname(bits: int, size: int, i: int) -> str:
    if size == 64:
        return _R64[i]
    if size == 32:
        return _R32[i]
    if size == 16:
        return _R16[i]
    return (_R8_64 if bits == 64 else _R8_LEGACY)[i]


# Faulting bases: not present, read-only (stores fault), supervisor-only, non-canonical.
FAULT_BASES_64 = [0x600010, RDONLY + 0x10, 0x1010, 0x800000000000, 0x00007FFFFFFFFFF8]
FAULT_BASES_32 = [0x600010, RDONLY + 0x10, 0x1010, 0xFFFFFFF0]
WINDOW = 0x800            # the data offset the base register points near


class Gen:
    """Draws one program; tracks which flags are undefined to never read one."""

    def __init__(self, choices: Choices, bits: int) -> None:
        self.c = choices
        self.bits = bits
        self.nregs = 16 if bits == 64 else 8
        self.lines: list[str] = []
        self.undefined = 0
        self.ever = 0
        self.base = "rbx" if bits == 64 else "ebx"
        self.sizes = [8, 16, 32, 64] if bits == 64 else [8, 16, 32]

    # operands
    def dst(self, size: int) -> str:
        # Never RSP (the stack) or RBX (the memory base); legacy 8-bit: AL..DL, AH..DH.
        choices = [i for i in range(self.nregs) if i not in (3, 4)]
        if size == 8 and self.bits != 64:
            choices = [0, 1, 2, 4, 5, 6]
        return regname(self.bits, size, self.c.pick(choices))

    def src(self, size: int) -> str:
        choices = [i for i in range(self.nregs) if i != 4]
        if size == 8 and self.bits != 64:
            choices = [0, 1, 2, 3, 4, 5, 6, 7]
        return regname(self.bits, size, self.c.pick(choices))

    def mem(self, size: int) -> str:
        disp = self.c.pick([0, 0, 8, 1, -8, 0x13, 0x7FF])
        sign = "-" if disp < 0 else "+"
        return f"{PTR[size]} [{self.base} {sign} {abs(disp):#x}]"

    def imm(self, size: int) -> int:
        v = self.c.value()
        if size == 64:
            return v & 0x7FFFFFFF if self.c.flip() else -(v & 0x7FFFFFFF) - 1
        return v & ((1 << size) - 1)

    def emit(self, line: str, reads: str = "", sets: str = "", undef: int = 0) -> None:
        """Append ``line`` unless it reads an undefined flag; then update the flag state."""
        if any(_FLAG[f] & self.undefined for f in reads):
            return
        self.lines.append(line)
        for f in sets:
            self.undefined &= ~_FLAG[f]
        self.undefined |= undef
        self.ever |= self.undefined

    # families
    def alu(self, size: int) -> None:
        m = self.c.pick(["add", "adc", "sub", "sbb", "and", "or", "xor", "cmp",
                                       "test"])
        form = self.c.pick(["rr", "ri", "rm", "mr", "mi"])
        if m == "test" and form == "rm":
            form = "mr"
        d = {"rr": self.dst(size), "ri": self.dst(size), "rm": self.dst(size),
             "mr": self.mem(size), "mi": self.mem(size)}[form]
        s = {"rr": self.src(size), "mr": self.src(size), "rm": self.mem(size)}.get(
            form, hex(self.imm(size)))
        lock = "lock " if form in ("mr", "mi") and m not in ("cmp", "test") and \
            self.c.flip() else ""
        self.emit(f"{lock}{m} {d}, {s}", "C" if m in ("adc", "sbb") else "", "CPAZSO",
                  undefined_flags(m, size))

    def unary(self, size: int) -> None:
        m = self.c.pick(["inc", "dec", "neg", "not"])
        d = self.dst(size) if self.c.flip() else self.mem(size)
        self.emit(f"{m} {d}", "", {"inc": "PAZSO", "dec": "PAZSO", "neg": "CPAZSO",
                                   "not": ""}[m])

    def shift(self, size: int) -> None:
        m = self.c.pick(["shl", "shr", "sar", "rol", "ror", "rcl", "rcr"])
        d = self.dst(size) if self.c.flip() else self.mem(size)
        how = self.c.pick(["1", "imm", "cl"])
        reads = "C" if m in ("rcl", "rcr") else ""
        if how == "cl":
            # A CL count of 0 leaves every flag as it was, another sets them; CL is not
            # known here, so what was undefined stays undefined.
            self.emit(f"{m} {d}, cl", reads, "", undefined_flags(m, size) | self.undefined)
            return
        count = 1 if how == "1" else self.c.integer(0, 9 if self.c.flip() else 255)
        masked = count & (0x3F if size == 64 else 0x1F)
        sets = "" if masked == 0 else ("CO" if m in ("rol", "ror", "rcl", "rcr") else "CPZSO")
        self.emit(f"{m} {d}, {count}", reads, sets, undefined_flags(m, size, masked))

    def dshift(self, size: int) -> None:
        if size == 8:
            size = 16
        m = self.c.pick(["shld", "shrd"])
        d = self.dst(size) if self.c.flip() else self.mem(size)
        s = self.src(size)
        if size == 16 or self.c.flip():
            count = self.c.integer(0, 15 if size == 16 else 63)
            masked = count & (0x3F if size == 64 else 0x1F)
            undef = undefined_flags(m, size, masked)    # the count never exceeds the size
            self.emit(f"{m} {d}, {s}, {count}", "", "" if masked == 0 else "CPZSO", undef)
        else:
            self.emit(f"{m} {d}, {s}, cl", "", "", A | O | self.undefined)

    def muldiv(self, size: int) -> None:
        form = self.c.pick(["mul", "imul", "div", "idiv", "imul2", "imul3"])
        if form in ("imul2", "imul3") and size == 8:
            form = "imul"
        rm = self.src(size) if self.c.flip() else self.mem(size)
        if form == "imul2":
            line = f"imul {self.dst(size)}, {rm}"
        elif form == "imul3":
            line = f"imul {self.dst(size)}, {rm}, {self.c.integer(-128, 2**15 - 1)}"
        else:
            line = f"{form} {rm}"
        m = "div" if form in ("div", "idiv") else "mul"
        self.emit(line, "", "CPAZSO", undefined_flags(m, size))

    def bits_(self, size: int) -> None:
        if size == 8:
            size = 16
        # POPCNT only in 64-bit mode: in compatibility mode this host's KVM (PVM) answers
        # #UD (probed: f3 0f b8 c3 runs natively in 64-bit code, #UD in 32-bit code).
        m = self.c.pick(["bt", "bts", "btr", "btc", "bsf", "bsr"]
                                      + (["popcnt"] if self.bits == 64 else []))
        if m in ("bsf", "bsr", "popcnt"):
            rm = self.src(size) if self.c.flip() else self.mem(size)
            self.emit(f"{m} {self.dst(size)}, {rm}", "", "CPAZSO",
                      0 if m == "popcnt" else undefined_flags(m, size))
            return
        d = self.dst(size) if self.c.flip() else self.mem(size)
        if d.startswith(PTR[size]) and self.c.flip():
            # A register bit offset reaches beyond the operand: keep it near the window.
            s = regname(self.bits, size, 0)
            self.lines.append(f"mov {regname(self.bits, 32, 0)}, "
                              f"{self.c.integer(-2048, 2047) & 0xFFFFFFFF:#x}")
            if size == 64:
                self.lines.append("movsxd rax, eax")
        elif self.c.flip():
            s = hex(self.c.integer(0, 127))     # keystone: no imm8 >= 0x80 here
        else:
            s = self.src(size)
        self.emit(f"{m} {d}, {s}", "", "C", undefined_flags(m, size))

    def cond(self, size: int) -> None:
        cc = self.c.pick(list(CCS))
        kind = self.c.pick(["set", "cmov", "jcc"])
        if kind == "set":
            d = self.dst(8) if self.c.flip() else self.mem(8)
            self.emit(f"set{cc} {d}", CCS[cc])
        elif kind == "cmov":
            size = max(size, 16)
            rm = self.src(size) if self.c.flip() else self.mem(size)
            self.emit(f"cmov{cc} {self.dst(size)}, {rm}", CCS[cc])
        else:
            if any(_FLAG[f] & self.undefined for f in CCS[cc]):
                return
            label = f"skip{len(self.lines)}"
            self.lines.append(f"j{cc} {label}")
            before = self.undefined
            self.c.pick([self.alu, self.unary, self.muldiv])(size)
            self.lines.append(f"{label}:")
            self.undefined |= before
            self.ever |= self.undefined

    def exch(self, size: int) -> None:
        m = self.c.pick(["xchg", "xadd", "cmpxchg"])
        d = self.dst(size) if self.c.flip() else self.mem(size)
        is_mem = d.startswith(PTR[size])
        lock = "lock " if is_mem and m != "xchg" and self.c.flip() else ""
        if m == "xchg":
            self.emit(f"xchg {d}, {self.src(size)}")
        else:
            self.emit(f"{lock}{m} {d}, {self.src(size)}", "", "CPAZSO")

    def moves(self, size: int) -> None:
        m = self.c.pick(["movzx", "movsx", "movsxd", "bswap", "lea"])
        if m in ("movzx", "movsx"):
            from_size = 8 if size <= 16 or self.c.flip() else 16
            size = max(size, 16) if from_size == 8 else max(size, 32)
            rm = self.src(from_size) if self.c.flip() else self.mem(from_size)
            self.emit(f"{m} {self.dst(size)}, {rm}")
        elif m == "movsxd" and self.bits == 64:
            rm = self.src(32) if self.c.flip() else self.mem(32)
            self.emit(f"movsxd {self.dst(64)}, {rm}")
        elif m == "bswap":
            self.emit(f"bswap {self.dst(max(size, 32))}")
        else:
            size = max(size, 16)
            idx = self.src(64 if self.bits == 64 else 32)
            scale = self.c.pick([1, 2, 4, 8])
            disp = self.c.integer(-0x80000000, 0x7FFFFFFF)
            self.emit(f"lea {self.dst(size)}, [{self.base} + {idx}*{scale} + {disp:#x}]")

    def stack(self, size: int) -> None:
        form = self.c.pick(["push r", "push m", "push i", "pop r", "pop m",
                                          "pushf", "popf"])
        wide = 64 if self.bits == 64 else 32
        sz = 16 if self.c.integer(0, 3) == 0 else wide
        if form == "push r":
            self.emit(f"push {regname(self.bits, sz, self.c.integer(0, self.nregs - 1))}")
        elif form == "push m":
            self.emit(f"push {self.mem(sz)}")
        elif form == "push i":
            self.emit(f"push {self.c.integer(-0x80000000, 0x7FFFFFFF):#x}")
        elif form == "pop r":
            self.emit(f"pop {self.dst(sz)}")
        elif form == "pop m":
            self.emit(f"pop {self.mem(sz)}")
        elif form == "pushf":
            self.emit({64: "pushfq", 32: "pushfd", 16: "pushf"}[self.bits], "CPAZSO")
        else:
            # Arithmetic flags and DF only: TF would trap, IF/IOPL do not change at CPL3.
            v = self.c.integer(0, 0xFFF) & (ARITH | DF)
            self.lines.append(f"push {v:#x}")
            self.emit({64: "popfq", 32: "popfd", 16: "popf"}[self.bits], "", "CPAZSO")

    def string(self, size: int) -> None:
        m = self.c.pick(["movs", "stos", "lods", "cmps", "scas"])
        suffix = {8: "b", 16: "w", 32: "d", 64: "q"}[size]
        rep = self.c.pick(["", "rep ", "repe ", "repne "])
        if m in ("movs", "stos", "lods") and rep:
            rep = "rep "
        a = "r" if self.bits == 64 else "e"
        src_off = self.c.integer(-64, 64)
        dst_off = self.c.integer(-64, 64)
        self.lines.append(f"lea {a}si, [{self.base} + {src_off:#x}]")
        self.lines.append(f"lea {a}di, [{self.base} + {dst_off:#x}]")
        count = self.c.integer(0, 24)
        if rep:
            self.lines.append(f"mov ecx, {count}")
        if self.c.flip():
            self.lines.append(self.c.pick(["std", "cld"]))
        sets = "CPAZSO" if m in ("cmps", "scas") and not (rep and count == 0) else ""
        # 16-bit code addresses through SI/DI unless prefixed: take ESI/EDI (0x67).
        a32 = ".byte 0x67\n" if self.bits == 16 else ""
        if suffix == "d" and m in ("movs", "cmps"):
            # keystone reads MOVSD/CMPSD as the SSE2 instructions: encode A5/A7 directly.
            pre = ([0x66] if self.bits == 16 else []) + \
                ({"rep ": [0xF3], "repe ": [0xF3], "repne ": [0xF2]}.get(rep, []))
            op = pre + [0xA5 if m == "movs" else 0xA7]
            self.emit(a32 + ".byte " + ", ".join(f"{b:#x}" for b in op), "", sets)
            return
        self.emit(f"{a32}{rep}{m}{suffix}", "", sets)

    def misc(self, size: int) -> None:
        line = self.c.pick(["lahf", "sahf", "cbw", "cwde", "cwd", "cdq", "clc",
                                          "stc", "cmc"] + (["cdqe", "cqo"] if self.bits == 64
                                                           else []))
        if line == "lahf":
            self.emit(line, "CPAZS")
        elif line == "sahf":
            self.emit(line, "", "CPAZS")
        elif line in ("clc", "stc"):
            self.emit(line, "", "C")
        elif line == "cmc":
            self.emit(line, "C", "C")
        else:
            self.emit(line)

    FAMILIES = ("alu", "unary", "shift", "dshift", "muldiv", "bits_", "cond", "exch", "moves",
                "stack", "string", "misc")


def build_program(c: Choices, families: tuple[str, ...] = Gen.FAMILIES,
                  max_len: int = 4) -> Program:
    """One program: 1..``max_len`` draws from ``families``, its registers, flags and data."""
    bits = c.pick([64, 64, 32, 16])
    g = Gen(c, bits)
    g.undefined = g.ever = 0
    for _ in range(c.integer(1, max_len)):
        fam = c.pick(families)
        getattr(g, fam)(c.pick(g.sizes))
    mask = (1 << 64) - 1 if bits == 64 else 0xFFFFFFFF
    regs = [c.value() & mask for _ in range(16 if bits == 64 else 8)] + \
        [0] * (0 if bits == 64 else 8)
    regs[4] = STACK
    if c.integer(0, 9) == 0:
        regs[3] = c.pick(FAULT_BASES_64 if bits == 64 else FAULT_BASES_32)
    else:
        regs[3] = DATA + WINDOW + c.pick([0, 0, 0, 5, -3, 0x7FC, 0x17FD])
    window = b"".join(struct.pack("<Q", c.value()) for _ in range(8))
    data = bytearray(i * 7 & 0xFF for i in range(DATA_SIZE))
    data[WINDOW - 16:WINDOW + 48] = window
    # IF=1, as for any user process (PVM runs CPL3 with IF=1 whatever KVM_SET_REGS says).
    rflags = 0x202 | (c.integer(0, 0xFFF) & ARITH) | (DF if c.integer(0, 4) == 0 else 0)
    if not g.lines:
        g.lines.append("nop")
    return Program(bits, g.lines, regs, rflags, bytes(data), g.undefined, g.ever)


@st.composite
def programs(draw: st.DrawFn, families: tuple[str, ...] = Gen.FAMILIES) -> Program:
    return build_program(DrawChoices(draw), families)


# -- run and compare ------------------------------------------------------------------------
# Where this host's reference is not the processor (KNOWN_REFERENCE_ERRORS): listed, with
# what decides instead, in tests/host_behaviour.py, the one table of what the tests know
# about the host.


def _known_reference_error(prog: Program, name: str) -> bool:
    return bool(KNOWN_REFERENCE_ERRORS[name](prog))


def _split_store_masked(hw: Outcome, ours: Outcome) -> Outcome:
    """``hw`` with the 7 bytes below the faulting page (CR2) taken from ``ours``: where the
    emulator's partial split store lands (see ``split-store-emulated``)."""
    lo, hi = hw.cr2 - 7, hw.cr2
    out = copy.copy(hw)

    def fix(a: bytes, b: bytes, base: int) -> bytes:
        s, e = max(lo, base), min(hi, base + len(a))
        if s >= e:
            return a
        return a[:s - base] + b[s - base:e - base] + a[e - base:]
    out.data = fix(hw.data, ours.data, DATA)
    out.stack = fix(hw.stack, ours.stack, STACK - 0x1000)
    clean, off = b"", 0
    for addr, n in CLEAN:
        clean += fix(hw.clean[off:off + n], ours.clean[off:off + n], addr)
        off += n
    out.clean = clean
    return out


def _has_cmps(prog: Program) -> bool:
    return any("cmps" in ln or (ln.startswith(".byte") and "0xa7" in ln) for ln in prog.lines)


def _cmps_operand_fault_order(prog: Program, hw: Outcome, ours: Outcome) -> bool:
    """Both of a 64-bit CMPS's operands would #PF and the host reported the other one
    (tests/host_behaviour.py, "cmps-operand-fault-order"): CR2 and the error code may then
    differ, each side's CR2 must be one of the two operands (rSI, rDI as the fault left
    them), interp's must be ES:[rDI]; everything else is still compared.  Reported."""
    if not (prog.bits == 64 and hw.fault and ours.fault and hw.fault[0] == ours.fault[0] == 14
            and hw.cr2 != ours.cr2 and _has_cmps(prog)):
        return False
    def faults_on(cr2: int, reg: int, out: Outcome) -> bool:
        """CR2 is the operand at ``reg`` (a 67H prefix: its low half), or the start of the
        second page an operand of up to 8 bytes runs into."""
        return any(cr2 == a or (cr2 & 0xFFF == 0 and a < cr2 < a + 8)
                   for a in (out.regs[reg], out.regs[reg] & 0xFFFFFFFF))

    if not (any(faults_on(hw.cr2, r, hw) for r in (6, 7)) and faults_on(ours.cr2, 7, ours)):
        return False
    host_behaviour.report("cmps-operand-fault-order", f"{prog}",
           host=f"#PF({hw.fault[1]:#x}) CR2={hw.cr2:#x}",
           interp=f"#PF({ours.fault[1]:#x}) CR2={ours.cr2:#x}")
    return True


def _read_snippet_memory(out: Outcome, la: int, size: int) -> int | None:
    """``size`` bytes at ``la`` as the run left them: the compared data, stack and clean
    pages from ``out``, the read-only user pages (never written by a snippet) from the
    image both machines start from; None elsewhere."""
    for base, buf in ((DATA, out.data), (STACK - 0x1000, out.stack)):
        if base <= la and la + size <= base + len(buf):
            return int.from_bytes(buf[la - base:la - base + size], "little")
    off = 0
    for base, n in CLEAN:
        if base <= la and la + size <= base + n:
            return int.from_bytes(out.clean[off + la - base:off + la - base + size], "little")
        off += n
    if la >= RDONLY and la + size <= 0x600000:
        return int.from_bytes(machines()[1].mem.read_bytes(la, size), "little")
    return None


def _sub_flags(a: int, b: int, size: int) -> int:
    """CF PF AF ZF SF OF of ``a - b`` at ``size`` bytes (SDM vol. 2A, CMP)."""
    bits = 8 * size
    mask = (1 << bits) - 1
    r = (a - b) & mask
    flags = C if a < b else 0
    flags |= P if bin(r & 0xFF).count("1") % 2 == 0 else 0
    flags |= A if (a ^ b ^ r) & 0x10 else 0
    flags |= Z if r == 0 else 0
    flags |= S if r >> (bits - 1) & 1 else 0
    flags |= O if ((a ^ b) & (a ^ r)) >> (bits - 1) & 1 else 0
    return flags


def _rep_compare_fault_flags(prog: Program, hw: Outcome, ours: Outcome) -> bool:
    """A REPE/REPNE CMPS or SCAS faulted after at least one iteration and the host's
    frame holds the flags that iteration set where interp's holds those of before the
    instruction (tests/host_behaviour.py, "rep-cmps-scas-flags-on-a-fault").  Accepted,
    and reported, only when the host's flags are exactly the last iteration's compare
    (recomputed from its operands) and everything else in the frame agrees."""
    if not (hw.fault and hw.fault == ours.fault and len(hw.frame) == len(ours.frame) == 5
            and hw.frame[0] == ours.frame[0] and hw.frame[2] != ours.frame[2]
            and (hw.frame[2] ^ ours.frame[2]) & ~ARITH == 0 and prog.bits == 64):
        return False
    try:
        code = asm("\n".join(prog.lines), prog.bits, entry_ip(prog.bits))
    except Exception:
        return False
    import capstone
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    off = hw.frame[0] - entry_ip(prog.bits)
    insn = next(md.disasm(code[off:off + 15], hw.frame[0]), None)
    if insn is None or insn.mnemonic not in ("repe cmpsb", "repe cmpsw", "repe cmpsd",
                                             "repe cmpsq", "repne cmpsb", "repne cmpsw",
                                             "repne cmpsd", "repne cmpsq", "repe scasb",
                                             "repe scasw", "repe scasd", "repe scasq",
                                             "repne scasb", "repne scasw", "repne scasd",
                                             "repne scasq"):
        return False
    if insn.bytes[0] == 0x67 or any(b == 0x67 for b in insn.bytes[:insn.size - 1]):
        return False                                     # 32-bit addresses: not modelled here
    size = {"b": 1, "w": 2, "d": 4, "q": 8}[insn.mnemonic[-1]]
    step = -size if hw.frame[2] & DF else size
    rdi = hw.regs[7] - step
    b = _read_snippet_memory(hw, rdi, size)
    if "cmps" in insn.mnemonic:
        a = _read_snippet_memory(hw, hw.regs[6] - step, size)
    else:
        a = hw.regs[0] & ((1 << (8 * size)) - 1)
    if a is None or b is None or hw.frame[2] & ARITH != _sub_flags(a, b, size):
        return False
    host_behaviour.report("rep-cmps-scas-flags-on-a-fault", f"{prog}",
                          host=f"RFLAGS {hw.frame[2]:#x}", interp=f"RFLAGS {ours.frame[2]:#x}")
    return True


def compare(prog: Program, hw: Outcome, ours: Outcome) -> list[str]:
    """The differences that matter, one line each (empty: they agree)."""
    diffs = []
    if hw.other or ours.other:
        return [f"kvm: {hw.other or 'ok'}; interp: {ours.other or 'ok'}"] if \
            hw.other != ours.other else []
    cmps_order = _known_reference_error(prog, "cmps-order") or _cmps_operand_fault_order(
        prog, hw, ours)
    if (hw.fault and ours.fault and {hw.fault[0], ours.fault[0]} == {13, 14}
            and _known_reference_error(prog, "cmps-two-faults")):
        return []
    if (hw.fault and ours.fault and {hw.fault[0], ours.fault[0]} <= {13, 14}
            and _known_reference_error(prog, "cmps-canonical-edge-emulated")):
        return []
    if (hw.fault == (6, None) and ours.fault and ours.fault[0] in (13, 14)
            and _known_reference_error(prog, "popcnt-gp-emulated")):
        return []
    if (hw.fault and ours.fault and hw.fault[0] == ours.fault[0] == 14
            and hw.cr2 & 0xFFF == 0 and hw.cr2 - 7 <= ours.cr2 < hw.cr2
            and _known_reference_error(prog, "split-fault-order-emulated")):
        return []
    if hw.fault != ours.fault and not (cmps_order and hw.fault and ours.fault
                                       and hw.fault[0] == ours.fault[0]):
        # (With the CMPS order listed below, which operand faults first decides the
        # error code too: only the vector is compared then.)
        return [f"fault: kvm {hw.fault} interp {ours.fault} "
                f"(kvm frame {[hex(x) for x in hw.frame]}, interp {[hex(x) for x in ours.frame]})"]
    wide = (1 << 64) - 1 if prog.bits == 64 else 0xFFFFFFFF
    nregs = 16 if prog.bits == 64 else 8
    for i in range(nregs):
        if i == 4 and hw.fault:
            continue                   # the kernel stack pointer: the frame has RSP
        if hw.regs[i] & wide != ours.regs[i] & wide:
            diffs.append(f"{GPR_NAMES[i]}: kvm {hw.regs[i]:#x} interp {ours.regs[i]:#x}")
    if hw.rip != ours.rip:
        diffs.append(f"rip: kvm {hw.rip:#x} interp {ours.rip:#x}")
    if hw.fault:
        mask = ~(prog.ever_undefined) & 0xFFFFFFFF
        hf, of = list(hw.frame), list(ours.frame)
        if _rep_compare_fault_flags(prog, hw, ours):
            mask &= ~ARITH              # the listed host choice: the rest still compared
        hf[2] &= mask
        of[2] &= mask
        if hf != of:
            diffs.append(f"frame: kvm {[hex(x) for x in hw.frame]} "
                         f"interp {[hex(x) for x in ours.frame]} (flags mask {mask:#x})")
        if hw.cr2 != ours.cr2 and not cmps_order:
            diffs.append(f"cr2: kvm {hw.cr2:#x} interp {ours.cr2:#x}")
    else:
        mask = (ARITH | DF) & ~prog.undefined
        if hw.rflags & mask != ours.rflags & mask:
            diffs.append(f"rflags: kvm {hw.rflags & mask:#x} interp {ours.rflags & mask:#x} "
                         f"(mask {mask:#x})")
    if (hw.fault and hw.fault[0] == 14 and hw.cr2 & 0xFFF == 0
            and _known_reference_error(prog, "split-store-emulated")):
        hw = _split_store_masked(hw, ours)
    for name, a, b, base in (("data", hw.data, ours.data, DATA),
                             ("stack", hw.stack, ours.stack, STACK - 0x1000)):
        if a != b:
            k = next(i for i in range(len(a)) if a[i] != b[i])
            diffs.append(f"{name} at {base + k:#x}: kvm {a[k:k + 8].hex()} "
                         f"interp {b[k:k + 8].hex()}")
    if hw.clean != ours.clean:
        j = k = next(i for i in range(len(hw.clean)) if hw.clean[i] != ours.clean[i])
        for addr, n in CLEAN:  # noqa: B007 - offset j of the joined pages -> address (used below)
            if k < n:
                break
            k -= n
        diffs.append(f"memory at {addr + k:#x}: kvm {hw.clean[j:j + 8].hex()} "
                     f"interp {ours.clean[j:j + 8].hex()}")
    return diffs


def outcomes(prog: Program) -> tuple[Outcome, Outcome]:
    """``prog`` run on the host CPU and on interp from the same state."""
    kvm, interp = machines()
    try:
        code = asm("\n".join(prog.lines), prog.bits, entry_ip(prog.bits))
    except Exception as e:          # a generator bug, not a divergence: say which text
        raise AssertionError(f"keystone cannot assemble {prog}: {e}") from e
    hw = kvm.run(prog.bits, code, prog.regs, prog.rflags, prog.data)
    return hw, interp.run(prog.bits, code, prog.regs, prog.rflags, prog.data)


def run_and_compare(prog: Program) -> None:
    hw, ours = outcomes(prog)
    if host_cannot_run(prog):
        reject()                                # (the host CPU lacks it: probed above)
    diffs = compare(prog, hw, ours)
    assert not diffs, f"{prog}\n  " + "\n  ".join(diffs)


QUICK = settings(max_examples=max(1, _QUICK // 4), deadline=None, derandomize=True,
                 suppress_health_check=list(HealthCheck), database=None)


@QUICK
@given(prog=programs(("alu", "unary", "shift", "dshift", "cond")))
def test_arithmetic_and_flags_match_the_cpu(prog: Program) -> None:
    run_and_compare(prog)


@QUICK
@given(prog=programs(("muldiv", "bits_", "misc", "cond")))
def test_muldiv_bits_and_conversions_match_the_cpu(prog: Program) -> None:
    run_and_compare(prog)


@QUICK
@given(prog=programs(("exch", "moves", "stack", "alu")))
def test_exchanges_moves_and_stack_match_the_cpu(prog: Program) -> None:
    run_and_compare(prog)


@QUICK
@given(prog=programs(("string", "alu", "cond")))
def test_string_instructions_match_the_cpu(prog: Program) -> None:
    run_and_compare(prog)


def count_instructions(lines: list[str]) -> int:
    """Generated instructions in ``lines``: labels are not, a ``.byte`` line is one."""
    return sum(1 for ln in lines if not ln.endswith(":"))


def shrink(prog: Program) -> Program:
    """A smaller program that still diverges: drop lines, then zero registers, while the
    comparison still fails.  (Dropping a line can expose a flag the generator knew to be
    undefined, so the failure message shows the original program too.)"""
    def diverges(p: Program) -> bool:
        try:
            hw, ours = outcomes(p)
        except AssertionError:                  # no longer assembles (a label went)
            return False
        return bool(compare(p, hw, ours))

    best, changed = prog, True
    while changed:
        changed = False
        for i in range(len(best.lines)):
            if len(best.lines) == 1:
                break
            cand = copy.copy(best)
            cand.lines = best.lines[:i] + best.lines[i + 1:]
            if i < len(best.lines) and diverges(cand):
                best, changed = cand, True
                break
        for r in range(len(best.regs)):
            if r in (3, 4) or not best.regs[r]:
                continue
            cand = copy.copy(best)
            cand.regs = list(best.regs)
            cand.regs[r] = 0
            if diverges(cand):
                best, changed = cand, True
    return best


@pytest.mark.slow
@pytest.mark.skipif(_DEEP <= 0, reason="deep profile: set PYQEMU_DEEP=N for N programs")
def test_deep_random_programs(capsys: pytest.CaptureFixture[str]) -> None:
    """``PYQEMU_DEEP`` programs of up to ``PYQEMU_DEEP_LEN`` (default 6) instruction draws,
    each from ``random.Random(f"{seed}-{n}")`` (``PYQEMU_DEEP_SEED``, default: fresh, and
    printed; ``PYQEMU_DEEP_FIRST`` starts at program n, to replay a failure)."""
    machines()
    seed = int(os.environ.get("PYQEMU_DEEP_SEED") or random.SystemRandom().getrandbits(32))
    first = int(os.environ.get("PYQEMU_DEEP_FIRST", "0"))
    max_len = int(os.environ.get("PYQEMU_DEEP_LEN", "6"))
    interp = machines()[1]
    report = {"programs": 0, "generated": 0, "retired": 0, "faults": 0}
    t0 = time.monotonic()
    for n in range(first, first + _DEEP):
        prog = build_program(RandomChoices(random.Random(f"{seed}-{n}")), max_len=max_len)
        before = interp.core.icount
        hw, ours = outcomes(prog)
        if host_cannot_run(prog):
            continue                            # (the host CPU lacks it: probed)
        report["programs"] += 1
        report["generated"] += count_instructions(prog.lines)
        report["retired"] += interp.core.icount - before
        report["faults"] += hw.fault is not None
        diffs = compare(prog, hw, ours)
        if diffs:
            small = shrink(prog)
            hw, ours = outcomes(small)
            raise AssertionError(
                f"divergence in program {n} of seed {seed} "
                f"(replay: PYQEMU_DEEP_SEED={seed} PYQEMU_DEEP_FIRST={n} PYQEMU_DEEP=1)\n"
                f"  original: {prog}\n  " + "\n  ".join(diffs) +
                f"\n  shrunk:   {small}\n  " + "\n  ".join(compare(small, hw, ours)))
        if n % 5000 == 4999 or n == first + _DEEP - 1:
            with capsys.disabled():
                print(f"\ndeep differential, seed {seed}: {report['programs']} programs, "
                      f"{report['generated']} generated instructions, {report['retired']} "
                      f"retired by interp, {report['faults']} ending in a fault, no divergence "
                      f"({time.monotonic() - t0:.0f} s)", flush=True)


# -- regressions: minimal programs of divergences found, with the hardware's answer -----------
def _interp_run(bits: int, text: str, regs: dict[int, int] | None = None,
                rflags: int = 2) -> Outcome:
    r = [0] * 16
    r[4], r[3] = STACK, DATA
    for i, v in (regs or {}).items():
        r[i] = v
    return interp_only().run(bits, asm(text, bits, entry_ip(bits)), r, rflags,
                             bytes(DATA_SIZE))


def test_fault_at_cpl3_is_delivered_through_supervisor_only_idt_and_tss() -> None:
    # Found by the differential: `ud2` at CPL3 ended in a triple fault on interp, because
    # it read the IDT and TSS (on a supervisor page) as user accesses.  Those are implicit
    # supervisor-mode accesses (SDM vol. 3A, 4.6).  Hardware: #UD delivered, frame pushed.
    out = _interp_run(64, "ud2")
    assert out.other == ""
    assert out.fault == (6, None)
    assert out.frame == (CODE, 0x23, 0x10002, STACK, 0x1B)


def test_fault_frame_has_rf_set() -> None:
    # Found by the differential: hardware pushes RFLAGS with RF=1 for a fault
    # (SDM vol. 3B, 17.3.1.1); interp pushed RF=0.  `xor ecx, ecx; div ecx` -> #DE.
    out = _interp_run(64, "xor ecx, ecx\ndiv ecx")
    assert out.fault == (0, None)
    assert out.frame == (CODE + 2, 0x23, 0x10046, STACK, 0x1B)


def test_page_fault_error_code_and_cr2_at_cpl3() -> None:
    # Hardware: a user read of a not-present page is #PF(U=1, W=0, P=0) = 4, a user
    # write to a read-only page #PF(7), a user read of a supervisor page #PF(5).
    assert _interp_run(64, "mov rax, [0x600000]").fault == (14, 4)
    out = _interp_run(64, f"mov byte ptr [{RDONLY:#x}], 1")
    assert (out.fault, out.cr2) == ((14, 7), RDONLY)
    assert _interp_run(64, "mov rax, [0x1000]").fault == (14, 5)


def test_rmw_page_fault_reports_a_write() -> None:
    # Found by the differential (minimal program): `xchg byte ptr [rbx], al` with rbx at a
    # not-present page.  Hardware (probed): #PF error code 6 (U|W), also for
    # `add byte ptr [0x600000], al` (SDM vol. 3A, 4.7).  Fixed in f1c9224 (RMW reads
    # through the write TLB).
    assert _interp_run(64, "xchg byte ptr [rbx], al", {3: 0x600010}).fault == (14, 6)
    assert _interp_run(64, "add byte ptr [0x600000], al").fault == (14, 6)


def test_cmps_faults_on_the_destination_first() -> None:
    # Found by the deep profile (minimal program): `cmpsb` with RSI = RBX and RDI = RBX+1
    # both on a not-present page.  Hardware: #PF with CR2 = RDI (ES:[rDI] is read first);
    # interp used to report RSI's address.
    prog = "lea rsi, [rbx + 0x0]\nlea rdi, [rbx + 0x1]\ncmpsb"
    out = _interp_run(64, prog, {3: 0x600010})
    assert out.fault == (14, 4)
    assert out.cr2 == 0x600011
    rep = _interp_run(64, "lea rsi, [rbx + 0x0]\nlea rdi, [rbx + 0x1]\nmov rcx, 0x3\nrepe cmpsb",
                      {3: 0x600010})
    assert rep.fault == (14, 4) and rep.cr2 == 0x600011


def test_rep_cmps_fault_keeps_the_flags_from_before_the_instruction() -> None:
    # Found by the deep profile (minimal program): `rep cmpsb` with RCX=2 whose first
    # element (0x5fffff) compares equal and whose second is on a not-present page.
    # Hardware: the #PF frame holds RFLAGS as before the instruction (0x10202 with RF),
    # not the first iteration's ZF/PF; RCX/RSI/RDI show the one iteration done.
    prog = "lea rsi, [rbx - 0x11]\nlea rdi, [rbx - 0x11]\nmov ecx, 0x2\ncld\nrep cmpsb"
    out = _interp_run(64, prog, {3: 0x600010}, rflags=0x602)
    assert out.fault == (14, 4)
    assert out.frame[2] == 0x10202
    assert out.regs[1] == 1 and out.regs[6] == out.regs[7] == 0x600000


def test_bt_register_offset_with_32bit_address_in_16bit_code() -> None:
    # Found by the deep profile (minimal program): in 16-bit code, `bt word ptr [ebx], ax`
    # with AX=0x7f reads the word at EBX+14 (SDM vol. 2A, BT: the bit offset selects a
    # word relative to the 32-bit effective address).  Hardware: no fault, CF=bit 15 of
    # that word.  interp: #PF(5) at a wrapped 16-bit address.
    # Cause: Ctx.linear returned `(base + ea) & mask` unparenthesized, and gen_bt appended
    # `+ delta`, so `&` (looser than `+`) made it `(base + ea) & (mask + delta)`.
    out = _interp_run(16, "bt word ptr [ebx], ax", {0: 0x7F, 3: DATA + WINDOW})
    assert out.fault is None
    assert out.rflags & 1 == 0
    # BTS/BTC set bit 15 of the word at EBX+14 (bit 7 of byte +15); BTR on it clears it.
    for text, byte in (("bts", 0x80), ("btc", 0x80), ("btr", 0x00)):
        out = _interp_run(16, f"{text} word ptr [ebx], ax", {0: 0x7F, 3: DATA + WINDOW})
        assert out.fault is None, text
        assert out.data[WINDOW + 14:WINDOW + 16] == bytes([0, byte]), text
        assert sum(out.data) == byte, text
    out = _interp_run(16, "bts word ptr [ebx], ax\nbt word ptr [ebx], ax",
                      {0: 0x7F, 3: DATA + WINDOW})
    assert (out.fault, out.rflags & 1) == (None, 1)


def test_deep_shrinker_keeps_the_diverging_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deep profile's shrinker: with a comparison that flags any program holding a
    BSWAP (a stand-in divergence), a long program shrinks to that one line."""
    machines()
    lines = ["add eax, ecx", "bswap edx", "xor esi, esi", "inc edi"]
    regs = [0x11, 0x22, 0x33, DATA + WINDOW, STACK, 0x66, 0x77, 0x88] + [0x99] * 8
    prog = Program(64, lines, regs, 0x202, bytes(DATA_SIZE), 0, 0)
    monkeypatch.setitem(globals(), "compare", lambda p, hw, ours: (
        ["planted"] if any("bswap" in ln for ln in p.lines) else []))
    small = shrink(prog)
    assert small.lines == ["bswap edx"]
    assert [r for i, r in enumerate(small.regs) if i not in (3, 4)] == [0] * 14
    assert prog.lines == lines                  # the original is left as it was


def test_split_store_faulting_on_its_second_page_writes_nothing() -> None:
    """A dword store at 0x3FFFFF whose second page (0x400000) is read-only: #PF(W|U|P),
    CR2 = 0x400000, and the byte below the boundary is left alone.  The processor does
    this in 64-bit mode (natively, checked here when /dev/kvm is usable); interp must
    do it in every mode, though this host's KVM emulator writes that byte in
    compatibility mode (``split-store-emulated``)."""
    regs = [0] * 16
    regs[4], regs[0], regs[7] = STACK, 0x04CA0197, 0x3FFFFF
    for bits, text in ((64, "mov dword ptr [rdi], eax"), (32, "mov dword ptr [edi], eax"),
                       (32, "stosd"), (16, ".byte 0x67\nstosd")):
        code = asm(text, bits, entry_ip(bits))
        out = interp_only().run(bits, code, regs, 0x202, bytes(DATA_SIZE))
        assert (out.fault, out.cr2) == ((14, 7), 0x400000), text
        assert out.clean[-1] == 0 and out.regs[7] == 0x3FFFFF, text
    if kvm_usable()[0]:
        hw = machines()[0].run(64, asm("mov dword ptr [rdi], eax", 64, CODE), regs, 0x202,
                               bytes(DATA_SIZE))
        assert (hw.fault, hw.cr2, hw.clean[-1]) == ((14, 7), 0x400000, 0)


@pytest.mark.parametrize("text, equal, rax, rdx", [
    ("lock cmpxchg dword ptr [rbx], ecx", True, 0xAAAAAAAA11111111, 0xBBBBBBBB22222222),
    ("lock cmpxchg dword ptr [rbx + 4], ecx", False, 0x22222222, 0xBBBBBBBB22222222),
    ("cmpxchg8b qword ptr [rbx]", True, 0xAAAAAAAA11111111, 0xBBBBBBBB22222222),
    ("cmpxchg8b qword ptr [rbx + 4]", False, 0x22222222, 0x33333333)])
def test_cmpxchg_writes_the_accumulator_only_when_unequal(text: str, equal: bool, rax: int,
                                                         rdx: int) -> None:
    """CMPXCHG m32 and CMPXCHG8B in 64-bit mode: an equal compare leaves RAX (and RDX)
    whole; an unequal one loads EAX (EDX:EAX), zero-extending (found by the deep profile:
    ``movsxd rax, [rbx+1]; lock cmpxchg [rbx+1], r9d`` kept RAX's upper half on the CPU)."""
    regs = [0] * 16
    regs[4], regs[3] = STACK, DATA
    regs[0], regs[2], regs[1] = 0xAAAAAAAA11111111, 0xBBBBBBBB22222222, 0xCCCCCCCC33333333
    data = bytearray(DATA_SIZE)
    struct.pack_into("<III", data, 0, 0x11111111, 0x22222222, 0x33333333)
    code = asm(text, 64, CODE)
    ours = interp_only().run(64, code, regs, 0x202, bytes(data))
    assert (ours.regs[0], ours.regs[2], bool(ours.rflags & Z)) == (rax, rdx, equal)
    if kvm_usable()[0]:
        hw = machines()[0].run(64, code, regs, 0x202, bytes(data))
        assert (hw.regs, hw.rflags & ARITH, hw.data) == (ours.regs, ours.rflags & ARITH,
                                                         ours.data)


@pytest.mark.parametrize("text, vector", [
    ("mov rax, qword ptr [rbx]", (14, 4)), ("add qword ptr [rbx], rax", (14, 6)),
    ("mov qword ptr [rbx], rax", (14, 6)), ("popcnt r8, qword ptr [rbx]", (14, 4))])
def test_access_ending_non_canonical_faults_on_its_first_page(
        text: str, vector: tuple[int, int]) -> None:
    """An 8-byte access at 0x7FFFFFFFFFF9: its first page is not present, its last byte
    non-canonical.  This host's KVM gives the first page's #PF (for POPCNT its
    instruction emulator gives #UD instead: the ``popcnt-gp-emulated`` entry, found by
    the deep profile, program 115742 of seed 20261122, covers #PF too now); interp
    does the same.  Whether the processor itself checks the last byte's canonical form
    first could not be measured here: the SDM (vol. 3A, 3.3.7.1) does not order the
    two."""
    regs = [0] * 16
    regs[4], regs[3] = STACK, 0x7FFFFFFFFFF9
    code = asm(text, 64, CODE)
    ours = interp_only().run(64, code, regs, 0x202, bytes(DATA_SIZE))
    assert (ours.fault, ours.cr2) == (vector, 0x7FFFFFFFFFF9)
    if kvm_usable()[0] and "popcnt" not in text:
        hw = machines()[0].run(64, code, regs, 0x202, bytes(DATA_SIZE))
        assert (hw.fault, hw.frame, hw.cr2) == (ours.fault, ours.frame, ours.cr2)


@pytest.mark.parametrize("text", ["btr dword ptr [rbx + 1], eax", "add dword ptr [rbx - 0x13], eax",
                                  "mov dword ptr [rbx - 0x13], eax"])
def test_split_write_faults_on_its_first_page_first(text: str) -> None:
    """A dword write at 0x5FFFFD: its first page is read-only, its second not present.
    The processor reports the first page's protection #PF (W|U|P, CR2 = 0x5FFFFD);
    interp does, in every mode, though this host's emulator answers the second page's
    #PF in compatibility mode (``split-fault-order-emulated``; seed 20261123, program
    234416)."""
    regs = [0] * 16
    regs[4], regs[3], regs[0] = STACK, 0x600010, 0xFFFFFF67
    code = asm(text, 64, CODE)
    ours = interp_only().run(64, code, regs, 0x202, bytes(DATA_SIZE))
    assert (ours.fault, ours.cr2) == ((14, 7), 0x5FFFFD)
    if kvm_usable()[0]:
        hw = machines()[0].run(64, code, regs, 0x202, bytes(DATA_SIZE))
        assert (hw.fault, hw.cr2, hw.frame) == (ours.fault, ours.cr2, ours.frame)


def test_host_choice_of_cmps_fault_is_reported() -> None:
    """Seed 20261124, program 4295 on an AMD EPYC host under PVM (Linux 6.18): `repne
    cmpsb` with DS:[rSI] on a supervisor page and ES:[rDI] on a not-present one; the host
    reports rSI's #PF (error 5), interp rDI's (error 4).  Accepted and reported as the
    listed host choice; any other difference still fails."""
    prog = Program(64, ["repne cmpsb"], [0] * 16, 0x202, b"", 0, 0)
    regs = [0] * 16
    regs[6], regs[7] = 0xFFFFFFF7, 0x10000002F
    frame = (0x20000B, 0x23, 0x10A82, 0x3F0000, 0x1B)

    def outcome(err: int, cr2: int, **kw: object) -> Outcome:
        o = Outcome(list(regs), 0x20000B, 0x10A82, (14, err), frame, cr2)
        for k, v in kw.items():
            setattr(o, k, v)
        return o

    before = len(host_behaviour.reports())
    assert compare(prog, outcome(5, regs[6]), outcome(4, regs[7])) == []
    new = host_behaviour.reports()[before:]
    assert [r.behaviour for r in new] == ["cmps-operand-fault-order"]
    assert "CR2=0xfffffff7" in new[0].host and "CR2=0x10000002f" in new[0].interp
    # Seed 20261124, program 141744: the host's #PF is for the second page of a split
    # DS:[rSI] operand (CMPSQ at 5FFFFAH), interp's for ES:[rDI].
    split = list(regs)
    split[6] = 0x5FFFFA
    assert compare(prog, outcome(4, 0x600000, regs=split), outcome(4, regs[7], regs=split)) == []
    # interp choosing rSI, a CR2 that is neither operand, or another difference: failures.
    assert compare(prog, outcome(4, regs[7]), outcome(5, regs[6]))
    assert compare(prog, outcome(5, 0x1234), outcome(4, regs[7]))
    other = list(regs)
    other[0] = 1
    assert compare(prog, outcome(5, regs[6]), outcome(4, regs[7], regs=other))
    # Not a CMPS: a CR2 difference is a divergence.
    assert compare(Program(64, ["movsb"], [0] * 16, 0x202, b"", 0, 0),
                   outcome(5, regs[6]), outcome(4, regs[7]))


def test_host_choice_of_rep_compare_fault_flags_is_reported() -> None:
    """Seed 20261124, program 29964 (AMD EPYC under PVM, Linux 6.18): `repe cmpsb` whose
    fourth iteration faults keeps the third compare's flags in the host's #PF frame; interp
    restores those of before the instruction (Intel SDM vol. 2B, REP).  The host's answer
    is accepted only if it is exactly that compare's flags."""
    machines()
    prog = Program(64, ["repe cmpsb"], [0] * 16, 0x257, b"", 0, 0)
    regs = [0] * 16
    # The last compare done read DATA+0x10 and DATA+0x20 (DF=0): set them, then fault on
    # the next pair.  The window is part of the outcome (out.data).
    data = bytearray(DATA_SIZE)
    data[0x10], data[0x20] = 0x05, 0x05
    regs[6], regs[7], regs[1] = DATA + 0x11, DATA + 0x21, 5
    before = 0x10257
    after = (before & ~ARITH) | _sub_flags(0x05, 0x05, 1)

    def outcome(flags: int, **kw: object) -> Outcome:
        o = Outcome(list(regs), CODE, flags, (14, 4), (CODE, 0x23, flags, STACK, 0x1B), 0x600000,
                    data=bytes(data))
        for k, v in kw.items():
            setattr(o, k, v)
        return o

    n = len(host_behaviour.reports())
    assert compare(prog, outcome(after), outcome(before)) == []
    assert [r.behaviour for r in host_behaviour.reports()[n:]] == [
        "rep-cmps-scas-flags-on-a-fault"]
    # Flags that are neither compare's, interp's answer moved, or another bit: failures.
    assert compare(prog, outcome(after ^ C), outcome(before))
    assert compare(prog, outcome(before), outcome(after))
    assert compare(prog, outcome(after | DF), outcome(before))
