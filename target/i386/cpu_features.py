"""x86 CPUID feature words and their flag names (QEMU's ``FeatureWord`` / ``feature_word_info``).

A *feature word* is one CPUID output register that is a bit set of features:
CPUID.01H:EDX, CPUID.(EAX=07H,ECX=0):EBX, CPUID.80000001H:ECX and so on.  Each
word has 32 slots; a slot holds the flag's canonical name (the one ``-cpu help``
prints and the QOM property carries) or None when the bit is reserved or not
modelled.  Bit positions are facts from the manuals:

* Intel SDM vol. 2A, CPUID instruction, Tables 3-10/3-11 (leaf 01H ECX/EDX) and
  Table 3-8 (leaf 07H, leaf 06H, leaf 0DH sub-leaf 1, leaves 80000001H/7H/8H);
* AMD APM vol. 3, Appendix E "Obtaining Processor Information Via the CPUID
  Instruction" (E.3.6 Fn8000_0001 ECX/EDX, E.4.7 Fn8000_0007, E.4.8 Fn8000_0008);
* the KVM paravirtual leaf 4000_0001H EAX: Linux ``Documentation/virt/kvm/x86/cpuid.rst``.

The flag *names* are QEMU's (``-cpu help`` lists them), so a command line that
works with qemu-system-x86_64 works here.  QEMU also accepts alternate
spellings: ``_`` for ``-`` everywhere (``lahf_lm``), and a few historical
aliases (``sse3`` for ``pni``, ``sse4_1`` for ``sse4.1``, ``xd`` for ``nx``,
``i64`` for ``lm``...).  :func:`feature_lookup` resolves every spelling.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyqemu.target.i386.errors import UnknownFeatureError


@dataclass(frozen=True)
class FeatureWordInfo:
    """One feature word: where CPUID reports it, and the name of each of its bits."""

    word: str          # QEMU's FeatureWord name, e.g. "FEAT_1_EDX"
    leaf: int
    subleaf: int | None  # None: the leaf has no sub-leaves
    reg: str           # "eax" | "ebx" | "ecx" | "edx"
    names: tuple[str | None, ...]

    @property
    def label(self) -> str:
        """``CPUID.01H:ECX`` / ``CPUID.07H:EBX``, the notation of QEMU's filter warnings."""
        leaf = f"{self.leaf:02X}H" if self.leaf < 0x100 else f"{self.leaf:X}H"
        return f"CPUID.{leaf}:{self.reg.upper()}"


def _word(word: str, leaf: int, subleaf: int | None, reg: str,
          bits: dict[int, str]) -> FeatureWordInfo:
    names: list[str | None] = [None] * 32
    for bit, name in bits.items():
        names[bit] = name
    return FeatureWordInfo(word, leaf, subleaf, reg, tuple(names))


# Intel SDM vol. 2A Table 3-11 "Feature Information Returned in the EDX Register".
FEAT_1_EDX = _word("FEAT_1_EDX", 1, None, "edx", {
    0: "fpu", 1: "vme", 2: "de", 3: "pse", 4: "tsc", 5: "msr", 6: "pae", 7: "mce",
    8: "cx8", 9: "apic", 11: "sep", 12: "mtrr", 13: "pge", 14: "mca", 15: "cmov",
    16: "pat", 17: "pse36", 18: "pn", 19: "clflush", 21: "ds", 22: "acpi", 23: "mmx",
    24: "fxsr", 25: "sse", 26: "sse2", 27: "ss", 28: "ht", 29: "tm", 30: "ia64", 31: "pbe",
})

# Intel SDM vol. 2A Table 3-10 "Feature Information Returned in the ECX Register".
# Bit 27 (OSXSAVE) mirrors CR4.OSXSAVE and is not a configurable feature.
FEAT_1_ECX = _word("FEAT_1_ECX", 1, None, "ecx", {
    0: "pni", 1: "pclmulqdq", 2: "dtes64", 3: "monitor", 4: "ds-cpl", 5: "vmx", 6: "smx",
    7: "est", 8: "tm2", 9: "ssse3", 10: "cid", 12: "fma", 13: "cx16", 14: "xtpr",
    15: "pdcm", 17: "pcid", 18: "dca", 19: "sse4.1", 20: "sse4.2", 21: "x2apic",
    22: "movbe", 23: "popcnt", 24: "tsc-deadline", 25: "aes", 26: "xsave", 28: "avx",
    29: "f16c", 30: "rdrand", 31: "hypervisor",
})

# Intel SDM vol. 2A Table 3-8, leaf 06H EAX (thermal and power management).
FEAT_6_EAX = _word("FEAT_6_EAX", 6, None, "eax", {2: "arat"})

# Intel SDM vol. 2A Table 3-8, leaf 07H sub-leaf 0 EBX.
FEAT_7_0_EBX = _word("FEAT_7_0_EBX", 7, 0, "ebx", {
    0: "fsgsbase", 1: "tsc-adjust", 2: "sgx", 3: "bmi1", 4: "hle", 5: "avx2",
    7: "smep", 8: "bmi2", 9: "erms", 10: "invpcid", 11: "rtm", 14: "mpx",
    16: "avx512f", 17: "avx512dq", 18: "rdseed", 19: "adx", 20: "smap",
    21: "avx512ifma", 23: "clflushopt", 24: "clwb", 25: "intel-pt", 26: "avx512pf",
    27: "avx512er", 28: "avx512cd", 29: "sha-ni", 30: "avx512bw", 31: "avx512vl",
})

# Intel SDM vol. 2A Table 3-8, leaf 07H sub-leaf 0 ECX.  Bit 4 (OSPKE) mirrors CR4.PKE.
FEAT_7_0_ECX = _word("FEAT_7_0_ECX", 7, 0, "ecx", {
    0: "prefetchwt1", 1: "avx512vbmi", 2: "umip", 3: "pku", 5: "waitpkg",
    6: "avx512vbmi2", 8: "gfni", 9: "vaes", 10: "vpclmulqdq", 11: "avx512vnni",
    12: "avx512bitalg", 14: "avx512-vpopcntdq", 16: "la57", 22: "rdpid",
    24: "bus-lock-detect", 25: "cldemote", 27: "movdiri", 28: "movdir64b",
    30: "sgxlc", 31: "pks",
})

# Intel SDM vol. 2A Table 3-8, leaf 07H sub-leaf 0 EDX.
FEAT_7_0_EDX = _word("FEAT_7_0_EDX", 7, 0, "edx", {
    2: "avx512-4vnniw", 3: "avx512-4fmaps", 4: "fsrm", 8: "avx512-vp2intersect",
    10: "md-clear", 14: "serialize", 16: "tsx-ldtrk", 18: "pconfig", 22: "amx-bf16",
    23: "avx512-fp16", 24: "amx-tile", 25: "amx-int8", 26: "spec-ctrl", 27: "stibp",
    28: "flush-l1d", 29: "arch-capabilities", 30: "core-capability", 31: "ssbd",
})

# Intel SDM vol. 2A Table 3-8, leaf 0DH sub-leaf 1 EAX.
FEAT_XSAVE = _word("FEAT_XSAVE", 0xD, 1, "eax", {
    0: "xsaveopt", 1: "xsavec", 2: "xgetbv1", 3: "xsaves",
})

# KVM paravirtual features, leaf 4000_0001H EAX (Linux Documentation/virt/kvm/x86/cpuid.rst).
FEAT_KVM = _word("FEAT_KVM", 0x40000001, None, "eax", {
    0: "kvmclock", 1: "kvm-nopiodelay", 2: "kvm-mmu", 3: "kvmclock2", 4: "kvm-asyncpf",
    5: "kvm-steal-time", 6: "kvm-pv-eoi", 7: "kvm-pv-unhalt", 9: "kvm-pv-tlb-flush",
    11: "kvm-pv-ipi", 12: "kvm-poll-control", 13: "kvm-pv-sched-yield",
    24: "kvmclock-stable-bit",
})

# AMD APM vol. 3, E.3.6 Fn8000_0001_EDX.  The bits AMD duplicates from Fn0000_0001_EDX
# (fpu..pse36, mmx, fxsr) are not separate features: cpu_x86_cpuid copies them from
# leaf 1 on AMD models (QEMU's CPUID_EXT2_AMD_ALIASES).
FEAT_8000_0001_EDX = _word("FEAT_8000_0001_EDX", 0x80000001, None, "edx", {
    11: "syscall", 19: "mp", 20: "nx", 22: "mmxext", 25: "fxsr-opt", 26: "pdpe1gb",
    27: "rdtscp", 29: "lm", 30: "3dnowext", 31: "3dnow",
})

# AMD APM vol. 3, E.3.6 Fn8000_0001_ECX (Intel defines bits 0, 5 and 8 the same way).
FEAT_8000_0001_ECX = _word("FEAT_8000_0001_ECX", 0x80000001, None, "ecx", {
    0: "lahf-lm", 1: "cmp-legacy", 2: "svm", 3: "extapic", 4: "cr8legacy", 5: "abm",
    6: "sse4a", 7: "misalignsse", 8: "3dnowprefetch", 9: "osvw", 10: "ibs", 11: "xop",
    12: "skinit", 13: "wdt", 15: "lwp", 16: "fma4", 17: "tce", 19: "nodeid-msr",
    21: "tbm", 22: "topoext", 23: "perfctr-core", 24: "perfctr-nb",
})

# AMD APM vol. 3, E.4.7 Fn8000_0007_EDX (Intel SDM: bit 8 invariant TSC).
FEAT_8000_0007_EDX = _word("FEAT_8000_0007_EDX", 0x80000007, None, "edx", {8: "invtsc"})

# AMD APM vol. 3, E.4.8 Fn8000_0008_EBX (Intel SDM: bit 9 WBNOINVD).
FEAT_8000_0008_EBX = _word("FEAT_8000_0008_EBX", 0x80000008, None, "ebx", {
    0: "clzero", 2: "xsaveerptr", 4: "rdpru", 9: "wbnoinvd", 12: "ibpb", 14: "ibrs",
    15: "amd-stibp", 24: "amd-ssbd", 25: "virt-ssbd", 26: "amd-no-ssb",
})

#: Every feature word, in QEMU's FeatureWord order.
FEATURE_WORDS: tuple[FeatureWordInfo, ...] = (
    FEAT_1_EDX, FEAT_1_ECX, FEAT_7_0_EBX, FEAT_7_0_ECX, FEAT_7_0_EDX,
    FEAT_8000_0001_EDX, FEAT_8000_0001_ECX, FEAT_8000_0007_EDX, FEAT_8000_0008_EBX,
    FEAT_KVM, FEAT_6_EAX, FEAT_XSAVE,
)
WORDS: dict[str, FeatureWordInfo] = {w.word: w for w in FEATURE_WORDS}

#: Leaf-1 EDX bits that AMD mirrors in Fn8000_0001_EDX (AMD APM vol. 3, E.3.6).
CPUID_EXT2_AMD_ALIASES = sum(1 << b for b in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15,
                                              16, 17, 23, 24))

#: Historical spellings QEMU accepts, after ``_`` -> ``-`` (``feat2prop``).
FEATURE_ALIASES: dict[str, str] = {
    "sse3": "pni", "pclmuldq": "pclmulqdq", "sse4-1": "sse4.1", "sse4-2": "sse4.2",
    "xd": "nx", "i64": "lm", "ffxsr": "fxsr-opt", "kvm-asyncpf-int": "kvm-asyncpf",
    "sha": "sha-ni",
}

#: canonical name -> (word, bit)
FEATURES: dict[str, tuple[str, int]] = {}
for _w in FEATURE_WORDS:
    for _bit, _name in enumerate(_w.names):
        if _name is not None:
            if _name in FEATURES:  # a programmer error in the tables above
                raise AssertionError(f"feature name {_name!r} defined twice")
            FEATURES[_name] = (_w.word, _bit)


def feat2prop(name: str) -> str:
    """QEMU's ``feat2prop``: ``-cpu`` spells features with ``_`` or ``-`` alike."""
    return name.replace("_", "-")


def feature_canonical(name: str) -> str | None:
    """The canonical flag name for any accepted spelling, or None if unknown."""
    n = feat2prop(name)
    if n in FEATURES:
        return n
    alias = FEATURE_ALIASES.get(n)
    return alias if alias in FEATURES else None


def feature_lookup(name: str) -> tuple[str, int]:
    """(word, bit) of a feature by any spelling; :class:`UnknownFeatureError` names it."""
    canon = feature_canonical(name)
    if canon is None:
        raise UnknownFeatureError(f"unknown CPU feature '{name}' (-cpu help lists them)")
    return FEATURES[canon]


def feature_mask(*names: str) -> dict[str, int]:
    """Feature words with the named flags set: ``feature_mask("sse", "sse2")``."""
    words: dict[str, int] = {}
    for n in names:
        w, bit = feature_lookup(n)
        words[w] = words.get(w, 0) | (1 << bit)
    return words


def feature_names_in(word: str, value: int) -> list[str]:
    """The names of the bits set in ``value`` of ``word`` (``bit N`` for unnamed ones)."""
    info = WORDS[word]
    return [info.names[b] or f"bit {b}" for b in range(32) if value >> b & 1]


def all_property_names(name: str) -> list[str]:
    """Every spelling under which a feature is a QOM property: canonical + aliases."""
    return [name] + sorted(a for a, c in FEATURE_ALIASES.items() if c == name and a != name)


def feature_flag_list() -> list[str]:
    """The recognised CPUID flag names, sorted, as ``-cpu help`` prints them."""
    return sorted(FEATURES)
