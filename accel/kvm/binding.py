"""A thin, policy-free binding of the KVM API, layered by file descriptor.

``Kvm`` (the ``/dev/kvm`` system fd) creates a ``VmFd``, which creates
``VcpuFd``s, exactly as ``Documentation/virt/kvm/api.rst`` (1, "General
description") groups the ioctls into system, VM and vCPU ioctls.  Each wrapper
issues one ioctl; it neither retries, logs, nor decides anything: that is the
vCPU loop's job (:mod:`pyqemu.accel.kvm.kvm_all`).

Every failure raises :class:`~pyqemu.accel.kvm.errors.KvmError`, which keeps the errno
and names the ioctl.  Every ``KVM_RUN`` exit is decoded once, here, into one of
the frozen dataclasses below (``IoOut``, ``MmioRead``, ``Hlt``, ...);
an exit reason this module does not model becomes ``Unsupported``.

Tutorial::

    with Kvm() as kvm, kvm.create_vm() as vm:
        vm.set_user_memory_region(0, 0, 0x0, len(ram), address_of_ram)
        with vm.create_vcpu(0) as vcpu:
            sregs = vcpu.get_sregs(); sregs.cs.base = 0; sregs.cs.selector = 0
            vcpu.set_sregs(sregs)
            regs = vcpu.get_regs(); regs.rip = 0x1000; regs.rflags = 2
            vcpu.set_regs(regs)
            while True:
                exit = vcpu.run()
                match exit:
                    case IoOut(port=0x3F8, data=data): print(data.decode())
                    case Hlt(): break

Threads: ``KVM_RUN`` is issued through libc's ``ioctl`` via cffi, which releases
the GIL for the duration of the call, so vCPUs in different threads run truly in
parallel.  A blocked ``KVM_RUN`` returns ``Intr`` when its thread receives a
signal or when ``immediate_exit`` is set (api.rst 5 "The kvm_run structure").

Section numbers ("api.rst 4.11") are those of the document in recent kernels;
an ioctl's section is also found by its name.

Structs (``get_regs``, ``get_sregs``, ``get_fpu``) are returned as fresh cffi
``cdata`` objects owning their memory (``struct kvm_regs *`` etc.); read and
write their fields by name and hand them back to the matching setter.
"""

from __future__ import annotations

import errno as _errno
import mmap
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self, TypeAlias

import cffi

from pyqemu.accel.kvm import kvm_abi as abi
from pyqemu.accel.kvm.errors import KvmError, KvmUnavailableError
from pyqemu.target.i386.cpuid import CpuidEntry

__all__ = [
    "CpuidEntry",
    "Debug",
    "FailEntry",
    "Hlt",
    "InternalError",
    "Intr",
    "IoIn",
    "IoOut",
    "IrqWindowOpen",
    "Kvm",
    "MmioRead",
    "MmioWrite",
    "Shutdown",
    "SystemEvent",
    "Unsupported",
    "VcpuExit",
    "VcpuFd",
    "VmFd",
    "decode_exit",
]

ffi = abi.ffi

# libc's ioctl, called through cffi: the call releases the GIL, and the
# request and argument are passed as full 64-bit values (fcntl.ioctl parses an
# integer argument as a C int, which would truncate e.g. KVM_SET_TSS_ADDR's
# 0xfffbd000 on some paths).
_libc_ffi = cffi.FFI()
_libc_ffi.cdef("int ioctl(int fd, unsigned long request, ...);")
_libc = _libc_ffi.dlopen(None)


# struct kvm_debugregs (<linux/kvm.h>, x86): 16 __u64, 128 bytes.
_KVM_GET_DEBUGREGS = abi._IOR(abi.KVMIO, 0xA1, 128)
_KVM_SET_DEBUGREGS = abi._IOW(abi.KVMIO, 0xA2, 128)


def _ioctl(fd: int, request: int, arg: Any = 0) -> int:
    """Issue ``ioctl(fd, request, arg)``; return its non-negative result.

    ``arg`` is an int (passed as ``unsigned long``) or a cffi pointer.
    Raises KvmError naming the ioctl on failure.
    """
    if isinstance(arg, int):
        carg = _libc_ffi.cast("unsigned long", arg)
    else:
        carg = ffi.cast("void *", arg)
    ret = _libc.ioctl(fd, request, carg)
    if ret < 0:
        err = _libc_ffi.errno
        raise KvmError(abi.IOCTL_NAMES.get(request, hex(request)), err)
    return ret


class _FdObject:
    """Owns one kernel fd; ``close()`` is idempotent; a context manager."""

    _fd: int

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._close_lock = threading.Lock()

    def fileno(self) -> int:
        """The raw fd (-1 once closed)."""
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Close the fd.  Calling it again is harmless."""
        with self._close_lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self._fd}>"


# --- CPUID --------------------------------------------------------------------


def _cpuid2_alloc(n: int) -> tuple[Any, Any]:
    size = ffi.sizeof("struct kvm_cpuid2") + n * ffi.sizeof("struct kvm_cpuid_entry2")
    buf = ffi.new("char[]", size)
    return buf, ffi.cast("struct kvm_cpuid2 *", buf)


# --- the system fd -------------------------------------------------------------


class Kvm(_FdObject):
    """The KVM subsystem: ``/dev/kvm`` (api.rst 4, "system ioctls")."""

    def __init__(self, path: str = "/dev/kvm") -> None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise KvmUnavailableError(f"open {path}", e.errno or _errno.ENODEV) from None
        super().__init__(fd)
        self.path = path

    def api_version(self) -> int:
        """KVM_GET_API_VERSION (api.rst 4.1); 12 on every kernel since 2.6.22."""
        return _ioctl(self._fd, abi.KVM_GET_API_VERSION)

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION (api.rst 4.4): 0 if absent, else >0 (some caps return a value)."""
        return _ioctl(self._fd, abi.KVM_CHECK_EXTENSION, cap)

    def get_vcpu_mmap_size(self) -> int:
        """KVM_GET_VCPU_MMAP_SIZE (api.rst 4.5): bytes to mmap from a vCPU fd (kvm_run + pages)."""
        return _ioctl(self._fd, abi.KVM_GET_VCPU_MMAP_SIZE)

    def get_supported_cpuid(self, max_entries: int = abi.KVM_MAX_CPUID_ENTRIES) -> list[CpuidEntry]:
        """KVM_GET_SUPPORTED_CPUID (api.rst 4.46).

        Raises KvmError with errno E2BIG if ``max_entries`` is too small.
        """
        _buf, cpuid = _cpuid2_alloc(max_entries)
        cpuid.nent = max_entries
        _ioctl(self._fd, abi.KVM_GET_SUPPORTED_CPUID, cpuid)
        return [
            CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
            for e in (cpuid.entries[i] for i in range(cpuid.nent))
        ]

    def get_msr_index_list(self) -> list[int]:
        """KVM_GET_MSR_INDEX_LIST (api.rst 4.3): the MSRs KVM_GET/SET_MSRS support.

        First asks with room for none; the kernel answers E2BIG and the count.
        """
        probe = ffi.new("struct kvm_msr_list *")
        try:
            _ioctl(self._fd, abi.KVM_GET_MSR_INDEX_LIST, probe)
            return []
        except KvmError as e:
            if e.errno != _errno.E2BIG:
                raise
        n = probe.nmsrs
        buf = ffi.new("char[]", ffi.sizeof("struct kvm_msr_list") + 4 * n)
        lst = ffi.cast("struct kvm_msr_list *", buf)
        lst.nmsrs = n
        _ioctl(self._fd, abi.KVM_GET_MSR_INDEX_LIST, lst)
        return [lst.indices[i] for i in range(lst.nmsrs)]

    def create_vm(self, machine_type: int = 0) -> VmFd:
        """KVM_CREATE_VM (api.rst 4.2) -> a new VmFd."""
        fd = _ioctl(self._fd, abi.KVM_CREATE_VM, machine_type)
        try:
            mmap_size = self.get_vcpu_mmap_size()
        except BaseException:
            os.close(fd)
            raise
        return VmFd(fd, mmap_size)


# --- the VM fd -------------------------------------------------------------------


class VmFd(_FdObject):
    """One virtual machine (api.rst 4, "vm ioctls").  Takes ownership of ``fd``."""

    def __init__(self, fd: int, vcpu_mmap_size: int) -> None:
        super().__init__(fd)
        self.vcpu_mmap_size = vcpu_mmap_size

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION on the VM fd (api.rst 4.4; needs KVM_CAP_CHECK_EXTENSION_VM)."""
        return _ioctl(self._fd, abi.KVM_CHECK_EXTENSION, cap)

    def set_user_memory_region(
        self,
        slot: int,
        flags: int,
        guest_phys_addr: int,
        memory_size: int,
        userspace_addr: int,
    ) -> None:
        """KVM_SET_USER_MEMORY_REGION (api.rst 4.35).

        ``memory_size == 0`` deletes the slot.  The caller keeps the memory at
        ``userspace_addr`` mapped for as long as the slot exists.
        """
        region = ffi.new(
            "struct kvm_userspace_memory_region *",
            {
                "slot": slot,
                "flags": flags,
                "guest_phys_addr": guest_phys_addr,
                "memory_size": memory_size,
                "userspace_addr": userspace_addr,
            },
        )
        _ioctl(self._fd, abi.KVM_SET_USER_MEMORY_REGION, region)

    def create_irqchip(self) -> None:
        """KVM_CREATE_IRQCHIP (api.rst 4.24): in-kernel PIC, IOAPIC and local APICs."""
        _ioctl(self._fd, abi.KVM_CREATE_IRQCHIP)

    def create_pit2(self, flags: int = 0) -> None:
        """KVM_CREATE_PIT2 (api.rst 4.71): in-kernel i8254; needs the irqchip first."""
        config = ffi.new("struct kvm_pit_config *", {"flags": flags})
        _ioctl(self._fd, abi.KVM_CREATE_PIT2, config)

    def set_tss_addr(self, addr: int) -> None:
        """KVM_SET_TSS_ADDR (api.rst 4.36): three guest-physical pages for VMX real mode."""
        _ioctl(self._fd, abi.KVM_SET_TSS_ADDR, addr)

    def set_identity_map_addr(self, addr: int) -> None:
        """KVM_SET_IDENTITY_MAP_ADDR (api.rst 4.40): one page for the VMX real-mode identity map."""
        value = ffi.new("uint64_t *", addr)
        _ioctl(self._fd, abi.KVM_SET_IDENTITY_MAP_ADDR, value)

    def irq_line(self, irq: int, level: int) -> None:
        """KVM_IRQ_LINE (api.rst 4.25): drive GSI ``irq`` to ``level`` on the in-kernel irqchip."""
        arg = ffi.new("struct kvm_irq_level *")
        arg.irq = irq
        arg.level = level
        _ioctl(self._fd, abi.KVM_IRQ_LINE, arg)

    def create_vcpu(self, vcpu_id: int) -> VcpuFd:
        """KVM_CREATE_VCPU (api.rst 4.7) and the mmap of its ``kvm_run`` -> a new VcpuFd."""
        return VcpuFd(self.create_vcpu_fd(vcpu_id), self.vcpu_mmap_size)

    def create_vcpu_fd(self, vcpu_id: int) -> int:
        """KVM_CREATE_VCPU (api.rst 4.7) alone -> the raw vCPU fd.

        For callers that trace the mmap as a step of its own: wrap the fd with
        ``VcpuFd(fd, mmap_size)``, which takes ownership of it.
        """
        return _ioctl(self._fd, abi.KVM_CREATE_VCPU, vcpu_id)


# --- exits -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IoIn:
    """KVM_EXIT_IO, direction in: answer with ``VcpuFd.set_io_in_data`` (size*count bytes)."""

    port: int
    size: int
    count: int


@dataclass(frozen=True, slots=True)
class IoOut:
    """KVM_EXIT_IO, direction out; ``data`` holds size*count bytes (string I/O: count > 1)."""

    port: int
    size: int
    count: int
    data: bytes


@dataclass(frozen=True, slots=True)
class MmioRead:
    """KVM_EXIT_MMIO read: answer with ``VcpuFd.set_mmio_read_data`` (``size`` bytes)."""

    addr: int
    size: int


@dataclass(frozen=True, slots=True)
class MmioWrite:
    """KVM_EXIT_MMIO write of ``data`` (1 to 8 bytes) at guest-physical ``addr``."""

    addr: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Hlt:
    """KVM_EXIT_HLT: the guest executed HLT (no in-kernel irqchip)."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """KVM_EXIT_SHUTDOWN: triple fault; the vCPU must be reset before it runs again."""


@dataclass(frozen=True, slots=True)
class Debug:
    """KVM_EXIT_DEBUG (struct kvm_debug_exit_arch): single step or breakpoint."""

    pc: int
    exception: int
    dr6: int
    dr7: int


@dataclass(frozen=True, slots=True)
class InternalError:
    """KVM_EXIT_INTERNAL_ERROR: ``suberror`` is KVM_INTERNAL_ERROR_*; ``data`` its ndata words."""

    suberror: int
    data: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FailEntry:
    """KVM_EXIT_FAIL_ENTRY: the hardware refused the VM entry."""

    reason: int
    cpu: int


@dataclass(frozen=True, slots=True)
class SystemEvent:
    """KVM_EXIT_SYSTEM_EVENT: ``type`` is KVM_SYSTEM_EVENT_*."""

    type: int
    flags: int


@dataclass(frozen=True, slots=True)
class Intr:
    """KVM_RUN returned -EINTR (a signal, or ``immediate_exit``), or exit reason KVM_EXIT_INTR."""


@dataclass(frozen=True, slots=True)
class IrqWindowOpen:
    """KVM_EXIT_IRQ_WINDOW_OPEN: the guest can take an interrupt (request_interrupt_window)."""


@dataclass(frozen=True, slots=True)
class Unsupported:
    """An exit reason this binding does not decode; ``reason_text`` is its KVM_EXIT_* name."""

    reason_number: int
    reason_text: str


#: Every value ``VcpuFd.run`` returns.
VcpuExit: TypeAlias = (
    IoIn
    | IoOut
    | MmioRead
    | MmioWrite
    | Hlt
    | Shutdown
    | Debug
    | InternalError
    | FailEntry
    | SystemEvent
    | Intr
    | IrqWindowOpen
    | Unsupported
)

_HLT = Hlt()
_SHUTDOWN = Shutdown()
_INTR = Intr()
_IRQ_WINDOW_OPEN = IrqWindowOpen()


def decode_exit(run: Any, page: Any) -> VcpuExit:
    """Decode the exit recorded in ``run`` (a ``struct kvm_run *``).

    ``page`` is the buffer the struct lives in (the mmap), from which the I/O
    data area at ``run.io.data_offset`` is read.  A pure function: tests may
    feed it a hand-filled ``struct kvm_run``.
    """
    reason = run.exit_reason
    if reason == abi.KVM_EXIT_IO:
        io = run.io
        if io.direction == abi.KVM_EXIT_IO_OUT:
            start = io.data_offset
            data = bytes(page[start : start + io.size * io.count])
            return IoOut(io.port, io.size, io.count, data)
        return IoIn(io.port, io.size, io.count)
    if reason == abi.KVM_EXIT_MMIO:
        m = run.mmio
        if m.is_write:
            return MmioWrite(m.phys_addr, bytes(ffi.buffer(m.data, m.len)))
        return MmioRead(m.phys_addr, m.len)
    if reason == abi.KVM_EXIT_HLT:
        return _HLT
    if reason == abi.KVM_EXIT_SHUTDOWN:
        return _SHUTDOWN
    if reason == abi.KVM_EXIT_DEBUG:
        a = run.debug.arch
        return Debug(a.pc, a.exception, a.dr6, a.dr7)
    if reason == abi.KVM_EXIT_INTERNAL_ERROR:
        i = run.internal
        n = min(i.ndata, 16)
        return InternalError(i.suberror, tuple(i.data[k] for k in range(n)))
    if reason == abi.KVM_EXIT_FAIL_ENTRY:
        f = run.fail_entry
        return FailEntry(f.hardware_entry_failure_reason, f.cpu)
    if reason == abi.KVM_EXIT_SYSTEM_EVENT:
        s = run.system_event
        return SystemEvent(s.type, s.flags)
    if reason == abi.KVM_EXIT_INTR:
        return _INTR
    if reason == abi.KVM_EXIT_IRQ_WINDOW_OPEN:
        return _IRQ_WINDOW_OPEN
    return Unsupported(reason, abi.EXIT_REASON_NAMES.get(reason, f"KVM_EXIT_{reason}"))


# --- the vCPU fd ----------------------------------------------------------------


class VcpuFd(_FdObject):
    """One virtual CPU (api.rst 4, "vcpu ioctls") and its mmap'd ``struct kvm_run``.

    Takes ownership of ``fd``; maps ``mmap_size`` bytes (KVM_GET_VCPU_MMAP_SIZE)
    of it.  All ioctls except ``run`` are meant to be issued from the thread
    that runs the vCPU (api.rst 1 "General description": vcpu ioctls should
    be issued from the same thread that was used to create the vcpu).
    """

    def __init__(self, fd: int, mmap_size: int) -> None:
        super().__init__(fd)
        try:
            self._mmap: mmap.mmap | None = mmap.mmap(
                fd, mmap_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE
            )
        except OSError as e:
            os.close(fd)
            self._fd = -1
            raise KvmError("mmap kvm_run", e.errno or _errno.EINVAL) from None
        self._run = ffi.from_buffer("struct kvm_run *", self._mmap)
        self.mmap_size = mmap_size

    def close(self) -> None:
        """Unmap ``kvm_run`` and close the fd.  Calling it again is harmless."""
        with self._close_lock:
            run, self._run = self._run, None
            m, self._mmap = self._mmap, None
        if run is not None:
            ffi.release(run)
        if m is not None:
            m.close()
        super().close()

    # -- kvm_run ------------------------------------------------------------------

    def _kvm_run(self) -> Any:
        run = self._run
        if run is None:
            raise KvmError("kvm_run", _errno.EBADF)
        return run

    @property
    def kvm_run(self) -> Any:
        """The live ``struct kvm_run *`` (cffi cdata over the mmap); valid until close()."""
        return self._kvm_run()

    @property
    def immediate_exit(self) -> int:
        """``kvm_run.immediate_exit`` (api.rst 5, needs KVM_CAP_IMMEDIATE_EXIT).

        While it is 1, KVM_RUN returns ``Intr`` at once instead of entering the
        guest.  The kernel never clears it: the caller does, after the kick is
        handled.  Safe to set from any thread (a single byte store).
        """
        return self._kvm_run().immediate_exit

    @immediate_exit.setter
    def immediate_exit(self, value: int) -> None:
        self._kvm_run().immediate_exit = 1 if value else 0

    @property
    def exit_reason(self) -> int:
        """The raw ``kvm_run.exit_reason`` of the last exit."""
        return self._kvm_run().exit_reason

    def run(self) -> VcpuExit:
        """KVM_RUN (api.rst 4.10): enter the guest until the next exit; decode it.

        Releases the GIL while the guest runs.  -EINTR (a signal arrived, or
        ``immediate_exit`` was set) is the ``Intr`` exit, not an error.
        """
        ret = _libc.ioctl(self._fd, abi.KVM_RUN, _libc_ffi.cast("unsigned long", 0))
        if ret < 0:
            err = _libc_ffi.errno
            if err == _errno.EINTR:
                return _INTR
            raise KvmError("KVM_RUN", err)
        run = self._kvm_run()
        return decode_exit(run, self._mmap)

    def set_io_in_data(self, data: bytes) -> None:
        """Complete an ``IoIn`` exit: store size*count bytes where the guest's IN reads them."""
        run = self._kvm_run()
        io = run.io
        if run.exit_reason != abi.KVM_EXIT_IO or io.direction != abi.KVM_EXIT_IO_IN:
            raise ValueError("set_io_in_data: the last exit was not a port input (IoIn)")
        n = io.size * io.count
        if len(data) != n:
            raise ValueError(f"set_io_in_data: need {n} bytes (size*count), got {len(data)}")
        assert self._mmap is not None
        self._mmap[io.data_offset : io.data_offset + n] = data

    def set_mmio_read_data(self, data: bytes) -> None:
        """Complete a ``MmioRead`` exit: the ``size`` bytes the guest's load returns."""
        run = self._kvm_run()
        m = run.mmio
        if run.exit_reason != abi.KVM_EXIT_MMIO or m.is_write:
            raise ValueError("set_mmio_read_data: the last exit was not an MMIO read (MmioRead)")
        if len(data) != m.len:
            raise ValueError(f"set_mmio_read_data: need {m.len} bytes, got {len(data)}")
        ffi.memmove(m.data, data, len(data))

    # -- registers --------------------------------------------------------------------

    def get_regs(self) -> Any:
        """KVM_GET_REGS (api.rst 4.11) -> a new ``struct kvm_regs *``."""
        regs = ffi.new("struct kvm_regs *")
        _ioctl(self._fd, abi.KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs: Any) -> None:
        """KVM_SET_REGS (api.rst 4.12) from a ``struct kvm_regs *``."""
        _ioctl(self._fd, abi.KVM_SET_REGS, regs)

    def get_sregs(self) -> Any:
        """KVM_GET_SREGS (api.rst 4.13) -> a new ``struct kvm_sregs *``."""
        sregs = ffi.new("struct kvm_sregs *")
        _ioctl(self._fd, abi.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: Any) -> None:
        """KVM_SET_SREGS (api.rst 4.14) from a ``struct kvm_sregs *``."""
        _ioctl(self._fd, abi.KVM_SET_SREGS, sregs)

    def get_fpu(self) -> Any:
        """KVM_GET_FPU (api.rst 4.22) -> a new ``struct kvm_fpu *``."""
        fpu = ffi.new("struct kvm_fpu *")
        _ioctl(self._fd, abi.KVM_GET_FPU, fpu)
        return fpu

    def set_fpu(self, fpu: Any) -> None:
        """KVM_SET_FPU (api.rst 4.23) from a ``struct kvm_fpu *``."""
        _ioctl(self._fd, abi.KVM_SET_FPU, fpu)

    def get_msrs(self, indices: Iterable[int]) -> dict[int, int]:
        """KVM_GET_MSRS (api.rst 4.18) -> {index: value}.

        The kernel stops at the first MSR it cannot read; the result holds only
        the MSRs read (so ``len(result) < len(indices)`` says which failed).
        """
        idx = list(indices)
        msrs = _msrs_alloc(idx, None)
        n = _ioctl(self._fd, abi.KVM_GET_MSRS, msrs[1])
        return {msrs[1].entries[i].index: msrs[1].entries[i].data for i in range(n)}

    def set_msrs(self, values: Mapping[int, int] | Iterable[tuple[int, int]]) -> int:
        """KVM_SET_MSRS (api.rst 4.19); returns how many MSRs the kernel set, in order."""
        items = list(values.items() if isinstance(values, Mapping) else values)
        msrs = _msrs_alloc([i for i, _ in items], [v for _, v in items])
        return _ioctl(self._fd, abi.KVM_SET_MSRS, msrs[1])

    def set_cpuid2(self, entries: Iterable[CpuidEntry]) -> None:
        """KVM_SET_CPUID2: the CPUID the guest sees.

        The successor of KVM_SET_CPUID (api.rst 4.20), taking ``struct kvm_cpuid2`` as
        KVM_GET_SUPPORTED_CPUID (4.46) describes it.
        """
        ents = list(entries)
        _buf, cpuid = _cpuid2_alloc(len(ents))
        cpuid.nent = len(ents)
        for k, e in enumerate(ents):
            c = cpuid.entries[k]
            c.function, c.index, c.flags = e.function, e.index, e.flags
            c.eax, c.ebx, c.ecx, c.edx = e.eax, e.ebx, e.ecx, e.edx
        _ioctl(self._fd, abi.KVM_SET_CPUID2, cpuid)

    def get_cpuid2(self, max_entries: int = abi.KVM_MAX_CPUID_ENTRIES) -> list[CpuidEntry]:
        """KVM_GET_CPUID2: the CPUID last set with KVM_SET_CPUID2 (``struct kvm_cpuid2``)."""
        _buf, cpuid = _cpuid2_alloc(max_entries)
        cpuid.nent = max_entries
        _ioctl(self._fd, abi.KVM_GET_CPUID2, cpuid)
        return [
            CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
            for e in (cpuid.entries[i] for i in range(cpuid.nent))
        ]

    def get_tsc_khz(self) -> int:
        """KVM_GET_TSC_KHZ (api.rst 4.56; KVM_CAP_GET_TSC_KHZ)."""
        return _ioctl(self._fd, abi.KVM_GET_TSC_KHZ)

    def set_tsc_khz(self, khz: int) -> None:
        """KVM_SET_TSC_KHZ (api.rst 4.55; KVM_CAP_TSC_CONTROL)."""
        _ioctl(self._fd, abi.KVM_SET_TSC_KHZ, khz)

    def set_guest_debug(self, control: int, debugreg: Iterable[int] | None = None) -> None:
        """KVM_SET_GUEST_DEBUG (api.rst 4.87): KVM_GUESTDBG_* flags and DR0-7 for hw bps."""
        dbg = ffi.new("struct kvm_guest_debug *")
        dbg.control = control
        if debugreg is not None:
            for k, v in enumerate(debugreg):
                dbg.arch.debugreg[k] = v
        _ioctl(self._fd, abi.KVM_SET_GUEST_DEBUG, dbg)

    def get_debugregs(self) -> tuple[list[int], int, int]:
        """KVM_GET_DEBUGREGS (api.rst 4.33; KVM_CAP_DEBUGREGS) -> ([DR0..DR3], DR6, DR7).

        ``struct kvm_debugregs`` is db[4], dr6, dr7, flags and reserved[9], all __u64
        (128 bytes): passed as a plain array, the layout being that flat.
        """
        buf = ffi.new("uint64_t[16]")
        _ioctl(self._fd, _KVM_GET_DEBUGREGS, buf)
        return [buf[0], buf[1], buf[2], buf[3]], buf[4], buf[5]

    def set_debugregs(self, db: Iterable[int], dr6: int, dr7: int) -> None:
        """KVM_SET_DEBUGREGS (api.rst 4.34; KVM_CAP_DEBUGREGS): the guest's DR0-DR3, DR6, DR7."""
        buf = ffi.new("uint64_t[16]")
        for k, v in enumerate(db):
            buf[k] = v
        buf[4], buf[5] = dr6, dr7
        _ioctl(self._fd, _KVM_SET_DEBUGREGS, buf)

    def get_lapic(self) -> bytes:
        """KVM_GET_LAPIC (api.rst 4.57): the 1 KiB local APIC register page."""
        lapic = ffi.new("struct kvm_lapic_state *")
        _ioctl(self._fd, abi.KVM_GET_LAPIC, lapic)
        return bytes(ffi.buffer(lapic))

    def set_lapic(self, regs: bytes) -> None:
        """KVM_SET_LAPIC (api.rst 4.58) from 1 KiB of register page."""
        if len(regs) != abi.KVM_APIC_REG_SIZE:
            raise ValueError(f"set_lapic: need {abi.KVM_APIC_REG_SIZE} bytes, got {len(regs)}")
        lapic = ffi.new("struct kvm_lapic_state *")
        ffi.memmove(lapic, regs, len(regs))
        _ioctl(self._fd, abi.KVM_SET_LAPIC, lapic)

    def get_mp_state(self) -> int:
        """KVM_GET_MP_STATE (api.rst 4.38): KVM_MP_STATE_*."""
        st = ffi.new("struct kvm_mp_state *")
        _ioctl(self._fd, abi.KVM_GET_MP_STATE, st)
        return st.mp_state

    def set_mp_state(self, state: int) -> None:
        """KVM_SET_MP_STATE (api.rst 4.39)."""
        st = ffi.new("struct kvm_mp_state *", {"mp_state": state})
        _ioctl(self._fd, abi.KVM_SET_MP_STATE, st)

    def interrupt(self, irq: int) -> None:
        """KVM_INTERRUPT (api.rst 4.16): queue an external interrupt (no in-kernel irqchip)."""
        arg = ffi.new("struct kvm_interrupt *", {"irq": irq})
        _ioctl(self._fd, abi.KVM_INTERRUPT, arg)

    def nmi(self) -> None:
        """KVM_NMI (api.rst 4.64): queue an NMI."""
        _ioctl(self._fd, abi.KVM_NMI)


def _msrs_alloc(indices: list[int], values: list[int] | None) -> tuple[Any, Any]:
    n = len(indices)
    buf = ffi.new("char[]", ffi.sizeof("struct kvm_msrs") + n * ffi.sizeof("struct kvm_msr_entry"))
    msrs = ffi.cast("struct kvm_msrs *", buf)
    msrs.nmsrs = n
    for k, index in enumerate(indices):
        msrs.entries[k].index = index
        msrs.entries[k].data = values[k] if values is not None else 0
    return buf, msrs
