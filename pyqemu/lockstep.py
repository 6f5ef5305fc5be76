"""Lockstep cross-checking: one guest on kvm and interp, compared after every instruction.

The hardware is the oracle (DESIGN.md): the *leader* runs on ``kvm``, the
*follower* on ``interp`` with the CPU the leader got (the same model with
``-flag`` for every flag the leader's accelerator filtered out).  Both load the
same guest; then :class:`Lockstep` single-steps each (:meth:`Machine.step`)
and compares their architectural state after every instruction:

* general registers, RIP, and RFLAGS (RF, which debug exceptions leave set, and
  the flags the Intel SDM leaves undefined for that instruction masked:
  :mod:`accel.interp.undefined_flags` plus the BCD and double-shift cases);
* every segment register's selector, base, limit and attributes (P, DPL, S,
  type, L, D/B, G, AVL), GDTR/IDTR, LDTR/TR selectors;
* CR0, CR2, CR3, CR4 and EFER;
* memory: the bytes each instruction could have written (its memory operands,
  the stack it pushed, a string instruction's destination range), read through
  the leader's page tables from both machines' RAM; all of RAM every
  ``ram_check_interval`` steps and at the end catches anything else.

Devices see each access once.  The leader's devices run for real and a hook
records each port/MMIO access with the value a read returned; the follower's
address spaces get an :class:`~system.memory.IoReplay` (``AddressSpace.replay``)
that hands its reads those values, in order, and checks its writes (same space,
address, size and value) without sending them to a device.  After the follower
executes RDTSC/RDTSCP (or RDRAND/RDSEED) the leader's results are copied into
it, and so are CPUID.1 ECX/EDX where the host's KVM answers them from the
hardware instead of from KVM_SET_CPUID2 (probed once; the result says so).

A run ends at the first divergence (:class:`Divergence`, with a report naming
the instruction, both states side by side and the fields that differ), when the
guest shuts down (isa-debug-exit, a triple fault: the machines run with
``no_reboot``) or halts, after ``max_steps`` instructions, or when the leader
cannot go on (the host's KVM refused to emulate or single-step the instruction).

``from pyqemu.lockstep import lockstep`` for the library; ``pyqemu -lockstep``
for the command line.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self

from pyqemu.accel.interp.undefined_flags import undefined_flags
from pyqemu.machine import Machine, RunResult
from pyqemu.target.i386 import cpu_state as cs
from pyqemu.target.i386.cpu_state import CPUX86State
from pyqemu.target.i386.paging import page_walk
from pyqemu.util.error import PyQemuError

__all__ = [
    "Divergence",
    "Lockstep",
    "LockstepError",
    "LockstepResult",
    "arch_state",
    "kvm_cpuid_leaf1_passthrough",
    "lockstep",
]

#: RFLAGS bits never compared: RF (set by the debug exceptions single-stepping takes).
_FLAGS_IGNORED = cs.RF_MASK
#: Segment attribute bits compared: type, S, DPL, P, AVL, L, D/B, G (not "accessed":
#: see :func:`arch_state`).
_SEG_ATTR_MASK = 0xF0FE00
_RAM_CHECK_INTERVAL = 4096


class LockstepError(PyQemuError, RuntimeError):
    """Lockstep cannot run here (no /dev/kvm, more than one vCPU, bad options)."""


# -- the compared state ---------------------------------------------------------------------

def arch_state(env: CPUX86State) -> dict[str, int]:
    """The architectural state lockstep compares, as ``{field: value}`` in report order.

    Segment attributes leave out the accessed bit of data segments whose selector is
    null (KVM reports unusable segments with whatever attributes the VMCS held).
    """
    st: dict[str, int] = {n: env.regs[i] for i, n in enumerate(cs.REG_NAMES)}
    st["rip"] = env.rip
    st["rflags"] = env.eflags
    pe = bool(env.cr[0] & cs.CR0_PE)
    for i, name in enumerate(cs.SEG_NAMES):
        s = env.segs[i]
        st[name] = s.selector
        # A null selector in protected mode makes the segment unusable: only the
        # selector is architectural (SDM vol. 3A, 3.4.2; 64-bit SS excepted by CPL).
        if pe and s.selector & ~3 == 0 and i != cs.R_CS and not (i == cs.R_SS and env.code64):
            continue
        st[f"{name}.base"] = s.base
        st[f"{name}.limit"] = s.limit
        st[f"{name}.attr"] = s.flags & _SEG_ATTR_MASK
    st["gdtr.base"], st["gdtr.limit"] = env.gdt.base, env.gdt.limit
    st["idtr.base"], st["idtr.limit"] = env.idt.base, env.idt.limit
    st["ldtr"], st["tr"] = env.ldt.selector, env.tr.selector
    for n in (0, 2, 3, 4):
        st[f"cr{n}"] = env.cr[n]
    st["efer"] = env.efer
    return st


# -- instructions ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MemOperand:
    segment: str | None
    base: str | None
    index: str | None
    scale: int
    disp: int
    size: int


@dataclasses.dataclass(frozen=True)
class Insn:
    """One decoded guest instruction (what lockstep needs of capstone's answer)."""

    address: int
    bytes: bytes
    mnemonic: str
    op_str: str
    bits: int
    addr_bits: int
    rep: bool
    width: int                       # first operand's size in bits (flags masking)
    count: int | str | None          # shift/rotate count: an immediate, "cl", or None
    mems: tuple[MemOperand, ...]

    @property
    def text(self) -> str:
        return f"{self.mnemonic} {self.op_str}".strip()


_STRING = ("movs", "stos", "lods", "scas", "cmps", "ins", "outs")
_NO_ACCESS = frozenset(("lea", "nop", "invlpg", "clflush", "prefetch", "prefetchw",
                        "prefetcht0", "prefetcht1", "prefetcht2", "prefetchnta"))
_decoders: dict[int, Any] = {}
_insn_cache: dict[tuple[int, bytes], Insn | None] = {}


def _decoder(bits: int) -> Any:
    if bits not in _decoders:
        import capstone
        mode = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}[bits]
        md = capstone.Cs(capstone.CS_ARCH_X86, mode)
        md.detail = True
        _decoders[bits] = md
    return _decoders[bits]


def decode(code: bytes, address: int, bits: int) -> Insn | None:
    """Decode the first instruction of ``code`` for a ``bits``-bit code segment."""
    key = (bits, code)
    if key in _insn_cache:
        cached = _insn_cache[key]
        return dataclasses.replace(cached, address=address) if cached else None
    from capstone import x86_const as x
    md = _decoder(bits)
    insn = None
    for ci in md.disasm(code, address, 1):
        mems: list[MemOperand] = []
        width, count = 0, None
        ops = list(ci.operands)
        for n, op in enumerate(ops):
            if n == 0:
                width = op.size * 8
            if op.type == x.X86_OP_MEM:
                m = op.mem
                mems.append(MemOperand(
                    ci.reg_name(m.segment) if m.segment else None,
                    ci.reg_name(m.base) if m.base else None,
                    ci.reg_name(m.index) if m.index else None,
                    m.scale, m.disp, op.size))
        if ci.mnemonic in ("shl", "sal", "shr", "sar", "rol", "ror", "rcl", "rcr",
                           "shld", "shrd"):
            last = ops[-1] if len(ops) > 1 else None
            if last is None:
                count = 1
            elif last.type == x.X86_OP_IMM:
                count = last.imm
            elif last.type == x.X86_OP_REG and ci.reg_name(last.reg) == "cl":
                count = "cl"
        prefixes = set(ci.prefix)
        insn = Insn(ci.address, bytes(ci.bytes), ci.mnemonic, ci.op_str, bits,
                    ci.addr_size * 8, (bool(prefixes & {0xF2, 0xF3}) and any(
                        ci.mnemonic.startswith(s) for s in _STRING)) or
                    ci.mnemonic.startswith(("rep", "repne", "repe")),
                    width, count, tuple(mems))
    if len(_insn_cache) < 65536:
        _insn_cache[key] = insn
    return insn


#: flags the SDM leaves undefined beyond :func:`undefined_flags`' table (vol. 2A/2B,
#: each instruction's "Flags Affected").
_UNDEF_EXTRA = {
    "aaa": cs.CC_O | cs.CC_S | cs.CC_Z | cs.CC_P,
    "aas": cs.CC_O | cs.CC_S | cs.CC_Z | cs.CC_P,
    "daa": cs.CC_O, "das": cs.CC_O,
    "aam": cs.CC_O | cs.CC_A | cs.CC_C, "aad": cs.CC_O | cs.CC_A | cs.CC_C,
}


def undefined_flags_of(insn: Insn | None, pre: CPUX86State) -> int:
    """The RFLAGS bits ``insn`` leaves undefined, given the state before it ran."""
    if insn is None:
        return 0
    m = insn.mnemonic.split()[-1]
    if m in _UNDEF_EXTRA:
        return _UNDEF_EXTRA[m]
    count: int | None = None
    if isinstance(insn.count, int):
        count = insn.count
    elif insn.count == "cl":
        count = pre.regs[cs.R_ECX] & 0xFF
    if count is not None:
        count &= 0x3F if insn.width == 64 else 0x1F
    if m in ("shld", "shrd"):
        if count == 0:
            return 0
        return cs.CC_A | (cs.CC_O if count != 1 else 0)
    return undefined_flags(m, insn.width or 32, count)


# -- guest memory, side-effect free ---------------------------------------------------------

def _ram_view(m: Machine) -> memoryview:
    return m.state.ram.ram()  # type: ignore[attr-defined,no-any-return]


def _phys_read(m: Machine, pa: int, n: int) -> bytes | None:
    """``n`` bytes of RAM/ROM at ``pa`` (never a device: no side effects), else None."""
    asp = m.state.address_space_memory
    r = asp.lookup(pa)
    if r is None or not r.mr.is_ram or pa + n > r.end:
        return None
    off = r.offset + pa - r.start
    return bytes(r.mr.ram()[off:off + n])


def _walk(m: Machine, env: CPUX86State, la: int) -> int | None:
    """Linear -> physical through ``env``'s page tables (target/i386/paging.py); None if
    not present.  Reads tables from RAM only."""
    def entry(addr: int, size: int) -> int | None:
        b = _phys_read(m, addr, size)
        return None if b is None else int.from_bytes(b, "little")
    return page_walk(entry, env.cr[0], env.cr[3], env.cr[4], env.efer, la).pa


def _read_linear(m: Machine, env: CPUX86State, la: int, n: int) -> bytes:
    out = bytearray()
    while n > 0:
        chunk = min(n, 0x1000 - (la & 0xFFF))
        pa = _walk(m, env, la)
        b = None if pa is None else _phys_read(m, pa, chunk)
        if b is None:
            break
        out += b
        la, n = la + chunk, n - chunk
    return bytes(out)


def _snapshot(env: CPUX86State) -> CPUX86State:
    """What lockstep reads of the pre-step state, copied (cheaper than ``env.copy()``)."""
    snap = copy.copy(env)
    snap.regs = list(env.regs)
    snap.segs = [s.copy() for s in env.segs]
    snap.cr = list(env.cr)
    return snap


def _code_bits(env: CPUX86State) -> int:
    return 64 if env.code64 else 32 if env.code32 else 16


def _fetch(m: Machine, env: CPUX86State) -> Insn | None:
    bits = _code_bits(env)
    pc = env.rip if bits == 64 else (env.segs[cs.R_CS].base + env.rip) & 0xFFFFFFFF
    return decode(_read_linear(m, env, pc, 15), env.rip, bits)


# -- the I/O replay -------------------------------------------------------------------------

Access = tuple[str, int, int, int, bool]   # (space, addr, size, value, is_write)


def _fmt_access(a: Access | None) -> str:
    if a is None:
        return "nothing"
    space, addr, size, value, w = a
    return f"{space} {'write' if w else 'read'} {addr:#x}/{size} {'<-' if w else '->'} {value:#x}"


class _Replay:
    """The follower's devices: the leader's accesses of this step, in order."""

    def __init__(self) -> None:
        self.queue: collections.deque[Access] = collections.deque()
        self.mismatches: list[str] = []

    def begin(self, accesses: Iterable[Access]) -> None:
        self.queue = collections.deque(accesses)
        self.mismatches = []

    def _next(self, space: str, addr: int, size: int, value: int | None) -> Access | None:
        want = self.queue.popleft() if self.queue else None
        got = (space, addr, size, 0 if value is None else value, value is not None)
        ok = want is not None and want[:3] == got[:3] and want[4] == got[4] and (
            value is None or want[3] == value)
        if not ok:
            shown = got if value is not None else (space, addr, size, 0, False)
            self.mismatches.append(
                f"follower {_fmt_access(shown).replace(' -> 0x0', '')}, leader {_fmt_access(want)}")
        return want if ok else None

    def read(self, space: str, addr: int, size: int) -> int:
        a = self._next(space, addr, size, None)
        return a[3] if a is not None else (1 << (8 * size)) - 1

    def write(self, space: str, addr: int, size: int, value: int) -> None:
        self._next(space, addr, size, value)

    def finish(self) -> None:
        for a in self.queue:
            self.mismatches.append(f"follower nothing, leader {_fmt_access(a)}")
        self.queue.clear()


# -- results --------------------------------------------------------------------------------

@dataclasses.dataclass
class Divergence:
    """The first instruction after which the two accelerators' states differ."""

    step: int
    insn: str                          # "0x10005: add eax, 1  (83 c0 01, prot32)"
    fields: list[str]                  # the differing fields ("rax", "rflags", "mem[0x7ffc]", "io")
    leader: dict[str, int]
    follower: dict[str, int]
    details: list[str]
    report: str


@dataclasses.dataclass
class LockstepResult:
    """How a lockstep run ended.

    ``reason``: ``"shutdown"`` (the guest shut down; ``exit_code`` as QEMU's),
    ``"halted"``, ``"max-steps"``, ``"divergence"`` (see ``divergence``) or
    ``"unsupported"`` (the host's KVM could not execute or single-step an
    instruction: ``report`` says which and why).
    """

    steps: int
    reason: str
    divergence: Divergence | None
    report: str
    exit_code: int | None = None
    seconds: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


def kvm_cpuid_leaf1_passthrough() -> bool:
    """Whether this host's KVM shows guests the hardware's CPUID.1 ECX/EDX instead of
    the KVM_SET_CPUID2 table (KVM's PVM module does).  Probed once, with a model that
    clears SSE2 (EDX bit 26) and CX16 (ECX bit 13): if the guest sees either, the
    hardware answered."""
    cached = getattr(kvm_cpuid_leaf1_passthrough, "_cached", None)
    if cached is None:
        with Machine(accel="kvm", cpu="qemu64,-sse2,-cx16,check=off") as m:
            m.load_asm("mov eax, 0x1\ncpuid\nhlt", 0x10000, mode="prot32")
            m.run(timeout=60)
            ecx, edx = m.reg_read("ecx"), m.reg_read("edx")
        cached = bool(edx >> 26 & 1 or ecx >> 13 & 1)
        kvm_cpuid_leaf1_passthrough._cached = cached  # type: ignore[attr-defined]
    return bool(cached)


# -- the engine -----------------------------------------------------------------------------

StepHook = Callable[["Lockstep", int], None]


class Lockstep:
    """Two machines, one guest: ``leader`` (kvm) and ``follower`` (interp).

    Build with the options of :class:`~pyqemu.machine.Machine` (``cpu``, ``memory``,
    ``bios``/``kernel``/``append``, ``devices``...), load a guest with
    :meth:`load_asm` if it has no ``bios``/``kernel``, then :meth:`run`.
    ``on_step(lockstep, step)`` is called after both machines executed instruction
    ``step`` and before they are compared (tests use it to plant a divergence).
    A step that takes longer than ``step_timeout`` seconds means the accelerator
    gave no single-step trap (the run ends "unsupported").
    """

    def __init__(self, machine: str = "pc", cpu: str | None = None, memory: str | int | None = None,
                 *, bios: str | None = None, kernel: str | None = None, append: str = "",
                 devices: Sequence[str] = (), serial: str | None = "memory",
                 leader_accel: str = "kvm", follower_accel: str = "interp",
                 on_step: StepHook | None = None,
                 ram_check_interval: int = _RAM_CHECK_INTERVAL,
                 step_timeout: float = 5.0) -> None:
        from pyqemu.hw.i386.cpu import x86_cpu_filtered_feature_names
        self.on_step = on_step
        self.ram_check_interval = ram_check_interval
        self.notes: list[str] = []
        self.leader: Machine | None = None
        self.follower: Machine | None = None
        common: dict[str, Any] = {"machine": machine, "memory": memory, "bios": bios,
                                  "kernel": kernel, "append": append,
                                  "devices": list(devices), "no_reboot": True}
        try:
            self.leader = Machine(accel=leader_accel, cpu=cpu, serial=serial, **common)
            filtered = x86_cpu_filtered_feature_names(self.leader.cpu(0))
            self.follower_cpu = ",".join([cpu or self._default_model(machine)]
                                         + [f"-{f}" for f in filtered])
            self.follower = Machine(accel=follower_accel, cpu=self.follower_cpu,
                                    serial="null", **common)
        except BaseException:
            self.close()
            raise
        self._io: list[Access] = []
        self.leader.hook_add_io(lambda *a: self._io.append(a))  # type: ignore[arg-type]
        self._replay = _Replay()
        fs = self.follower.state
        fs.address_space_io.replay = self._replay
        fs.address_space_memory.replay = self._replay
        self.steps = 0
        self._passthrough: bool | None = None
        self._overshoot_noted = False
        #: seconds one step may take before the accelerator is taken not to trap
        self.step_timeout = step_timeout

    @staticmethod
    def _default_model(machine: str) -> str:
        from pyqemu.hw.core.machine import find_machine_class
        from pyqemu.hw.i386.cpu import X86_CPU_TYPE_SUFFIX
        return str(find_machine_class(machine).default_cpu_type).removesuffix(X86_CPU_TYPE_SUFFIX)

    # -- setup ------------------------------------------------------------------------
    def load_asm(self, source: str, addr: int, mode: str = "real", **kwargs: Any) -> bytes:
        """:meth:`Machine.load_asm` on both machines."""
        code = self._machines[0].load_asm(source, addr, mode, **kwargs)
        self._machines[1].load_asm(source, addr, mode, **kwargs)
        return code

    def setup(self, fn: Callable[[Machine], None]) -> None:
        """Call ``fn(machine)`` on both machines (to load a guest any other way)."""
        for m in self._machines:
            fn(m)

    @property
    def _machines(self) -> tuple[Machine, Machine]:
        assert self.leader is not None and self.follower is not None
        return self.leader, self.follower

    # -- stepping ---------------------------------------------------------------------
    def _step_one(self, m: Machine, pre_rip: int, insn: Insn | None) -> RunResult:
        """One instruction; a REP string instruction the accelerator steps per iteration
        (or that stops on itself with RF set) is stepped until RIP leaves it."""
        r = m.step(timeout=self.step_timeout)
        if insn is not None and insn.rep:
            for _ in range(1 << 22):
                if r.reason != "debug" or m.env().rip != pre_rip:
                    break
                r = m.step(timeout=self.step_timeout)
        return r

    def _catch_up(self, rf: RunResult) -> RunResult:
        """After an I/O exit some KVMs (this host's PVM) finish the instruction and run
        on to the next one before the single-step trap: step the follower to where the
        leader stopped (at most a few instructions) and count them."""
        leader, follower = self._machines
        target = leader.env().rip
        for extra in range(1, 5):
            if rf.reason != "debug" or follower.env().rip == target:
                break
            rf = follower.step()
            self.steps += 1
            if extra == 1 and not self._overshoot_noted:
                self._overshoot_noted = True
                self.notes.append(
                    f"the host's KVM ran on past an I/O instruction before its single-step "
                    f"trap (first at step {self.steps - 1}); the follower was stepped to the "
                    f"leader's RIP and both instructions were checked together")
        return rf

    def run(self, max_steps: int = 100_000) -> LockstepResult:
        """Step both machines until a divergence, a shutdown or halt, or ``max_steps``."""
        leader, follower = self._machines
        with leader.single_stepping(), follower.single_stepping():
            return self._run(max_steps)

    def _run(self, max_steps: int) -> LockstepResult:
        leader, follower = self._machines
        t0 = time.perf_counter()
        reason, div, exit_code, extra = "max-steps", None, None, ""
        pre = _snapshot(leader.env())
        while self.steps < max_steps:
            insn = _fetch(leader, pre)
            self._io.clear()
            try:
                rl = self._step_one(leader, pre.rip, insn)
            except PyQemuError as e:
                reason, extra = "unsupported", (
                    f"the host's KVM could not execute {_describe(insn, pre)}: {e}")
                break
            if rl.reason == "timeout":
                reason, extra = "unsupported", (
                    f"the host's KVM gave no single-step trap within {self.step_timeout:g}s "
                    f"after {_describe(insn, pre)} at CPL{pre.cpl}: it cannot step this code")
                break
            if rl.reason == "shutdown" and rl.cause != "guest-shutdown" and pre.cpl == 3:
                reason, extra = "unsupported", (
                    f"the host's KVM ended single-stepping CPL3 code in a shutdown "
                    f"({rl.cause}) at {_describe(insn, pre)}: it cannot step user mode")
                break
            if rl.reason == "debug" and insn is not None and insn.mnemonic == "hlt":
                # KVM reports the single-step trap of a HLT instead of halting (its
                # kvm_emulate_halt exits for the trap first): the leader is halted.
                rl = RunResult("halted")
            self._replay.begin(self._io)
            rf = self._step_one(follower, pre.rip, insn)
            self.steps += 1
            if self._io and rl.reason == "debug":
                rf = self._catch_up(rf)
            self._replay.finish()
            self._fixups(insn, pre)
            if self.on_step is not None:
                self.on_step(self, self.steps)
            div = self._compare(insn, pre, rl, rf)
            if div is not None:
                reason = "divergence"
                break
            pre = _snapshot(leader.env())
            if rl.reason == "shutdown":
                reason, exit_code = "shutdown", rl.exit_code
                break
            if rl.reason == "halted":
                reason = "halted"
                break
            if rl.reason != "debug":
                reason, extra = "unsupported", f"the leader stopped stepping: {rl}"
                break
            if self.ram_check_interval and self.steps % self.ram_check_interval == 0:
                div = self._compare_all_ram(insn, pre)
                if div is not None:
                    reason = "divergence"
                    break
        if div is None and reason != "unsupported":
            div = self._compare_all_ram(None, pre)
            if div is not None:
                reason = "divergence"
        seconds = time.perf_counter() - t0
        if div is not None:
            text = div.report
        else:
            text = (f"lockstep: {self.steps} instructions, no divergence; stopped: {reason}"
                    + (f" (exit code {exit_code})" if exit_code is not None else "")
                    + (f"\n{extra}" if extra else ""))
        text += f"\n{self.steps} steps in {seconds:.2f}s ({self.steps / max(seconds, 1e-9):.0f}/s)"
        for n in self.notes:
            text += f"\nnote: {n}"
        return LockstepResult(self.steps, reason, div, text, exit_code, seconds, list(self.notes))

    def _fixups(self, insn: Insn | None, pre: CPUX86State) -> None:
        """Copy the leader's non-deterministic results into the follower."""
        if insn is None:
            return
        m = insn.mnemonic
        names: tuple[str, ...] = ()
        if m == "rdtsc":
            names = ("rax", "rdx")
        elif m == "rdtscp":
            names = ("rax", "rdx", "rcx")
        elif m in ("rdrand", "rdseed"):
            names = (insn.op_str.split(",")[0].strip(), "rflags")
        elif m == "cpuid" and pre.regs[cs.R_EAX] & 0xFFFFFFFF == 1:
            if self._passthrough is None:
                self._passthrough = kvm_cpuid_leaf1_passthrough()
                if self._passthrough:
                    self.notes.append("this host's KVM answers CPUID.1 ECX/EDX from the "
                                      "hardware; the follower was given the leader's values")
            if self._passthrough:
                names = ("rcx", "rdx")
        if not names:
            return
        leader, follower = self._machines
        le, fe = leader.env(), follower.env()
        for n in names:
            fe.set_reg(n, le.reg(n))
        follower.env_changed()

    # -- comparing ----------------------------------------------------------------------
    def _compare(self, insn: Insn | None, pre: CPUX86State, rl: RunResult,
                 rf: RunResult) -> Divergence | None:
        leader, follower = self._machines
        le, fe = leader.env(), follower.env()
        ls, fs = arch_state(le), arch_state(fe)
        undef = undefined_flags_of(insn, pre) | _FLAGS_IGNORED
        ls["rflags"] &= ~undef
        fs["rflags"] &= ~undef
        fields = [k for k in dict.fromkeys([*ls, *fs]) if ls.get(k) != fs.get(k)]
        details: list[str] = []
        undef &= ~_FLAGS_IGNORED
        if undef:
            details.append(f"rflags compared without {_flag_names(undef)} "
                           f"(undefined after {insn.mnemonic if insn else '?'})")
            if (le.eflags ^ fe.eflags) & undef:
                # Either value is right; the follower takes the hardware's, so a later
                # PUSHF or a flag-reading instruction compares what is defined.
                fe.eflags = (fe.eflags & ~undef) | (le.eflags & undef)
                follower.env_changed()
        for a, b in self._mem_ranges(insn, pre, le):
            lb, fb = _read_linear(leader, le, a, b - a), _read_linear(follower, le, a, b - a)
            if lb != fb:
                fields.append(f"mem[{a:#x}]")
                details.append(f"memory at {a:#x}: leader {lb.hex(' ')}, follower {fb.hex(' ')}")
        if self._replay.mismatches:
            fields.append("io")
            details += [f"I/O: {m}" for m in self._replay.mismatches]
        lstop = "halted" if rl.reason == "halted" else "running"
        fstop = "halted" if rf.reason == "halted" else "running"
        if lstop != fstop:
            fields.append("halted")
            details.append(f"run state: leader {lstop}, follower {fstop}")
        if not fields:
            return None
        return self._divergence(insn, pre, fields, ls, fs, details)

    @staticmethod
    def _mem_ranges(insn: Insn | None, pre: CPUX86State,
                    post: CPUX86State) -> list[tuple[int, int]]:
        """Linear ranges ``insn`` may have written: memory operands, pushes, string stores."""
        if insn is None:
            return []
        out: list[tuple[int, int]] = []
        amask = (1 << insn.addr_bits) - 1
        seg_of = {n: pre.segs[i].base for i, n in enumerate(cs.SEG_NAMES)}
        lmask = 0xFFFFFFFFFFFFFFFF if insn.bits == 64 else 0xFFFFFFFF
        if insn.mnemonic not in _NO_ACCESS:
            for mo in insn.mems:
                ea = mo.disp
                for reg, k in ((mo.base, 1), (mo.index, mo.scale)):
                    if reg in ("rip", "eip"):
                        ea += pre.rip + len(insn.bytes)
                    elif reg:
                        ea += pre.reg(reg) * k
                seg = mo.segment or ("ss" if mo.base in ("rsp", "esp", "sp", "rbp", "ebp", "bp")
                                     else "ds")
                base = seg_of[seg] if insn.bits != 64 or seg in ("fs", "gs") else 0
                la = (base + (ea & amask)) & lmask
                out.append((la, la + max(mo.size, 1)))
        ss = pre.segs[cs.R_SS].base if insn.bits != 64 else 0
        smask = 0xFFFFFFFFFFFFFFFF if insn.bits == 64 else (
            0xFFFFFFFF if pre.segs[cs.R_SS].flags & cs.DESC_B_MASK else 0xFFFF)
        old_sp, new_sp = pre.regs[cs.R_ESP] & smask, post.regs[cs.R_ESP] & smask
        if 0 < old_sp - new_sp <= 64:          # a push, call, interrupt frame, enter
            out.append(((ss + new_sp) & lmask, (ss + old_sp) & lmask))
        if insn.mnemonic.split()[-1].startswith(("movs", "stos", "ins")):
            es = pre.segs[cs.R_ES].base if insn.bits != 64 else 0
            a, b = pre.regs[cs.R_EDI] & amask, post.regs[cs.R_EDI] & amask
            lo, hi = min(a, b), max(a, b)
            if hi - lo <= 1 << 20:
                out.append(((es + lo) & lmask, (es + hi + 8) & lmask))
        return [(a, b) for a, b in out if b > a]

    def _compare_all_ram(self, insn: Insn | None, pre: CPUX86State) -> Divergence | None:
        leader, follower = self._machines
        lv, fv = _ram_view(leader), _ram_view(follower)
        size, chunk = len(lv), 1 << 20
        # Chunked bytes compare: memcmp speed (memoryview == compares item by item).
        at = next((o for o in range(0, size, chunk)
                   if lv[o:o + chunk].tobytes() != fv[o:o + chunk].tobytes()), None)
        if at is None:
            return None
        first = next(i for i in range(at, min(at + chunk, size)) if lv[i] != fv[i])
        le = leader.env()
        st = arch_state(le)
        return self._divergence(
            insn, pre, [f"ram[{first:#x}]"], st, arch_state(follower.env()),
            [(f"guest RAM differs first at physical {first:#x}: leader "
              f"{bytes(lv[first:first + 16]).hex(' ')}, follower "
              f"{bytes(fv[first:first + 16]).hex(' ')} (found by the whole-RAM check after "
              f"step {self.steps}; the write was not one lockstep checks per instruction)")])

    def _divergence(self, insn: Insn | None, pre: CPUX86State, fields: list[str],
                    ls: dict[str, int], fs: dict[str, int], details: list[str]) -> Divergence:
        where = _describe(insn, pre)
        lines = [f"lockstep: divergence after step {self.steps}",
                 f"instruction: {where}",
                 f"differs: {', '.join(fields)}", ""]
        lines.append(f"{'':<12} {'leader (' + self._machines[0].accel_name + ')':>20}  "
                     f"{'follower (' + self._machines[1].accel_name + ')':>20}")
        for k in dict.fromkeys([*ls, *fs]):
            a, b = ls.get(k), fs.get(k)
            mark = "  <--" if k in fields else ""
            lines.append(f"{k:<12} {_hex(a):>20}  {_hex(b):>20}{mark}")
        if details:
            lines.append("")
            lines += details
        return Divergence(self.steps, where, fields, ls, fs, details, "\n".join(lines))

    # -- teardown ---------------------------------------------------------------------
    def close(self) -> None:
        for m in (self.follower, self.leader):
            if m is not None:
                m.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hex(v: int | None) -> str:
    return "-" if v is None else f"{v:#x}"


def _flag_names(mask: int) -> str:
    names = [n for bit, n in ((cs.CC_C, "CF"), (cs.CC_P, "PF"), (cs.CC_A, "AF"), (cs.CC_Z, "ZF"),
                              (cs.CC_S, "SF"), (cs.CC_O, "OF")) if mask & bit]
    return ",".join(names)


def _describe(insn: Insn | None, pre: CPUX86State) -> str:
    cs_ = pre.segs[cs.R_CS]
    where = f"{cs_.selector:04x}:{pre.rip:#x}" if not pre.code64 else f"{pre.rip:#x}"
    if insn is None:
        return f"{where}: (cannot decode) [{pre.mode_name}]"
    return f"{where}: {insn.text}  ({insn.bytes.hex(' ')}) [{pre.mode_name}]"


def lockstep(*, machine: str = "pc", cpu: str | None = None, memory: str | int | None = None,
             bios: str | None = None, kernel: str | None = None, append: str = "",
             devices: Sequence[str] = (), asm: str | None = None, load: int = 0x7C00,
             mode: str = "real", setup: Callable[[Machine], None] | None = None,
             max_steps: int = 100_000, serial: str | None = "memory",
             on_step: StepHook | None = None,
             ram_check_interval: int = _RAM_CHECK_INTERVAL,
             step_timeout: float = 5.0) -> LockstepResult:
    """Run one guest on kvm (leader) and interp (follower) in lockstep; see the module.

    The guest is ``bios``/``kernel`` (as ``-bios``/``-kernel``), or ``asm`` assembled
    for ``mode`` at ``load``, or whatever ``setup(machine)`` loads into each machine.
    """
    with Lockstep(machine, cpu, memory, bios=bios, kernel=kernel, append=append,
                  devices=devices, serial=serial, on_step=on_step,
                  ram_check_interval=ram_check_interval, step_timeout=step_timeout) as ls:
        if asm is not None:
            ls.load_asm(asm, load, mode)
        if setup is not None:
            ls.setup(setup)
        return ls.run(max_steps)


def lockstep_main(o: Any) -> int:
    """``pyqemu -lockstep``: exit status 0 without a divergence, 2 with one; the report
    goes to stdout."""
    from pyqemu.accel.ops import accel_list
    why = next((w for n, _, w in accel_list() if n == "kvm"), "not registered")
    if why:
        raise LockstepError(f"-lockstep needs kvm as the oracle, unavailable here: {why}")
    if o.accel is not None:
        raise LockstepError("-lockstep runs kvm and interp side by side; drop -accel")
    if str(o.smp).split(",")[0].removeprefix("cpus=") not in ("1", ""):
        raise LockstepError("-lockstep steps one vCPU; use -smp 1")
    if o.bios is None and o.kernel is None:
        raise LockstepError("nothing to run: give -bios FILE or -kernel FILE")
    serial = "null" if o.serial == "none" else (o.serial or "stdio")
    result = lockstep(machine=o.machine, cpu=o.cpu, memory=o.memory, bios=o.bios,
                      kernel=o.kernel, append=o.append, devices=o.devices,
                      max_steps=o.lockstep_max_steps, serial=serial)
    sys.stdout.flush()
    print(("\n" if serial == "stdio" else "") + result.report)
    return 2 if result.divergence is not None else 0
