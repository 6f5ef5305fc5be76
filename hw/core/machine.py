"""``MachineState``/``MachineClass``: a board, its -smp topology and -m size (``hw/core/machine.c``).

``machine_run_board_init`` calls the board's ``init`` (``pc_init1`` for ``pc``),
which builds memory, devices and, through ``x86_cpus_init``, the vCPUs.  The
topology follows QEMU's ``-smp [cpus=]n[,maxcpus=m][,sockets=s][,cores=c][,threads=t]``
rules (``machine_parse_smp_config``): missing values are derived from the
given ones, preferring sockets, and the product must equal maxcpus.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyqemu.hw.core.errors import MachineError
from pyqemu.qom import Object, ObjectClass, TypeInfo, object_class_get_list, type_init
from pyqemu.util import trace

TYPE_MACHINE = "machine"
MACHINE_TYPE_SUFFIX = "-machine"


@dataclass
class SMPConfig:
    """``-smp``: the CPU topology."""

    cpus: int = 1
    sockets: int = 1
    dies: int = 1
    cores: int = 1
    threads: int = 1
    maxcpus: int = 1


@dataclass(frozen=True)
class CPUArchId:
    """One possible CPU slot (``CPUArchId``): its APIC id and topology position."""

    index: int
    arch_id: int
    socket_id: int
    core_id: int
    thread_id: int


def parse_smp(spec: str | int | SMPConfig | None, max_cpus: int = 255) -> SMPConfig:
    """Parse ``-smp``; a bad value raises :class:`MachineError` naming it."""
    if spec is None:
        return SMPConfig()
    if isinstance(spec, SMPConfig):
        fields = dict(cpus=spec.cpus, sockets=spec.sockets, cores=spec.cores,
                      threads=spec.threads, maxcpus=spec.maxcpus)
        given = {k: v for k, v in fields.items() if v}
    else:
        given = {}
        if isinstance(spec, int) and not isinstance(spec, bool):
            given["cpus"] = spec
        elif isinstance(spec, str):
            for i, part in enumerate(p for p in spec.split(",") if p):
                key, sep, val = part.partition("=")
                if not sep:
                    if i == 0:
                        key, val = "cpus", key
                    else:
                        raise MachineError(f"-smp: bad option '{part}'")
                if key not in ("cpus", "sockets", "dies", "cores", "threads", "maxcpus"):
                    raise MachineError(f"-smp: unknown option '{key}'")
                try:
                    n = int(val, 0)
                except ValueError:
                    raise MachineError(f"-smp: '{key}' needs a number, not '{val}'") from None
                if n <= 0:
                    raise MachineError(f"-smp: '{key}' must be greater than 0, not {n}")
                given[key] = n
        else:
            raise MachineError(f"-smp: bad value {spec!r}")
    cpus = given.get("cpus", 0)
    maxcpus = given.get("maxcpus", 0)
    sockets, cores, threads = given.get("sockets", 0), given.get("cores", 0), given.get("threads", 0)
    dies = given.get("dies", 1)
    # machine_parse_smp_config: derive what is missing, preferring sockets.
    want = maxcpus or cpus
    if not sockets:
        cores, threads = cores or 1, threads or 1
        sockets = max(1, (want or 1) // (dies * cores * threads))
    elif not cores:
        threads = threads or 1
        cores = max(1, (want or 1) // (sockets * dies * threads))
    elif not threads:
        threads = max(1, (want or 1) // (sockets * dies * cores))
    total = sockets * dies * cores * threads
    maxcpus = maxcpus or total
    cpus = cpus or maxcpus
    if total != maxcpus:
        raise MachineError(
            f"-smp: product of topology (sockets ({sockets}) * dies ({dies}) * cores ({cores}) "
            f"* threads ({threads}) = {total}) != maxcpus ({maxcpus})")
    if cpus > maxcpus:
        raise MachineError(f"-smp: cpus ({cpus}) must not exceed maxcpus ({maxcpus})")
    if maxcpus > max_cpus:
        raise MachineError(f"-smp: {maxcpus} CPUs requested, but this machine supports "
                           f"at most {max_cpus}")
    return SMPConfig(cpus=cpus, sockets=sockets, dies=dies, cores=cores, threads=threads,
                     maxcpus=maxcpus)


_SIZE_SUFFIX = {"": 1 << 20, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_mem_size(spec: str | int | None, default: int = 128 << 20) -> int:
    """Parse ``-m 128``, ``-m 64M``, ``-m size=1G`` (a bare number is MiB, as in QEMU)."""
    if spec is None:
        return default
    if isinstance(spec, int) and not isinstance(spec, bool):
        size = spec
    elif isinstance(spec, str):
        s = spec.strip().lower()
        if s.startswith("size="):
            s = s[5:]
        num = s.rstrip("bkmgt")
        suffix = s[len(num):]
        if suffix.endswith("b") and len(suffix) == 2:
            suffix = suffix[0]
        if suffix not in _SIZE_SUFFIX:
            raise MachineError(f"-m: bad size '{spec}'")
        try:
            size = int(float(num) * _SIZE_SUFFIX[suffix])
        except ValueError:
            raise MachineError(f"-m: bad size '{spec}'") from None
    else:
        raise MachineError(f"-m: bad size {spec!r}")
    if size < (1 << 20):
        raise MachineError(f"-m: {size} bytes is too small; the pc machine needs at least 1M")
    if size > (3 << 30) - (1 << 20):
        # pyqemu's pc maps RAM below the 3 GiB PCI hole only (no RAM above 4 GiB yet).
        raise MachineError(f"-m: {size >> 20}M is more than pyqemu's pc supports (3071M)")
    return (size + 0xFFF) & ~0xFFF


class MachineClass(ObjectClass):
    """``MachineClass``: how to build a board."""

    desc: str = ""
    init: Callable[[MachineState], None] | None = None
    max_cpus: int = 1
    default_cpu_type: str | None = None
    default_ram_size: int = 128 << 20
    is_default: bool = False
    alias: str | None = None
    possible_cpu_arch_ids: Callable[[MachineState], list[CPUArchId]] | None = None


class MachineState(Object):
    """``MachineState``: the machine being built and run."""

    smp: SMPConfig
    ram_size: int
    cpu_type: str | None
    cpu_model: str | None
    accel: Any
    runctl: Any
    cpus: list[Any]
    possible_cpus: list[CPUArchId] | None


def machine_initfn(obj: Object) -> None:
    ms = obj
    mc = obj.klass
    assert isinstance(ms, MachineState) and isinstance(mc, MachineClass)
    ms.smp = SMPConfig()
    ms.ram_size = mc.default_ram_size
    ms.cpu_type = mc.default_cpu_type
    ms.cpu_model = None
    ms.accel = None
    ms.runctl = None
    ms.cpus = []
    ms.possible_cpus = None


def machine_run_board_init(ms: MachineState) -> None:
    """``machine_run_board_init``: call the board's init."""
    mc = ms.klass
    assert isinstance(mc, MachineClass)
    with trace.span("machine_run_board_init", machine=mc.name.removesuffix(MACHINE_TYPE_SUFFIX)):
        if ms.smp.maxcpus > mc.max_cpus:
            raise MachineError(f"Invalid SMP CPUs {ms.smp.maxcpus}. The max CPUs supported by "
                               f"machine '{mc.name.removesuffix(MACHINE_TYPE_SUFFIX)}' is {mc.max_cpus}")
        assert mc.init is not None
        mc.init(ms)


def machine_class_list() -> list[MachineClass]:
    return [k for k in object_class_get_list(TYPE_MACHINE) if isinstance(k, MachineClass)]


def find_machine_class(name: str) -> MachineClass:
    """The machine class named ``name`` (or aliased so), as ``-machine name`` finds it."""
    for mc in machine_class_list():
        short = mc.name.removesuffix(MACHINE_TYPE_SUFFIX)
        if name in (short, mc.alias):
            return mc
    raise MachineError(f"unsupported machine type '{name}'; use -machine help to list them")


type_init(TypeInfo(name=TYPE_MACHINE, parent="object", abstract=True,
                   instance_type=MachineState, class_type=MachineClass,
                   instance_init=machine_initfn))
