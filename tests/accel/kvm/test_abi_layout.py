"""The cffi (ABI mode) layouts and constants in kvm_abi match the real <linux/kvm.h>.

A probe program is generated from kvm_abi's own declarations, compiled with
gcc against the installed uapi headers, and its sizeof/offsetof/macro values
compared with cffi's.  Skips (with the reason) when no compiler or header.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pyqemu.accel.kvm import kvm_abi as abi

ffi = abi.ffi

STRUCTS = [
    "kvm_userspace_memory_region",
    "kvm_irq_level",
    "kvm_pit_config",
    "kvm_interrupt",
    "kvm_mp_state",
    "kvm_regs",
    "kvm_lapic_state",
    "kvm_segment",
    "kvm_dtable",
    "kvm_sregs",
    "kvm_fpu",
    "kvm_msr_entry",
    "kvm_msrs",
    "kvm_msr_list",
    "kvm_cpuid_entry2",
    "kvm_cpuid2",
    "kvm_debug_exit_arch",
    "kvm_guest_debug_arch",
    "kvm_guest_debug",
    "kvm_run",
]

# Names kvm_abi defines that the header does not (or spells differently).
NOT_IN_HEADER = {"KVM_MAX_CPUID_ENTRIES", "KVM_CPUID_FLAG_SIGNIFICANT_INDEX"}


def _field_paths(ctype, prefix=()):
    """Every (path, ctype) reachable from a struct type, anonymous members flattened."""
    for name, field in ctype.fields:
        path = prefix + (name,)
        yield path, field.type
        if field.type.kind in ("struct", "union"):
            yield from _field_paths(field.type, path)


def _declared_fields():
    for struct in STRUCTS:
        for path, ftype in _field_paths(ffi.typeof(f"struct {struct}")):
            if ftype.kind == "array" and ftype.length is None:
                continue  # flexible array: offset still checked below via the struct size
            yield struct, path


def _constant_names():
    return sorted(
        n
        for n, v in vars(abi).items()
        if n.startswith("KVM") and isinstance(v, int) and n not in NOT_IN_HEADER
    )


def _probe_source() -> str:
    lines = [
        "#include <stddef.h>",
        "#include <stdio.h>",
        "#include <linux/kvm.h>",
        "int main(void) {",
    ]
    for struct in STRUCTS:
        lines.append(f'  printf("size {struct} %zu\\n", sizeof(struct {struct}));')
    for struct, path in _declared_fields():
        dotted = ".".join(path)
        lines.append(
            f'  printf("off {struct}.{dotted} %zu\\n", offsetof(struct {struct}, {dotted}));'
        )
        lines.append(
            f'  printf("fsize {struct}.{dotted} %zu\\n",'
            f" sizeof(((struct {struct} *)0)->{dotted}));"
        )
    for name in _constant_names():
        lines += [
            f"#ifdef {name}",
            f'  printf("const {name} %llu\\n", (unsigned long long)({name}));',
            "#endif",
        ]
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def header_facts(tmp_path_factory) -> dict[str, int]:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (gcc/cc) to check layouts against <linux/kvm.h>")
    d: Path = tmp_path_factory.mktemp("kvm_abi_probe")
    (d / "probe.c").write_text(_probe_source())
    build = subprocess.run(
        [cc, "-o", str(d / "probe"), str(d / "probe.c")], capture_output=True, text=True
    )
    if build.returncode != 0 and "linux/kvm.h" in build.stderr:
        pytest.skip(f"<linux/kvm.h> not installed: {build.stderr.strip()[:200]}")
    assert build.returncode == 0, build.stderr
    out = subprocess.run([str(d / "probe")], capture_output=True, text=True, check=True).stdout
    facts = {}
    for line in out.splitlines():
        kind, key, value = line.split()
        facts[f"{kind} {key}"] = int(value)
    return facts


@pytest.mark.parametrize("struct", STRUCTS)
def test_struct_size_matches_header(header_facts, struct):
    assert ffi.sizeof(f"struct {struct}") == header_facts[f"size {struct}"]


@pytest.mark.parametrize(
    "struct,path", list(_declared_fields()), ids=lambda x: x if isinstance(x, str) else ".".join(x)
)
def test_field_offset_and_size_match_header(header_facts, struct, path):
    key = f"{struct}.{'.'.join(path)}"
    assert ffi.offsetof(f"struct {struct}", *path) == header_facts[f"off {key}"]
    assert ffi.sizeof(_field_paths_type(struct, path)) == header_facts[f"fsize {key}"]


def _field_paths_type(struct, path):
    return dict(_field_paths(ffi.typeof(f"struct {struct}")))[path]


def test_every_constant_matches_header(header_facts):
    mismatched = {
        name: (getattr(abi, name), header_facts[f"const {name}"])
        for name in _constant_names()
        if f"const {name}" in header_facts and header_facts[f"const {name}"] != getattr(abi, name)
    }
    assert mismatched == {}


def test_every_ioctl_and_exit_reason_is_known_to_the_header(header_facts):
    names = list(abi.IOCTL_NAMES.values()) + list(abi.EXIT_REASON_NAMES.values())
    missing = [n for n in names if f"const {n}" not in header_facts]
    assert missing == []


def test_ioctl_encoding_follows_asm_generic_ioctl_h():
    # Facts from the kernel header, written out: _IO(0xAE, 0x80) and
    # _IOR(0xAE, 0x81, struct kvm_regs) (144 bytes) and _IOWR with kvm_cpuid2 (8 bytes).
    assert abi.KVM_RUN == 0xAE80
    assert abi.KVM_GET_REGS == 0x8090AE81
    assert abi.KVM_GET_SUPPORTED_CPUID == 0xC008AE05
    assert abi.IOCTL_NAMES[abi.KVM_CREATE_VCPU] == "KVM_CREATE_VCPU"
