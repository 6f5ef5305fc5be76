"""CPUID for an X86CPU: the one function both accelerators answer CPUID with (``cpu_x86_cpuid``).

Under interp the CPUID instruction calls :func:`cpu_x86_cpuid`; under kvm
:func:`cpuid_entries_for_kvm` turns the same answers into the KVM_SET_CPUID2
table.  A guest therefore sees the same CPUID on both.

Sources, leaf by leaf: Intel SDM vol. 2A, "CPUID - CPU Identification"
(Table 3-8 "Information Returned by CPUID Instruction", Table 3-12 cache
descriptors, Figure 3-6 version information), and AMD APM vol. 3, Appendix E.
Where the vendors differ the model's vendor decides:

* an index above the highest basic/extended leaf: Intel returns the highest
  basic leaf's values (SDM, CPUID, "If a value entered for CPUID.EAX is higher
  than the maximum input value..."); AMD returns zeros (APM vol. 3, E.2).  KVM
  applies the same rule to a guest table, so kvm and interp agree;
* leaf 4 (deterministic cache parameters) is Intel-only, 8000_0005H (L1 caches)
  AMD-only; 8000_0000H/8000_0001H EBX-EDX identity is AMD-only (Intel: reserved).

The cache hierarchy reported is pyqemu's fixed one (QEMU's "legacy" caches):
L1d 32 KiB 8-way, L1i 32 KiB 8-way, L2 2 MiB 8-way, 64-byte lines, no L3.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from pyqemu.target.i386.cpu_features import CPUID_EXT2_AMD_ALIASES, FEATURE_WORDS, WORDS
from pyqemu.target.i386.cpu_models import CPUID_VENDOR_AMD
from pyqemu.target.i386.cpu_state import CR4_OSXSAVE, MSR_IA32_APICBASE_ENABLE, CPUX86State

KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1  # <linux/kvm.h> (sic)
KVM_CPUID_SIGNATURE = 0x40000000
KVM_CPUID_FEATURES = 0x40000001
UNASSIGNED_APIC_ID = 0xFFFFFFFF

# Leaf-1 bits that are not features but reflect state (SDM vol. 2A Tables 3-10/3-11).
CPUID_EXT_OSXSAVE = 1 << 27
CPUID_APIC = 1 << 9
CPUID_HT = 1 << 28
CPUID_CLFLUSH = 1 << 19
CPUID_EXT3_CMP_LEGACY = 1 << 1
CPUID_EXT3_SVM = 1 << 2
CPUID_EXT_XSAVE = 1 << 26
CPUID_EXT_AVX = 1 << 28
CPUID_EXT2_LM = 1 << 29
CPUID_PAE = 1 << 6
CPUID_PSE36 = 1 << 17


@dataclass(frozen=True, slots=True)
class CpuidEntry:
    """One CPUID answer as ``struct kvm_cpuid_entry2`` holds it (KVM API, KVM_SET_CPUID2):
    the leaf (``function``), the sub-leaf (``index``), KVM's ``flags``
    (:data:`KVM_CPUID_FLAG_SIGNIFCANT_INDEX` when the sub-leaf matters) and the four
    registers.  The one type for a CPUID table: the KVM binding, KVM_GET_SUPPORTED_CPUID
    and :func:`cpuid_entries_for_kvm` all use it.  It unpacks in the struct's order."""

    function: int
    index: int = 0
    flags: int = 0
    eax: int = 0
    ebx: int = 0
    ecx: int = 0
    edx: int = 0

    def __iter__(self) -> Iterator[int]:
        return iter((self.function, self.index, self.flags, self.eax, self.ebx, self.ecx,
                     self.edx))


class X86CPU(Protocol):
    """What CPUID reads of a CPU: its configuration (``hw/i386``'s X86CPU has all of it).

    Kept to the fields the leaves need, so that the architecture does not depend
    on the board: the topology and whether the KVM leaves are shown come from the
    machine, through the two properties.
    """

    env: CPUX86State
    apic_id: int
    phys_bits: int
    features: dict[str, int]
    cpuid_vendor: str
    cpuid_family: int
    cpuid_model: int
    cpuid_stepping: int
    cpuid_model_id: str
    cpuid_level: int | None
    cpuid_xlevel: int | None
    cpuid_min_level: int
    cpuid_min_xlevel: int

    @property
    def cpuid_topology(self) -> tuple[int, int, int]:
        """(dies, cores per die, threads per core) of the package this CPU is in."""

    @property
    def cpuid_kvm_leaves(self) -> bool:
        """Whether the KVM paravirtual leaves 4000_0000H/4000_0001H are shown (under kvm)."""


class CacheInfo(NamedTuple):
    """One cache, as leaf 4 and leaves 8000_0005H/8000_0006H describe it."""

    type: int        # leaf 4 EAX[4:0]: 1 data, 2 instruction, 3 unified
    level: int
    size: int        # bytes
    ways: int
    line_size: int
    descriptor: int  # leaf 2 descriptor byte (SDM Table 3-12)

    @property
    def sets(self) -> int:
        return self.size // (self.ways * self.line_size)


L1D = CacheInfo(1, 1, 32 << 10, 8, 64, 0x2C)   # 0x2C: L1 data, 32 KB, 8-way, 64-byte line
L1I = CacheInfo(2, 1, 32 << 10, 8, 64, 0x30)   # 0x30: L1 instruction, 32 KB, 8-way, 64 B
L2 = CacheInfo(3, 2, 2 << 20, 8, 64, 0x7D)     # 0x7D: L2, 2 MB, 8-way, 64-byte line
CACHES = (L1D, L1I, L2)

# XSAVE state components (SDM vol. 1, 13.2/13.4): x87 and SSE live in the 512-byte
# legacy area, then the 64-byte header; AVX (YMM_Hi128) is component 2 at offset 576.
XSTATE_FP, XSTATE_SSE, XSTATE_YMM = 1, 2, 4
XSAVE_LEGACY_AND_HEADER = 576
XSAVE_YMM_OFFSET, XSAVE_YMM_SIZE = 576, 256


def vendor_words(vendor: str) -> tuple[int, int, int]:
    """The vendor string as (EBX, EDX, ECX) of leaf 0: "GenuineIntel" = "Genu","ineI","ntel"."""
    raw = vendor.encode("ascii")[:12].ljust(12, b"\0")
    return (int.from_bytes(raw[0:4], "little"), int.from_bytes(raw[4:8], "little"),
            int.from_bytes(raw[8:12], "little"))


def cpuid_signature(family: int, model: int, stepping: int) -> int:
    """Leaf 1 EAX (SDM vol. 2A Figure 3-6): extended family/model fields as the SDM defines."""
    if family > 0xF:
        eax = 0xF00 | ((family - 0xF) << 20)
    else:
        eax = family << 8
    return eax | ((model & 0xF) << 4) | ((model >> 4) << 16) | (stepping & 0xF)


def apicid_bitwidth_for_count(count: int) -> int:
    """Bits needed to number ``count`` items in an APIC id field (SDM vol. 3A, 10.12.8.1)."""
    return max(0, (count - 1).bit_length())


def topology(cpu: X86CPU) -> tuple[int, int, int]:
    """(dies, cores per die, threads per core), each at least 1."""
    dies, cores, threads = cpu.cpuid_topology
    return (max(1, dies), max(1, cores), max(1, threads))


def apicid_core_offset(cpu: X86CPU) -> int:
    """Where the core id starts in an APIC id: after the SMT bits."""
    return apicid_bitwidth_for_count(topology(cpu)[2])


def apicid_die_offset(cpu: X86CPU) -> int:
    _, cores, _ = topology(cpu)
    return apicid_core_offset(cpu) + apicid_bitwidth_for_count(cores)


def apicid_pkg_offset(cpu: X86CPU) -> int:
    """Where the package (socket) id starts in an APIC id."""
    dies, _, _ = topology(cpu)
    return apicid_die_offset(cpu) + apicid_bitwidth_for_count(dies)


def x86_apicid_from_topo_ids(dies: int, cores: int, threads: int, pkg_id: int, die_id: int,
                             core_id: int, smt_id: int) -> int:
    """The APIC id of one logical CPU from its topology position (for ``x86_cpus_init``)."""
    core_off = apicid_bitwidth_for_count(threads)
    die_off = core_off + apicid_bitwidth_for_count(cores)
    pkg_off = die_off + apicid_bitwidth_for_count(dies)
    return (pkg_id << pkg_off) | (die_id << die_off) | (core_id << core_off) | smt_id


def x86_apicid_from_cpu_idx(dies: int, cores: int, threads: int, index: int) -> int:
    """``x86_apicid_from_cpu_idx``: the APIC id of the ``index``-th CPU of the topology."""
    smt = index % threads
    core = index // threads % cores
    die = index // (threads * cores) % dies
    pkg = index // (threads * cores * dies)
    return x86_apicid_from_topo_ids(dies, cores, threads, pkg, die, core, smt)


def is_amd(cpu: X86CPU) -> bool:
    return bool(cpu.cpuid_vendor == CPUID_VENDOR_AMD)


def _f(cpu: X86CPU, word: str) -> int:
    return int(cpu.features.get(word, 0))


def x86_cpu_min_levels(cpu: X86CPU) -> tuple[int, int]:
    """The lowest level/xlevel the enabled features need (QEMU's x86_cpu_adjust_feat_level).

    A feature reported in leaf N is invisible unless the maximum leaf is at least N;
    XSAVE also needs leaf 0DH (SDM vol. 1, 13.2) and SVM leaf 8000_000AH (APM vol. 3, E.4.9).
    """
    level, xlevel = cpu.cpuid_min_level, cpu.cpuid_min_xlevel
    for w in FEATURE_WORDS:
        if not _f(cpu, w.word) or 0x40000000 <= w.leaf < 0x80000000:
            continue
        if w.leaf >= 0x80000000:
            xlevel = max(xlevel, w.leaf)
        else:
            level = max(level, w.leaf)
    if _f(cpu, "FEAT_1_ECX") & CPUID_EXT_XSAVE:
        level = max(level, 0xD)
    if _f(cpu, "FEAT_8000_0001_ECX") & CPUID_EXT3_SVM:
        xlevel = max(xlevel, 0x8000000A)
    return level, xlevel


def cpuid_level(cpu: X86CPU) -> int:
    """The highest basic leaf: the ``level`` property if set, else the model's, raised by
    what the features need."""
    if cpu.cpuid_level is not None:
        return int(cpu.cpuid_level)
    return x86_cpu_min_levels(cpu)[0]


def cpuid_xlevel(cpu: X86CPU) -> int:
    """The highest extended leaf: ``xlevel`` if set, else the model's raised by features."""
    if cpu.cpuid_xlevel is not None:
        return int(cpu.cpuid_xlevel)
    return x86_cpu_min_levels(cpu)[1]


def _kvm(cpu: X86CPU) -> bool:
    return bool(cpu.cpuid_kvm_leaves)


def _xsave_components(cpu: X86CPU) -> int:
    if not _f(cpu, "FEAT_1_ECX") & CPUID_EXT_XSAVE:
        return 0
    comps = XSTATE_FP | XSTATE_SSE
    if _f(cpu, "FEAT_1_ECX") & CPUID_EXT_AVX:
        comps |= XSTATE_YMM
    return comps


def _xsave_size(components: int) -> int:
    size = XSAVE_LEGACY_AND_HEADER
    if components & XSTATE_YMM:
        size = max(size, XSAVE_YMM_OFFSET + XSAVE_YMM_SIZE)
    return size


def _leaf4(cpu: X86CPU, count: int) -> tuple[int, int, int, int]:
    """Deterministic cache parameters (SDM vol. 2A Table 3-8, leaf 04H)."""
    if count >= len(CACHES):
        return (0, 0, 0, 0)  # type 0: no more caches
    c = CACHES[count]
    dies, cores, threads = topology(cpu)
    eax = (c.type | (c.level << 5) | (1 << 8)            # self-initialising
           | ((threads - 1) << 14)                       # logical CPUs sharing it: one core
           | ((cores * dies - 1) << 26))                 # cores in the package
    ebx = ((c.ways - 1) << 22) | (0 << 12) | (c.line_size - 1)
    ecx = c.sets - 1
    edx = 0  # WBINVD flushes lower levels; not inclusive; direct indexing
    return (eax, ebx, ecx, edx)


def _amd_l1(c: CacheInfo) -> int:
    """Fn8000_0005 ECX/EDX layout (APM vol. 3, E.4.4): size KB, ways, lines/tag, line size."""
    return ((c.size >> 10) << 24) | (c.ways << 16) | (1 << 8) | c.line_size


# L2 associativity encoding of 8000_0006H ECX[15:12] (SDM vol. 2A, leaf 80000006H).
_L2_ASSOC = {1: 1, 2: 2, 4: 4, 8: 6, 16: 8, 32: 0xA, 48: 0xB, 64: 0xC, 96: 0xD, 128: 0xE}


def _phys_bits(cpu: X86CPU) -> int:
    if cpu.phys_bits:
        return int(cpu.phys_bits)
    if _f(cpu, "FEAT_8000_0001_EDX") & CPUID_EXT2_LM:
        return 40  # QEMU's TCG_PHYS_ADDR_BITS default for 64-bit models
    if _f(cpu, "FEAT_1_EDX") & (CPUID_PAE | CPUID_PSE36):
        return 36
    return 32


def cpu_x86_cpuid(cpu: X86CPU, index: int, count: int = 0) -> tuple[int, int, int, int]:
    """CPUID.(EAX=index, ECX=count) for ``cpu``: (eax, ebx, ecx, edx), each 32-bit."""
    index &= 0xFFFFFFFF
    count &= 0xFFFFFFFF
    level, xlevel = cpuid_level(cpu), cpuid_xlevel(cpu)
    amd = is_amd(cpu)
    kvm = _kvm(cpu)
    if kvm and index in (KVM_CPUID_SIGNATURE, KVM_CPUID_FEATURES):
        pass
    elif index >= 0x80000000:
        if index > xlevel or index >= 0xC0000000:
            if amd:
                return (0, 0, 0, 0)
            index = level
    elif index > level:
        if amd:
            return (0, 0, 0, 0)
        index = level
    return _leaf(cpu, index, count, level, xlevel, amd)


def _leaf(cpu: X86CPU, index: int, count: int, level: int, xlevel: int,
          amd: bool) -> tuple[int, int, int, int]:
    env = cpu.env
    dies, cores, threads = topology(cpu)
    logical = dies * cores * threads
    apic_id = cpu.apic_id if cpu.apic_id != UNASSIGNED_APIC_ID else 0
    if index == 0:
        ebx, edx, ecx = vendor_words(cpu.cpuid_vendor)
        return (level, ebx, ecx, edx)
    if index == 1:
        eax = cpuid_signature(cpu.cpuid_family, cpu.cpuid_model, cpu.cpuid_stepping)
        edx = _f(cpu, "FEAT_1_EDX")
        ecx = _f(cpu, "FEAT_1_ECX") & ~CPUID_EXT_OSXSAVE
        ebx = (apic_id & 0xFF) << 24
        if edx & CPUID_CLFLUSH:
            ebx |= 8 << 8  # CLFLUSH line size in 8-byte units: 64 bytes
        if logical > 1:
            ebx |= min(logical, 0xFF) << 16
            edx |= CPUID_HT
        if env.cr[4] & CR4_OSXSAVE and ecx & CPUID_EXT_XSAVE:
            ecx |= CPUID_EXT_OSXSAVE  # mirrors CR4.OSXSAVE (SDM Table 3-10, bit 27)
        if not env.apic_base & MSR_IA32_APICBASE_ENABLE:
            edx &= ~CPUID_APIC  # a globally disabled APIC reads as absent (SDM vol. 3A 10.4.3)
        return (eax, ebx, ecx, edx)
    if index == 2:
        # One iteration (AL=1); descriptors of L2, L1i, L1d in EDX; EBX/ECX: none.
        edx = L1D.descriptor << 16 | L1I.descriptor << 8 | L2.descriptor
        return (0x00000001, 0, 0, edx)
    if index == 4:
        return (0, 0, 0, 0) if amd else _leaf4(cpu, count)
    if index == 6:
        return (_f(cpu, "FEAT_6_EAX"), 0, 0, 0)
    if index == 7:
        if count == 0:
            return (0, _f(cpu, "FEAT_7_0_EBX"), _f(cpu, "FEAT_7_0_ECX"), _f(cpu, "FEAT_7_0_EDX"))
        return (0, 0, 0, 0)
    if index == 0xB:
        # Extended topology (SDM vol. 2A Table 3-8, leaf 0BH): SMT level, then core level.
        edx = cpu.apic_id if cpu.apic_id != UNASSIGNED_APIC_ID else 0
        if count == 0:
            return (apicid_core_offset(cpu), threads, count | (1 << 8), edx)
        if count == 1:
            return (apicid_pkg_offset(cpu), logical, count | (2 << 8), edx)
        return (0, 0, count & 0xFF, edx)
    if index == 0xD:
        comps = _xsave_components(cpu)
        if not comps:
            return (0, 0, 0, 0)
        if count == 0:
            xcr0 = int(getattr(env, "xcr0", XSTATE_FP)) & comps
            return (comps, _xsave_size(xcr0 | XSTATE_FP), _xsave_size(comps), 0)
        if count == 1:
            return (_f(cpu, "FEAT_XSAVE"), 0, 0, 0)
        if count == 2 and comps & XSTATE_YMM:
            return (XSAVE_YMM_SIZE, XSAVE_YMM_OFFSET, 0, 0)
        return (0, 0, 0, 0)
    if index == KVM_CPUID_SIGNATURE:
        ebx, ecx, edx = vendor_words("KVMKVMKVM")
        return (KVM_CPUID_FEATURES, ebx, ecx, edx)
    if index == KVM_CPUID_FEATURES:
        return (_f(cpu, "FEAT_KVM"), 0, 0, 0)
    if index == 0x80000000:
        if amd:
            ebx, edx, ecx = vendor_words(cpu.cpuid_vendor)
            return (xlevel, ebx, ecx, edx)
        return (xlevel, 0, 0, 0)
    if index == 0x80000001:
        edx = _f(cpu, "FEAT_8000_0001_EDX")
        ecx = _f(cpu, "FEAT_8000_0001_ECX")
        eax = 0
        if amd:
            eax = cpuid_signature(cpu.cpuid_family, cpu.cpuid_model, cpu.cpuid_stepping)
            edx |= _f(cpu, "FEAT_1_EDX") & CPUID_EXT2_AMD_ALIASES
            if logical > 1:
                ecx |= CPUID_EXT3_CMP_LEGACY
        return (eax, 0, ecx, edx)
    if 0x80000002 <= index <= 0x80000004:
        raw = cpu.cpuid_model_id.encode("ascii", "replace")[:48].ljust(48, b"\0")
        off = (index - 0x80000002) * 16
        regs = [int.from_bytes(raw[off + 4 * i: off + 4 * i + 4], "little") for i in range(4)]
        return (regs[0], regs[1], regs[2], regs[3])
    if index == 0x80000005:
        if not amd:
            return (0, 0, 0, 0)
        tlb = 0x01FF01FF  # 2M/4M and 4K TLBs: 255 entries, direct mapped (APM E.4.4)
        return (tlb, tlb, _amd_l1(L1D), _amd_l1(L1I))
    if index == 0x80000006:
        ecx = ((L2.size >> 10) << 16) | (_L2_ASSOC[L2.ways] << 12) | L2.line_size
        return (0, 0, ecx, 0)
    if index == 0x80000007:
        return (0, 0, 0, _f(cpu, "FEAT_8000_0007_EDX"))
    if index == 0x80000008:
        bits = _phys_bits(cpu)
        eax = bits | (48 << 8) if _f(cpu, "FEAT_8000_0001_EDX") & CPUID_EXT2_LM else bits
        ecx = ((logical - 1) & 0xFF) | (apicid_pkg_offset(cpu) << 12) if amd else 0
        return (eax, _f(cpu, "FEAT_8000_0008_EBX"), ecx, 0)
    if index == 0x8000000A:
        if _f(cpu, "FEAT_8000_0001_ECX") & CPUID_EXT3_SVM:
            return (1, 0x10, 0, 0)  # SVM revision 1, 16 ASIDs, no optional features
        return (0, 0, 0, 0)
    return (0, 0, 0, 0)  # reserved leaves inside the range read as zero


def _subleaves(cpu: X86CPU, fn: int) -> list[int] | None:
    """The sub-leaves of ``fn`` to put in a KVM table, or None if it has none."""
    if fn == 4:
        out = []
        for j in range(64):
            out.append(j)
            if cpu_x86_cpuid(cpu, 4, j)[0] & 0x1F == 0:
                break
        return out
    if fn == 7:
        return list(range(cpu_x86_cpuid(cpu, 7, 0)[0] + 1))
    if fn == 0xB:
        out = []
        for j in range(64):
            out.append(j)
            if cpu_x86_cpuid(cpu, 0xB, j)[2] & 0xFF00 == 0:
                break
        return out
    if fn == 0xD:
        return [j for j in range(64) if j < 2 or cpu_x86_cpuid(cpu, 0xD, j)[0]]
    return None


def cpuid_entries_for_kvm(cpu: X86CPU) -> list[CpuidEntry]:
    """The KVM_SET_CPUID2 table for ``cpu`` (what ``kvm_arch_init_vcpu`` builds).

    Every basic leaf up to ``level``, the KVM leaves 4000_0000H/4000_0001H, then
    every extended leaf up to ``xlevel``.  Leaves 4, 7, 0BH and 0DH are listed per
    sub-leaf with KVM_CPUID_FLAG_SIGNIFCANT_INDEX; 4 and 0BH end with their
    terminating (null) sub-leaf, as the guest reads it.
    """
    out: list[CpuidEntry] = []

    def add(fn: int) -> None:
        subs = _subleaves(cpu, fn)
        if subs is None:
            out.append(CpuidEntry(fn, 0, 0, *cpu_x86_cpuid(cpu, fn, 0)))
        else:
            out.extend(CpuidEntry(fn, j, KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                                  *cpu_x86_cpuid(cpu, fn, j)) for j in subs)

    level, xlevel = cpuid_level(cpu), cpuid_xlevel(cpu)
    for fn in range(level + 1):
        add(fn)
    add(KVM_CPUID_SIGNATURE)
    add(KVM_CPUID_FEATURES)
    if xlevel >= 0x80000000:
        for fn in range(0x80000000, min(xlevel, 0x800000FF) + 1):
            add(fn)
    return out


def feature_word_value(cpu: X86CPU, word: str) -> int:
    """The value of one feature word as CPUID reports it (used by tests and the monitor)."""
    w = WORDS[word]
    regs = dict(zip(("eax", "ebx", "ecx", "edx"), cpu_x86_cpuid(cpu, w.leaf, w.subleaf or 0),
                    strict=True))
    return regs[w.reg]


__all__ = [n for n in dir() if not n.startswith("_") and n not in ("Any", "TYPE_CHECKING")]
