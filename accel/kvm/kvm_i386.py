"""The x86 half of the KVM accelerator: QEMU's ``target/i386/kvm/kvm.c``.

:mod:`pyqemu.accel.kvm.kvm_all` is the generic half (``kvm_init``, the vCPU
thread, ``kvm_cpu_exec``, memory slots, kicks, the exit dispatch); it calls
the ``kvm_arch_*`` hooks here for everything that depends on the architecture:

* ``kvm_arch_init``: the VMX real-mode helpers (KVM_SET_IDENTITY_MAP_ADDR,
  KVM_SET_TSS_ADDR) and the capabilities x86 requires;
* ``kvm_arch_vcpu_id`` and ``kvm_arch_init_vcpu``: the APIC id as vCPU id, the TSC
  frequency, the KVM_SET_CPUID2 table (``cpuid_entries_for_kvm``, the same
  ``cpu_x86_cpuid`` the interpreter answers CPUID with) and the MSR list;
* ``kvm_arch_get_supported_cpuid``: what KVM_GET_SUPPORTED_CPUID allows;
* ``kvm_arch_get_registers`` / ``kvm_arch_put_registers``: ``struct kvm_regs``,
  ``kvm_sregs``, ``kvm_fpu`` and the MSRs to and from ``CPUX86State``;
* ``kvm_arch_handle_exit``: the exits the generic loop leaves to x86 (HLT,
  KVM_EXIT_DEBUG, a failed VM entry, an exit pyqemu does not model);
* software breakpoints (INT3) and ``kvm_arch_update_guest_debug``.

It lives in ``accel`` rather than ``target``: it needs the binding, and
``target`` sits below ``accel``.  The ioctls are described in the kernel's
``Documentation/virt/kvm/api.rst`` (section numbers below are those of
recent kernels); the register layouts in the Intel SDM.

Threads: every function runs on the vCPU's own thread (KVM's vcpu ioctls
"should be issued from the same thread that was used to create the vcpu",
api.rst 1), or on the main thread while the vCPU is stopped, unless its
docstring says otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from pyqemu.accel.kvm import kvm_abi as abi
from pyqemu.accel.kvm.binding import (
    CpuidEntry,
    Debug,
    FailEntry,
    Hlt,
    Unsupported,
    VcpuExit,
    VcpuFd,
)
from pyqemu.accel.kvm.errors import KvmError, KvmExitError
from pyqemu.accel.ops import EXCP_DEBUG, EXCP_HLT, AccelError
from pyqemu.system.cpus import qemu_global_mutex
from pyqemu.target.i386 import cpu_state as cs
from pyqemu.target.i386.cpuid import cpuid_entries_for_kvm
from pyqemu.util import trace

if TYPE_CHECKING:
    from pyqemu.accel.kvm.kvm_all import KvmCpuState, KVMState
    from pyqemu.accel.ops import CPUState
    from pyqemu.system.memory import AddressSpace
    from pyqemu.target.i386.cpuid import X86CPU

__all__ = [
    "KVM_ARCH_REQUIRED_CAPABILITIES",
    "KVM_IDENTITY_BASE",
    "KVM_TSS_BASE",
    "get_seg",
    "kvm_arch_get_registers",
    "kvm_arch_get_supported_cpuid",
    "kvm_arch_handle_exit",
    "kvm_arch_init",
    "kvm_arch_init_vcpu",
    "kvm_arch_insert_sw_breakpoint",
    "kvm_arch_put_registers",
    "kvm_arch_remove_sw_breakpoint",
    "kvm_arch_update_guest_debug",
    "kvm_arch_vcpu_id",
    "kvm_cpuid_entries",
    "kvm_get_fpu",
    "kvm_get_msrs",
    "kvm_get_sregs",
    "kvm_getput_regs",
    "kvm_put_fpu",
    "kvm_put_msrs",
    "kvm_put_sregs",
    "set_seg",
    "set_v8086_seg",
    "vcpu_rip",
]

#: KVM_CHECK_EXTENSION results x86 insists on (QEMU's ``kvm_arch_required_capabilities``).
KVM_ARCH_REQUIRED_CAPABILITIES = (
    "KVM_CAP_EXT_CPUID",
    "KVM_CAP_SET_TSS_ADDR",
)

#: Where ``kvm_arch_init`` puts the pages KVM needs to run real mode under VMX (QEMU's
#: values, just below the BIOS): one page of identity map (api.rst 4.40
#: KVM_SET_IDENTITY_MAP_ADDR), then the three pages of the TSS (4.36 KVM_SET_TSS_ADDR).
KVM_IDENTITY_BASE = 0xFEFFC000
KVM_TSS_BASE = KVM_IDENTITY_BASE + 0x1000

#: MSRs carried between ``cpu.env`` and KVM (``kvm_put_msrs`` / ``kvm_get_msrs``), by
#: ``CPUX86State`` attribute; each only if the host lists it (KVM_GET_MSR_INDEX_LIST).
#: The order is the order of KVM_SET_MSRS, which stops at the first MSR it refuses.
_MSR_FIELDS = {
    cs.MSR_IA32_SYSENTER_CS: "sysenter_cs",
    cs.MSR_IA32_SYSENTER_ESP: "sysenter_esp",
    cs.MSR_IA32_SYSENTER_EIP: "sysenter_eip",
    cs.MSR_PAT: "pat",
    cs.MSR_STAR: "star",
    cs.MSR_LSTAR: "lstar",
    cs.MSR_CSTAR: "cstar",
    cs.MSR_FMASK: "fmask",
    cs.MSR_KERNELGSBASE: "kernelgsbase",
    cs.MSR_TSC_AUX: "tsc_aux",
    cs.MSR_IA32_MISC_ENABLE: "misc_enable",
}

#: CPUID.01H:ECX bit 31, "not used, always 0" on the processor (SDM vol. 2A, CPUID,
#: Table 3-10), which hypervisors set; KVM lets userspace set it in any table.
_CPUID_EXT_HYPERVISOR = 1 << 31

_INT3 = b"\xcc"  # SDM vol. 2A, "INT n/INTO/INT3/INT1": the one-byte breakpoint


def _kvm_state(cpu: CPUState) -> KVMState:
    """The machine's ``KVMState`` (QEMU's global ``kvm_state``).

    ``kvm_init_vcpu`` has checked that the machine's accelerator is KVM before any
    ``kvm_arch_*`` hook runs for ``cpu``.
    """
    state: KVMState = cpu.machine.accel
    return state


def _address_space(cpu: CPUState) -> AddressSpace:
    asp = cpu.as_
    assert asp is not None, "qemu_init_vcpu gives every vCPU its memory address space"
    return asp


# --- the VM -------------------------------------------------------------------------------


def kvm_arch_init(s: KVMState) -> None:
    """``kvm_arch_init`` (x86): reserve guest-physical pages for KVM's VMX real mode.

    Main thread, from ``kvm_init``, before any vCPU exists (KVM_SET_IDENTITY_MAP_ADDR
    "fails if any VCPU has already been created", api.rst 4.40).  KVM_SET_TSS_ADDR
    (4.36) is required on Intel hosts and harmless elsewhere.
    """
    with trace.span("kvm_arch_init"):
        if s.caps.get("KVM_CAP_SET_IDENTITY_MAP_ADDR"):
            s.vm.set_identity_map_addr(KVM_IDENTITY_BASE)
        s.vm.set_tss_addr(KVM_TSS_BASE)


def kvm_arch_get_supported_cpuid(s: KVMState, function: int, index: int, reg: str) -> int:
    """``kvm_arch_get_supported_cpuid``: the bits of CPUID.(function, index).``reg``
    that KVM_GET_SUPPORTED_CPUID (api.rst 4.46) allows, 0 for a leaf it does not list.

    An entry's index only counts when KVM flags it KVM_CPUID_FLAG_SIGNIFCANT_INDEX.
    CPUID.01H:ECX always allows the hypervisor bit, as in QEMU.  Main thread.
    """
    value = 0
    for e in s.supported_cpuid:
        if e.function != function:
            continue
        if e.flags & abi.KVM_CPUID_FLAG_SIGNIFCANT_INDEX and e.index != index:
            continue
        value = getattr(e, reg)
        break
    if function == 1 and reg == "ecx":
        value |= _CPUID_EXT_HYPERVISOR
    return value


# --- the vCPU -----------------------------------------------------------------------------


def kvm_arch_vcpu_id(cpu: CPUState) -> int:
    """``kvm_arch_vcpu_id``: on x86 the vCPU id is the APIC id (api.rst 4.7 KVM_CREATE_VCPU)."""
    apic_id = getattr(cpu, "apic_id", None)
    return int(apic_id) if apic_id is not None else int(cpu.cpu_index)


def kvm_arch_init_vcpu(cpu: CPUState) -> None:
    """``kvm_arch_init_vcpu`` (x86): TSC frequency, KVM_SET_CPUID2 from the CPU model, MSRs.

    vCPU thread, big lock held, from ``kvm_init_vcpu`` right after KVM_CREATE_VCPU.
    """
    s = _kvm_state(cpu)
    st: KvmCpuState = cpu.accel
    with trace.span("kvm_arch_init_vcpu", cpu=cpu.cpu_index):
        with trace.span("TSC"):
            if s.caps.get("KVM_CAP_GET_TSC_KHZ"):
                st.tsc_khz = st.vcpu.get_tsc_khz()
                trace.event("KVM_GET_TSC_KHZ", khz=st.tsc_khz)
        entries = kvm_cpuid_entries(cpu)
        with trace.span("KVM_SET_CPUID2", entries=len(entries)):
            st.vcpu.set_cpuid2(entries)
            st.cpuid = entries
        with trace.span("MSRs"):
            supported = [i for i in _MSR_FIELDS if i in s.msr_index_list]
            trace.event("kvm_init_msrs", count=len(supported))


def kvm_cpuid_entries(cpu: CPUState) -> list[CpuidEntry]:
    """The KVM_SET_CPUID2 table: the CPU model's ``cpuid_entries_for_kvm``, the same
    ``cpu_x86_cpuid`` that answers the interpreter's CPUID (``kvm_arch_init_vcpu``).

    A CPU without a model (a bare CPUState in the accelerator's own tests) gets the
    host's KVM_GET_SUPPORTED_CPUID as is.
    """
    if not hasattr(cpu, "cpuid_level") and not hasattr(cpu, "features"):
        trace.event("no CPU model CPUID: using KVM_GET_SUPPORTED_CPUID")
        return list(_kvm_state(cpu).supported_cpuid)
    return cpuid_entries_for_kvm(cast("X86CPU", cpu))


# --- registers: kvm_regs / kvm_sregs / MSRs / FPU <-> CPUX86State -------------------------

#: ``struct kvm_regs`` fields in ``CPUX86State.regs`` order (SDM vol. 2A, Table 2-2).
_KVM_GPRS = cs.REG_NAMES
#: ``struct kvm_sregs`` segments in ``CPUX86State.segs`` order (ES CS SS DS FS GS).
_KVM_SEGS = cs.SEG_NAMES

# Bit positions of D/B and L in SegmentCache.flags (cpu_state's DESC_B_MASK, DESC_L_MASK).
_DESC_L_SHIFT, _DESC_B_SHIFT = 21, 22

_U64 = (1 << 64) - 1
_F80 = (1 << 80) - 1
_U128 = (1 << 128) - 1


def get_seg(lhs: cs.SegmentCache, rhs: Any) -> None:
    """``struct kvm_segment`` ``rhs`` -> ``SegmentCache`` ``lhs`` (QEMU's ``get_seg``).

    The attribute bits go where the descriptor's high dword has them (SDM vol. 3A,
    3.4.5, Figure 3-8); an ``unusable`` segment (VMX's flag) reads as not present.
    """
    lhs.selector = rhs.selector
    lhs.base = rhs.base
    lhs.limit = rhs.limit
    lhs.flags = (
        (rhs.type << cs.DESC_TYPE_SHIFT)
        | (cs.DESC_P_MASK if rhs.present and not rhs.unusable else 0)
        | (rhs.dpl << cs.DESC_DPL_SHIFT)
        | (rhs.db << _DESC_B_SHIFT)
        | (cs.DESC_S_MASK if rhs.s else 0)
        | (rhs.l << _DESC_L_SHIFT)
        | (cs.DESC_G_MASK if rhs.g else 0)
        | (cs.DESC_AVL_MASK if rhs.avl else 0)
    )


def set_seg(lhs: Any, rhs: cs.SegmentCache) -> None:
    """``SegmentCache`` ``rhs`` -> ``struct kvm_segment`` ``lhs`` (QEMU's ``set_seg``).

    A segment that is not present is marked ``unusable``, as VMX wants it.
    """
    flags = rhs.flags
    lhs.selector = rhs.selector
    lhs.base = rhs.base
    lhs.limit = rhs.limit
    lhs.type = (flags >> cs.DESC_TYPE_SHIFT) & 15
    lhs.present = 1 if flags & cs.DESC_P_MASK else 0
    lhs.dpl = (flags >> cs.DESC_DPL_SHIFT) & 3
    lhs.db = 1 if flags & cs.DESC_B_MASK else 0
    lhs.s = 1 if flags & cs.DESC_S_MASK else 0
    lhs.l = 1 if flags & cs.DESC_L_MASK else 0
    lhs.g = 1 if flags & cs.DESC_G_MASK else 0
    lhs.avl = 1 if flags & cs.DESC_AVL_MASK else 0
    lhs.unusable = 0 if lhs.present else 1
    lhs.padding = 0


def set_v8086_seg(lhs: Any, rhs: cs.SegmentCache) -> None:
    """A segment in virtual-8086 mode (QEMU's ``set_v8086_seg``).

    Only selector, base and limit count; the attributes are fixed: a present,
    writable, accessed data segment at DPL 3, 16-bit, byte-granular, the access
    rights F3H that VM entry requires of every segment register in virtual-8086
    mode (SDM vol. 3C, "Checks on Guest Segment Registers").
    """
    lhs.selector = rhs.selector
    lhs.base = rhs.base
    lhs.limit = rhs.limit
    lhs.type, lhs.present, lhs.dpl, lhs.db, lhs.s = 3, 1, 3, 0, 1
    lhs.l = lhs.g = lhs.avl = lhs.unusable = lhs.padding = 0


def kvm_getput_regs(cpu: CPUState, set_: bool) -> None:
    """``kvm_getput_regs``: RAX-R15, RIP, RFLAGS through KVM_GET_REGS/KVM_SET_REGS
    (api.rst 4.11, 4.12) and ``struct kvm_regs``."""
    st: KvmCpuState = cpu.accel
    env = cpu.env
    if set_:
        regs = abi.ffi.new("struct kvm_regs *")
        for i, name in enumerate(_KVM_GPRS):
            setattr(regs, name, env.regs[i] & _U64)
        regs.rip = env.rip & _U64
        regs.rflags = env.eflags
        st.vcpu.set_regs(regs)
        return
    regs = st.vcpu.get_regs()
    for i, name in enumerate(_KVM_GPRS):
        env.regs[i] = getattr(regs, name)
    env.rip = regs.rip
    env.eflags = regs.rflags


def kvm_get_sregs(cpu: CPUState) -> None:
    """``kvm_get_sregs``: segments, descriptor tables, CR0-CR8, EFER and APIC base from
    KVM_GET_SREGS (api.rst 4.13)."""
    st: KvmCpuState = cpu.accel
    env = cpu.env
    sregs = st.vcpu.get_sregs()
    for i, name in enumerate(_KVM_SEGS):
        get_seg(env.segs[i], getattr(sregs, name))
    get_seg(env.ldt, sregs.ldt)
    get_seg(env.tr, sregs.tr)
    env.gdt.base, env.gdt.limit = sregs.gdt.base, sregs.gdt.limit
    env.idt.base, env.idt.limit = sregs.idt.base, sregs.idt.limit
    env.cr[0], env.cr[2], env.cr[3] = sregs.cr0, sregs.cr2, sregs.cr3
    env.cr[4], env.cr[8] = sregs.cr4, sregs.cr8
    env.efer = sregs.efer
    env.apic_base = sregs.apic_base


def kvm_put_sregs(cpu: CPUState) -> None:
    """``kvm_put_sregs``: KVM_SET_SREGS (api.rst 4.14) from ``cpu.env``.

    With EFLAGS.VM set the six segment registers take virtual-8086 attributes
    (:func:`set_v8086_seg`).  No interrupt is left pending in ``interrupt_bitmap``.
    """
    st: KvmCpuState = cpu.accel
    env = cpu.env
    sregs = abi.ffi.new("struct kvm_sregs *")
    setter = set_v8086_seg if env.eflags & cs.VM_MASK else set_seg
    for i, name in enumerate(_KVM_SEGS):
        setter(getattr(sregs, name), env.segs[i])
    set_seg(sregs.ldt, env.ldt)
    set_seg(sregs.tr, env.tr)
    sregs.gdt.base, sregs.gdt.limit = env.gdt.base, env.gdt.limit & 0xFFFF
    sregs.idt.base, sregs.idt.limit = env.idt.base, env.idt.limit & 0xFFFF
    sregs.cr0, sregs.cr2, sregs.cr3 = env.cr[0], env.cr[2], env.cr[3]
    sregs.cr4, sregs.cr8 = env.cr[4], env.cr[8]
    sregs.efer = env.efer
    sregs.apic_base = env.apic_base
    st.vcpu.set_sregs(sregs)


def kvm_get_msrs(cpu: CPUState) -> None:
    """``kvm_get_msrs``: the MSRs of ``_MSR_FIELDS`` the host lists, from KVM_GET_MSRS
    (api.rst 4.18)."""
    st: KvmCpuState = cpu.accel
    env = cpu.env
    msrs = _kvm_state(cpu).msr_index_list
    wanted = [i for i in _MSR_FIELDS if i in msrs]
    for index, value in st.vcpu.get_msrs(wanted).items():
        setattr(env, _MSR_FIELDS[index], value)


def kvm_put_msrs(cpu: CPUState) -> None:
    """``kvm_put_msrs``: KVM_SET_MSRS (api.rst 4.19), which sets MSRs in order and stops
    at the first it refuses; that one is named in an :class:`AccelError`."""
    st: KvmCpuState = cpu.accel
    env = cpu.env
    msrs = _kvm_state(cpu).msr_index_list
    values = {i: getattr(env, f) & _U64 for i, f in _MSR_FIELDS.items() if i in msrs}
    n = st.vcpu.set_msrs(values)
    if n != len(values):
        failed = list(values)[n]
        raise AccelError(f"kvm_put_msrs: KVM refused MSR {failed:#x} = {values[failed]:#x}")


def kvm_get_fpu(cpu: CPUState) -> None:
    """``kvm_get_fpu``: x87 and SSE state from KVM_GET_FPU (api.rst 4.22).

    ``struct kvm_fpu`` is FXSAVE's image (SDM vol. 1, 10.5.1, Table 10-2): each
    ``fpr`` slot holds an 80-bit register in its low 10 bytes, ``ftwx`` is the
    abridged tag byte.
    """
    st: KvmCpuState = cpu.accel
    env = cpu.env
    fpu = st.vcpu.get_fpu()
    env.fpu_fcw, env.fpu_fsw, env.fpu_ftw = fpu.fcw, fpu.fsw, fpu.ftwx
    for i in range(8):
        env.fpregs[i] = int.from_bytes(bytes(fpu.fpr[i])[:10], "little")
    for i in range(16):
        env.xmm[i] = int.from_bytes(bytes(fpu.xmm[i]), "little")
    env.mxcsr = fpu.mxcsr


def kvm_put_fpu(cpu: CPUState) -> None:
    """``kvm_put_fpu``: KVM_SET_FPU (api.rst 4.23) from ``cpu.env``; ``env.fpu_ftw`` is
    taken as the abridged (FXSAVE) tag byte."""
    st: KvmCpuState = cpu.accel
    env = cpu.env
    fpu = abi.ffi.new("struct kvm_fpu *")
    fpu.fcw, fpu.fsw, fpu.ftwx = env.fpu_fcw, env.fpu_fsw, env.fpu_ftw & 0xFF
    for i in range(8):
        abi.ffi.memmove(fpu.fpr[i], (env.fpregs[i] & _F80).to_bytes(10, "little"), 10)
    for i in range(16):
        abi.ffi.memmove(fpu.xmm[i], (env.xmm[i] & _U128).to_bytes(16, "little"), 16)
    fpu.mxcsr = env.mxcsr
    st.vcpu.set_fpu(fpu)


def kvm_arch_get_registers(cpu: CPUState) -> None:
    """``kvm_arch_get_registers``: KVM_GET_REGS/SREGS/MSRS/FPU into ``cpu.env``.

    The vCPU's own thread (or any thread while it is stopped and its fd open).
    """
    kvm_getput_regs(cpu, False)
    kvm_get_sregs(cpu)
    kvm_get_msrs(cpu)
    kvm_get_fpu(cpu)


def kvm_arch_put_registers(cpu: CPUState, level: int = 0) -> None:
    """``kvm_arch_put_registers``: ``cpu.env`` into KVM_SET_SREGS/REGS/MSRS/FPU.

    vCPU thread, before KVM_RUN when ``cpu.vcpu_dirty``.  ``level`` is QEMU's
    KVM_PUT_* level; every level puts the same state here.
    """
    # SREGS first: KVM_SET_SREGS may change how KVM interprets RIP/RFLAGS (mode).
    kvm_put_sregs(cpu)
    kvm_getput_regs(cpu, True)
    kvm_put_msrs(cpu)
    kvm_put_fpu(cpu)


# --- exits --------------------------------------------------------------------------------

def vcpu_rip(vcpu: VcpuFd) -> int:
    """The guest's RIP from KVM_GET_REGS, for an error message; -1 if it cannot be read."""
    try:
        return int(vcpu.get_regs().rip)
    except KvmError:
        return -1


def kvm_arch_handle_exit(cpu: CPUState, exit_: VcpuExit) -> int:
    """``kvm_arch_handle_exit`` (x86): the exits ``kvm_handle_exit`` does not handle itself.

    vCPU thread, big lock *not* held.  Returns 0 to re-enter the guest or the
    EXCP_* for ``kvm_cpu_exec`` to return:

    * KVM_EXIT_HLT (``kvm_handle_halt``, no in-kernel irqchip): ``cpu.halted``, EXCP_HLT;
    * KVM_EXIT_DEBUG (``kvm_handle_debug``): EXCP_DEBUG for the gdbstub's side;
    * KVM_EXIT_FAIL_ENTRY and an exit reason pyqemu does not model raise
      :class:`KvmExitError`, as QEMU stops the VM with "KVM: entry failed" /
      "unknown exit reason".
    """
    st: KvmCpuState = cpu.accel
    match exit_:
        case Hlt():
            with qemu_global_mutex:
                cpu.halted = True
            trace.event("KVM_EXIT_HLT: EXCP_HLT")
            return EXCP_HLT
        case Debug(pc=pc, exception=exc):
            trace.event("KVM_EXIT_DEBUG", pc=pc, exception=exc)
            return EXCP_DEBUG
        case FailEntry(reason=reason, cpu=hcpu):
            rip = vcpu_rip(st.vcpu)
            raise KvmExitError(
                f"KVM: entry failed, hardware error {reason:#x} (host cpu {hcpu}), rip={rip:#x}",
                exit_, rip)
        case Unsupported(reason_number=n, reason_text=text):
            rip = vcpu_rip(st.vcpu)
            raise KvmExitError(f"KVM: unhandled exit {text} ({n}), rip={rip:#x}", exit_, rip)
    raise AssertionError(f"unreachable: {exit_!r}")


# --- guest debugging ----------------------------------------------------------------------


def kvm_arch_insert_sw_breakpoint(cpu: CPUState, addr: int) -> bytes:
    """``kvm_arch_insert_sw_breakpoint``: put INT3 at guest-physical ``addr``; return
    the byte it replaced.  Main thread, vCPUs paused."""
    asp = _address_space(cpu)
    saved = asp.read_bytes(addr, 1)
    asp.write_bytes(addr, _INT3, force=True)
    return saved


def kvm_arch_remove_sw_breakpoint(cpu: CPUState, addr: int, saved: bytes) -> None:
    """``kvm_arch_remove_sw_breakpoint``: put back the byte INT3 replaced.  Main thread."""
    _address_space(cpu).write_bytes(addr, saved, force=True)


def kvm_arch_update_guest_debug(control: int, sw_breakpoints_active: bool) -> int:
    """``kvm_arch_update_guest_debug``: ``control`` with x86's KVM_GUESTDBG_* flags added.

    With software breakpoints inserted, KVM_GUESTDBG_USE_SW_BP makes the guest's #BP
    exit to userspace as KVM_EXIT_DEBUG (api.rst 4.87 KVM_SET_GUEST_DEBUG).  Any thread.
    """
    if sw_breakpoints_active:
        control |= abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_USE_SW_BP
    return control
