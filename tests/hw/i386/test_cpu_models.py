"""The x86 CPU: model types, feature properties, -cpu parsing, CPUID, and the realize chain.

The realize chain runs against a tiny fake machine and a fake accelerator whose
vCPU thread only signals ``created`` and waits to be unplugged, so QEMU's
step order, the filter warnings and the rollback of a failed realize are tested
without KVM or the interpreter.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from pyqemu.accel.ops import AccelOps, AccelState
from pyqemu.hw.core.machine import SMPConfig
from pyqemu.hw.i386.cpu import (
    TYPE_X86_CPU,
    X86_CPU_TYPE_NAME,
    X86CPU,
    CPUFeatureValueError,
    FeatureFilterError,
    HostCPUModelError,
    UnknownCPUModelError,
    UnknownFeatureError,
    X86CPUError,
    x86_cpu_class_by_name,
    x86_cpu_clear_featurestr,
    x86_cpu_list,
    x86_cpu_parse_featurestr,
    x86_cpu_type_by_model,
)
from pyqemu.qom import (
    AbstractTypeError,
    PropertyAccessError,
    PropertyValueError,
    object_new,
    object_property_set_bool,
    object_unref,
)
from pyqemu.system.cpus import (
    cpu_thread_signal_created,
    cpu_thread_signal_destroyed,
    qemu_global_mutex,
    vcpu_thread_main,
)
from pyqemu.system.runstate import RunControl
from pyqemu.target.i386 import cpu_features as cf
from pyqemu.target.i386.cpu_models import builtin_x86_defs
from pyqemu.target.i386.cpuid import (
    KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
    cpu_x86_cpuid,
    cpuid_entries_for_kvm,
    x86_apicid_from_cpu_idx,
)
from pyqemu.util import trace
from pyqemu.util.error import PyQemuError
from tests import host_behaviour

MODELS = [d.name for d in builtin_x86_defs] + ["base", "max", "host"]


# -- fakes ----------------------------------------------------------------------------------


class FakeAccelOps(AccelOps):
    """An accelerator whose vCPU thread initialises nothing, signals created, waits for unplug."""

    name = "FAKE"

    def __init__(self, fail_init: bool = False) -> None:
        self.fail_init = fail_init

    def create_vcpu_thread(self, cpu: Any) -> None:
        def body() -> None:
            with qemu_global_mutex:
                with trace.span("fake_init_vcpu", cpu=cpu.cpu_index):
                    if self.fail_init:
                        raise RuntimeError("fake_init_vcpu failed")
                cpu_thread_signal_created(cpu)
                while not cpu.unplug:
                    cpu.halt_cond.wait(0.05)
                cpu_thread_signal_destroyed(cpu)

        t = threading.Thread(target=vcpu_thread_main, args=(cpu, body, trace.depth()),
                             name=f"CPU {cpu.cpu_index}/FAKE", daemon=True)
        cpu.thread = t
        t.start()

    def cpu_exec(self, cpu: Any) -> int:  # pragma: no cover - never run here
        raise AssertionError("not used")

    def synchronize_state(self, cpu: Any) -> None:  # pragma: no cover
        pass


class FakeAccel(AccelState):
    """``withheld[(leaf, subleaf, reg)]`` = bits the accelerator cannot give; else no limit."""

    def __init__(self, name: str = "fake", withheld: dict[tuple[int, int, str], int] | None = None,
                 table: dict[tuple[int, int, str], int] | None = None,
                 fail_init: bool = False) -> None:
        self.name = name
        self.ops = FakeAccelOps(fail_init)
        self.withheld = withheld or {}
        self.table = table

    def get_supported_cpuid(self, function: int, index: int, reg: str) -> int | None:
        if self.table is not None:
            return self.table.get((function, index, reg), 0)
        w = self.withheld.get((function, index, reg))
        return None if w is None else ~w & 0xFFFFFFFF


def fake_machine(accel: FakeAccel | None = None, smp: SMPConfig | None = None) -> Any:
    return SimpleNamespace(smp=smp or SMPConfig(), accel=accel or FakeAccel(),
                           runctl=RunControl(), cpus=[], address_space_memory=None,
                           address_space_io=None)


def new_cpu(model: str = "qemu64", index: int = 0, machine: Any = None,
            apic_id: int | None = None) -> X86CPU:
    """What the board's x86_cpu_new does before realize."""
    cpu = object_new(X86_CPU_TYPE_NAME(model))
    assert isinstance(cpu, X86CPU)
    cpu.property_set("apic-id", index if apic_id is None else apic_id)
    cpu.cpu_index = index
    cpu.machine = machine or fake_machine()
    return cpu


@pytest.fixture(autouse=True)
def clean_featurestr() -> Iterator[None]:
    x86_cpu_clear_featurestr()
    yield
    x86_cpu_clear_featurestr()


@pytest.fixture
def realized() -> Iterator[list[X86CPU]]:
    """CPUs appended here are unrealized (threads joined) at the end of the test."""
    cpus: list[X86CPU] = []
    yield cpus
    for cpu in cpus:
        if cpu.realized:
            object_property_set_bool(cpu, "realized", False)


def step_names(lines: list[str]) -> list[str]:
    return [line.split("] ", 1)[1].strip().split(" (")[0] for line in lines]


# -- types and models -----------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_every_model_instantiates_without_realizing(model: str) -> None:
    cpu = object_new(X86_CPU_TYPE_NAME(model))
    assert isinstance(cpu, X86CPU)
    assert cpu.is_a(TYPE_X86_CPU) and cpu.is_a("cpu") and cpu.is_a("device")
    assert cpu.realized is False and cpu.thread is None
    assert cpu.property_get("apic-id") == 0xFFFFFFFF
    object_unref(cpu)


def test_abstract_x86_cpu_type_cannot_be_instantiated() -> None:
    with pytest.raises(AbstractTypeError, match="'x86_64-cpu' is abstract"):
        object_new(TYPE_X86_CPU)


def test_model_types_chain_to_x86_64_cpu_and_host_derives_from_max() -> None:
    host = x86_cpu_class_by_name("host")
    assert host is not None and host.name == "host-x86_64-cpu"
    assert host.parent is not None and host.parent.name == "max-x86_64-cpu"
    assert host.host_cpuid_required is True  # type: ignore[attr-defined]
    q = x86_cpu_class_by_name("qemu64")
    assert q is not None and q.model.name == "qemu64"  # type: ignore[attr-defined]
    assert q.parent is not None and q.parent.name == TYPE_X86_CPU


def test_class_by_name_unknown_model_is_none_and_type_lookup_names_it() -> None:
    assert x86_cpu_class_by_name("pentium9000") is None
    assert x86_cpu_class_by_name("x86_64") is None  # the abstract base is not a model
    with pytest.raises(UnknownCPUModelError, match="unable to find CPU model 'pentium9000'"):
        x86_cpu_type_by_model("pentium9000")
    assert x86_cpu_type_by_model("kvm64") == "kvm64-x86_64-cpu"
    assert issubclass(UnknownCPUModelError, PyQemuError) and issubclass(
        UnknownCPUModelError, LookupError)


def test_model_identity_and_features_are_loaded_at_init() -> None:
    cpu = object_new("Nehalem-x86_64-cpu")
    assert cpu.property_get("vendor") == "GenuineIntel"
    assert (cpu.property_get("family"), cpu.property_get("model"),
            cpu.property_get("stepping")) == (6, 26, 3)
    assert cpu.property_get("model-id") == "Intel Core i7 9xx (Nehalem Class Core i7)"
    assert cpu.has_feature("popcnt") and cpu.has_feature("sse4_2") and cpu.has_feature("lm")
    assert not cpu.has_feature("avx")
    assert cpu.has_feature("hypervisor")
    base = object_new("base-x86_64-cpu")
    assert not any(base.features.values())


def test_feature_property_sets_and_clears_its_bit() -> None:
    cpu = new_cpu("qemu64")
    assert cpu.property_get("popcnt") is False
    cpu.property_set("popcnt", True)
    assert cpu.features["FEAT_1_ECX"] >> 23 & 1
    assert cpu.cpuid(1)[2] >> 23 & 1
    cpu.property_set("sse3", False)  # alias of pni
    assert cpu.property_get("pni") is False and not cpu.cpuid(1)[2] & 1
    cpu.property_set("sse4-1", "on")
    assert cpu.has_feature("sse4.1")


def test_feature_property_rejects_a_non_bool_value_naming_it() -> None:
    cpu = new_cpu()
    with pytest.raises(PropertyValueError, match="property 'avx' of qemu64-x86_64-cpu"):
        cpu.property_set("avx", "maybe")


def test_has_feature_names_an_unknown_feature() -> None:
    with pytest.raises(UnknownFeatureError, match="unknown CPU feature 'sse5'"):
        new_cpu().has_feature("sse5")


@pytest.mark.parametrize("prop,value,msg", [
    ("family", 0x10F, "property 'family' doesn't take value 271"),
    ("stepping", 16, "property 'stepping' doesn't take value 16"),
    ("vendor", "Intel", "property 'vendor' needs 12 ASCII characters"),
    ("model-id", "x" * 49, "property 'model-id' takes at most 48"),
    ("xlevel", 0x1234, "property 'xlevel' doesn't take value 0x1234"),
])
def test_identity_property_range_errors_name_the_property(prop: str, value: Any,
                                                         msg: str) -> None:
    cpu = new_cpu()
    with pytest.raises(CPUFeatureValueError, match=msg):
        cpu.property_set(prop, value)


# -- -cpu model,features --------------------------------------------------------------------


def test_parse_featurestr_plus_minus_and_on_off_apply_to_new_cpus(
        realized: list[X86CPU]) -> None:
    x86_cpu_parse_featurestr("qemu64-x86_64-cpu", "+popcnt,-svm,sse4_1=on,avx,lahf_lm=off")
    cpu = new_cpu("qemu64")
    # f=on/off and bare f are applied at init (globals) ...
    assert cpu.has_feature("sse4.1") and cpu.has_feature("avx") and not cpu.has_feature("lahf-lm")
    # ... +f/-f at realize (x86_cpu_expand_features).
    assert cpu.plus_features == ["popcnt"] and cpu.minus_features == ["svm"]
    assert not cpu.has_feature("popcnt") and cpu.has_feature("svm")
    object_property_set_bool(cpu, "realized", True)
    realized.append(cpu)
    assert cpu.has_feature("popcnt") and not cpu.has_feature("svm")
    other = new_cpu("kvm64", index=1)  # options belong to their type only
    assert not other.has_feature("avx")


def test_parse_featurestr_minus_wins_over_plus(realized: list[X86CPU]) -> None:
    x86_cpu_parse_featurestr("qemu64-x86_64-cpu", "-popcnt,+popcnt")
    cpu = new_cpu()
    object_property_set_bool(cpu, "realized", True)
    realized.append(cpu)
    assert not cpu.has_feature("popcnt")


def test_parse_featurestr_sets_properties_enforce_check_vendor_level() -> None:
    x86_cpu_parse_featurestr("qemu32-x86_64-cpu",
                             "enforce,check=off,vendor=AuthenticAMD,model-id=My CPU,level=7,"
                             "family=0x10")
    cpu = new_cpu("qemu32")
    assert cpu.enforce_cpuid is True and cpu.check_cpuid is False
    assert cpu.cpuid(0)[0] == 7
    assert cpu.property_get("vendor") == "AuthenticAMD"
    brand = b"".join(r.to_bytes(4, "little") for fn in (0x80000002, 0x80000003, 0x80000004)
                     for r in cpu.cpuid(fn))
    assert brand.rstrip(b"\0") == b"My CPU"
    assert cpu.cpuid(1)[0] == 0x00100F00 | 0x60 | 3  # family 16 = 0xF + ext 1, model 6


@pytest.mark.parametrize("spec,exc,msg", [
    ("+sse5", UnknownFeatureError, "unknown CPU feature 'sse5' in '\\+sse5'"),
    ("-bogus", UnknownFeatureError, "unknown CPU feature 'bogus'"),
    ("frobnicate=on", UnknownFeatureError, "unknown CPU feature or property 'frobnicate'"),
    ("avx=maybe", PropertyValueError, "property 'avx' of qemu64-x86_64-cpu expects a bool"),
    ("level=abc", PropertyValueError, "property 'level' .* expects an integer"),
    ("vendor=ACME", CPUFeatureValueError, "property 'vendor' needs 12 ASCII characters"),
    ("level", CPUFeatureValueError, "CPU property 'level' needs a value"),
])
def test_parse_featurestr_errors_name_the_thing_and_store_nothing(spec: str, exc: type,
                                                                  msg: str) -> None:
    with pytest.raises(exc, match=msg):
        x86_cpu_parse_featurestr("qemu64-x86_64-cpu", "popcnt," + spec)
    assert issubclass(exc, PyQemuError) and issubclass(exc, (ValueError, LookupError))
    cpu = new_cpu()
    assert not cpu.has_feature("popcnt")  # the valid part before the error was not kept


def test_parse_featurestr_unknown_type_is_an_error() -> None:
    with pytest.raises(UnknownCPUModelError, match="unable to find CPU type 'nope-x86_64-cpu'"):
        x86_cpu_parse_featurestr("nope-x86_64-cpu", "+sse")


def test_parse_featurestr_warns_about_mixing_plus_and_assignment(
        caplog: pytest.LogCaptureFixture) -> None:
    x86_cpu_parse_featurestr("qemu64-x86_64-cpu", "+popcnt,popcnt=off")
    assert ('Ambiguous CPU model string. Don\'t mix both "+popcnt" and '
            '"popcnt=off"') in caplog.messages


def test_parse_features_hook_is_the_class_parse_features() -> None:
    oc = x86_cpu_class_by_name("qemu64")
    oc.parse_features("qemu64-x86_64-cpu", "+movbe")  # type: ignore[union-attr]
    assert new_cpu().plus_features == ["movbe"]


def test_cpu_help_lists_models_with_descriptions_then_flags() -> None:
    text = x86_cpu_list()
    assert text.startswith("Available CPUs:\n")
    for model in MODELS:
        assert f"\nx86 {model} " in text
    assert "x86 qemu64                   QEMU Virtual CPU version 2.5+" in text
    assert "x86 host                     KVM processor with all supported host features" in text
    flags_part = text.split("Recognized CPUID flags:\n", 1)[1]
    flags = flags_part.split()
    assert flags == sorted(cf.FEATURES)
    assert {"sse4.2", "lahf-lm", "pni", "x2apic", "rdtscp"} <= set(flags)
    assert text.index("x86 qemu64") < text.index("x86 base") < text.index("x86 max")


# -- CPUID ------------------------------------------------------------------------------------


def test_cpuid_qemu64_basic_leaves() -> None:
    cpu = new_cpu("qemu64", index=0, apic_id=3)
    eax, ebx, ecx, edx = cpu_x86_cpuid(cpu, 0, 0)
    assert eax == 0xD
    assert b"".join(r.to_bytes(4, "little") for r in (ebx, edx, ecx)) == b"AuthenticAMD"
    eax, ebx, ecx, edx = cpu_x86_cpuid(cpu, 1, 0)
    assert eax == 0x00060FB1         # family 15, model 107 (ext model 6), stepping 1
    assert ebx == (3 << 24) | (8 << 8)  # APIC id 3, CLFLUSH 64 bytes, one logical CPU
    assert ecx == 0x80002001         # pni, cx16, hypervisor
    assert edx == 0x078BFBFD         # PPro + mtrr clflush mca pse36


def test_cpuid_qemu64_extended_leaves_and_brand_string() -> None:
    cpu = new_cpu("qemu64")
    eax, ebx, ecx, edx = cpu.cpuid(0x80000000)
    assert eax == 0x8000000A
    assert b"".join(r.to_bytes(4, "little") for r in (ebx, edx, ecx)) == b"AuthenticAMD"
    eax, ebx, ecx, edx = cpu.cpuid(0x80000001)
    assert ecx == 0x5                # lahf_lm, svm
    # lm, nx, syscall plus the leaf-1 bits AMD mirrors (APM vol. 3 E.3.6)
    assert edx == 0x2193FBFD
    brand = b"".join(r.to_bytes(4, "little") for fn in range(0x80000002, 0x80000005)
                     for r in cpu.cpuid(fn))
    assert brand == b"QEMU Virtual CPU version 2.5+".ljust(48, b"\0")
    assert cpu.cpuid(0x80000008)[0] == 0x3028  # 40 physical, 48 virtual address bits


def test_cpuid_out_of_range_leaves_follow_the_vendor() -> None:
    intel = new_cpu("kvm64")       # level 0xD
    assert intel.cpuid(0x20) == intel.cpuid(0xD)              # highest basic leaf's values
    assert intel.cpuid(0x80000009) == intel.cpuid(0xD)
    assert intel.cpuid(0x40000000) == intel.cpuid(0xD)        # no KVM leaves without kvm
    amd = new_cpu("qemu64")
    assert amd.cpuid(0x20) == (0, 0, 0, 0)
    assert amd.cpuid(0x8000000B) == (0, 0, 0, 0)


def test_cpuid_smp_topology_in_leaves_1_4_and_0xb() -> None:
    smp = SMPConfig(cpus=8, sockets=2, cores=2, threads=2, maxcpus=8)
    apic_id = x86_apicid_from_cpu_idx(1, 2, 2, 5)
    assert apic_id == 0b101  # package 1, core 0, thread 1
    cpu = new_cpu("Nehalem", index=5, machine=fake_machine(smp=smp), apic_id=apic_id)
    _, ebx, _, edx = cpu.cpuid(1)
    assert ebx >> 24 == 5 and (ebx >> 16) & 0xFF == 4 and edx >> 28 & 1  # HT
    assert cpu.cpuid(0xB, 0) == (1, 2, 0x100, 5)        # SMT: shift 1, 2 threads
    assert cpu.cpuid(0xB, 1) == (2, 4, 0x201, 5)        # core: shift 2, 4 per package
    assert cpu.cpuid(0xB, 2) == (0, 0, 2, 5)            # invalid level ends the list
    eax, ebx, ecx, _ = cpu.cpuid(4, 0)                  # L1d
    assert eax & 0x1F == 1 and (eax >> 5) & 7 == 1
    assert (eax >> 14) & 0xFFF == 1 and eax >> 26 == 1  # 2 threads share it; 2 cores
    assert ((ebx >> 22) + 1) * ((ebx & 0xFFF) + 1) * (ecx + 1) == 32 << 10
    assert cpu.cpuid(4, 3)[0] & 0x1F == 0               # no L3: list ends


def test_cpuid_osxsave_and_apic_bits_reflect_state() -> None:
    cpu = new_cpu("qemu64")
    cpu.property_set("xsave", True)
    assert not cpu.cpuid(1)[2] >> 27 & 1
    cpu.env.cr[4] |= 1 << 18  # CR4.OSXSAVE
    assert cpu.cpuid(1)[2] >> 27 & 1
    cpu.env.apic_base &= ~(1 << 11)  # APIC globally disabled
    assert not cpu.cpuid(1)[3] >> 9 & 1


def test_cpuid_xsave_leaf_0xd() -> None:
    cpu = new_cpu("qemu64")
    assert cpu.cpuid(0xD, 0) == (0, 0, 0, 0)
    cpu.property_set("xsave", True)
    cpu.property_set("avx", True)
    assert cpu.cpuid(0xD, 0) == (0x7, 576, 832, 0)
    assert cpu.cpuid(0xD, 2) == (256, 576, 0, 0)


def test_level_rises_with_features_unless_set() -> None:
    cpu = new_cpu("qemu32")  # level 4
    assert cpu.cpuid(0)[0] == 4
    cpu.property_set("fsgsbase", True)
    assert cpu.cpuid(0)[0] == 7 and cpu.cpuid(7, 0)[1] & 1
    cpu.property_set("level", 5)
    assert cpu.cpuid(0)[0] == 5


def test_cpuid_entries_for_kvm_cover_every_leaf_with_significant_index() -> None:
    cpu = new_cpu("qemu64", machine=fake_machine(FakeAccel(name="kvm")))
    entries = cpuid_entries_for_kvm(cpu)
    fns = {e.function for e in entries}
    assert set(range(0xE)) <= fns and set(range(0x80000000, 0x8000000B)) <= fns
    assert {0x40000000, 0x40000001} <= fns
    kvm_sig = next(e for e in entries if e.function == 0x40000000)
    assert (kvm_sig.ebx, kvm_sig.ecx, kvm_sig.edx) == (0x4B4D564B, 0x564B4D56, 0x4D)
    for e in entries:
        assert (e.eax, e.ebx, e.ecx, e.edx) == cpu_x86_cpuid(cpu, e.function, e.index)
        indexed = e.function in (4, 7, 0xB, 0xD)
        assert bool(e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) == indexed
    b = [e for e in entries if e.function == 0xB]
    assert [e.index for e in b] == [0, 1, 2] and b[-1].ecx & 0xFF00 == 0


# -- realize -----------------------------------------------------------------------------------

REALIZE_STEPS = ["x86_cpu_realizefn", "x86_cpu_expand_features", "x86_cpu_filter_features",
              "cpu_exec_realizefn", "mce_init", "qemu_init_vcpu", "x86_cpu_apic_realize",
              "cpu_reset", "cpu_common_realizefn"]


def test_realize_runs_qemu_s_steps_in_order(lifecycle: list[str],
                                              realized: list[X86CPU]) -> None:
    cpu = new_cpu("qemu64")
    object_property_set_bool(cpu, "realized", True)
    realized.append(cpu)
    names = step_names(lifecycle)
    positions = [names.index(s) for s in REALIZE_STEPS]
    assert positions == sorted(positions), names
    # The vCPU thread's own steps print as children of qemu_init_vcpu, from its thread.
    def indent(line: str) -> int:
        text = line.split("] ", 1)[1]
        return len(text) - len(text.lstrip())

    vcpu_line = next(ln for ln in lifecycle if "fake_init_vcpu" in ln)
    init_line = next(ln for ln in lifecycle if step_names([ln]) == ["qemu_init_vcpu"])
    assert vcpu_line.startswith("[  CPU 0/FAKE]")
    assert indent(vcpu_line) > indent(init_line)
    assert names.index("qemu_init_vcpu") < names.index("fake_init_vcpu") < names.index(
        "x86_cpu_apic_realize")
    assert cpu.realized and cpu.created and cpu.thread is not None and cpu.thread.is_alive()
    assert cpu.machine.cpus == [cpu]


def test_realized_cpu_is_reset_with_apic_and_mce(realized: list[X86CPU]) -> None:
    machine = fake_machine(smp=SMPConfig(cpus=2, cores=2, maxcpus=2))
    bsp, ap = new_cpu("qemu64", 0, machine), new_cpu("qemu64", 1, machine)
    for c in (bsp, ap):
        object_property_set_bool(c, "realized", True)
        realized.append(c)
    assert bsp.env.rip == 0xFFF0 and bsp.env.segs[1].base == 0xFFFF0000
    assert bsp.env.cr[0] == 0x60000010
    assert bsp.env.regs[2] == 0x00060FB1           # EDX = processor signature
    assert bsp.env.apic_base == 0xFEE00900         # enabled, BSP
    assert ap.env.apic_base == 0xFEE00800          # enabled, not BSP
    assert not bsp.halted and ap.halted            # APs wait for INIT/SIPI
    lapic = bsp.property_get("lapic")
    assert lapic.typename == "apic" and lapic.realized and lapic.property_get("id") == 0
    assert ap.apic_state is not None and ap.apic_state.apic_id == 1
    assert bsp.mcg_cap == 0x0100010A and bsp.env.msrs[0x179] == 0x0100010A
    assert machine.cpus == [bsp, ap]


def test_properties_are_frozen_after_realize(realized: list[X86CPU]) -> None:
    cpu = new_cpu()
    object_property_set_bool(cpu, "realized", True)
    realized.append(cpu)
    for prop, value in (("avx", True), ("apic-id", 5), ("family", 6), ("enforce", True)):
        with pytest.raises(PropertyAccessError, match=f"property '{prop}' of "
                           "qemu64-x86_64-cpu cannot be set after realize"):
            cpu.property_set(prop, value)


def test_filter_features_warns_naming_each_withheld_feature(
        caplog: pytest.LogCaptureFixture, realized: list[X86CPU]) -> None:
    accel = FakeAccel(withheld={(1, 0, "ecx"): 1 << 20, (0x80000001, 0, "ecx"): 1 << 2})
    # svm is off by default (ACCEL_DEFAULT_OFF): ask for it, so it is requested and withheld.
    x86_cpu_parse_featurestr("qemu64-x86_64-cpu", "+sse4.2,+svm")
    cpu = new_cpu("qemu64", machine=fake_machine(accel))
    object_property_set_bool(cpu, "realized", True)
    realized.append(cpu)
    err = caplog.messages
    assert "fake doesn't support requested feature: CPUID.01H:ECX.sse4.2 [bit 20]" in err
    assert "fake doesn't support requested feature: CPUID.80000001H:ECX.svm [bit 2]" in err
    assert all(r.levelname == "WARNING" and r.name.startswith("pyqemu.")
               for r in caplog.records)
    assert not cpu.has_feature("sse4.2") and not cpu.has_feature("svm")
    assert cpu.filtered_features == {"FEAT_1_ECX": 1 << 20, "FEAT_8000_0001_ECX": 1 << 2}
    assert not cpu.cpuid(1)[2] >> 20 & 1


def test_filter_features_is_silent_with_check_off(caplog: pytest.LogCaptureFixture,
                                                  realized: list[X86CPU]) -> None:
    accel = FakeAccel(withheld={(0x80000001, 0, "ecx"): 1 << 2})
    x86_cpu_parse_featurestr("qemu64-x86_64-cpu", "+svm")
    cpu = new_cpu("qemu64", machine=fake_machine(accel))
    cpu.property_set("check", False)
    object_property_set_bool(cpu, "realized", True)
    realized.append(cpu)
    assert caplog.records == []
    assert not cpu.has_feature("svm")


def test_enforce_makes_a_withheld_feature_an_error_and_leaves_nothing(
        lifecycle: list[str]) -> None:
    accel = FakeAccel(withheld={(1, 0, "ecx"): 1 << 20})
    machine = fake_machine(accel)
    x86_cpu_parse_featurestr("qemu64-x86_64-cpu", "+sse4.2,enforce")
    cpu = new_cpu("qemu64", machine=machine)
    with pytest.raises(FeatureFilterError,
                       match=r"fake doesn't support requested features: "
                             r"CPUID\.01H:ECX\.sse4\.2 \[bit 20\]"):
        object_property_set_bool(cpu, "realized", True)
    assert not cpu.realized and cpu.thread is None and not cpu.created
    assert machine.cpus == [] and cpu.apic_state is None
    assert "qemu_init_vcpu" not in step_names(lifecycle)
    assert cpu.plus_features == ["sse4.2"] and not cpu.has_feature("sse4.2")
    assert cpu.filtered_features == {}  # configuration restored to before realize


def test_failing_vcpu_init_leaves_no_thread_and_no_child() -> None:
    machine = fake_machine(FakeAccel(fail_init=True))
    cpu = new_cpu("qemu64", machine=machine)
    with pytest.raises(RuntimeError, match="fake_init_vcpu failed"):
        object_property_set_bool(cpu, "realized", True)
    assert not cpu.realized and cpu.thread is None and not cpu.created
    assert cpu.apic_state is None and cpu.property_find("lapic") is None
    assert machine.cpus == []


def test_failure_after_qemu_init_vcpu_unplugs_the_vcpu(monkeypatch: pytest.MonkeyPatch,
                                                       realized: list[X86CPU]) -> None:
    import pyqemu.hw.i386.cpu as x86cpu

    def broken_apic_realize(cpu: X86CPU) -> None:
        raise X86CPUError("apic realize failed")

    machine = fake_machine()
    cpu = new_cpu("qemu64", machine=machine)
    monkeypatch.setattr(x86cpu, "x86_cpu_apic_realize", broken_apic_realize)
    with pytest.raises(X86CPUError, match="apic realize failed"):
        object_property_set_bool(cpu, "realized", True)
    assert not cpu.realized and cpu.thread is None and not cpu.created
    assert cpu.apic_state is None and machine.cpus == []
    monkeypatch.undo()
    object_property_set_bool(cpu, "realized", True)  # the same CPU realizes cleanly after
    realized.append(cpu)
    assert cpu.created and machine.cpus == [cpu]


def test_unrealize_joins_the_vcpu_thread_and_drops_the_apic() -> None:
    machine = fake_machine()
    cpu = new_cpu("qemu64", machine=machine)
    object_property_set_bool(cpu, "realized", True)
    thread = cpu.thread
    assert thread is not None and thread.is_alive()
    object_property_set_bool(cpu, "realized", False)
    assert not thread.is_alive() and cpu.thread is None and not cpu.created
    assert cpu.apic_state is None and cpu.property_find("lapic") is None
    assert machine.cpus == []


def test_realize_without_apic_id_is_an_error() -> None:
    cpu = object_new("qemu64-x86_64-cpu")
    cpu.machine = fake_machine()
    with pytest.raises(X86CPUError, match="apic-id property was not initialized properly"):
        object_property_set_bool(cpu, "realized", True)
    assert not cpu.realized


def test_host_model_requires_kvm() -> None:
    cpu = new_cpu("host", machine=fake_machine(FakeAccel(name="interp")))
    with pytest.raises(HostCPUModelError, match="host CPU model requires KVM"):
        object_property_set_bool(cpu, "realized", True)
    assert not cpu.realized and cpu.thread is None


def _host_table() -> dict[tuple[int, int, str], int]:
    brand = b"Fake Host CPU @ 1.00GHz".ljust(48, b"\0")
    t = {(0, 0, "eax"): 0x16, (0, 0, "ebx"): 0x756E6547, (0, 0, "edx"): 0x49656E69,
         (0, 0, "ecx"): 0x6C65746E, (1, 0, "eax"): 0x000906EA,
         (1, 0, "ecx"): (1 << 23) | (1 << 0) | (1 << 31), (1, 0, "edx"): 0x078BFBFF,
         (7, 0, "ebx"): 1 << 3, (0x80000000, 0, "eax"): 0x80000008,
         (0x80000001, 0, "edx"): (1 << 29) | (1 << 20) | (1 << 11)}
    for i, fn in enumerate((0x80000002, 0x80000003, 0x80000004)):
        for j, r in enumerate(("eax", "ebx", "ecx", "edx")):
            off = i * 16 + j * 4
            t[(fn, 0, r)] = int.from_bytes(brand[off:off + 4], "little")
    return t


def test_host_model_under_kvm_takes_the_supported_cpuid(realized: list[X86CPU]) -> None:
    x86_cpu_parse_featurestr("host-x86_64-cpu", "-popcnt")
    cpu = new_cpu("host", machine=fake_machine(FakeAccel(name="kvm", table=_host_table())))
    object_property_set_bool(cpu, "realized", True)
    realized.append(cpu)
    assert cpu.property_get("vendor") == "GenuineIntel"
    assert (cpu.cpuid_family, cpu.cpuid_model, cpu.cpuid_stepping) == (6, 0x9E, 0xA)
    assert cpu.property_get("model-id") == "Fake Host CPU @ 1.00GHz"
    assert cpu.has_feature("bmi1") and cpu.has_feature("lm") and cpu.has_feature("pni")
    assert not cpu.has_feature("popcnt")        # -popcnt wins over what the host offers
    assert not cpu.has_feature("svm")           # host does not offer it
    assert cpu.cpuid(0)[0] == 0x16 and cpu.cpuid(1)[0] == 0x000906EA


def test_max_model_takes_what_the_accelerator_offers(realized: list[X86CPU]) -> None:
    table = {(7, 0, "ebx"): (1 << 3) | (1 << 8)}
    accel = FakeAccel(withheld={})
    accel.get_supported_cpuid = lambda f, i, r: table.get((f, i, r))  # type: ignore[method-assign]
    cpu = new_cpu("max", machine=fake_machine(accel))
    cpu.property_set("bmi2", False)  # an explicit user choice is kept
    object_property_set_bool(cpu, "realized", True)
    realized.append(cpu)
    assert cpu.has_feature("bmi1") and not cpu.has_feature("bmi2")
    assert cpu.has_feature("lm")  # the base definition stays where the accel sets no limit
    table[(0x80000001, 0, "ecx")] = 1  # lahf-lm only: svm is not the accelerator's to give
    cpu2 = new_cpu("max", index=1, machine=fake_machine(accel))
    object_property_set_bool(cpu2, "realized", True)
    realized.append(cpu2)
    assert cpu2.has_feature("lahf-lm") and not cpu2.has_feature("svm")
    assert cpu2.filtered_features == {}  # nothing requested that had to be dropped
    assert cpu.cpuid(0)[0] >= 7


# -- what a guest sees ------------------------------------------------------------------------

GUEST_LEAVES = [(0, 0), (1, 0), (2, 0), (4, 0), (7, 0), (0xB, 0), (0xB, 1), (0xD, 0),
                (0x20, 0), (0x80000000, 0), (0x80000001, 0),
                (0x80000002, 0), (0x80000006, 0), (0x80000008, 0), (0x8000000B, 0)]

def _accel_or_skip(name: str) -> None:
    from pyqemu.accel.ops import accel_list
    from tests.support import require_accel
    require_accel(name)
    if name not in [n for n, _, _ in accel_list()]:
        pytest.skip(f"the {name} accelerator is not registered in this tree yet")


@pytest.mark.parametrize("model", ["qemu64", "kvm64", "Nehalem"])
@pytest.mark.parametrize("accel_name", ["kvm", "interp"])
def test_guest_cpuid_instruction_matches_cpu_x86_cpuid(accel_name: str, model: str) -> None:
    """The CPUID instruction in a guest returns exactly cpu_x86_cpuid (kvm via KVM_SET_CPUID2).

    Under kvm what pyqemu controls is the KVM_SET_CPUID2 table: it must hold the model's
    values for every leaf the guest asks.  KVM's API defines that table as the guest's
    CPUID; a host that answers some register otherwise (KVM's PVM module does, from the
    hardware) chooses so itself: reported (tests/host_behaviour.py,
    cpuid-not-from-set-cpuid2) with the leaf and register, not failed.  Under interp
    every register must match."""
    _accel_or_skip(accel_name)
    from pyqemu import Machine
    x86_cpu_clear_featurestr()
    lines = []
    for i, (leaf, sub) in enumerate(GUEST_LEAVES):
        base = 0x20000 + 16 * i
        lines += [f"mov eax, {leaf:#x}", f"mov ecx, {sub:#x}", "cpuid",
                  f"mov dword ptr [{base:#x}], eax", f"mov dword ptr [{base + 4:#x}], ebx",
                  f"mov dword ptr [{base + 8:#x}], ecx", f"mov dword ptr [{base + 12:#x}], edx"]
    with Machine(accel=accel_name, cpu=f"{model},check=off", smp="2,cores=2") as m:
        m.load_asm("\n".join(lines + ["hlt"]), 0x10000, mode="prot32")
        m.run(timeout=60)
        cpu = m.cpu(0)
        given: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        held: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        if accel_name == "kvm":
            # What pyqemu gave KVM_SET_CPUID2, and what KVM holds now (KVM_GET_CPUID2).
            given = {(e.function, e.index): (e.eax, e.ebx, e.ecx, e.edx) for e in cpu.accel.cpuid}
            held = {(e.function, e.index): (e.eax, e.ebx, e.ecx, e.edx)
                    for e in cpu.accel.vcpu.get_cpuid2()}
        for i, (leaf, sub) in enumerate(GUEST_LEAVES):
            raw = m.mem_read(0x20000 + 16 * i, 16)
            got = tuple(int.from_bytes(raw[j:j + 4], "little") for j in range(0, 16, 4))
            want = cpu_x86_cpuid(cpu, leaf, sub)
            out_of_range = leaf > (cpu.cpuid_xlevel if leaf >= 0x80000000 else cpu.cpuid_level)
            shown = cpu.cpuid_level if out_of_range else leaf  # Intel: the highest basic leaf
            if accel_name == "kvm" and not out_of_range:
                entry = given.get((leaf, sub), given.get((leaf, 0)))
                assert entry == want, f"KVM_SET_CPUID2 got {entry} for CPUID.{leaf:#x}.{sub}, " \
                                      f"the model says {want}"
            differ = [r for r in range(4) if got[r] != want[r]]
            for r in differ:
                assert accel_name == "kvm", f"CPUID.{leaf:#x}.{sub} {'abcd'[r]}: " \
                                            f"{got[r]:#x} != {want[r]:#x}"
            if differ:
                kept = held.get((shown, sub), held.get((shown, 0)))
                how = ("KVM_GET_CPUID2 reads the host's values back: it rewrote the table"
                       if kept is not None and all(kept[r] == got[r] for r in differ) else
                       "the host answers otherwise than the table it holds")
                host_behaviour.report(
                    "cpuid-not-from-set-cpuid2",
                    f"{model}: CPUID.{leaf:#x}.{sub} {' '.join('abcd'[r] for r in differ)} ({how})",
                    host=" ".join(f"{got[r]:#x}" for r in differ),
                    interp=" ".join(f"{want[r]:#x}" for r in differ))
