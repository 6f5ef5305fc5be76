"""The x86 CPU device: ``X86CPU``/``X86CPUClass``, its model types, its realize chain.

QEMU has these in ``target/i386/cpu.c``; here the device half lives with the board
(``hw/i386``) and the architecture's facts in ``target/i386``.

Types (QEMU's names, ``qemu-system-x86_64``)::

    device -> cpu -> x86_64-cpu (TYPE_X86_CPU, abstract)
                       -> <model>-x86_64-cpu   one per builtin model (x86_register_cpudef_types)
                       -> base-x86_64-cpu      no features at all
                       -> max-x86_64-cpu       everything the accelerator can give
                            -> host-x86_64-cpu  the host's CPU, KVM only

``object_new`` runs ``x86_cpu_initfn`` (one bool QOM property per CPUID flag,
like ``x86_cpu_register_feature_bit_props``, then ``x86_cpu_load_model``), and
``x86_cpu_post_initfn`` applies the ``-cpu model,f=on`` options parsed by
:func:`x86_cpu_parse_featurestr` (QEMU applies them as global properties).
Setting ``realized`` runs :func:`x86_cpu_realizefn`, step by step in the order
QEMU's ``x86_cpu_realizefn`` takes them, each step a lifecycle trace span of its
own name (docs/architecture.md, "The lifecycle").
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyqemu.hw.core.cpu import TYPE_CPU, CPUClass, CPUState, cpu_reset
from pyqemu.hw.core.qdev import (
    DeviceClass,
    DeviceState,
    Property,
    device_class_set_parent_realize,
    device_class_set_parent_unrealize,
    device_class_set_props,
)
from pyqemu.hw.i386.apic import TYPE_APIC, APICCommonState, apic_reset_common
from pyqemu.qom import (
    Object,
    ObjectClass,
    PropertyAccessError,
    TypeInfo,
    check_property_value,
    object_class_by_name,
    object_class_get_list,
    object_new,
    object_property_add,
    object_property_add_child,
    object_property_set_bool,
    object_unparent,
    object_unref,
    type_init,
)
from pyqemu.system.cpus import cpu_remove_sync, qemu_global_mutex, qemu_init_vcpu
from pyqemu.target.i386 import cpu_features as cf
from pyqemu.target.i386.cpu_models import (
    BASE_DEF,
    HOST_DEF,
    MAX_DEF,
    X86CPUDefinition,
    builtin_x86_defs,
    model_description,
)
from pyqemu.target.i386.cpu_state import (
    APIC_DEFAULT_ADDRESS,
    IF_MASK,
    MSR_IA32_APICBASE_BSP,
    MSR_IA32_APICBASE_ENABLE,
    R_EDX,
    CPUX86State,
    x86_reset_state,
)
from pyqemu.target.i386.cpuid import (
    UNASSIGNED_APIC_ID,
    cpu_x86_cpuid,
    cpuid_signature,
    x86_cpu_min_levels,
)
from pyqemu.target.i386.errors import (
    CPUFeatureValueError,
    FeatureFilterError,
    HostCPUModelError,
    UnknownCPUModelError,
    UnknownFeatureError,
    X86CPUError,
)
from pyqemu.util import trace

__all__ = [
    "TYPE_X86_CPU",
    "UNASSIGNED_APIC_ID",
    "X86CPU",
    "X86_CPU_TYPE_NAME",
    "X86_CPU_TYPE_SUFFIX",
    "CPUFeatureValueError",
    "FeatureFilterError",
    "HostCPUModelError",
    "UnknownCPUModelError",
    "UnknownFeatureError",
    "X86CPUClass",
    "X86CPUError",
    "report_warning",
    "x86_cpu_class_by_name",
    "x86_cpu_clear_featurestr",
    "x86_cpu_expand_features",
    "x86_cpu_filter_features",
    "x86_cpu_list",
    "x86_cpu_parse_featurestr",
    "x86_cpu_realizefn",
    "x86_cpu_reset",
    "x86_cpu_type_by_model",
    "x86_cpu_unrealizefn",
]

TYPE_X86_CPU = "x86_64-cpu"
X86_CPU_TYPE_SUFFIX = "-" + TYPE_X86_CPU

# Machine-check architecture (Intel SDM vol. 3B, 15.3.1): IA32_MCG_CAP bits and MSRs.
MCG_CTL_P = 1 << 8
MCG_SER_P = 1 << 24
MCE_BANKS_DEF = 10
MSR_MCG_CAP, MSR_MCG_STATUS, MSR_MCG_CTL = 0x179, 0x17A, 0x17B
MSR_MC0_CTL = 0x400
MSR_IA32_UCODE_REV = 0x8B


def X86_CPU_TYPE_NAME(name: str) -> str:  # noqa: N802 - QEMU's macro name
    """``X86_CPU_TYPE_NAME("qemu64")`` = ``"qemu64-x86_64-cpu"``."""
    return name + X86_CPU_TYPE_SUFFIX


_log = logging.getLogger("pyqemu.hw.i386.cpu")


def report_warning(msg: str) -> None:
    """One warning, as QEMU's ``warn_report`` gives it: a WARNING record on the
    ``pyqemu.hw.i386.cpu`` logger.  A library stays quiet by default (pyqemu installs a
    NullHandler on ``pyqemu``); its user silences or captures it there
    (``logging.getLogger("pyqemu")``, pytest's ``caplog``); the command line prints it
    as ``pyqemu: warning: MSG``."""
    _log.warning("%s", msg)


class X86CPUClass(CPUClass):
    """``X86CPUClass``: the model a type stands for, and the chained realize."""

    model: X86CPUDefinition | None = None
    parent_realize: Callable[[DeviceState], None] | None = None
    parent_unrealize: Callable[[DeviceState], None] | None = None
    host_cpuid_required: bool = False
    max_features: bool = False
    ordering: int = 0
    model_description: str = ""


class X86CPU(CPUState):
    """``X86CPU``: an x86 vCPU, its CPUID configuration and its register file ``env``."""

    env: CPUX86State
    apic_id: int
    enforce_cpuid: bool
    check_cpuid: bool
    phys_bits: int
    ucode_rev: int
    features: dict[str, int]
    user_features: dict[str, int]
    filtered_features: dict[str, int]
    plus_features: list[str]
    minus_features: list[str]
    cpuid_vendor: str
    cpuid_family: int
    cpuid_model: int
    cpuid_stepping: int
    cpuid_model_id: str
    cpuid_level: int | None
    cpuid_xlevel: int | None
    cpuid_min_level: int
    cpuid_min_xlevel: int
    user_props: set[str]
    apic_state: APICCommonState | None
    mcg_cap: int
    mcg_ctl: int
    hyperv: bool

    def cpuid(self, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        """CPUID.(EAX=leaf, ECX=subleaf) as the guest sees it (``cpu_x86_cpuid``)."""
        return cpu_x86_cpuid(self, leaf, subleaf)

    def has_feature(self, name: str) -> bool:
        """Whether the CPUID flag ``name`` (any accepted spelling) is on."""
        word, bit = cf.feature_lookup(name)
        return bool(self.features.get(word, 0) >> bit & 1)

    @property
    def cpuid_topology(self) -> tuple[int, int, int]:
        """(dies, cores per die, threads per core): the machine's -smp, else the CPU's own."""
        smp = getattr(self.machine, "smp", None)
        if smp is not None:
            return (getattr(smp, "dies", 1), smp.cores, smp.threads)
        return (1, self.nr_cores, self.nr_threads)

    @property
    def cpuid_kvm_leaves(self) -> bool:
        """KVM's paravirtual CPUID leaves are shown under kvm (``kvm_arch_init_vcpu``)."""
        return getattr(getattr(self.machine, "accel", None), "name", None) == "kvm"

    @property
    def cpuid_version(self) -> int:
        """CPUID.01H:EAX, the processor signature."""
        return cpuid_signature(self.cpuid_family, self.cpuid_model, self.cpuid_stepping)


# -- QOM properties ---------------------------------------------------------------------


def _freeze_check(cpu: Object, name: str) -> None:
    if getattr(cpu, "realized", False):
        raise PropertyAccessError(
            f"property '{name}' of {cpu.typename} cannot be set after realize")


def _check_range(lo: int, hi: int) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if not lo <= value <= hi:
            raise CPUFeatureValueError(
                f"property '{name}' doesn't take value {value} ({lo:#x} - {hi:#x})")
    return check


def _check_vendor(name: str, value: Any) -> None:
    if len(value) != 12 or not value.isascii():
        raise CPUFeatureValueError(
            f"property 'vendor' needs 12 ASCII characters, not {value!r}")


def _check_model_id(name: str, value: Any) -> None:
    if len(value) > 48 or not value.isascii():
        raise CPUFeatureValueError(
            f"property 'model-id' takes at most 48 ASCII characters, not {value!r}")


def _check_xlevel(name: str, value: Any) -> None:
    if value and not 0x80000000 <= value <= 0x800000FF:
        raise CPUFeatureValueError(
            f"property '{name}' doesn't take value {value:#x} (0 or 0x80000000 - 0x800000ff)")


@dataclass(frozen=True)
class _CpuProp:
    """A non-feature instance property: QOM type, the X86CPU field, and its value check."""

    ptype: str
    attr: str
    check: Callable[[str, Any], None] | None = None
    description: str = ""


_INSTANCE_PROPS: dict[str, _CpuProp] = {
    "vendor": _CpuProp("str", "cpuid_vendor", _check_vendor, "CPUID vendor string"),
    "model-id": _CpuProp("str", "cpuid_model_id", _check_model_id, "brand string"),
    "family": _CpuProp("uint32", "cpuid_family", _check_range(0, 0xFF + 0xF)),
    "model": _CpuProp("uint32", "cpuid_model", _check_range(0, 0xFF)),
    "stepping": _CpuProp("uint32", "cpuid_stepping", _check_range(0, 0xF)),
    "level": _CpuProp("uint32", "cpuid_level", _check_range(0, 0xFF),
                      "highest basic CPUID leaf (default: the model's, raised by features)"),
    "xlevel": _CpuProp("uint32", "cpuid_xlevel", _check_xlevel,
                       "highest extended CPUID leaf"),
    "min-level": _CpuProp("uint32", "cpuid_min_level", _check_range(0, 0xFF)),
    "min-xlevel": _CpuProp("uint32", "cpuid_min_xlevel", _check_xlevel),
}

#: Static (qdev) properties of TYPE_X86_CPU: frozen once realized.
X86_CPU_PROPERTIES: list[Property] = [
    Property("apic-id", "uint32", UNASSIGNED_APIC_ID, "apic_id", "initial APIC id"),
    Property("enforce", "bool", False, "enforce_cpuid",
             "fail realize if the accelerator cannot give every requested feature"),
    Property("check", "bool", True, "check_cpuid",
             "warn about requested features the accelerator cannot give"),
    Property("phys-bits", "uint32", 0, "phys_bits", "physical address bits (0: model default)"),
    Property("ucode-rev", "uint64", 0, "ucode_rev", "IA32_UCODE_REV (0: vendor default)"),
]
_STATIC_TYPES = {p.name: p.type for p in X86_CPU_PROPERTIES}


def _prop_type(name: str) -> str | None:
    """The QOM type of an x86 CPU property by name, or None if there is none."""
    if cf.feature_canonical(name) is not None:
        return "bool"
    if name in _INSTANCE_PROPS:
        return _INSTANCE_PROPS[name].ptype
    return _STATIC_TYPES.get(name)


def x86_cpu_register_feature_bit_props(cpu: X86CPU) -> None:
    """One bool property per flag and per alias, reading and writing its bit."""
    for name, (word, bit) in cf.FEATURES.items():
        mask = 1 << bit

        def get(o: Object, word: str = word, mask: int = mask) -> bool:
            return bool(o.features.get(word, 0) & mask)  # type: ignore[attr-defined]

        def set_(o: Object, value: bool, word: str = word, mask: int = mask,
                 name: str = name) -> None:
            _freeze_check(o, name)
            feats = o.features  # type: ignore[attr-defined]
            feats[word] = feats.get(word, 0) | mask if value else feats.get(word, 0) & ~mask
            user = o.user_features  # type: ignore[attr-defined]
            user[word] = user.get(word, 0) | mask

        for pname in cf.all_property_names(name):
            object_property_add(cpu, pname, "bool", get, set_,
                                description=f"CPUID flag {name}")


def _register_instance_props(cpu: X86CPU) -> None:
    for name, p in _INSTANCE_PROPS.items():
        def get(o: Object, p: _CpuProp = p) -> Any:
            v = getattr(o, p.attr)
            if v is None and p.attr in ("cpuid_level", "cpuid_xlevel"):
                return x86_cpu_min_levels(o)[p.attr == "cpuid_xlevel"]  # type: ignore[arg-type]
            return v

        def set_(o: Object, value: Any, p: _CpuProp = p, name: str = name) -> None:
            _freeze_check(o, name)
            if p.check is not None:
                p.check(name, value)
            setattr(o, p.attr, value)
            o.user_props.add(name)  # type: ignore[attr-defined]

        object_property_add(cpu, name, p.ptype, get, set_, description=p.description)


# -- -cpu model,features: parsing and the resulting globals ------------------------------


@dataclass
class _FeatureOptions:
    """What ``-cpu model,...`` asked for one type: globals, +features, -features."""

    globals: list[tuple[str, Any]] = field(default_factory=list)
    plus: list[str] = field(default_factory=list)
    minus: list[str] = field(default_factory=list)


_featurestr: dict[str, _FeatureOptions] = {}
_featurestr_lock = threading.Lock()


def x86_cpu_parse_featurestr(typename: str, features: str | None) -> list[tuple[str, Any]]:
    """Parse the options after ``-cpu model,`` for ``typename`` (``x86_cpu_parse_featurestr``).

    ``+f`` / ``-f`` turn a flag on/off (applied at realize, minus after plus);
    ``f=on|off`` and a bare ``f`` (= on) set the flag's property; ``enforce``,
    ``check`` and ``name=value`` set any other x86 CPU property (``vendor=``,
    ``model-id=``, ``level=``, ``family=``, ...).  Every name and value is checked
    here, so a bad option fails before any CPU exists; nothing is stored then.
    The options replace those of an earlier call for the same type and are applied
    to every CPU of that type created afterwards (QEMU's global properties).
    Returns the (property, value) list, ``+f``/``-f`` included as ``f``/True/False.
    """
    oc = object_class_by_name(typename)
    if oc is None or not oc.is_a(TYPE_X86_CPU):
        raise UnknownCPUModelError(f"unable to find CPU type '{typename}'")
    opts = _FeatureOptions()
    plain: dict[str, Any] = {}
    for item in (features or "").split(","):
        if not item:
            continue
        if item[0] in "+-":
            name = item[1:]
            canon = cf.feature_canonical(name)
            if canon is None:
                raise UnknownFeatureError(
                    f"CPU model {typename.removesuffix(X86_CPU_TYPE_SUFFIX)}: unknown CPU "
                    f"feature '{name}' in '{item}' (-cpu help lists them)")
            (opts.plus if item[0] == "+" else opts.minus).append(canon)
            continue
        name, sep, value = item.partition("=")
        prop = cf.feat2prop(name)
        ptype = _prop_type(prop)
        if ptype is None:
            raise UnknownFeatureError(
                f"CPU model {typename.removesuffix(X86_CPU_TYPE_SUFFIX)}: unknown CPU "
                f"feature or property '{name}' (-cpu help lists them)")
        if not sep:
            if ptype != "bool":
                raise CPUFeatureValueError(f"CPU property '{name}' needs a value ({name}=...)")
            value = "on"
        val = check_property_value(typename, prop, ptype, value)
        if prop in _INSTANCE_PROPS and _INSTANCE_PROPS[prop].check is not None:
            _INSTANCE_PROPS[prop].check(prop, val)  # type: ignore[misc]
        key = cf.feature_canonical(prop) or prop
        plain[key] = val
        opts.globals.append((key, val))
    for f in opts.plus + opts.minus:
        if f in plain:
            sign = "+" if f in opts.plus else "-"
            report_warning(f"Ambiguous CPU model string. Don't mix both \"{sign}{f}\" and "
                           f"\"{f}={'on' if plain[f] else 'off'}\"")
    with _featurestr_lock:
        _featurestr[typename] = opts
    return (opts.globals + [(f, True) for f in opts.plus] + [(f, False) for f in opts.minus])


def x86_cpu_clear_featurestr(typename: str | None = None) -> None:
    """Forget parsed ``-cpu`` options (of one type, or all): a new machine starts clean."""
    with _featurestr_lock:
        if typename is None:
            _featurestr.clear()
        else:
            _featurestr.pop(typename, None)


def _options_for(cpu: Object) -> list[_FeatureOptions]:
    """The parsed options that apply to ``cpu``: its type's and its ancestors', root first."""
    with _featurestr_lock:
        return [_featurestr[t] for t in reversed(cpu.klass.type.ancestors) if t in _featurestr]


# -- instance init --------------------------------------------------------------------------


def x86_cpu_load_model(cpu: X86CPU, model: X86CPUDefinition) -> None:
    """``x86_cpu_load_model``: the model's identity and features; every model but ``base``
    also advertises the hypervisor bit (CPUID.01H:ECX[31]), as QEMU's models do."""
    with trace.span("x86_cpu_load_model", model=model.name):
        cpu.cpuid_vendor = model.vendor
        cpu.cpuid_family = model.family
        cpu.cpuid_model = model.model
        cpu.cpuid_stepping = model.stepping
        cpu.cpuid_model_id = model.model_id
        cpu.cpuid_min_level = model.level
        cpu.cpuid_min_xlevel = model.xlevel
        cpu.features = {w.word: 0 for w in cf.FEATURE_WORDS}
        cpu.features.update(model.features)
        if model is not BASE_DEF:
            w, bit = cf.FEATURES["hypervisor"]
            cpu.features[w] |= 1 << bit


def x86_cpu_initfn(obj: Object) -> None:
    """``x86_cpu_initfn``: fields, the feature-bit and identity properties, the model."""
    cpu = obj
    assert isinstance(cpu, X86CPU)
    xcc = cpu.klass
    assert isinstance(xcc, X86CPUClass)
    cpu.env = CPUX86State()
    cpu.features = {w.word: 0 for w in cf.FEATURE_WORDS}
    cpu.user_features = {}
    cpu.filtered_features = {}
    cpu.user_props = set()
    cpu.cpuid_vendor, cpu.cpuid_model_id = "", ""
    cpu.cpuid_family = cpu.cpuid_model = cpu.cpuid_stepping = 0
    cpu.cpuid_level = cpu.cpuid_xlevel = None
    cpu.cpuid_min_level = cpu.cpuid_min_xlevel = 0
    cpu.apic_state = None
    cpu.mcg_cap = cpu.mcg_ctl = 0
    cpu.hyperv = False  # no Hyper-V enlightenments in pyqemu
    cpu.plus_features, cpu.minus_features = [], []
    with trace.span("x86_cpu_register_feature_bit_props"):
        x86_cpu_register_feature_bit_props(cpu)
    _register_instance_props(cpu)
    if xcc.model is not None:
        x86_cpu_load_model(cpu, xcc.model)


def x86_cpu_post_initfn(obj: Object) -> None:
    """Apply the ``-cpu`` options of this type (QEMU: global properties in device_post_init)."""
    cpu = obj
    assert isinstance(cpu, X86CPU)
    for opts in _options_for(cpu):
        for prop, value in opts.globals:
            cpu.property_set(prop, value)
        cpu.plus_features.extend(opts.plus)
        cpu.minus_features.extend(opts.minus)


# -- realize ----------------------------------------------------------------------------------


def _accel(cpu: X86CPU) -> Any:
    ms = cpu.machine
    accel = getattr(ms, "accel", None)
    if ms is None or accel is None:
        raise X86CPUError(f"{cpu.typename}: cannot realize without a machine and an "
                          "accelerator (set cpu.machine first)")
    return accel


def _host_identity(cpu: X86CPU, accel: Any) -> None:
    """The host's vendor, signature, brand and levels, from what KVM reports.

    KVM_GET_SUPPORTED_CPUID passes the host's leaf 0, leaf 1 EAX and brand string
    (8000_0002H-8000_0004H) through; /proc/cpuinfo is the fallback for each piece.
    """
    def reg(fn: int, r: str) -> int:
        v = accel.get_supported_cpuid(fn, 0, r)
        return int(v) if v is not None else 0

    info = _proc_cpuinfo()
    vendor = b"".join(reg(0, r).to_bytes(4, "little") for r in ("ebx", "edx", "ecx"))
    sig = reg(1, "eax")
    brand = b"".join(reg(fn, r).to_bytes(4, "little")
                     for fn in (0x80000002, 0x80000003, 0x80000004)
                     for r in ("eax", "ebx", "ecx", "edx")).rstrip(b"\0").decode("ascii", "replace")
    fam, model, step = (sig >> 8) & 0xF, (sig >> 4) & 0xF, sig & 0xF
    if fam == 0xF:
        fam += (sig >> 20) & 0xFF
    if fam in (6, 0xF) or fam > 0xF:
        model |= ((sig >> 16) & 0xF) << 4
    values = {
        "vendor": vendor.decode("ascii", "replace") if vendor.strip(b"\0")
        else info.get("vendor_id", ""),
        "family": fam if sig else int(info.get("cpu family", "0") or 0),
        "model": model if sig else int(info.get("model", "0") or 0),
        "stepping": step if sig else int(info.get("stepping", "0") or 0),
        "model-id": (brand or info.get("model name", "")).strip()[:48],
    }
    for name, value in values.items():
        if name not in cpu.user_props:
            setattr(cpu, _INSTANCE_PROPS[name].attr, value)
    cpu.cpuid_min_level = max(cpu.cpuid_min_level, min(reg(0, "eax"), 0xFF))
    xlevel = reg(0x80000000, "eax")
    if 0x80000000 <= xlevel <= 0x800000FF:
        cpu.cpuid_min_xlevel = max(cpu.cpuid_min_xlevel, xlevel)


def _proc_cpuinfo() -> dict[str, str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            text = f.read().split("\n\n", 1)[0]
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        out[k.strip()] = v.strip()
    return out


#: Flags a model loses unless the user asks for them (QEMU's ``kvm_default_props``):
#: neither accelerator offers nested SVM, ACPI thermal control or MONITOR/MWAIT to
#: a guest, so filtering them would only warn on every run.
ACCEL_DEFAULT_OFF = ("svm", "acpi", "monitor")


def _apply_accel_defaults(cpu: X86CPU, off: tuple[str, ...]) -> None:
    for w in cf.FEATURE_WORDS:
        user = cpu.user_features.get(w.word, 0)
        for bit, name in enumerate(w.names):
            if name in off and not user >> bit & 1:
                cpu.features[w.word] &= ~(1 << bit)


def x86_cpu_expand_features(cpu: X86CPU) -> None:
    """``x86_cpu_expand_features``: max/host take what the accelerator offers, then +f/-f,
    then the CPUID levels the enabled features need (unless ``level``/``xlevel`` were set).

    For ``max``/``host`` a word the accelerator limits becomes exactly what it can
    give (flags the user set explicitly are kept as set); a word it does not limit
    (None) keeps the model's starting value.
    """
    xcc = cpu.klass
    assert isinstance(xcc, X86CPUClass)
    accel = _accel(cpu)
    if xcc.max_features:
        if accel.name == "kvm":
            _host_identity(cpu, accel)
        for w in cf.FEATURE_WORDS:
            sup = accel.get_supported_cpuid(w.leaf, w.subleaf or 0, w.reg)
            if sup is None:
                continue
            named = sum(1 << b for b, n in enumerate(w.names) if n is not None)
            user = cpu.user_features.get(w.word, 0)
            cpu.features[w.word] = (sup & named & ~user) | (cpu.features[w.word] & user)
    else:
        _apply_accel_defaults(cpu, ACCEL_DEFAULT_OFF)
    for name in cpu.plus_features:
        cpu.property_set(name, True)
    for name in cpu.minus_features:
        cpu.property_set(name, False)
    level, xlevel = x86_cpu_min_levels(cpu)
    if cpu.cpuid_level is None:
        cpu.cpuid_level = level
    if cpu.cpuid_xlevel is None:
        cpu.cpuid_xlevel = xlevel


def x86_cpu_filtered_feature_names(cpu: X86CPU) -> list[str]:
    """The flags ``x86_cpu_filter_features`` dropped, by name (``-f`` for each gives
    another accelerator the very CPU this one got: the cross-checking tests use it)."""
    out = []
    for w in cf.FEATURE_WORDS:
        mask = cpu.filtered_features.get(w.word, 0)
        out += [n for b, n in enumerate(w.names) if n is not None and mask >> b & 1]
    return out


def _filter_label(w: cf.FeatureWordInfo, bit: int) -> str:
    return f"{w.label}.{w.names[bit] or 'bit'} [bit {bit}]"


def x86_cpu_filter_features(cpu: X86CPU, verbose: bool) -> list[str]:
    """``x86_cpu_filter_features``: drop the flags the accelerator cannot give.

    Each dropped flag is recorded in ``cpu.filtered_features`` and, if ``verbose``
    (``check`` or ``enforce``), reported as "<host|accel> doesn't support requested
    feature: CPUID.01H:ECX.sse4.2 [bit 20]".  Returns those labels.
    """
    accel = _accel(cpu)
    who = "host" if accel.name == "kvm" else accel.name
    dropped: list[str] = []
    for w in cf.FEATURE_WORDS:
        sup = accel.get_supported_cpuid(w.leaf, w.subleaf or 0, w.reg)
        if sup is None:
            continue
        have = cpu.features.get(w.word, 0)
        missing = have & ~sup
        if not missing:
            continue
        cpu.features[w.word] = have & sup
        cpu.filtered_features[w.word] = cpu.filtered_features.get(w.word, 0) | missing
        dropped += [_filter_label(w, bit) for bit in range(32) if missing >> bit & 1]
    if verbose and dropped:
        _report_filtered(cpu, who, dropped)
    return dropped


def _report_filtered(cpu: X86CPU, who: str, dropped: list[str]) -> None:
    """The filter warnings, once per machine (every vCPU of a machine has the same model).

    Under kvm one line per flag, as QEMU prints them; under interp, whose gaps
    are the same on every host (no x87/SSE yet), one line listing them all.
    """
    ms = getattr(cpu, "machine", None)
    seen: set[str] = getattr(ms, "_filter_warnings", set()) if ms is not None else set()
    if who != "interp":
        lines = [f"{who} doesn't support requested feature: {label}" for label in dropped]
    else:
        names = " ".join(label.split(".", 2)[-1].split(" ")[0] for label in dropped)
        lines = [f"{who} doesn't support requested features: {names}"]
    for line in lines:
        if line not in seen:
            report_warning(line)
            seen.add(line)
    if ms is not None:
        ms._filter_warnings = seen


def cpu_exec_realizefn(cs: X86CPU) -> None:
    """``cpu_exec_realizefn``: ``cpu_list_add``: give the CPU an index, list it in the machine."""
    with trace.span("cpu_exec_realizefn", cpu=cs.cpu_index):
        cpus = cs.machine.cpus
        if cs.cpu_index < 0:
            cs.cpu_index = max((c.cpu_index for c in cpus), default=-1) + 1
        if any(c is not cs and c.cpu_index == cs.cpu_index for c in cpus):
            raise X86CPUError(f"CPU index {cs.cpu_index} is already in use")
        if cs not in cpus:
            cpus.append(cs)


def cpu_exec_unrealizefn(cs: X86CPU) -> None:
    """``cpu_exec_unrealizefn``: ``cpu_list_remove``."""
    cpus = getattr(cs.machine, "cpus", None)
    if cpus is not None and cs in cpus:
        cpus.remove(cs)


def x86_cpu_apic_create(cpu: X86CPU) -> None:
    """``x86_cpu_apic_create``: the ``apic`` device as child ``lapic``, id = apic-id."""
    with trace.span("x86_cpu_apic_create", apic_id=cpu.apic_id):
        apic = object_new(TYPE_APIC)
        assert isinstance(apic, APICCommonState)
        object_property_add_child(cpu, "lapic", apic)
        object_unref(apic)
        apic.property_set("id", cpu.apic_id)
        apic.cpu = cpu
        cpu.apic_state = apic


def x86_cpu_apic_destroy(cpu: X86CPU) -> None:
    apic = cpu.apic_state
    if apic is not None:
        if apic.realized:
            object_property_set_bool(apic, "realized", False)
        object_unparent(apic)
        cpu.apic_state = None


def x86_cpu_apic_realize(cpu: X86CPU) -> None:
    """``x86_cpu_apic_realize``: realize the local APIC (its MMIO page comes with its model)."""
    with trace.span("x86_cpu_apic_realize", apic_id=cpu.apic_id):
        if cpu.apic_state is not None:
            object_property_set_bool(cpu.apic_state, "realized", True)


def mce_init(cpu: X86CPU) -> None:
    """``mce_init``: machine-check banks for family >= 6 models with both mce and mca.

    IA32_MCG_CAP = MCG_CTL_P | MCG_SER_P | 10 banks (Intel SDM vol. 3B, 15.3.1.1);
    MCG_CTL and each bank's CTL are all ones.  They survive reset (x86_cpu_reset
    writes them into ``env.msrs``).
    """
    with trace.span("mce_init", cpu=cpu.cpu_index):
        if ((cpu.cpuid_version >> 8) & 0xF) >= 6 and cpu.has_feature("mce") \
                and cpu.has_feature("mca"):
            cpu.mcg_cap = MCG_CTL_P | MCG_SER_P | MCE_BANKS_DEF
            cpu.mcg_ctl = (1 << 64) - 1
        else:
            cpu.mcg_cap = cpu.mcg_ctl = 0


_SNAPSHOT_FIELDS = ("features", "user_features", "filtered_features", "user_props",
                    "cpuid_vendor", "cpuid_family", "cpuid_model", "cpuid_stepping",
                    "cpuid_model_id", "cpuid_level", "cpuid_xlevel", "cpuid_min_level",
                    "cpuid_min_xlevel", "ucode_rev", "mcg_cap", "mcg_ctl", "cpu_index",
                    "nr_cores", "nr_threads", "stopped", "as_", "io_as", "accel_ops",
                    "halt_cond")


def x86_cpu_realizefn(dev: DeviceState) -> None:
    """``x86_cpu_realizefn``: QEMU's steps, in QEMU's order; on failure undo them all.

    x86_cpu_expand_features, x86_cpu_filter_features (+ check/enforce), phys-bits,
    cpu_exec_realizefn, x86_cpu_apic_create, mce_init, qemu_init_vcpu (the vCPU
    thread starts and waits), x86_cpu_apic_realize, cpu_reset, xcc.parent_realize
    (cpu_common_realizefn).  If a step raises, the steps done are undone in reverse
    (the vCPU thread is unplugged and joined) and the CPU's configuration is as it
    was before, so a failed realize leaves nothing behind.
    """
    cpu = dev
    assert isinstance(cpu, X86CPU)
    xcc = cpu.klass
    assert isinstance(xcc, X86CPUClass)
    snapshot = {k: copy.copy(getattr(cpu, k)) for k in _SNAPSHOT_FIELDS}
    undo: list[Callable[[], None]] = []
    with trace.span("x86_cpu_realizefn", cpu=cpu.cpu_index, type=cpu.typename):
        try:
            accel = _accel(cpu)
            if xcc.host_cpuid_required and accel.name != "kvm":
                raise HostCPUModelError(
                    f"CPU model '{xcc.name.removesuffix(X86_CPU_TYPE_SUFFIX)}': host CPU "
                    f"model requires KVM (accelerator is '{accel.name}')")
            if cpu.apic_id == UNASSIGNED_APIC_ID:
                raise X86CPUError(f"{cpu.typename}: apic-id property was not initialized "
                                  "properly")
            with trace.span("x86_cpu_expand_features"):
                x86_cpu_expand_features(cpu)
            with trace.span("x86_cpu_filter_features"):
                dropped = x86_cpu_filter_features(cpu, cpu.check_cpuid or cpu.enforce_cpuid)
                if cpu.enforce_cpuid and dropped:
                    who = "host" if accel.name == "kvm" else accel.name
                    raise FeatureFilterError(
                        f"{who} doesn't support requested features: {', '.join(dropped)}")
            if cpu.phys_bits and not 32 <= cpu.phys_bits <= 52:
                raise X86CPUError(
                    f"phys-bits should be between 32 and 52 (but is {cpu.phys_bits})")
            if cpu.ucode_rev == 0:
                # QEMU's defaults: an AMD patch level, an Intel revision in bits 63:32.
                cpu.ucode_rev = 0x01000065 if cpu.cpuid_vendor == "AuthenticAMD" else 1 << 32
            cpu_exec_realizefn(cpu)
            undo.append(lambda: cpu_exec_unrealizefn(cpu))
            smp_cpus = cpu.machine.smp.cpus
            if cpu.has_feature("apic") or smp_cpus > 1:
                x86_cpu_apic_create(cpu)
                undo.append(lambda: x86_cpu_apic_destroy(cpu))
            mce_init(cpu)
            undo.append(lambda: _vcpu_remove(cpu))  # also joins a half-started thread
            qemu_init_vcpu(cpu)
            x86_cpu_apic_realize(cpu)
            cpu_reset(cpu)
            assert xcc.parent_realize is not None
            xcc.parent_realize(dev)
        except BaseException:
            for step in reversed(undo):
                try:
                    step()
                except Exception as e:  # keep undoing; the first error is the one to raise
                    report_warning(f"while undoing a failed realize of CPU "
                                   f"{cpu.cpu_index}: {e}")
            for k, v in snapshot.items():
                setattr(cpu, k, v)
            raise


def _vcpu_remove(cpu: X86CPU) -> None:
    """Unplug and join the vCPU thread if one was started; make the CPU pluggable again."""
    if cpu.thread is not None:
        cpu_remove_sync(cpu)
    with qemu_global_mutex:
        cpu.unplug = False
        cpu.stop = False
        cpu.created = False


def x86_cpu_unrealizefn(dev: DeviceState) -> None:
    """``x86_cpu_unrealizefn``: unplug and join the vCPU thread, drop the APIC, unlist."""
    cpu = dev
    assert isinstance(cpu, X86CPU)
    xcc = cpu.klass
    assert isinstance(xcc, X86CPUClass)
    with trace.span("x86_cpu_unrealizefn", cpu=cpu.cpu_index):
        cpu_remove_sync(cpu)
        x86_cpu_apic_destroy(cpu)
        cpu_exec_unrealizefn(cpu)
        if xcc.parent_unrealize is not None:
            xcc.parent_unrealize(dev)


# -- reset and hooks ---------------------------------------------------------------------------


def x86_cpu_reset(cs: CPUState) -> None:
    """``x86_cpu_reset_hold``: the state after RESET (Intel SDM vol. 3A, 9.1.1, Table 9-1).

    ``x86_reset_state`` sets registers, segments and CR0 = 0x60000010; then EDX
    holds the processor signature (CPUID.01H:EAX), IA32_APIC_BASE is the default
    base, enabled, with the BSP flag on CPU 0 only; APs start halted, waiting for
    INIT/SIPI, as QEMU's do; the machine-check MSRs and IA32_UCODE_REV keep their
    configured values.  ``env`` changed, so the accelerator must push it before the
    vCPU runs again (``vcpu_dirty``).
    """
    cpu = cs
    assert isinstance(cpu, X86CPU)
    with qemu_global_mutex:
        env = cpu.env
        x86_reset_state(env)
        env.regs[R_EDX] = cpu.cpuid_version
        bsp = cpu.cpu_index == 0
        env.apic_base = APIC_DEFAULT_ADDRESS | MSR_IA32_APICBASE_ENABLE | (
            MSR_IA32_APICBASE_BSP if bsp else 0)
        if cpu.apic_state is not None:
            apic_reset_common(cpu.apic_state, bsp)
        env.misc_enable = 1  # MSR_IA32_MISC_ENABLE_DEFAULT: fast-string enable
        env.msrs[MSR_IA32_UCODE_REV] = cpu.ucode_rev
        if cpu.mcg_cap:
            env.msrs[MSR_MCG_CAP] = cpu.mcg_cap
            env.msrs[MSR_MCG_STATUS] = 0
            env.msrs[MSR_MCG_CTL] = cpu.mcg_ctl
            for bank in range(cpu.mcg_cap & 0xFF):
                env.msrs[MSR_MC0_CTL + 4 * bank] = (1 << 64) - 1
        cpu.halted = not bsp
        cpu.exception_index = -1
        cpu.vcpu_dirty = True


def x86_cpu_has_work(cs: CPUState) -> bool:
    """Whether a halted CPU has something to do: a pending interrupt it can take (IF=1).

    Until the APIC model exists, the only source is ``env.interrupt_pending``.
    """
    env = cs.env  # type: ignore[attr-defined]
    return bool(env.interrupt_pending >= 0 and env.eflags & IF_MASK)


def x86_cpu_dump_state(cs: CPUState) -> str:
    """``x86_cpu_dump_state``: the general registers, RIP, RFLAGS, segments, CRs."""
    env = cs.env  # type: ignore[attr-defined]
    from pyqemu.target.i386.cpu_state import REG_NAMES, SEG_NAMES
    lines = [" ".join(f"{REG_NAMES[i].upper()}={env.regs[i]:016x}" for i in range(j, j + 4))
             for j in range(0, 16, 4)]
    lines.append(f"RIP={env.rip:016x} RFL={env.eflags:08x} CPL={env.cpl} {env.mode_name}")
    for i, n in enumerate(SEG_NAMES):
        s = env.segs[i]
        lines.append(f"{n.upper()} ={s.selector:04x} {s.base:016x} {s.limit:08x} {s.flags:08x}")
    lines.append(" ".join(f"CR{i}={env.cr[i]:016x}" for i in (0, 2, 3, 4)))
    return "\n".join(lines)


# -- model lookup and -cpu help -----------------------------------------------------------------


def x86_cpu_class_by_name(model: str) -> ObjectClass | None:
    """``x86_cpu_class_by_name``: the class of ``-cpu model`` (``model-x86_64-cpu``), or None."""
    oc = object_class_by_name(X86_CPU_TYPE_NAME(model))
    if oc is None or oc.abstract or not oc.is_a(TYPE_X86_CPU):
        return None
    return oc


def x86_cpu_type_by_model(model: str) -> str:
    """The QOM type name for ``-cpu model``; :class:`UnknownCPUModelError` names a bad one."""
    oc = x86_cpu_class_by_name(model)
    if oc is None:
        raise UnknownCPUModelError(f"unable to find CPU model '{model}' (-cpu help lists them)")
    return oc.name


def _x86_cpu_classes() -> list[X86CPUClass]:
    out = [k for k in object_class_get_list(TYPE_X86_CPU) if isinstance(k, X86CPUClass)]
    return sorted(out, key=lambda k: (k.ordering, k.name))


def x86_cpu_list() -> str:
    """The text of ``-cpu help``: every model with its description, then the CPUID flags."""
    lines = ["Available CPUs:"]
    for k in _x86_cpu_classes():
        name = k.name.removesuffix(X86_CPU_TYPE_SUFFIX)
        lines.append(f"x86 {name:<24} {k.model_description}".rstrip())
    lines += ["", "Recognized CPUID flags:"]
    row = " "
    for flag in cf.feature_flag_list():
        if len(row) + 1 + len(flag) > 76:
            lines.append(row)
            row = " "
        row += " " + flag
    lines.append(row)
    return "\n".join(lines) + "\n"


# -- class init and type registration ---------------------------------------------------------


def x86_cpu_parse_features_hook(typename: str, features: str) -> None:
    x86_cpu_parse_featurestr(typename, features)


def x86_cpu_common_class_init(klass: ObjectClass, data: Any) -> None:
    """``x86_cpu_common_class_init``: chain realize/unrealize, hooks, static properties."""
    xcc = klass
    assert isinstance(xcc, X86CPUClass)
    dc: DeviceClass = xcc
    xcc.parent_realize = device_class_set_parent_realize(dc, x86_cpu_realizefn)
    xcc.parent_unrealize = device_class_set_parent_unrealize(dc, x86_cpu_unrealizefn)
    device_class_set_props(dc, X86_CPU_PROPERTIES)
    xcc.reset_hook = x86_cpu_reset
    xcc.has_work = x86_cpu_has_work
    xcc.dump_state = x86_cpu_dump_state
    xcc.class_by_name = x86_cpu_class_by_name
    xcc.parse_features = x86_cpu_parse_features_hook
    xcc.model = None
    xcc.host_cpuid_required = False
    xcc.max_features = False
    xcc.ordering = 0


def x86_cpu_cpudef_class_init(klass: ObjectClass, data: Any) -> None:
    """``x86_cpu_cpudef_class_init``: the class remembers its model definition."""
    xcc = klass
    assert isinstance(xcc, X86CPUClass) and isinstance(data, X86CPUDefinition)
    xcc.model = data
    xcc.model_description = model_description(data)


def x86_cpu_base_class_init(klass: ObjectClass, data: Any) -> None:
    xcc = klass
    assert isinstance(xcc, X86CPUClass)
    xcc.model = BASE_DEF
    xcc.model_description = BASE_DEF.description
    xcc.ordering = 8


def max_x86_cpu_class_init(klass: ObjectClass, data: Any) -> None:
    xcc = klass
    assert isinstance(xcc, X86CPUClass)
    xcc.model = MAX_DEF
    xcc.model_description = MAX_DEF.description
    xcc.max_features = True
    xcc.ordering = 9


def host_x86_cpu_class_init(klass: ObjectClass, data: Any) -> None:
    xcc = klass
    assert isinstance(xcc, X86CPUClass)
    xcc.model = HOST_DEF
    xcc.model_description = HOST_DEF.description
    xcc.host_cpuid_required = True
    xcc.ordering = 8


def x86_register_cpudef_types(d: X86CPUDefinition) -> None:
    """``x86_register_cpudef_types``: register ``<name>-x86_64-cpu`` for one model."""
    type_init(TypeInfo(name=X86_CPU_TYPE_NAME(d.name), parent=TYPE_X86_CPU,
                       class_init=x86_cpu_cpudef_class_init, class_data=d))


def x86_cpu_register_types() -> None:
    type_init(TypeInfo(
        name=TYPE_X86_CPU, parent=TYPE_CPU, abstract=True,
        instance_type=X86CPU, class_type=X86CPUClass,
        instance_init=x86_cpu_initfn, instance_post_init=x86_cpu_post_initfn,
        class_init=x86_cpu_common_class_init,
    ))
    for d in builtin_x86_defs:
        x86_register_cpudef_types(d)
    type_init(
        TypeInfo(name=X86_CPU_TYPE_NAME("max"), parent=TYPE_X86_CPU,
                 class_init=max_x86_cpu_class_init),
        TypeInfo(name=X86_CPU_TYPE_NAME("base"), parent=TYPE_X86_CPU,
                 class_init=x86_cpu_base_class_init),
        TypeInfo(name=X86_CPU_TYPE_NAME("host"), parent=X86_CPU_TYPE_NAME("max"),
                 class_init=host_x86_cpu_class_init),
    )


x86_cpu_register_types()
