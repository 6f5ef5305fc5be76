"""Helpers and fixtures for the KVM tests (conftest.py re-exports the fixtures).

Tests that need /dev/kvm, or a capability the host lacks, skip with the reason.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[3]
if str(_ROOT) not in sys.path:  # the repo root, when pytest runs without an install
    sys.path.insert(0, str(_ROOT))

from pyqemu.accel.kvm import kvm_abi as abi  # noqa: E402
from pyqemu.accel.kvm.binding import Kvm, VcpuFd, VmFd  # noqa: E402
from pyqemu.accel.kvm.errors import KvmError  # noqa: E402

_probe: tuple[bool, str] | None = None


def kvm_usable() -> tuple[bool, str]:
    """(usable, reason): can this process open /dev/kvm with API version 12?  Cached."""
    global _probe
    if _probe is None:
        try:
            with Kvm() as k:
                v = k.api_version()
            _probe = (v == 12, f"KVM API version {v}, need 12")
        except KvmError as e:
            _probe = (False, f"/dev/kvm unusable: {e}")
    return _probe


@pytest.fixture
def kvm() -> Iterator[Kvm]:
    ok, why = kvm_usable()
    if not ok:
        pytest.skip(why)
    with Kvm() as k:
        yield k


def require_cap(kvm: Kvm, cap_name: str) -> None:
    if not kvm.check_extension(getattr(abi, cap_name)):
        pytest.skip(f"host KVM lacks {cap_name}")


class GuestRam:
    """Anonymous RAM registered as one memory slot at guest-physical 0."""

    def __init__(self, vm: VmFd, size: int = 0x200000, slot: int = 0) -> None:
        self.mm = mmap.mmap(-1, size)
        self._ptr = abi.ffi.from_buffer(self.mm)
        self.addr = int(abi.ffi.cast("uintptr_t", self._ptr))
        self.size = size
        vm.set_user_memory_region(slot, 0, 0, size, self.addr)

    def write(self, gpa: int, data: bytes) -> None:
        self.mm[gpa : gpa + len(data)] = data

    def read(self, gpa: int, n: int) -> bytes:
        return bytes(self.mm[gpa : gpa + n])

    def close(self) -> None:
        abi.ffi.release(self._ptr)
        self.mm.close()


@pytest.fixture
def vm(kvm: Kvm) -> Iterator[VmFd]:
    with kvm.create_vm() as v:
        yield v


@pytest.fixture
def ram(vm: VmFd) -> Iterator[GuestRam]:
    r = GuestRam(vm)
    yield r
    # The slot must go before the memory behind it.
    vm.set_user_memory_region(0, 0, 0, 0, r.addr)
    r.close()


def asm(src: str, mode: int, addr: int = 0) -> bytes:
    """Assemble with the project's keystone wrapper (Intel syntax; constants as 0x..)."""
    from pyqemu.target.i386.asm import assemble

    return assemble(src, mode, addr)


def setup_real_mode(vcpu: VcpuFd, rip: int) -> None:
    """CS:IP = 0000:rip; everything else as after reset."""
    sregs = vcpu.get_sregs()
    sregs.cs.base = 0
    sregs.cs.selector = 0
    vcpu.set_sregs(sregs)
    regs = vcpu.get_regs()
    regs.rip = rip
    regs.rflags = 0x2
    vcpu.set_regs(regs)


PML4, PDPT, PD, GDT = 0x2000, 0x3000, 0x4000, 0x1000
GDT_ENTRIES = [
    0,
    0x00AF9B000000FFFF,  # 0x08 code64 DPL0
    0x00CF93000000FFFF,  # 0x10 data DPL0
    0x00CFF3000000FFFF,  # 0x1b data DPL3
    0x00AFFB000000FFFF,  # 0x23 code64 DPL3
]


def setup_long_mode(vcpu: VcpuFd, ram: GuestRam, rip: int, cpl: int, rsp: int = 0x80000) -> None:
    """64-bit mode set up from userspace (KVM_SET_SREGS), no guest mode switch.

    Identity-maps the first 1 GiB with 2 MiB pages (user-accessible when
    ``cpl == 3``), loads a flat GDT, and sets CR0.PE|PG, CR4.PAE,
    EFER.LME|LMA and CS.L.  At CPL3, RFLAGS.IOPL = 3 so IN/OUT do not fault.
    """
    user = 0x4 if cpl == 3 else 0
    ram.write(PML4, struct.pack("<Q", PDPT | 0x3 | user))
    ram.write(PDPT, struct.pack("<Q", PD | 0x3 | user))
    ram.write(PD, b"".join(struct.pack("<Q", (i << 21) | 0x83 | user) for i in range(512)))
    ram.write(GDT, b"".join(struct.pack("<Q", d) for d in GDT_ENTRIES))

    sregs = vcpu.get_sregs()
    sregs.cr3 = PML4
    sregs.cr4 = 1 << 5  # PAE
    sregs.cr0 = (1 << 0) | (1 << 4) | (1 << 31)  # PE | ET | PG
    sregs.efer = (1 << 8) | (1 << 10)  # LME | LMA
    sregs.gdt.base = GDT
    sregs.gdt.limit = 8 * len(GDT_ENTRIES) - 1

    def flat(seg, selector: int, code: bool) -> None:
        seg.base, seg.limit, seg.selector = 0, 0xFFFFFFFF, selector
        seg.present, seg.s, seg.g, seg.dpl = 1, 1, 1, selector & 3
        seg.type, seg.l, seg.db = (0xB, 1, 0) if code else (0x3, 0, 1)

    cs_sel, ds_sel = (0x08, 0x10) if cpl == 0 else (0x23, 0x1B)
    flat(sregs.cs, cs_sel, True)
    for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        flat(seg, ds_sel, False)
    vcpu.set_sregs(sregs)

    regs = vcpu.get_regs()
    regs.rip, regs.rsp = rip, rsp
    regs.rflags = 0x3002 if cpl == 3 else 0x2
    vcpu.set_regs(regs)


@pytest.fixture
def bad_fd() -> Iterator[int]:
    """An fd that is open but is not a KVM fd (/dev/null): ioctls fail with ENOTTY."""
    fd = os.open(os.devnull, os.O_RDWR)
    yield fd
    with contextlib.suppress(OSError):
        os.close(fd)
