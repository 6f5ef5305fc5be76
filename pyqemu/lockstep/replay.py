"""What the follower is given of the leader's run: its device accesses and its
non-deterministic results.

Devices see each access once.  The leader's devices run for real (QEMU's
``kvm_handle_io`` -> ``address_space_rw``); its I/O hook records every port and MMIO
access with the value a read returned (:meth:`Replay.record`).  The follower's address
spaces have the :class:`Replay` as their ``AddressSpace.replay``
(:class:`pyqemu.system.memory.IoReplay`): its reads get the leader's values of the same
step, in order, and its writes are checked against the leader's (same space, address,
size and value) without reaching a device.  The differences are the step's I/O
mismatches.

Some instructions' results cannot be reproduced by the follower; after it ran one,
the leader's results are copied into it (:class:`NondeterministicResults`): RDTSC
and RDTSCP (the time-stamp counter: Intel SDM vol. 2B, "RDTSC", "RDTSCP"), RDRAND
and RDSEED (vol. 2B), and the registers of a CPUID leaf the host answered itself:
KVM_SET_CPUID2 defines the guest's CPUID (KVM API), and both machines hold the same
table (``cpu_x86_cpuid``), but a host may answer some leaves from the hardware (KVM's
PVM module does, for leaves 1, 7 and 0DH): where the leader's answer differs from the
table, the follower is given the leader's registers and the report names the leaf.
Where the leader follows the table, the follower's CPUID is compared like any result.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable

from pyqemu.lockstep.insn import Insn
from pyqemu.target.i386 import cpu_state as cs
from pyqemu.target.i386.cpu_state import CPUX86State

__all__ = [
    "Access",
    "NondeterministicResults",
    "Replay",
    "format_access",
]

#: CPUID.(EAX=leaf, ECX=subleaf) as the CPU model's table gives it.
CpuidTable = Callable[[int, int], tuple[int, int, int, int]]
_CPUID_REGS = ("rax", "rbx", "rcx", "rdx")
#: Leaves whose sub-leaf (ECX) selects the answer (SDM vol. 2A, CPUID, Table 3-8).
_SUBLEAF_LEAVES = frozenset((4, 7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1F))

#: One device access: (address space, address, size, value, is_write).
Access = tuple[str, int, int, int, bool]


def format_access(a: Access | None) -> str:
    """``I/O write 0x80/1 <- 0x5``, ``memory read 0xfee00020/4 -> 0x0``, ``nothing``."""
    if a is None:
        return "nothing"
    space, addr, size, value, w = a
    return f"{space} {'write' if w else 'read'} {addr:#x}/{size} {'<-' if w else '->'} {value:#x}"


class Replay:
    """The follower's devices: the leader's accesses of the current step, in order.

    The leader's thread calls :meth:`record` (an I/O hook); lockstep calls :meth:`begin`
    with what was recorded before stepping the follower, whose thread then calls
    :meth:`read`/:meth:`write` (through ``address_space_rw``), and :meth:`finish` after
    it: whatever the leader did that the follower did not is a mismatch too.
    """

    def __init__(self) -> None:
        #: the leader's accesses since :meth:`clear`
        self.recorded: list[Access] = []
        self.queue: collections.deque[Access] = collections.deque()
        self.mismatches: list[str] = []

    def record(self, space: str, addr: int, size: int, value: int, is_write: bool) -> None:
        """The leader's I/O hook (``Machine.hook_add_io``)."""
        self.recorded.append((space, addr, size, value, is_write))

    def clear(self) -> None:
        """Before the leader's step."""
        self.recorded.clear()

    def begin(self, accesses: Iterable[Access]) -> None:
        """Before the follower's step: these are what its accesses must be."""
        self.queue = collections.deque(accesses)
        self.mismatches = []

    def _next(self, space: str, addr: int, size: int, value: int | None) -> Access | None:
        want = self.queue.popleft() if self.queue else None
        is_write = value is not None
        ok = (want is not None and want[0] == space and want[1] == addr and want[2] == size
              and want[4] == is_write and (value is None or want[3] == value))
        if not ok:
            got: Access = (space, addr, size, 0 if value is None else value, is_write)
            shown = format_access(got) if is_write else format_access(got).replace(" -> 0x0", "")
            self.mismatches.append(f"follower {shown}, leader {format_access(want)}")
            return None
        return want

    def read(self, space: str, addr: int, size: int) -> int:
        """The leader's value; all ones (a floating bus) where the leader did not read."""
        a = self._next(space, addr, size, None)
        return a[3] if a is not None else (1 << (8 * size)) - 1

    def write(self, space: str, addr: int, size: int, value: int) -> None:
        self._next(space, addr, size, value)

    def finish(self) -> None:
        """After the follower's step: the leader's accesses it did not make."""
        for a in self.queue:
            self.mismatches.append(f"follower nothing, leader {format_access(a)}")
        self.queue.clear()


class NondeterministicResults:
    """Copies the results the follower cannot reproduce from the leader into it."""

    def __init__(self, table: CpuidTable | None = None) -> None:
        self._table = table
        self._seen: set[tuple[int, int, str]] = set()
        #: what the report should say about it (once per leaf and register)
        self.notes: list[str] = []

    def registers(self, insn: Insn | None, pre: CPUX86State,
                  post: CPUX86State | None = None) -> tuple[str, ...]:
        """The registers ``insn``, run from ``pre`` (to the leader's ``post``), wrote with
        results to be copied."""
        if insn is None:
            return ()
        m = insn.name
        if m == "rdtsc":
            return ("rax", "rdx")
        if m == "rdtscp":
            return ("rax", "rdx", "rcx")
        if m in ("rdrand", "rdseed"):
            return (insn.op_str.split(",")[0].strip(), "rflags")
        if m == "cpuid" and post is not None and self._table is not None:
            return self._cpuid_from_host(pre, post, self._table)
        return ()

    def _cpuid_from_host(self, pre: CPUX86State, post: CPUX86State,
                         table: CpuidTable) -> tuple[str, ...]:
        leaf, sub = pre.regs[cs.R_EAX] & 0xFFFFFFFF, pre.regs[cs.R_ECX] & 0xFFFFFFFF
        want = table(leaf, sub)
        if leaf not in _SUBLEAF_LEAVES:
            sub = 0                          # ECX does not select anything here
        where = f"{leaf:#x}.{sub}" if leaf in _SUBLEAF_LEAVES else f"{leaf:#x}"
        names = []
        for name, value in zip(_CPUID_REGS, want, strict=True):
            got = post.reg(name) & 0xFFFFFFFF
            if got != value:
                names.append(name)
                if (leaf, sub, name) not in self._seen:
                    self._seen.add((leaf, sub, name))
                    self.notes.append(
                        f"this host's KVM answered CPUID.{where} e{name[1:]} = {got:#x} "
                        f"itself (the KVM_SET_CPUID2 table has {value:#x}); the follower was "
                        "given the leader's value")
        return tuple(names)

    def copy(self, names: Iterable[str], leader: CPUX86State, follower: CPUX86State) -> bool:
        """Set ``names`` in ``follower`` to ``leader``'s values; True if there were any."""
        done = False
        for n in names:
            follower.set_reg(n, leader.reg(n))
            done = True
        return done
