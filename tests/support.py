"""Helpers shared by the tests: which accelerators this host can run, resource counts."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

GUEST_DIR = Path(__file__).parent / "guests"


def kvm_unavailable_reason() -> str | None:
    """Why /dev/kvm cannot be used here, or None (probed once)."""
    if not hasattr(kvm_unavailable_reason, "_cached"):
        from pyqemu.accel.ops import accel_list
        reason = next((why for name, _, why in accel_list() if name == "kvm"),
                      "the kvm accelerator is not registered")
        kvm_unavailable_reason._cached = reason  # type: ignore[attr-defined]
    return kvm_unavailable_reason._cached  # type: ignore[attr-defined,no-any-return]


def require_accel(accel: str) -> None:
    if accel == "kvm":
        why = kvm_unavailable_reason()
        if why is not None:
            pytest.skip(f"kvm unavailable on this host: {why}")


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def mapping_count() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def vcpu_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("CPU ")]


def kvm_cpuid_leaf1_passthrough() -> bool:
    """Whether this host's KVM shows guests the hardware's CPUID.1 ECX/EDX instead of the
    KVM_SET_CPUID2 table (KVM's PVM module does; docs/architecture.md).  Probed once, with a
    model that clears SSE2 (EDX bit 26) and CX16 (ECX bit 13): if the guest still
    sees either, the hardware answered."""
    if not hasattr(kvm_cpuid_leaf1_passthrough, "_cached"):
        from pyqemu import Machine
        with Machine(accel="kvm", cpu="qemu64,-sse2,-cx16,check=off") as m:
            m.load_asm("mov eax, 0x1\ncpuid\nhlt", 0x10000, mode="prot32")
            m.run(timeout=60)
            ecx, edx = m.reg_read("ecx"), m.reg_read("edx")
        kvm_cpuid_leaf1_passthrough._cached = bool(edx >> 26 & 1 or ecx >> 13 & 1)  # type: ignore[attr-defined]
    return kvm_cpuid_leaf1_passthrough._cached  # type: ignore[attr-defined,no-any-return]
