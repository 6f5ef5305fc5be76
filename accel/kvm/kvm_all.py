"""The KVM accelerator: ``kvm_init``, the vCPU thread and ``kvm_cpu_exec``.

QEMU counterparts: ``accel/kvm/kvm-all.c`` (kvm_init, kvm_init_vcpu,
kvm_cpu_exec, kvm_destroy_vcpu, memory slots) and ``accel/kvm/kvm-accel-ops.c``
(kvm_vcpu_thread_fn, kvm_start_vcpu_thread).  What depends on x86 (QEMU's
``target/i386/kvm/kvm.c``: kvm_arch_init, kvm_arch_init_vcpu and CPUID,
kvm_arch_get/put_registers, kvm_arch_handle_exit) is in
:mod:`pyqemu.accel.kvm.kvm_i386`; the ones callers have always imported from
here (kvm_arch_init_vcpu, kvm_arch_get/put_registers, kvm_cpuid_entries) are
re-exported.  The binding below both (:mod:`pyqemu.accel.kvm.binding`) has no
policy; every decision (retry, stop, report) is made here.

Threads and locks:

* ``kvm_init`` and the ``KVMState``/``KvmAccelOps`` methods run on the main
  thread unless their docstring says otherwise.
* Each vCPU has one thread, ``CPU n/KVM``, running :func:`kvm_vcpu_thread_fn`.
  It holds the big lock (``qemu_global_mutex``) except around ``KVM_RUN`` and
  while it waits in ``qemu_wait_io_event``.  Device dispatch
  (``address_space_rw``) takes the big lock itself.
* A kick (:meth:`KvmAccelOps.kick_vcpu_thread`) sets ``cpu.exit_request``,
  then ``kvm_run.immediate_exit``, then sends ``SIG_IPI`` to the vCPU thread
  with ``signal.pthread_kill``.  The order matters: a kick that lands before
  ``KVM_RUN`` is entered is caught by ``immediate_exit``; one that lands while
  the guest runs is caught by the signal (``KVM_RUN`` returns -EINTR).

About signals: Python runs signal *handlers* only on the main thread and lets
only the main thread install them, so ``kvm_init`` (main thread) installs a
no-op Python handler for ``SIG_IPI``.  The C-level handler behind it runs in
whichever thread the signal is sent to, which is all ``KVM_RUN`` needs to
return -EINTR.  ``kvm_init_cpu_signals`` (vCPU thread) then only makes sure the
signal is not blocked in that thread.  If ``kvm_init`` is not called on the
main thread, the handler cannot be installed; kicks then rely on
``immediate_exit`` alone, which stops a vCPU only at its next exit.

Register state follows QEMU's lazy protocol: ``cpu.env`` is the register file;
``kvm_arch_get_registers`` fills it from the kernel, and ``cpu.vcpu_dirty``
says ``env`` is newer than the kernel, so ``kvm_cpu_exec`` pushes it
(``kvm_arch_put_registers``) before the next ``KVM_RUN``.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyqemu.accel.kvm import kvm_abi as abi
from pyqemu.accel.kvm.binding import (
    CpuidEntry,
    InternalError,
    Intr,
    IoIn,
    IoOut,
    IrqWindowOpen,
    Kvm,
    MmioRead,
    MmioWrite,
    Shutdown,
    SystemEvent,
    VcpuExit,
    VcpuFd,
    VmFd,
)
from pyqemu.accel.kvm.errors import KvmError, KvmExitError, KvmUnavailableError
from pyqemu.accel.kvm.kvm_i386 import (
    KVM_ARCH_REQUIRED_CAPABILITIES,
    kvm_arch_get_registers,
    kvm_arch_get_supported_cpuid,
    kvm_arch_handle_exit,
    kvm_arch_init,
    kvm_arch_init_vcpu,
    kvm_arch_insert_sw_breakpoint,
    kvm_arch_put_registers,
    kvm_arch_remove_sw_breakpoint,
    kvm_arch_update_guest_debug,
    kvm_arch_vcpu_id,
    kvm_cpuid_entries,
    vcpu_rip,
)
from pyqemu.accel.ops import (
    EXCP_DEBUG,
    EXCP_HLT,
    EXCP_INTERRUPT,
    GDB_BREAKPOINT_SW,
    AccelError,
    AccelOps,
    AccelState,
    register_accel,
)
from pyqemu.system import cpus as cpus_mod
from pyqemu.system.cpus import VCpu, qemu_global_mutex
from pyqemu.system.memory import address_space_rw
from pyqemu.util import trace

if TYPE_CHECKING:
    from pyqemu.accel.ops import CPUState
    from pyqemu.system.memory import AddressSpace

__all__ = [
    "SIG_IPI",
    "KVMState",
    "KvmAccelOps",
    "KvmCpuState",
    "KvmExitError",
    "kvm_arch_get_registers",
    "kvm_arch_init_vcpu",
    "kvm_arch_put_registers",
    "kvm_available",
    "kvm_cpu_exec",
    "kvm_cpu_kick",
    "kvm_cpuid_entries",
    "kvm_destroy_vcpu",
    "kvm_handle_exit",
    "kvm_init",
    "kvm_init_cpu_signals",
    "kvm_init_vcpu",
    "kvm_start_vcpu_thread",
    "kvm_vcpu_thread_fn",
]


#: The kick signal (QEMU's SIG_IPI is SIGUSR1 on Linux).
SIG_IPI = signal.SIGUSR1

#: KVM_CHECK_EXTENSION results kvm_init insists on: QEMU's generic
#: ``kvm_required_capabilites``, then the architecture's.
REQUIRED_CAPS = (
    "KVM_CAP_USER_MEMORY",
    "KVM_CAP_DESTROY_MEMORY_REGION_WORKS",
    "KVM_CAP_JOIN_MEMORY_REGIONS_WORKS",
    "KVM_CAP_INTERNAL_ERROR_DATA",
    "KVM_CAP_IMMEDIATE_EXIT",
) + KVM_ARCH_REQUIRED_CAPABILITIES

#: KVM_INTERNAL_ERROR_* suberrors (<linux/kvm.h>), named as QEMU's message names them.
_INTERNAL_ERROR_NAMES = {
    abi.KVM_INTERNAL_ERROR_EMULATION: "emulation failure",
    abi.KVM_INTERNAL_ERROR_SIMUL_EX: "simultaneous exceptions",
    abi.KVM_INTERNAL_ERROR_DELIVERY_EV: "event delivery",
    abi.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: "unexpected exit reason",
}


# --- per-VM and per-vCPU state ----------------------------------------------------------


@dataclass
class KvmCpuState:
    """The accelerator's per-vCPU state (QEMU's ``AccelCPUState`` + ``kvm_fd``/``kvm_run``).

    ``tsc_khz`` and ``cpuid`` are what ``kvm_arch_init_vcpu`` gave KVM_GET_TSC_KHZ and
    KVM_SET_CPUID2; ``guest_debug`` the last KVM_SET_GUEST_DEBUG control.
    """

    vcpu: VcpuFd
    vcpu_id: int
    tsc_khz: int = 0
    cpuid: list[CpuidEntry] = field(default_factory=list)
    guest_debug: int = 0


@dataclass
class _Slot:
    slot: int
    gpa: int
    size: int
    hva: int
    flags: int


def _sig_ipi_noop(signum: int, frame: Any) -> None:
    """The SIG_IPI handler: nothing to do; its delivery already made KVM_RUN return."""


def kvm_available() -> str | None:
    """None if /dev/kvm can be used, else the reason (for ``-accel help``)."""
    try:
        with Kvm() as kvm:
            version = kvm.api_version()
    except KvmError as e:
        return f"Could not access KVM kernel module: {e.strerror}"
    if version != abi.KVM_API_VERSION:
        return f"kvm version {version} not supported (need {abi.KVM_API_VERSION})"
    return None


class KVMState(AccelState):
    """One KVM VM for one machine (``KVMState``): the fds, the slots, the ops."""

    name = "kvm"

    def __init__(self, kvm: Kvm, vm: VmFd) -> None:
        self.kvm = kvm
        self.vm = vm
        self.ops: KvmAccelOps = KvmAccelOps(self)
        self.caps = {
            name: kvm.check_extension(getattr(abi, name))
            for name in dir(abi)
            if name.startswith("KVM_CAP_")
        }
        # What the host's KVM offers x86 guests, read once (for kvm_i386).
        self.supported_cpuid: list[CpuidEntry] = kvm.get_supported_cpuid()
        self.msr_index_list: frozenset[int] = frozenset(kvm.get_msr_index_list())
        self.signals_installed = False
        self.breakpoints: dict[int, bytes] = {}  # guest address -> original byte (sw bps)
        self._slots: dict[tuple[int, int, int, int], _Slot] = {}
        self._free_slots = list(range(min(self.caps["KVM_CAP_NR_MEMSLOTS"] or 32, 512)))
        self._memory: AddressSpace | None = None
        self._closed = False

    # -- memory (kvm_region_add/del through a listener on the memory address space) --

    def setup_machine(self, machine: Any) -> None:
        """Register guest RAM as KVM memory slots and follow later topology changes."""
        asp = machine.address_space_memory
        if self._memory is asp:
            return  # already following it (kvm_init saw the memory map first)
        with trace.span("kvm_memory_listener_register", as_="memory"):
            self._memory = asp
            asp.listeners.append(self._memory_commit)
            self._memory_commit(asp)

    def _memory_commit(self, asp: AddressSpace) -> None:
        """``kvm_region_commit``: make the slots match the RAM flat ranges of ``asp``."""
        want: dict[tuple[int, int, int, int], None] = {}
        readonly_ok = bool(self.caps.get("KVM_CAP_READONLY_MEM"))
        for r in asp.ram_ranges():
            # KVM maps whole pages: keep the page-aligned inside of each range.
            start = (r.start + 0xFFF) & ~0xFFF
            end = r.end & ~0xFFF
            if end <= start:
                continue
            hva = r.mr.host_address() + r.offset + (start - r.start)
            flags = abi.KVM_MEM_READONLY if (r.mr.readonly and readonly_ok) else 0
            want[(start, end - start, hva, flags)] = None
        for key in [k for k in self._slots if k not in want]:
            s = self._slots.pop(key)
            with trace.span("kvm_set_user_memory_region", slot=s.slot, gpa=s.gpa, size=0):
                self.vm.set_user_memory_region(s.slot, 0, s.gpa, 0, s.hva)
            self._free_slots.append(s.slot)
        for key in want:
            if key in self._slots:
                continue
            gpa, size, hva, flags = key
            if not self._free_slots:
                raise AccelError("kvm: out of memory slots")
            slot = self._free_slots.pop(0)
            with trace.span("kvm_set_user_memory_region", slot=slot, gpa=gpa, size=size):
                self.vm.set_user_memory_region(slot, flags, gpa, size, hva)
            self._slots[key] = _Slot(slot, gpa, size, hva, flags)

    @property
    def slots(self) -> list[tuple[int, int, int, int]]:
        """(slot, guest_phys_addr, size, flags) of every memory slot, by address."""
        return sorted(((s.slot, s.gpa, s.size, s.flags) for s in self._slots.values()),
                      key=lambda t: t[1])

    # -- CPUID limits ---------------------------------------------------------------

    def get_supported_cpuid(self, function: int, index: int, reg: str) -> int | None:
        """``kvm_arch_get_supported_cpuid``: what KVM_GET_SUPPORTED_CPUID allows."""
        return kvm_arch_get_supported_cpuid(self, function, index, reg)

    def close(self) -> None:
        """Drop the slots and close the VM and /dev/kvm.  Main thread, all vCPUs gone."""
        if self._closed:
            return
        self._closed = True
        if self._memory is not None and self._memory_commit in self._memory.listeners:
            self._memory.listeners.remove(self._memory_commit)
        self.vm.close()  # closing the VM fd drops its slots with it
        self._slots.clear()
        self.kvm.close()


def _install_sig_ipi(state: KVMState) -> None:
    """Install the SIG_IPI handler (main thread only; see the module docstring)."""
    if threading.current_thread() is not threading.main_thread():
        trace.event("kvm_init: not the main thread; SIG_IPI handler not installed, "
                    "kicks use immediate_exit only")
        return
    current = signal.getsignal(SIG_IPI)
    if current in (signal.SIG_DFL, signal.SIG_IGN, None):
        signal.signal(SIG_IPI, _sig_ipi_noop)
    # A handler someone else installed also makes KVM_RUN return -EINTR; keep it.
    signal.siginterrupt(SIG_IPI, True)
    state.signals_installed = True


def kvm_init(machine: Any = None, path: str = "/dev/kvm") -> KVMState:
    """``kvm_init``: open /dev/kvm, check the API and capabilities, create the VM.

    Main thread.  Raises :class:`AccelError` with QEMU-like messages when KVM
    is missing, denied, too old or lacks a required capability; nothing is left
    open on failure.
    """
    with trace.span("kvm_init"):
        try:
            kvm = Kvm(path)
        except KvmUnavailableError as e:
            hint = ""
            if e.errno in (errno.EACCES, errno.EPERM):
                hint = f" (no permission to open {path}: is this user in the kvm group?)"
            elif e.errno == errno.ENOENT:
                hint = f" ({path} does not exist: is the kvm module loaded?)"
            raise AccelError(
                f"Could not access KVM kernel module: {e.strerror}{hint}") from e
        try:
            version = kvm.api_version()
            trace.event("KVM_GET_API_VERSION", version=version)
            if version != abi.KVM_API_VERSION:
                raise AccelError(
                    f"kvm version {version} too old or new: need {abi.KVM_API_VERSION}")
            for cap in REQUIRED_CAPS:
                if not kvm.check_extension(getattr(abi, cap)):
                    raise AccelError(f"kvm does not support {cap}: the host kernel is too old")
            with trace.span("KVM_CREATE_VM"):
                vm = kvm.create_vm()
        except BaseException:
            kvm.close()
            raise
        try:
            state = KVMState(kvm, vm)
            kvm_arch_init(state)
            _install_sig_ipi(state)
        except BaseException:
            vm.close()
            kvm.close()
            raise
        if machine is not None:
            machine_address_space = getattr(machine, "address_space_memory", None)
            if machine_address_space is not None:
                state.setup_machine(machine)
        return state


# --- the vCPU thread -----------------------------------------------------------------------


def kvm_start_vcpu_thread(cpu: CPUState) -> None:
    """``kvm_start_vcpu_thread``: thread "CPU n/KVM" running :func:`kvm_vcpu_thread_fn`.

    Main thread, big lock held (from ``qemu_init_vcpu``, which then waits for
    ``cpu.created``).
    """
    name = f"CPU {cpu.cpu_index}/KVM"
    t = threading.Thread(
        target=cpus_mod.vcpu_thread_main,
        args=(cpu, lambda: kvm_vcpu_thread_fn(cpu), trace.depth()),
        name=name,
        daemon=True,
    )
    cpu.thread = t
    t.start()


def kvm_vcpu_thread_fn(cpu: CPUState) -> None:
    """``kvm_vcpu_thread_fn``: init the vCPU, signal created, run until unplugged."""
    with qemu_global_mutex:
        cpu.thread_id = threading.get_native_id()
        cpu.running = False
        try:
            kvm_init_vcpu(cpu)
            kvm_init_cpu_signals(cpu)
            cpus_mod.cpu_thread_signal_created(cpu)
            while True:
                if cpus_mod.cpu_can_run(cpu):
                    r = kvm_cpu_exec(cpu)
                    if r == EXCP_DEBUG:
                        cpu_handle_guest_debug(cpu)
                cpus_mod.qemu_wait_io_event(cpu)
                if cpu.unplug and not cpus_mod.cpu_can_run(cpu):
                    break
        finally:
            if isinstance(getattr(cpu, "accel", None), KvmCpuState):
                kvm_destroy_vcpu(cpu)
        cpus_mod.cpu_thread_signal_destroyed(cpu)


def cpu_handle_guest_debug(cpu: CPUState) -> None:
    """``cpu_handle_guest_debug``: stop this vCPU and tell the main loop (gdbstub's job)."""
    cpu.machine.runctl.request_debug()
    cpu.stopped = True


def _kvm_state(cpu: CPUState) -> KVMState:
    accel = cpu.machine.accel
    assert isinstance(accel, KVMState), "kvm vCPU on a machine without KVMState"
    return accel


def kvm_init_vcpu(cpu: CPUState) -> None:
    """``kvm_init_vcpu``: KVM_CREATE_VCPU, KVM_GET_VCPU_MMAP_SIZE, mmap kvm_run, arch init.

    vCPU thread, big lock held.  ``cpu.vcpu_dirty`` starts True: ``cpu.env``
    (set by ``cpu_reset``) is pushed to the kernel before the first KVM_RUN.
    """
    s = _kvm_state(cpu)
    vcpu_id = kvm_arch_vcpu_id(cpu)
    with trace.span("kvm_init_vcpu", cpu=cpu.cpu_index, vcpu_id=vcpu_id):
        with trace.span("KVM_CREATE_VCPU", vcpu_id=vcpu_id):
            try:
                fd = s.vm.create_vcpu_fd(vcpu_id)
            except KvmError as e:
                raise AccelError(f"kvm_init_vcpu: {e}") from e
        with trace.span("KVM_GET_VCPU_MMAP_SIZE"):
            mmap_size = s.kvm.get_vcpu_mmap_size()
            trace.event(f"mmap_size = {mmap_size:#x}")
        with trace.span("mmap kvm_run", size=mmap_size):
            vcpu = VcpuFd(fd, mmap_size)
        cpu.accel = KvmCpuState(vcpu, vcpu_id)
        cpu.vcpu_dirty = True
        kvm_arch_init_vcpu(cpu)


def kvm_init_cpu_signals(cpu: CPUState) -> None:
    """``kvm_init_cpu_signals``: let SIG_IPI reach this vCPU thread.

    vCPU thread.  The handler itself was installed by ``kvm_init`` on the main
    thread (Python allows no other); here the signal is unblocked for this
    thread, so a ``pthread_kill`` makes a blocking KVM_RUN return -EINTR.
    """
    with trace.span("kvm_init_cpu_signals", signal=signal.Signals(SIG_IPI).name):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {SIG_IPI})
        if not _kvm_state(cpu).signals_installed:
            trace.event("SIG_IPI handler missing: kicks use immediate_exit only")


def kvm_destroy_vcpu(cpu: CPUState) -> None:
    """``kvm_destroy_vcpu``: unmap kvm_run and close the vCPU fd.

    vCPU thread.  QEMU parks the fd for a later hot-plug of the same id;
    pyqemu closes it (a re-plug creates a fresh vCPU).
    """
    st = cpu.accel
    with trace.span("kvm_destroy_vcpu", cpu=cpu.cpu_index):
        if isinstance(st, KvmCpuState):
            st.vcpu.close()


# --- the exec loop ----------------------------------------------------------------------------


def kvm_cpu_kick(cpu: CPUState) -> None:
    """``kvm_cpu_kick``: make the next (or current) KVM_RUN return at once.  Any thread."""
    st = cpu.accel
    if isinstance(st, KvmCpuState) and not st.vcpu.closed:
        # KvmError: closed under our feet; the thread is on its way out anyway.
        with contextlib.suppress(KvmError):
            st.vcpu.immediate_exit = 1


def kvm_cpu_exec(cpu: CPUState) -> int:
    """``kvm_cpu_exec``: run the vCPU until an exit the loop must see; return EXCP_*.

    vCPU thread, big lock held on entry and on return; dropped around KVM_RUN
    and exit handling, exactly as QEMU does.  Port I/O and MMIO exits are
    served through ``address_space_rw`` (which takes the big lock itself) and
    the guest re-entered; HLT returns EXCP_HLT with ``cpu.halted`` set; a kick
    returns EXCP_INTERRUPT; a triple fault requests a reset.  Internal errors,
    failed entries and unsupported exits raise :class:`KvmExitError`.
    """
    st: KvmCpuState = cpu.accel
    vcpu = st.vcpu
    with trace.span("kvm_cpu_exec", cpu=cpu.cpu_index):
        # kvm_arch_process_async_events: a halted vCPU stays out of KVM_RUN until it has work.
        if cpu.halted:
            if not cpu.has_work():
                cpu.exit_request = False
                trace.event("halted, no work: EXCP_HLT")
                return EXCP_HLT
            cpu.halted = False
        cpu.running = True
        qemu_global_mutex.release()
        ret = 0
        try:
            while ret == 0:
                if cpu.vcpu_dirty:
                    with qemu_global_mutex:  # env is shared with the main thread
                        kvm_arch_put_registers(cpu)
                        cpu.vcpu_dirty = False
                if cpu.exit_request:
                    vcpu.immediate_exit = 1  # kvm_cpu_kick_self
                exit_ = vcpu.run()
                ret = kvm_handle_exit(cpu, exit_)
        finally:
            qemu_global_mutex.acquire()
            cpu.running = False
            cpu.exit_request = False
        return ret


def kvm_handle_exit(cpu: CPUState, exit_: VcpuExit) -> int:
    """Act on one decoded exit: 0 to re-enter the guest, else the EXCP_* to return.

    vCPU thread, big lock *not* held (device dispatch takes it).  This is the
    switch of QEMU's kvm_cpu_exec: port I/O, MMIO, a kick, the interrupt window,
    a triple fault, a system event and an internal error are handled here;
    every other exit goes to x86's :func:`~pyqemu.accel.kvm.kvm_i386.kvm_arch_handle_exit`.
    """
    st: KvmCpuState = cpu.accel
    vcpu = st.vcpu
    if trace.enabled("exec"):
        trace.event(f"KVM_RUN -> {exit_!r}", "exec")
    match exit_:
        case IoOut(port=port, size=size, count=count, data=data):
            io_as = _io_address_space(cpu)
            for k in range(count):  # string I/O: ``count`` items, same port (kvm_handle_io)
                address_space_rw(io_as, port, bytearray(data[k * size:(k + 1) * size]), True)
            return 0
        case IoIn(port=port, size=size, count=count):
            io_as = _io_address_space(cpu)
            buf = bytearray()
            for _ in range(count):
                item = bytearray(size)
                address_space_rw(io_as, port, item, False)
                buf += item
            vcpu.set_io_in_data(bytes(buf))
            return 0
        case MmioWrite(addr=addr, data=data):
            address_space_rw(_memory_address_space(cpu), addr, bytearray(data), True)
            return 0
        case MmioRead(addr=addr, size=size):
            item = bytearray(size)
            address_space_rw(_memory_address_space(cpu), addr, item, False)
            vcpu.set_mmio_read_data(bytes(item))
            return 0
        case Intr():
            # kvm_eat_signals: with immediate_exit there is nothing else to eat.
            vcpu.immediate_exit = 0
            trace.event("KVM_EXIT_INTR: EXCP_INTERRUPT")
            return EXCP_INTERRUPT
        case IrqWindowOpen():
            return EXCP_INTERRUPT
        case Shutdown():
            trace.event("KVM_EXIT_SHUTDOWN: qemu_system_reset_request")
            cpu.machine.runctl.request_reset()
            return EXCP_INTERRUPT
        case SystemEvent(type=kind):
            trace.event("KVM_EXIT_SYSTEM_EVENT", type=kind)
            from pyqemu.system.runstate import ShutdownCause

            runctl = cpu.machine.runctl
            if kind == abi.KVM_SYSTEM_EVENT_RESET:
                runctl.request_reset()
            elif kind == abi.KVM_SYSTEM_EVENT_CRASH:
                runctl.request_shutdown(ShutdownCause.GUEST_PANIC)
            else:
                runctl.request_shutdown(ShutdownCause.GUEST_SHUTDOWN)
            return EXCP_INTERRUPT
        case InternalError(suberror=sub, data=data):
            rip = vcpu_rip(vcpu)
            what = _INTERNAL_ERROR_NAMES.get(sub, "unknown")
            raise KvmExitError(
                f"KVM internal error. Suberror: {sub} ({what}), rip={rip:#x}, "
                f"extra data: {[hex(d) for d in data]}", exit_, rip)
    return kvm_arch_handle_exit(cpu, exit_)


def _io_address_space(cpu: CPUState) -> AddressSpace:
    asp = cpu.io_as
    assert asp is not None, "qemu_init_vcpu gives every vCPU its I/O address space"
    return asp


def _memory_address_space(cpu: CPUState) -> AddressSpace:
    asp = cpu.as_
    assert asp is not None, "qemu_init_vcpu gives every vCPU its memory address space"
    return asp


# --- AccelOps -------------------------------------------------------------------------------


class KvmAccelOps(AccelOps):
    """``kvm_accel_ops_class_init``: the kvm accelerator's per-vCPU operations."""

    name = "kvm"

    def __init__(self, state: KVMState) -> None:
        self.state = state

    def create_vcpu_thread(self, cpu: CPUState) -> None:
        """``kvm_start_vcpu_thread``.  Main thread, big lock held."""
        kvm_start_vcpu_thread(cpu)

    def cpu_exec(self, cpu: CPUState) -> int:
        """``kvm_cpu_exec``.  vCPU thread, big lock held (dropped around KVM_RUN)."""
        return kvm_cpu_exec(cpu)

    def synchronize_state(self, cpu: CPUState) -> None:
        """``kvm_cpu_synchronize_state``: pull registers into ``cpu.env`` unless dirty.

        Any thread, big lock held, vCPU not in KVM_RUN.  The ioctls run on the
        vCPU thread through ``run_on_cpu`` when that thread is alive.
        """
        if cpu.vcpu_dirty:
            return

        def do_sync(_: VCpu) -> None:  # run_on_cpu calls it with ``cpu``
            st = cpu.accel
            if isinstance(st, KvmCpuState) and not st.vcpu.closed and not cpu.vcpu_dirty:
                kvm_arch_get_registers(cpu)
                cpu.vcpu_dirty = True

        cpus_mod.run_on_cpu(cpu, do_sync)

    def synchronize_post_reset(self, cpu: CPUState) -> None:
        """``kvm_cpu_synchronize_post_reset``: ``cpu.env`` wins; pushed before the next run."""
        cpu.vcpu_dirty = True

    def synchronize_post_init(self, cpu: CPUState) -> None:
        """``kvm_cpu_synchronize_post_init``: as post-reset."""
        cpu.vcpu_dirty = True

    def synchronize_pre_loadvm(self, cpu: CPUState) -> None:
        cpu.vcpu_dirty = True

    def kick_vcpu_thread(self, cpu: CPUState) -> None:
        """``qemu_cpu_kick`` under kvm: exit_request, immediate_exit, then SIG_IPI.  Any thread."""
        cpu.exit_request = True
        kvm_cpu_kick(cpu)
        t = cpu.thread
        if t is not None and t.ident is not None and t.is_alive() and self.state.signals_installed:
            with contextlib.suppress(ProcessLookupError):  # the thread has just exited
                signal.pthread_kill(t.ident, SIG_IPI)

    def cpu_thread_is_idle(self, cpu: CPUState) -> bool:
        """A halted vCPU's thread sleeps: no in-kernel irqchip (QEMU: !kvm_halt_in_kernel)."""
        return True

    def supports_guest_debug(self) -> bool:
        return bool(self.state.caps.get("KVM_CAP_SET_GUEST_DEBUG"))

    def insert_breakpoint(self, cpu: CPUState, kind: int, addr: int, length: int) -> None:
        """``kvm_insert_breakpoint``: a software breakpoint at ``addr`` (once per address).

        Main thread, vCPUs paused.  Writing the breakpoint instruction is
        ``kvm_arch_insert_sw_breakpoint``'s job.
        """
        if kind != GDB_BREAKPOINT_SW:
            raise AccelError("kvm: only software breakpoints are supported")
        if addr in self.state.breakpoints:
            return
        self.state.breakpoints[addr] = kvm_arch_insert_sw_breakpoint(cpu, addr)
        self.update_guest_debug(cpu)

    def remove_breakpoint(self, cpu: CPUState, kind: int, addr: int, length: int) -> None:
        """``kvm_remove_breakpoint``: put back what ``insert_breakpoint`` replaced."""
        orig = self.state.breakpoints.pop(addr, None)
        if orig is None:
            raise AccelError(f"kvm: no breakpoint at {addr:#x}")
        kvm_arch_remove_sw_breakpoint(cpu, addr, orig)
        self.update_guest_debug(cpu)

    def remove_all_breakpoints(self, cpu: CPUState) -> None:
        for addr in list(self.state.breakpoints):
            self.remove_breakpoint(cpu, GDB_BREAKPOINT_SW, addr, 1)

    def update_guest_debug(self, cpu: CPUState) -> None:
        """``kvm_update_guest_debug``: KVM_SET_GUEST_DEBUG from singlestep and breakpoints.

        Main thread; the ioctl runs on the vCPU thread (``run_on_cpu``).
        """
        control = 0
        if cpu.singlestep_enabled:
            control |= abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_SINGLESTEP
        control = kvm_arch_update_guest_debug(control, bool(self.state.breakpoints))

        def do_update(_: VCpu) -> None:  # run_on_cpu calls it with ``cpu``
            st = cpu.accel
            if isinstance(st, KvmCpuState) and not st.vcpu.closed:
                st.vcpu.set_guest_debug(control)
                st.guest_debug = control

        cpus_mod.run_on_cpu(cpu, do_update)

    def close(self) -> None:
        self.state.close()


register_accel("kvm", "KVM (Linux /dev/kvm, hardware virtualisation)", kvm_init, kvm_available)
