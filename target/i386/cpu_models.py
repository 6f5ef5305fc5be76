"""The builtin x86 CPU models (QEMU's ``builtin_x86_defs``).

Each :class:`X86CPUDefinition` is what QEMU documents for the model of the same
name (``-cpu help``, ``docs/system/cpu-models-x86``, and the CPUID a guest sees
under qemu-system-x86_64): vendor, family/model/stepping, the highest basic and
extended CPUID leaves (``level``/``xlevel``), the brand string (``model_id``) and
the feature words.  Values are facts; the table is ours.

``base`` has no features at all; ``max`` and ``host`` get their features from
the accelerator at realize (``x86_cpu_expand_features``): the definitions here
are only their starting point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pyqemu.target.i386.cpu_features import feature_mask

CPUID_VENDOR_INTEL = "GenuineIntel"
CPUID_VENDOR_AMD = "AuthenticAMD"

#: QEMU's version string in the generic models' brand strings.
QEMU_HW_VERSION = "2.5+"


@dataclass(frozen=True)
class X86CPUDefinition:
    """One CPU model: the CPUID identity and feature words it starts from."""

    name: str
    vendor: str
    family: int
    model: int
    stepping: int
    level: int
    xlevel: int
    model_id: str
    features: Mapping[str, int] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", MappingProxyType(dict(self.features)))


def _merge(*masks: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in masks:
        for w, v in m.items():
            out[w] = out.get(w, 0) | v
    return out


# QEMU's PPRO_FEATURES: the Pentium Pro baseline every generic model starts from.
_PPRO = ("fpu", "de", "pse", "tsc", "msr", "mce", "cx8", "pge", "cmov", "pat", "fxsr",
         "mmx", "sse", "sse2", "pae", "sep", "apic")
_X86_64_EXT = ("lm", "syscall", "nx")

builtin_x86_defs: tuple[X86CPUDefinition, ...] = (
    X86CPUDefinition(
        name="qemu64", vendor=CPUID_VENDOR_AMD, family=15, model=107, stepping=1,
        level=0xD, xlevel=0x8000000A,
        model_id=f"QEMU Virtual CPU version {QEMU_HW_VERSION}",
        features=feature_mask(*_PPRO, "mtrr", "clflush", "mca", "pse36",
                              "pni", "cx16", *_X86_64_EXT, "lahf-lm", "svm"),
    ),
    X86CPUDefinition(
        name="qemu32", vendor=CPUID_VENDOR_INTEL, family=6, model=6, stepping=3,
        level=4, xlevel=0x80000004,
        model_id=f"QEMU Virtual CPU version {QEMU_HW_VERSION}",
        features=feature_mask(*_PPRO, "pni"),
    ),
    X86CPUDefinition(
        name="kvm64", vendor=CPUID_VENDOR_INTEL, family=15, model=6, stepping=1,
        level=0xD, xlevel=0x80000008, model_id="Common KVM processor",
        features=feature_mask(*_PPRO, "vme", "mtrr", "clflush", "mca", "pse36",
                              "pni", "cx16", *_X86_64_EXT),
    ),
    X86CPUDefinition(
        name="kvm32", vendor=CPUID_VENDOR_INTEL, family=15, model=6, stepping=1,
        level=5, xlevel=0x80000008, model_id="Common 32-bit KVM processor",
        features=feature_mask(*_PPRO, "vme", "mtrr", "clflush", "mca", "pse36", "pni"),
    ),
    X86CPUDefinition(
        name="core2duo", vendor=CPUID_VENDOR_INTEL, family=6, model=15, stepping=11,
        level=10, xlevel=0x80000008,
        model_id="Intel(R) Core(TM)2 Duo CPU     T7700  @ 2.40GHz",
        features=feature_mask(*_PPRO, "mtrr", "clflush", "mca", "pse36", "vme", "acpi",
                              "ss", "pni", "monitor", "ssse3", "cx16",
                              *_X86_64_EXT, "lahf-lm"),
        description="Intel(R) Core(TM)2 Duo CPU     T7700  @ 2.40GHz",
    ),
    X86CPUDefinition(
        name="Nehalem", vendor=CPUID_VENDOR_INTEL, family=6, model=26, stepping=3,
        level=11, xlevel=0x80000008,
        model_id="Intel Core i7 9xx (Nehalem Class Core i7)",
        features=feature_mask(*_PPRO, "vme", "clflush", "pse36", "mca", "mtrr",
                              "pni", "ssse3", "cx16", "sse4.1", "sse4.2", "popcnt",
                              *_X86_64_EXT, "lahf-lm"),
        description="Intel Core i7 9xx (Nehalem Class Core i7)",
    ),
)

#: ``base``: "base CPU model type with no features enabled" (QEMU's x86_cpu_base_class_init).
BASE_DEF = X86CPUDefinition(
    name="base", vendor="", family=0, model=0, stepping=0, level=0, xlevel=0, model_id="",
    description="base CPU model type with no features enabled")

#: ``max`` when the accelerator is not KVM (QEMU's TCG ``max``): qemu64's features plus
#: what the accelerator says it supports.  Under KVM ``max`` takes the host's identity.
MAX_DEF = X86CPUDefinition(
    name="max", vendor=CPUID_VENDOR_AMD, family=6, model=6, stepping=3,
    level=0xD, xlevel=0x8000000A, model_id=f"QEMU TCG CPU version {QEMU_HW_VERSION}",
    features=_merge(dict(builtin_x86_defs[0].features)),
    description="Enables all features supported by the accelerator in the current host")

#: ``host``: everything comes from KVM_GET_SUPPORTED_CPUID and the host's CPUID at realize.
HOST_DEF = X86CPUDefinition(
    name="host", vendor="", family=0, model=0, stepping=0, level=0, xlevel=0, model_id="",
    description="KVM processor with all supported host features")


def model_description(d: X86CPUDefinition) -> str:
    """What ``-cpu help`` prints next to a model: its description, else its brand string."""
    return d.description or d.model_id
