"""``MachineState``/``MachineClass``: a board, its -smp topology, its -m size (``machine.c``).

``machine_run_board_init`` calls the board's ``init`` (``pc_init1`` for ``pc``),
which builds memory, devices and, through ``x86_cpus_init``, the vCPUs.  The
topology follows QEMU's ``-smp [cpus=]n[,maxcpus=m][,sockets=s][,cores=c][,threads=t]``
rules (``machine_parse_smp_config``): missing values are derived from the
given ones, preferring sockets, and the product must equal maxcpus.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from pyqemu.hw.core.errors import MachineError
from pyqemu.qom import (
    Object,
    ObjectClass,
    TypeInfo,
    container_get,
    object_class_get_list,
    type_init,
)
from pyqemu.system.memory import AddressSpace, MemoryRegion
from pyqemu.util import trace

__all__ = [
    "MACHINE_TYPE_SUFFIX",
    "MAX_RAM_SIZE",
    "MIN_RAM_SIZE",
    "SIZE_HELP",
    "TYPE_MACHINE",
    "CPUArchId",
    "MachineClass",
    "MachineState",
    "SMPConfig",
    "find_machine_class",
    "machine_class_list",
    "machine_run_board_init",
    "parse_mem_size",
    "parse_smp",
]

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
        fields = {"cpus": spec.cpus, "sockets": spec.sockets, "cores": spec.cores,
                  "threads": spec.threads, "maxcpus": spec.maxcpus}
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
    sockets, cores = given.get("sockets", 0), given.get("cores", 0)
    threads = given.get("threads", 0)
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


#: -m suffixes (QEMU's ``qemu_strtosz``: B, K, M, G, T, P, E, case-insensitive).
_SIZE_SUFFIX = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
                "p": 1 << 50, "e": 1 << 60}
# A decimal or 0x number, an optional decimal fraction, an optional suffix (with an
# optional trailing B: 64MB); no sign, exponent, inf or nan.
_SIZE_RE = re.compile(r"(?P<num>0x[0-9a-f]+|[0-9]+(?:\.[0-9]*)?)(?P<suffix>[bkmgtpe]?)b?")

MIN_RAM_SIZE = 1 << 20
#: pyqemu's pc maps RAM below the 3 GiB PCI hole only; the top MiB of that is kept free.
MAX_RAM_SIZE = (3 << 30) - (1 << 20)
SIZE_HELP = "a number of MiB, or a size with a suffix B, K, M, G or T (64M, 1.5G)"


def _bad_size(spec: object) -> MachineError:
    shown = repr(spec) if not isinstance(spec, str) else \
        f"'{spec}'" if len(spec) <= 40 else f"'{spec[:37]}...'"
    return MachineError(f"-m: {shown} is not a size: give {SIZE_HELP}")


def parse_mem_size(spec: str | int | None, default: int = 128 << 20) -> int:
    """Parse ``-m 128``, ``-m 64M``, ``-m 1.5G``, ``-m size=1G`` (a bare number is MiB,
    as in QEMU); an int is a size in bytes.  The result is rounded up to 4 KiB.

    Exact arithmetic (no float: ``inf``, ``nan`` and ``1e400`` are not sizes); a size
    outside 1M..3071M (pyqemu's pc has RAM below the PCI hole only) raises
    :class:`MachineError` naming ``-m`` and the sizes it takes.
    """
    if spec is None:
        return default
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise _bad_size(spec)
    if isinstance(spec, int):
        size = spec
    else:
        s = spec.strip().lower()
        if s.startswith("size="):
            s = s[5:]
        m = _SIZE_RE.fullmatch(s)
        if m is None or (m["num"].startswith("0x") and m["suffix"] == "b"):
            raise _bad_size(spec)
        num, suffix = m["num"], m["suffix"]
        mul = _SIZE_SUFFIX[suffix] if suffix else 1 << 20
        if "." in num and mul == 1:
            raise MachineError(f"-m: {spec.strip()!r}: a size in bytes cannot have a fraction")
        try:
            value = Fraction(int(num, 16)) if num.startswith("0x") else Fraction(num)
        except ValueError:  # more digits than Python converts (sys.int_info)
            raise _bad_size(spec) from None
        size = int(value * mul)  # floor, as qemu_strtosz truncates a fraction
    if size < MIN_RAM_SIZE:
        raise MachineError(f"-m: {_fmt_size(size)} is too small; the pc machine needs "
                           f"at least 1M")
    if size > MAX_RAM_SIZE:
        raise MachineError(f"-m: {_fmt_size(size)} is too large: pyqemu's pc supports at "
                           f"most {MAX_RAM_SIZE >> 20}M (RAM below the PCI hole)")
    return (size + 0xFFF) & ~0xFFF


def _fmt_size(size: int) -> str:
    """A size as the user may have written it: 512M, 4G, or bytes."""
    if size.bit_length() > 64:
        return "a size beyond 16E"
    for suffix, mul in (("E", 1 << 60), ("P", 1 << 50), ("T", 1 << 40), ("G", 1 << 30),
                        ("M", 1 << 20), ("K", 1 << 10)):
        if size >= mul and size % mul == 0:
            return f"{size // mul}{suffix}"
    if size >= 1 << 20:
        return f"{size / (1 << 20):.1f}M"
    return f"{size} bytes"


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
    """``MachineState``: the machine being built and run.

    The configuration (``smp``, ``ram_size``, ``cpu_type``, ``firmware``,
    ``serial_chardevs``, ``device_specs``) is set before ``machine_run_board_init``;
    the board's ``init`` fills in the parts (memory regions, address spaces,
    ``devices``, ``chardevs``, ``cpus``).  ``machine_initfn`` sets every field but
    the two address spaces, which exist from the board's memory init on.
    """

    smp: SMPConfig
    ram_size: int
    cpu_type: str | None
    cpu_model: str | None
    accel: Any
    runctl: Any
    cpus: list[Any]
    possible_cpus: list[CPUArchId] | None
    # configuration, from the options (QEMU's MachineState.firmware, serial_hds, -device)
    firmware: str | None
    #: one chardev spec per serial port, COM1 first (None: no port at that index)
    serial_chardevs: list[str | None]
    serial_read_input: bool
    device_specs: list[tuple[str, dict[str, Any]]]
    # what the board builds
    system_memory: MemoryRegion | None
    system_io: MemoryRegion | None
    ram: MemoryRegion | None
    address_space_memory: AddressSpace
    address_space_io: AddressSpace
    bios: Any
    devices: list[Any]
    chardevs: list[Any]
    unattached: Object
    peripheral: Object


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
    ms.firmware = None
    ms.serial_chardevs = []
    ms.serial_read_input = False
    ms.device_specs = []
    ms.system_memory = None
    ms.system_io = None
    ms.ram = None
    ms.bios = None
    ms.devices = []
    ms.chardevs = []
    # The composition tree's containers (qemu_create_machine_containers).
    ms.unattached = container_get(obj, "unattached")
    ms.peripheral = container_get(obj, "peripheral")


def machine_run_board_init(ms: MachineState) -> None:
    """``machine_run_board_init``: call the board's init."""
    mc = ms.klass
    assert isinstance(mc, MachineClass)
    with trace.span("machine_run_board_init", machine=mc.name.removesuffix(MACHINE_TYPE_SUFFIX)):
        if ms.smp.maxcpus > mc.max_cpus:
            name = mc.name.removesuffix(MACHINE_TYPE_SUFFIX)
            raise MachineError(f"Invalid SMP CPUs {ms.smp.maxcpus}. The max CPUs supported by "
                               f"machine '{name}' is {mc.max_cpus}")
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
