"""``pyqemu.Machine``: build a machine, load a guest, run it, look inside (``system/vl.c``'s part).

A Machine is built whole or not at all: the constructor checks every option
first, then creates the accelerator, the board (memory, devices, vCPU threads:
QEMU's lifecycle) and loads the guest; if any step fails, everything built so
far is released and the error is raised.  ``with Machine(...) as m:`` always
releases threads, file descriptors and mappings.

Names follow QEMU's vocabulary for the lifecycle and Unicorn's for inspection
(``reg_read``, ``mem_read``, ``hook_add_io``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import pyqemu.hw.char.serial_isa
import pyqemu.hw.i386.cpu
import pyqemu.hw.i386.pc
import pyqemu.hw.misc.debugexit  # noqa: F401  registers isa-debug-exit
from pyqemu.accel.ops import AccelError, AccelState, accel_init, accel_list
from pyqemu.errors import MachineStateError, MemoryAccessError
from pyqemu.hw.core.machine import (
    MachineClass,
    MachineState,
    SMPConfig,
    find_machine_class,
    machine_run_board_init,
    parse_mem_size,
    parse_smp,
)
from pyqemu.qom import (
    object_get_root,
    object_new,
    object_property_add_child,
    object_unparent,
    object_unref,
)
from pyqemu.system import cpus as cpus_mod
from pyqemu.system.cpus import qemu_global_mutex
from pyqemu.system.runstate import RunControl, RunState, ShutdownCause
from pyqemu.target.i386.cpu_state import CPUX86State
from pyqemu.util import trace as tracing

__all__ = ["IoHook", "Machine", "MachineConfig", "RunResult", "check_options",
           "parse_cpu_option"]

IoHook = Callable[[str, int, int, int, bool], None]
DeviceSpec = tuple[str, dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class RunResult:
    """Why :meth:`Machine.run` returned.

    ``reason`` is ``"shutdown"`` (the guest powered off, wrote isa-debug-exit, or
    reset with ``no_reboot``), ``"halted"`` (every vCPU executed HLT and nothing can
    wake it: the pc has no interrupt source), ``"timeout"`` or ``"debug"``.
    ``exit_code`` is QEMU's process exit status for a shutdown.
    """

    reason: str
    exit_code: int | None = None
    cause: str | None = None


def parse_cpu_option(spec: str | None, default_type: str | None) -> str:
    """``parse_cpu_option``: ``model[,features]`` -> the CPU's QOM type name.

    Looking the model up initialises its class (``class_init`` runs here, as in
    QEMU); the features are checked now and applied to each CPU of the type as it
    is created (QEMU's global properties).  Options of an earlier machine in this
    process are forgotten first.
    """
    from pyqemu.hw.i386.cpu import (
        x86_cpu_clear_featurestr,
        x86_cpu_parse_featurestr,
        x86_cpu_type_by_model,
    )
    with tracing.span("parse_cpu_option", cpu=spec or "(default)"):
        x86_cpu_clear_featurestr()
        if spec is None:
            assert default_type is not None
            return default_type
        model, _, features = spec.partition(",")
        typename = x86_cpu_type_by_model(model)
        x86_cpu_parse_featurestr(typename, features)
        return typename


class MachineConfig(NamedTuple):
    """Every option checked (:func:`check_options`), ready to build from."""

    machine_class: MachineClass
    smp: SMPConfig
    ram_size: int
    cpu_type: str
    devices: list[DeviceSpec]
    kernel: Any                  # the parsed -kernel (MultibootImage) or None


def check_options(machine: str = "pc", cpu: str | None = None, smp: str | int = 1,
                  memory: str | int | None = None, bios: str | None = None,
                  kernel: str | None = None, append: str = "",
                  devices: Sequence[str | DeviceSpec] = (), accel: str = "interp",
                  ) -> MachineConfig:
    """Check every machine option, in QEMU's order, without building anything.

    A bad option raises the error that names it.  The images are read here (with
    their size bounds) and checked as the load will check them; the kernel comes
    back parsed, so that the machine loads what was checked.
    """
    mc = find_machine_class(machine)
    smp_cfg = parse_smp(smp, mc.max_cpus)
    ram_size = parse_mem_size(memory, mc.default_ram_size)
    cpu_type = parse_cpu_option(cpu, mc.default_cpu_type)
    device_specs = [_parse_device_spec(d) for d in devices]
    for driver, _ in device_specs:
        _check_device_driver(driver)
    if accel not in [name for name, _, _ in accel_list()]:
        raise AccelError(f"invalid accelerator '{accel}'; -accel help lists them")
    image = _check_images(bios, kernel, append, ram_size)
    return MachineConfig(mc, smp_cfg, ram_size, cpu_type, device_specs, image)


def _check_device_driver(driver: str) -> None:
    from pyqemu.hw.core.errors import DeviceError
    from pyqemu.hw.core.qdev import DeviceClass
    from pyqemu.qom import object_class_by_name
    k = object_class_by_name(driver)
    if not isinstance(k, DeviceClass) or k.abstract:
        raise DeviceError(f"'{driver}' is not a valid device model name; -device help lists them")
    if not k.user_creatable:
        raise DeviceError(f"device '{driver}' cannot be added with -device")


def _check_images(bios: str | None, kernel: str | None, append: str, ram_size: int) -> Any:
    """Fail on a missing, oversized or malformed ``-bios``/``-kernel`` before anything is
    built; the parsed kernel (or None)."""
    if bios is not None:
        from pyqemu.hw.i386.loader_bios import read_bios_image
        read_bios_image(bios)
    if kernel is not None:
        from pyqemu.hw.i386.multiboot import multiboot_parse
        return multiboot_parse(kernel, append, ram_size)
    if append:
        from pyqemu.hw.core.errors import LoaderError
        raise LoaderError("-append only allowed with -kernel option")
    return None


def _parse_device_spec(spec: str | DeviceSpec) -> DeviceSpec:
    """``isa-debug-exit,iobase=0xf4,iosize=0x04`` -> ("isa-debug-exit", {...})."""
    if isinstance(spec, tuple):
        return spec[0], dict(spec[1])
    driver, *opts = spec.split(",")
    props: dict[str, Any] = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        props[key] = value if sep else "on"
    if driver.startswith("driver="):
        driver = driver[7:]
    return driver, props


def _serial_specs(serial: str | Sequence[str | None] | None) -> list[str | None]:
    """``Machine(serial=...)`` as the board's list, COM1 first (None: no port there)."""
    from pyqemu.hw.char.serial_isa import MAX_ISA_SERIAL_PORTS
    from pyqemu.hw.core.errors import MachineError
    specs = [serial] if serial is None or isinstance(serial, str) else list(serial)
    if len(specs) > MAX_ISA_SERIAL_PORTS:
        raise MachineError(f"-serial: {len(specs)} serial ports requested; the pc machine "
                           f"has {MAX_ISA_SERIAL_PORTS} (COM1-COM4)")
    out: list[str | None] = []
    for spec in specs:
        if spec is not None and not isinstance(spec, str):
            raise MachineError(f"-serial: a chardev spec is a string, not {spec!r}")
        out.append(None if spec is None or spec.strip() == "none" else spec)
    return out


class Machine:
    """A virtual machine: ``Machine("pc", accel="kvm"|"interp", cpu=..., smp=..., memory=...)``.

    ``bios`` and ``kernel`` name files as ``-bios``/``-kernel`` do; ``serial`` is
    COM1's chardev spec (``"memory"``, the default, captures output for
    :attr:`serial_output`; ``"stdio"``, ``"file:PATH"``, ``"null"``; ``None`` or
    ``"none"``: no serial port) or a list of specs, COM1 first, as repeated
    ``-serial`` options give (at most 4; ``None``/``"none"`` leaves that port out);
    ``devices`` are ``-device`` strings; ``trace`` is a list of ``-d`` groups whose
    lines go to ``trace_sink`` (default: kept in :attr:`trace_lines`).
    """

    def __init__(self, machine: str = "pc", accel: str = "interp", cpu: str | None = None,
                 smp: str | int = 1, memory: str | int | None = None, *,
                 bios: str | None = None, kernel: str | None = None, append: str = "",
                 serial: str | Sequence[str | None] | None = "memory",
                 serial_input: bool = False,
                 devices: Sequence[str | DeviceSpec] = (),
                 no_reboot: bool = False, trace: Iterable[str] | None = None,
                 trace_sink: Callable[[str], None] | None = None) -> None:
        self._closed = False
        self._ms: MachineState | None = None
        self._accel: AccelState | None = None
        self._trace_sink: Callable[[str], None] | None = None
        self.trace_lines: list[str] = []

        try:
            if trace:
                self._trace_sink = tracing.add_sink(set(trace),
                                                    trace_sink or self.trace_lines.append)
            # 1. Check every option before building anything.
            config = check_options(machine, cpu, smp, memory, bios, kernel, append, devices,
                                   accel)
            serial_specs = _serial_specs(serial)
            self.accel_name = accel
            # 2. The accelerator (kvm_init opens /dev/kvm and creates the VM).
            self.runctl = RunControl()
            self.runctl.no_reboot = no_reboot
            self.runctl.kick_all = self._kick_all
            with qemu_global_mutex:
                ms = object_new(config.machine_class.name)
                assert isinstance(ms, MachineState)
                self._ms = ms
                ms.smp = config.smp
                ms.ram_size = config.ram_size
                ms.cpu_type = config.cpu_type
                ms.runctl = self.runctl
                ms.firmware = bios
                ms.serial_chardevs = serial_specs
                ms.serial_read_input = serial_input
                ms.device_specs = config.devices
                # QEMU has one /machine; a second live Machine in this process is /machine[1].
                root = object_get_root()
                object_property_add_child(
                    root, "machine" if root.property_find("machine") is None else "machine[*]",
                    ms)
                object_unref(ms)
                with tracing.span("qemu_init", accel=accel, machine=machine):
                    self._accel = accel_init(accel, ms)
                    ms.accel = self._accel
                    # 3. The board: memory, devices, and the vCPUs with their threads.
                    machine_run_board_init(ms)
                    # 4. The guest: the kernel checked in step 1, as it was read then.
                    if config.kernel is not None:
                        from pyqemu.hw.i386.multiboot import load_multiboot
                        load_multiboot(ms, config.kernel)
                        self.cpus[0].vcpu_dirty = True
                    for c in self.cpus:
                        c.accel_ops.synchronize_post_init(c)
        except BaseException:
            self.close()
            raise

    # -- parts -------------------------------------------------------------------------
    @property
    def state(self) -> MachineState:
        if self._ms is None or self._closed:
            raise MachineStateError("the machine is closed")
        return self._ms

    @property
    def cpus(self) -> list[Any]:
        return list(self.state.cpus)

    @property
    def accel(self) -> AccelState:
        assert self._accel is not None
        return self._accel

    def cpu(self, index: int = 0) -> Any:
        cpus = self.cpus
        if not 0 <= index < len(cpus):
            raise MachineStateError(f"no vCPU {index}: the machine has {len(cpus)}")
        return cpus[index]

    @property
    def serial(self) -> Any:
        """The first serial port (the lowest COM number), or None."""
        ports = [dev for dev in self.state.devices if dev.typename == "isa-serial"]
        return min(ports, key=lambda dev: dev.index) if ports else None

    @property
    def serial_output(self) -> bytes:
        """What the guest wrote to the first UART (with ``serial="memory"``)."""
        dev = self.serial
        if dev is None:
            return b""
        chr_ = dev.chr
        return bytes(chr_.getvalue()) if hasattr(chr_, "getvalue") else b""

    # -- guest memory --------------------------------------------------------------------
    def _check_memory_range(self, what: str, addr: object, size: object) -> None:
        """Raise :class:`MemoryAccessError` unless [addr, addr + size) is all RAM or ROM."""
        for name, v in (("address", addr), ("size", size)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise MemoryAccessError(f"{what}: the {name} must be an int, not {v!r}")
        assert isinstance(addr, int) and isinstance(size, int)
        if addr < 0 or size < 0:
            raise MemoryAccessError(f"{what}: negative {'address' if addr < 0 else 'size'} "
                                    f"({addr:#x}, {size:#x})")
        asp = self.state.address_space_memory
        end = addr + size
        where = f"{what} [{addr:#x}, {end:#x})"
        if end > asp.root.size:
            raise MemoryAccessError(f"{where}: beyond the {asp.root.size >> 30} GiB "
                                    f"guest-physical address space; {self._memory_map()}")
        pos = addr
        while pos < end:
            r = asp.lookup(pos)
            if r is None or not r.mr.is_ram:
                kind = "unassigned" if r is None else f"MMIO region '{r.mr.name}'"
                raise MemoryAccessError(f"{where}: {pos:#x} is not guest RAM or ROM ({kind}); "
                                        f"{self._memory_map()}")
            pos = r.end

    def _memory_map(self) -> str:
        """``guest RAM is [0, 0x8000000); ROM [0xffff0000, 0x100000000) ...`` for messages."""
        parts: list[str] = []
        for r in self.state.address_space_memory.ram_ranges():
            kind = "ROM" if r.mr.readonly else "RAM"
            parts.append(f"{kind} [{r.start:#x}, {r.end:#x})")
        return "guest memory: " + (", ".join(parts) if parts else "none")

    def mem_write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` to guest-physical memory at ``addr``.

        The range must lie in guest RAM or ROM; ROM is written as a loader writes it
        (QEMU's ``rom`` loading: the guest itself cannot).  MMIO and unassigned
        addresses are refused, never dispatched to a device: an inspection call has
        no device side effects (QEMU's ``pmemsave`` reads through the dispatch; here
        device registers are reached through the guest or :meth:`hook_add_io`).  A
        range outside RAM/ROM, a negative address or a wrong type raises
        :class:`~pyqemu.MemoryAccessError` naming the range and the memory map;
        nothing is written then.
        """
        self._require_stopped("write guest memory")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MemoryAccessError(f"mem_write: data must be bytes, not {type(data).__name__}")
        payload = bytes(data)
        self._check_memory_range("mem_write", addr, len(payload))
        self.state.address_space_memory.write_bytes(addr, payload, force=True)

    def mem_read(self, addr: int, size: int) -> bytes:
        """Read ``size`` bytes of guest-physical memory at ``addr`` (QEMU's ``pmemsave``
        semantics for RAM and ROM, the BIOS's alias below 1 MiB included).

        The same rules as :meth:`mem_write`: MMIO and unassigned addresses, ranges past
        4 GiB and negative values raise :class:`~pyqemu.MemoryAccessError` naming the
        range; ``size`` 0 reads nothing.
        """
        self._require_stopped("read guest memory")
        self._check_memory_range("mem_read", addr, size)
        return self.state.address_space_memory.read_bytes(addr, size)

    def load_bytes(self, data: bytes, addr: int) -> None:
        self.mem_write(addr, data)

    def load_asm(self, source: str, addr: int, mode: str = "real", *, entry: int | None = None,
                 stack: int | None = None, cpu: int = 0, user: bool = False) -> bytes:
        """Assemble ``source`` with keystone for ``mode`` (real, prot32, long64), load it at
        ``addr`` and make ``cpu`` start there in that mode.  Returns the bytes."""
        from pyqemu.hw.i386.loader_asm import assemble
        code = assemble(source, mode, addr)
        self.mem_write(addr, code)
        self.set_entry(mode, addr if entry is None else entry, stack=stack, cpu=cpu, user=user)
        return code

    def set_entry(self, mode: str, entry: int, *, stack: int | None = None, cpu: int = 0,
                  user: bool = False) -> None:
        """Set ``cpu``'s registers for ``mode`` at ``entry`` and make it runnable."""
        from pyqemu.hw.i386.loader_asm import setup_entry_state
        self._require_stopped("set the entry state")
        c = self.cpu(cpu)
        with qemu_global_mutex:
            c.accel_ops.synchronize_state(c)
            kwargs: dict[str, Any] = {}
            if user:
                kwargs["privilege"] = 3
            setup_entry_state(c.env, self.state.address_space_memory, mode, entry, stack,
                              **kwargs)
            c.vcpu_dirty = True
            c.halted = False

    # -- registers --------------------------------------------------------------------
    def env(self, cpu: int = 0) -> CPUX86State:
        """The vCPU's register file, synchronized from the accelerator (vCPUs stopped).
        After changing it call :meth:`env_changed`."""
        self._require_stopped("read registers")
        c = self.cpu(cpu)
        with qemu_global_mutex:
            c.accel_ops.synchronize_state(c)
        return c.env

    def env_changed(self, cpu: int = 0) -> None:
        self.cpu(cpu).vcpu_dirty = True

    def reg_read(self, name: str, cpu: int = 0) -> int:
        """A register by name: ``rax``, ``eax``, ``al``, ``rip``, ``rflags``, ``cs``, ``cr0`` ..."""
        try:
            return self.env(cpu).reg(name)
        except KeyError as e:
            raise MachineStateError(str(e).strip("'\"")) from None

    def reg_write(self, name: str, value: int, cpu: int = 0) -> None:
        env = self.env(cpu)
        try:
            env.set_reg(name, value)
        except KeyError as e:
            raise MachineStateError(str(e).strip("'\"")) from None
        self.env_changed(cpu)

    def cpu_start(self, cpu: int) -> None:
        """Make an application processor (halted until started) runnable."""
        c = self.cpu(cpu)
        with qemu_global_mutex:
            c.halted = False
            cpus_mod.qemu_cpu_kick(c)

    # -- debugging -----------------------------------------------------------------------
    def _debug_ops(self, cpu: int) -> Any:
        c = self.cpu(cpu)
        if not c.accel_ops.supports_guest_debug():
            raise MachineStateError(f"the {self.accel_name} accelerator has no guest "
                                    "debugging here")
        return c

    def step(self, cpu: int = 0, timeout: float = 60.0) -> RunResult:
        """Execute one instruction on ``cpu`` (the others stay paused) and stop.

        Through AccelOps: ``singlestep_enabled`` + ``update_guest_debug``
        (KVM_SET_GUEST_DEBUG with KVM_GUESTDBG_SINGLESTEP under kvm).  Returns
        ``RunResult("debug")`` after the instruction, ``"halted"`` if the vCPU was halted."""
        self._require_stopped("single-step")
        c = self._debug_ops(cpu)
        rc = self.runctl
        # Inside single_stepping() the vCPU stays in single-step mode between steps.
        toggle = not c.singlestep_enabled
        with qemu_global_mutex:
            if toggle:
                c.singlestep_enabled = True
                c.accel_ops.update_guest_debug(c)
            rc.state = RunState.RUNNING
            cpus_mod.resume_all_vcpus([c])
        try:
            return self.wait(timeout)
        finally:
            if toggle:
                with qemu_global_mutex:
                    c.singlestep_enabled = False
                    c.accel_ops.update_guest_debug(c)

    @contextlib.contextmanager
    def single_stepping(self, cpu: int = 0) -> Iterator[None]:
        """Keep ``cpu`` in single-step mode for a series of :meth:`step` calls: one
        ``update_guest_debug`` (KVM_SET_GUEST_DEBUG) on entry and one on exit instead of
        two per step (lockstep's inner loop)."""
        self._require_stopped("single-step")
        c = self._debug_ops(cpu)
        with qemu_global_mutex:
            c.singlestep_enabled = True
            c.accel_ops.update_guest_debug(c)
        try:
            yield
        finally:
            if not self._closed:
                with qemu_global_mutex:
                    c.singlestep_enabled = False
                    c.accel_ops.update_guest_debug(c)

    def breakpoint_insert(self, addr: int, cpu: int | None = None) -> None:
        """A software breakpoint at guest address ``addr`` (every vCPU unless ``cpu``):
        :meth:`run` returns ``RunResult("debug")`` with RIP at ``addr``."""
        from pyqemu.accel.ops import GDB_BREAKPOINT_SW
        self._require_stopped("insert a breakpoint")
        for c in (self.cpus if cpu is None else [self.cpu(cpu)]):
            with qemu_global_mutex:
                self._debug_ops(c.cpu_index).accel_ops.insert_breakpoint(
                    c, GDB_BREAKPOINT_SW, addr, 1)

    def breakpoint_remove(self, addr: int, cpu: int | None = None) -> None:
        from pyqemu.accel.ops import GDB_BREAKPOINT_SW
        self._require_stopped("remove a breakpoint")
        for c in (self.cpus if cpu is None else [self.cpu(cpu)]):
            with qemu_global_mutex:
                c.accel_ops.remove_breakpoint(c, GDB_BREAKPOINT_SW, addr, 1)

    # -- hooks --------------------------------------------------------------------------
    def hook_add_io(self, callback: IoHook) -> IoHook:
        """Call ``callback(space, addr, size, value, is_write)`` for every port I/O and MMIO
        access that reaches the device dispatch (the same sequence on both accelerators).
        An exception raised in it stops the VM and is re-raised by :meth:`run`."""
        ms = self.state
        ms.address_space_io.hooks.append(callback)
        ms.address_space_memory.hooks.append(callback)
        return callback

    def hook_del(self, callback: IoHook) -> None:
        ms = self.state
        for asp in (ms.address_space_io, ms.address_space_memory):
            if callback in asp.hooks:
                asp.hooks.remove(callback)

    # -- running ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._ms is not None and not self._closed and self.runctl.is_running()

    def _require_stopped(self, what: str) -> None:
        if self.running:
            raise MachineStateError(f"cannot {what} while the vCPUs run; pause() first")

    def start(self) -> None:
        """``vm_start``: resume every vCPU and return at once (see :meth:`wait`)."""
        ms = self.state
        if self.runctl.error is not None:
            raise MachineStateError(f"the machine stopped on an error: {self.runctl.error}")
        with qemu_global_mutex:
            if self.runctl.is_running():
                return
            with tracing.span("vm_start"):
                self.runctl.state = RunState.RUNNING
                with tracing.span("resume_all_vcpus"):
                    cpus_mod.resume_all_vcpus(ms.cpus)

    resume = start

    def pause(self) -> None:
        """``vm_stop(RUN_STATE_PAUSED)``: stop every vCPU and wait until each has."""
        ms = self.state
        with qemu_global_mutex:
            if not self.runctl.is_running():
                return
            with tracing.span("vm_stop", state="paused"):
                self.runctl.state = RunState.PAUSED
                cpus_mod.pause_all_vcpus(ms.cpus)

    def _kick_all(self) -> None:
        if self._ms is not None:
            for c in self._ms.cpus:
                cpus_mod.qemu_cpu_kick(c)

    def _all_halted(self) -> bool:
        return all(c.halted for c in self.state.cpus)

    def wait(self, timeout: float | None = None) -> RunResult:
        """Wait until the guest shuts down, every vCPU is halted, an error stops the VM, or
        ``timeout`` seconds pass; the vCPUs are then paused.  An exception raised in a vCPU
        thread or a device callback is re-raised here."""
        deadline = None if timeout is None else time.monotonic() + timeout
        rc = self.runctl
        with rc.cond:
            while True:
                if rc.error is not None:
                    break
                if rc.reset_requested:
                    rc.reset_requested = False
                    self._system_reset()
                    continue
                if rc.shutdown_cause is not ShutdownCause.NONE or rc.debug_requested:
                    break
                if rc.is_running() and self._all_halted():
                    break
                if not rc.is_running():
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                rc.cond.wait(0.2 if left is None else min(left, 0.2))
            self._stop_after_run()
            if rc.error is not None:
                err = rc.error
                rc.state = RunState.INTERNAL_ERROR
                raise err
            if rc.shutdown_cause is not ShutdownCause.NONE:
                rc.state = RunState.SHUTDOWN
                return RunResult("shutdown", rc.exit_code if rc.exit_code is not None else 0,
                                 rc.shutdown_cause.value)
            if rc.debug_requested:
                rc.debug_requested = False
                return RunResult("debug")
            if self._all_halted():
                return RunResult("halted")
            return RunResult("timeout")

    def _stop_after_run(self) -> None:
        ms = self.state
        if self.runctl.state is RunState.RUNNING:
            self.runctl.state = RunState.PAUSED
        try:
            cpus_mod.pause_all_vcpus(ms.cpus)
        except cpus_mod.VcpuThreadError:
            if self.runctl.error is None:
                raise

    def run(self, timeout: float | None = None) -> RunResult:
        """Start (or resume) the vCPUs and :meth:`wait`."""
        if self.runctl.shutdown_cause is not ShutdownCause.NONE:
            raise MachineStateError("the guest has shut down; build a new Machine to run again")
        self.start()
        return self.wait(timeout)

    def _system_reset(self) -> None:
        """``qemu_system_reset``: every vCPU back to its reset state (a guest reset request)."""
        from pyqemu.hw.core.cpu import cpu_reset
        ms = self.state
        with tracing.span("qemu_system_reset"):
            cpus_mod.pause_all_vcpus(ms.cpus)
            for c in ms.cpus:
                cpu_reset(c)
                c.accel_ops.synchronize_post_reset(c)
            cpus_mod.resume_all_vcpus(ms.cpus)

    # -- teardown ---------------------------------------------------------------------
    def close(self) -> None:
        """Stop and join every vCPU thread, release the accelerator's fds and the RAM."""
        if self._closed:
            return
        self._closed = True
        ms = self._ms
        errors: list[BaseException] = []
        try:
            if ms is not None:
                with qemu_global_mutex:
                    self.runctl.state = RunState.SHUTDOWN
                # Joined without the big lock held: a vCPU thread needs it to leave its loop.
                for c in list(ms.cpus):
                    try:
                        cpus_mod.cpu_remove_sync(c)
                    except BaseException as e:  # keep releasing the rest
                        errors.append(e)
                for dev in reversed(list(ms.devices)):
                    try:
                        dev.property_set("realized", False)
                    except BaseException as e:
                        errors.append(e)
            for chr_ in ms.chardevs if ms is not None else []:
                chr_.close()
            if self._accel is not None:
                self._accel.close()
            if ms is not None:
                if ms.system_memory is not None:
                    ms.system_memory.close()
                if ms.parent is not None:
                    object_unparent(ms)
        finally:
            if self._trace_sink is not None:
                tracing.remove_sink(self._trace_sink)
                self._trace_sink = None
        if errors:
            raise errors[0]

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten close must not leave threads behind
        try:
            if not getattr(self, "_closed", True):
                self.close()
        except BaseException:
            pass
