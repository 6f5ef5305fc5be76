"""The KVM binding: every wrapper's error path, and real guests end to end.

Guests are assembled with keystone at test time.  Tests needing /dev/kvm, or a
capability the host lacks, skip with the reason (see kvm_support.kvm_usable).
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time

import pytest

from pyqemu.accel.kvm import kvm_abi as abi
from pyqemu.accel.kvm.binding import (
    CpuidEntry,
    Debug,
    FailEntry,
    Hlt,
    InternalError,
    Intr,
    IoIn,
    IoOut,
    Kvm,
    MmioRead,
    MmioWrite,
    Shutdown,
    SystemEvent,
    Unsupported,
    VcpuFd,
    VmFd,
    decode_exit,
)
from pyqemu.accel.kvm.errors import KvmError, KvmUnavailableError
from pyqemu.util.error import PyQemuError
from tests import host_behaviour
from tests.accel.kvm.kvm_support import asm, require_cap, setup_long_mode, setup_real_mode

ffi = abi.ffi

# --- errors ---------------------------------------------------------------------


def test_kvm_error_keeps_errno_and_names_the_ioctl():
    e = KvmError("KVM_CREATE_VCPU", errno.EEXIST)
    assert isinstance(e, OSError) and isinstance(e, PyQemuError)
    assert e.errno == errno.EEXIST
    assert e.ioctl == "KVM_CREATE_VCPU"
    assert str(e) == "KVM_CREATE_VCPU: [Errno 17] File exists"


def test_opening_a_missing_device_raises_kvm_unavailable_with_the_path():
    with pytest.raises(KvmUnavailableError) as info:
        Kvm("/nonexistent/kvm")
    assert info.value.errno == errno.ENOENT
    assert "open /nonexistent/kvm" in str(info.value)


SYSTEM_CALLS = {
    "KVM_GET_API_VERSION": lambda k: k.api_version(),
    "KVM_CHECK_EXTENSION": lambda k: k.check_extension(abi.KVM_CAP_IRQCHIP),
    "KVM_GET_VCPU_MMAP_SIZE": lambda k: k.get_vcpu_mmap_size(),
    "KVM_GET_SUPPORTED_CPUID": lambda k: k.get_supported_cpuid(),
    "KVM_GET_MSR_INDEX_LIST": lambda k: k.get_msr_index_list(),
    "KVM_CREATE_VM": lambda k: k.create_vm(),
}

VM_CALLS = {
    "KVM_SET_USER_MEMORY_REGION": lambda v: v.set_user_memory_region(0, 0, 0, 0x1000, 0),
    "KVM_CREATE_IRQCHIP": lambda v: v.create_irqchip(),
    "KVM_CREATE_PIT2": lambda v: v.create_pit2(),
    "KVM_SET_TSS_ADDR": lambda v: v.set_tss_addr(0xFFFBD000),
    "KVM_SET_IDENTITY_MAP_ADDR": lambda v: v.set_identity_map_addr(0xFFFBC000),
    "KVM_IRQ_LINE": lambda v: v.irq_line(4, 1),
    "KVM_CHECK_EXTENSION": lambda v: v.check_extension(abi.KVM_CAP_IRQCHIP),
    "KVM_CREATE_VCPU": lambda v: v.create_vcpu(0),
}

VCPU_CALLS = {
    "KVM_RUN": lambda c: c.run(),
    "KVM_GET_REGS": lambda c: c.get_regs(),
    "KVM_SET_REGS": lambda c: c.set_regs(ffi.new("struct kvm_regs *")),
    "KVM_GET_SREGS": lambda c: c.get_sregs(),
    "KVM_SET_SREGS": lambda c: c.set_sregs(ffi.new("struct kvm_sregs *")),
    "KVM_GET_FPU": lambda c: c.get_fpu(),
    "KVM_SET_FPU": lambda c: c.set_fpu(ffi.new("struct kvm_fpu *")),
    "KVM_GET_MSRS": lambda c: c.get_msrs([0x174]),
    "KVM_SET_MSRS": lambda c: c.set_msrs({0x174: 0}),
    "KVM_SET_CPUID2": lambda c: c.set_cpuid2([CpuidEntry(0)]),
    "KVM_GET_CPUID2": lambda c: c.get_cpuid2(),
    "KVM_GET_TSC_KHZ": lambda c: c.get_tsc_khz(),
    "KVM_SET_TSC_KHZ": lambda c: c.set_tsc_khz(1000000),
    "KVM_SET_GUEST_DEBUG": lambda c: c.set_guest_debug(abi.KVM_GUESTDBG_ENABLE),
    "KVM_GET_LAPIC": lambda c: c.get_lapic(),
    "KVM_SET_LAPIC": lambda c: c.set_lapic(bytes(abi.KVM_APIC_REG_SIZE)),
    "KVM_GET_MP_STATE": lambda c: c.get_mp_state(),
    "KVM_SET_MP_STATE": lambda c: c.set_mp_state(abi.KVM_MP_STATE_RUNNABLE),
    "KVM_INTERRUPT": lambda c: c.interrupt(0x20),
    "KVM_NMI": lambda c: c.nmi(),
}


def _assert_fails(call, obj, name, err):
    with pytest.raises(KvmError) as info:
        call(obj)
    assert info.value.errno == err
    assert info.value.ioctl == name
    assert str(info.value).startswith(f"{name}: [Errno {err}]")


@pytest.mark.parametrize("name", SYSTEM_CALLS)
def test_system_wrapper_on_closed_fd_raises_ebadf_naming_the_ioctl(kvm, name):
    kvm.close()
    _assert_fails(SYSTEM_CALLS[name], kvm, name, errno.EBADF)


@pytest.mark.parametrize("name", VM_CALLS)
def test_vm_wrapper_on_closed_fd_raises_ebadf_naming_the_ioctl(vm, name):
    vm.close()
    _assert_fails(VM_CALLS[name], vm, name, errno.EBADF)


@pytest.mark.parametrize("name", VM_CALLS)
def test_vm_wrapper_on_a_non_kvm_fd_raises_enotty(bad_fd, name):
    vm = VmFd(bad_fd, 0x3000)
    _assert_fails(VM_CALLS[name], vm, name, errno.ENOTTY)


@pytest.mark.parametrize("name", VCPU_CALLS)
def test_vcpu_wrapper_on_closed_fd_raises_ebadf_naming_the_ioctl(vm, name):
    vcpu = vm.create_vcpu(0)
    vcpu.close()
    _assert_fails(VCPU_CALLS[name], vcpu, name, errno.EBADF)


def test_vcpu_on_a_non_kvm_fd_fails_at_the_kvm_run_mmap(bad_fd):
    with pytest.raises(KvmError) as info:
        VcpuFd(bad_fd, 0x3000)
    assert info.value.ioctl == "mmap kvm_run"
    assert info.value.errno == errno.ENODEV


def test_system_wrapper_on_a_non_kvm_fd_raises_enotty(kvm, bad_fd):
    os.dup2(bad_fd, kvm.fileno())
    _assert_fails(SYSTEM_CALLS["KVM_GET_API_VERSION"], kvm, "KVM_GET_API_VERSION", errno.ENOTTY)


def test_kvm_run_fields_on_a_closed_vcpu_raise_ebadf(vm):
    vcpu = vm.create_vcpu(0)
    vcpu.close()
    with pytest.raises(KvmError) as info:
        vcpu.immediate_exit = 1
    assert info.value.errno == errno.EBADF


def test_creating_the_same_vcpu_twice_raises_eexist(vm):
    with vm.create_vcpu(0), pytest.raises(KvmError) as info:
        vm.create_vcpu(0)
    assert str(info.value) == "KVM_CREATE_VCPU: [Errno 17] File exists"


def test_close_is_idempotent_and_context_managers_close(kvm):
    with kvm.create_vm() as vm:
        with vm.create_vcpu(0) as vcpu:
            assert vcpu.fileno() >= 0
        assert vcpu.closed
        vcpu.close()
    assert vm.closed
    vm.close()
    kvm.close()
    kvm.close()
    assert kvm.closed


# --- system and VM queries -------------------------------------------------------------


def test_api_version_is_12(kvm):
    assert kvm.api_version() == abi.KVM_API_VERSION == 12


def test_vcpu_mmap_size_covers_kvm_run(kvm):
    assert kvm.get_vcpu_mmap_size() >= ffi.sizeof("struct kvm_run")


def test_supported_cpuid_has_leaf_0_and_reports_e2big_when_too_small(kvm):
    leaves = kvm.get_supported_cpuid()
    assert any(e.function == 0 for e in leaves)
    with pytest.raises(KvmError) as info:
        kvm.get_supported_cpuid(max_entries=1)
    assert info.value.errno == errno.E2BIG


def test_msr_index_list_includes_the_tsc(kvm):
    assert 0x10 in kvm.get_msr_index_list()  # IA32_TIME_STAMP_COUNTER


def test_check_extension_on_vm_fd_agrees_with_system_fd(kvm, vm):
    assert vm.check_extension(abi.KVM_CAP_USER_MEMORY) == kvm.check_extension(
        abi.KVM_CAP_USER_MEMORY
    )


def test_irqchip_pit_and_irq_line(kvm, vm):
    require_cap(kvm, "KVM_CAP_IRQCHIP")
    require_cap(kvm, "KVM_CAP_PIT2")
    vm.create_irqchip()
    vm.create_pit2(abi.KVM_PIT_SPEAKER_DUMMY)
    vm.irq_line(4, 1)
    vm.irq_line(4, 0)
    with vm.create_vcpu(0) as vcpu:
        lapic = vcpu.get_lapic()
        assert len(lapic) == abi.KVM_APIC_REG_SIZE
        vcpu.set_lapic(lapic)


def test_tss_and_identity_map_addresses_above_2g(kvm, vm):
    require_cap(kvm, "KVM_CAP_SET_TSS_ADDR")
    require_cap(kvm, "KVM_CAP_SET_IDENTITY_MAP_ADDR")
    vm.set_identity_map_addr(0xFEFFC000)
    vm.set_tss_addr(0xFEFFD000)


# --- vCPU state round trips ----------------------------------------------------------


def test_regs_sregs_fpu_round_trip(vm):
    with vm.create_vcpu(0) as vcpu:
        regs = vcpu.get_regs()
        regs.rax, regs.r15, regs.rip, regs.rflags = 0x1122334455667788, 7, 0x1234, 0x202
        vcpu.set_regs(regs)
        back = vcpu.get_regs()
        assert (back.rax, back.r15, back.rip, back.rflags) == (0x1122334455667788, 7, 0x1234, 0x202)

        sregs = vcpu.get_sregs()
        assert sregs.cs.selector == 0xF000  # after RESET (SDM vol. 3A, processor state after reset)
        sregs.ds.base = 0x12340
        sregs.ds.selector = 0x1234
        vcpu.set_sregs(sregs)
        assert vcpu.get_sregs().ds.base == 0x12340

        fpu = vcpu.get_fpu()
        fpu.fcw = 0x27F
        fpu.xmm[3][0] = 0xAB
        vcpu.set_fpu(fpu)
        back_fpu = vcpu.get_fpu()
        assert (back_fpu.fcw, back_fpu.xmm[3][0]) == (0x27F, 0xAB)


def test_msrs_round_trip_and_partial_reads(vm):
    with vm.create_vcpu(0) as vcpu:
        assert vcpu.set_msrs({0x174: 0x10, 0x175: 0x8000}) == 2  # SYSENTER_CS/ESP
        assert vcpu.get_msrs([0x174, 0x175]) == {0x174: 0x10, 0x175: 0x8000}
        # The kernel stops at the first MSR it does not know.
        assert vcpu.get_msrs([0x174, 0xDEAD0000, 0x175]) == {0x174: 0x10}


def test_cpuid2_round_trip(kvm, vm):
    supported = kvm.get_supported_cpuid()
    with vm.create_vcpu(0) as vcpu:
        vcpu.set_cpuid2(supported)
        got = vcpu.get_cpuid2()
    assert {(e.function, e.index) for e in got} == {(e.function, e.index) for e in supported}


def test_tsc_khz_is_reported(kvm, vm):
    require_cap(kvm, "KVM_CAP_GET_TSC_KHZ")
    with vm.create_vcpu(0) as vcpu:
        assert vcpu.get_tsc_khz() > 0


def test_mp_state_round_trip(kvm, vm):
    require_cap(kvm, "KVM_CAP_MP_STATE")
    vm.create_irqchip()
    with vm.create_vcpu(0) as vcpu:
        assert vcpu.get_mp_state() == abi.KVM_MP_STATE_RUNNABLE
        vcpu.set_mp_state(abi.KVM_MP_STATE_HALTED)
        assert vcpu.get_mp_state() == abi.KVM_MP_STATE_HALTED


# --- guests end to end ---------------------------------------------------------------------


def test_real_mode_out_then_hlt(vm, ram):
    ram.write(0x1000, asm("mov dx, 0x3f8; mov al, 0x41; out dx, al; hlt", 16, 0x1000))
    with vm.create_vcpu(0) as vcpu:
        setup_real_mode(vcpu, 0x1000)
        assert vcpu.run() == IoOut(0x3F8, 1, 1, b"A")
        assert vcpu.run() == Hlt()
        assert vcpu.get_regs().rip == 0x1000 + 7  # after HLT (5 + 1 + 1 bytes before it)


ARITH = """
    mov rax, 0x1234
    mov rbx, 0x10
    add rax, rbx
    imul rax, rax, 0x3
    mov rcx, 0x100
loop1:
    add rbx, rcx
    dec rcx
    jnz loop1
    mov dx, 0x3f8
    out dx, al
"""


@pytest.mark.parametrize("cpl", [0, 3])
def test_long_mode_from_set_sregs_runs_arithmetic_then_out(vm, ram, cpl):
    ram.write(0x10000, asm(ARITH, 64, 0x10000))
    with vm.create_vcpu(0) as vcpu:
        setup_long_mode(vcpu, ram, 0x10000, cpl)
        exit_ = vcpu.run()
        regs = vcpu.get_regs()
        sregs = vcpu.get_sregs()
    assert exit_ == IoOut(0x3F8, 1, 1, bytes([(0x1244 * 3) & 0xFF]))
    assert regs.rax == 0x1244 * 3
    assert regs.rbx == 0x10 + sum(range(1, 0x101))
    assert regs.rcx == 0
    assert sregs.cs.selector & 3 == cpl and sregs.cs.l == 1
    assert sregs.efer & 0x500 == 0x500


@pytest.mark.parametrize("cpl", [0, 3])
def test_mmio_read_and_write_exits_to_unmapped_address(vm, ram, cpl):
    src = """
        mov rbx, 0x1000000
        mov rax, qword ptr [rbx]
        mov dword ptr [rbx + 0x10], 0xcafe
        mov dx, 0x3f8
        out dx, al
    """
    ram.write(0x10000, asm(src, 64, 0x10000))
    with vm.create_vcpu(0) as vcpu:
        setup_long_mode(vcpu, ram, 0x10000, cpl)
        assert vcpu.run() == MmioRead(0x1000000, 8)
        vcpu.set_mmio_read_data(bytes(range(1, 9)))
        assert vcpu.run() == MmioWrite(0x1000010, (0xCAFE).to_bytes(4, "little"))
        assert vcpu.run() == IoOut(0x3F8, 1, 1, b"\x01")
        assert vcpu.get_regs().rax == 0x0807060504030201


def test_port_in_and_string_out(vm, ram):
    src = """
        mov dx, 0x60
        in al, dx
        mov rsi, 0x20000
        mov rcx, 0x4
        mov dx, 0xe9
        rep outsb
        out dx, al
    """
    ram.write(0x10000, asm(src, 64, 0x10000))
    ram.write(0x20000, b"kvm!")
    with vm.create_vcpu(0) as vcpu:
        setup_long_mode(vcpu, ram, 0x10000, 3)
        assert vcpu.run() == IoIn(0x60, 1, 1)
        with pytest.raises(ValueError):
            vcpu.set_io_in_data(b"too long")
        vcpu.set_io_in_data(b"\x5a")
        # rep outsb: KVM may split the string over several exits; collect them all.
        data = b""
        while len(data) < 4:
            e = vcpu.run()
            assert isinstance(e, IoOut) and e.port == 0xE9 and e.size == 1
            data += e.data
        assert data == b"kvm!"
        assert vcpu.run() == IoOut(0xE9, 1, 1, b"\x5a")


def test_set_io_in_data_after_a_non_io_exit_is_refused(vm, ram):
    ram.write(0x1000, asm("hlt", 16))
    with vm.create_vcpu(0) as vcpu:
        setup_real_mode(vcpu, 0x1000)
        assert vcpu.run() == Hlt()
        with pytest.raises(ValueError):
            vcpu.set_io_in_data(b"\x00")
        with pytest.raises(ValueError):
            vcpu.set_mmio_read_data(b"\x00")


def test_triple_fault_is_shutdown(vm, ram):
    # No IDT: #UD escalates to a triple fault.
    ram.write(0x10000, asm("ud2", 64))
    with vm.create_vcpu(0) as vcpu:
        setup_long_mode(vcpu, ram, 0x10000, 0)
        assert vcpu.run() == Shutdown()


def test_immediate_exit_makes_run_return_intr(kvm, vm, ram):
    require_cap(kvm, "KVM_CAP_IMMEDIATE_EXIT")
    ram.write(0x1000, asm("mov dx, 0x3f8; out dx, al; hlt", 16, 0x1000))
    with vm.create_vcpu(0) as vcpu:
        setup_real_mode(vcpu, 0x1000)
        vcpu.immediate_exit = 1
        assert vcpu.run() == Intr()
        assert vcpu.get_regs().rip == 0x1000  # the guest did not run
        vcpu.immediate_exit = 0
        assert isinstance(vcpu.run(), IoOut)


def test_signal_interrupts_a_blocked_kvm_run_from_another_thread(vm, ram):
    # A CPL3 endless loop runs natively; only a signal gets KVM_RUN back.
    ram.write(0x10000, asm("l: jmp l", 64, 0x10000))
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)  # handler: main thread only
    try:
        with vm.create_vcpu(0) as vcpu:
            setup_long_mode(vcpu, ram, 0x10000, 3)
            result: list[object] = []
            t = threading.Thread(target=lambda: result.append(vcpu.run()), name="CPU 0/KVM")
            t.start()
            deadline = time.monotonic() + 10
            # Kick until the thread returns: the first signal may land before KVM_RUN.
            while t.is_alive() and time.monotonic() < deadline:
                signal.pthread_kill(t.ident, signal.SIGUSR1)
                t.join(0.01)
            if t.is_alive():
                vcpu.immediate_exit = 1
                signal.pthread_kill(t.ident, signal.SIGUSR1)
                t.join(5)
            assert not t.is_alive()
            assert result == [Intr()]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def _skip_if_pvm_cannot(exit_, what: str) -> None:
    """KVM's PVM module (no VMX/SVM) cannot do some debug exits; skip only there (a
    VMX or SVM host must give KVM_EXIT_DEBUG: api.rst, KVM_SET_GUEST_DEBUG)."""
    if not isinstance(exit_, Debug) and host_behaviour.is_pvm():
        pytest.skip(f"host KVM ({host_behaviour.this_host()}) ends {what} in {exit_!r}, "
                    f"not KVM_EXIT_DEBUG")


@pytest.mark.parametrize("mode", ["real", "cpl0", "cpl3"])
def test_single_step_reports_one_debug_exit_per_instruction(kvm, vm, ram, mode):
    require_cap(kvm, "KVM_CAP_SET_GUEST_DEBUG")
    src = "nop; nop; nop; mov dx, 0x3f8; out dx, al"
    if mode == "real":
        ram.write(0x1000, asm(src, 16, 0x1000))
        base = 0x1000
    else:
        ram.write(0x10000, asm(src, 64, 0x10000))
        base = 0x10000
    with vm.create_vcpu(0) as vcpu:
        if mode == "real":
            setup_real_mode(vcpu, base)
        else:
            setup_long_mode(vcpu, ram, base, 0 if mode == "cpl0" else 3)
        vcpu.set_guest_debug(abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_SINGLESTEP)
        first = vcpu.run()
        _skip_if_pvm_cannot(first, f"single step at {mode}")
        second = vcpu.run()
        vcpu.set_guest_debug(0)
        rest = vcpu.run()
    assert (first.exception, first.pc) == (1, base + 1)  # #DB after the first nop
    assert isinstance(second, Debug) and second.pc == base + 2
    assert first.dr6 & (1 << 14)  # DR6.BS: single step
    assert isinstance(rest, IoOut)


@pytest.mark.parametrize("cpl", [0, 3])
def test_sw_breakpoint_reports_debug_exit_with_bp_vector(kvm, vm, ram, cpl):
    require_cap(kvm, "KVM_CAP_SET_GUEST_DEBUG")
    ram.write(0x10000, asm("nop; int3; nop", 64, 0x10000))
    with vm.create_vcpu(0) as vcpu:
        setup_long_mode(vcpu, ram, 0x10000, cpl)
        vcpu.set_guest_debug(abi.KVM_GUESTDBG_ENABLE | abi.KVM_GUESTDBG_USE_SW_BP)
        e = vcpu.run()
    _skip_if_pvm_cannot(e, f"int3 at CPL{cpl} with KVM_GUESTDBG_USE_SW_BP")
    assert e.exception == 3  # #BP
    assert e.pc == 0x10001


# --- decoding (a pure function over a hand-filled kvm_run) -----------------------------


def _run_with(reason: int):
    run = ffi.new("struct kvm_run *")
    run.exit_reason = reason
    return run


def test_decode_internal_error_fail_entry_system_event_and_unsupported():
    run = _run_with(abi.KVM_EXIT_INTERNAL_ERROR)
    run.internal.suberror = abi.KVM_INTERNAL_ERROR_EMULATION
    run.internal.ndata = 2
    run.internal.data[0], run.internal.data[1] = 7, 9
    assert decode_exit(run, ffi.buffer(run)) == InternalError(1, (7, 9))

    run = _run_with(abi.KVM_EXIT_FAIL_ENTRY)
    run.fail_entry.hardware_entry_failure_reason = 0x80000021
    run.fail_entry.cpu = 3
    assert decode_exit(run, ffi.buffer(run)) == FailEntry(0x80000021, 3)

    run = _run_with(abi.KVM_EXIT_SYSTEM_EVENT)
    run.system_event.type = abi.KVM_SYSTEM_EVENT_RESET
    run.system_event.flags = 5
    assert decode_exit(run, ffi.buffer(run)) == SystemEvent(2, 5)

    assert decode_exit(_run_with(abi.KVM_EXIT_INTR), b"") == Intr()
    assert decode_exit(_run_with(abi.KVM_EXIT_HYPERCALL), b"") == Unsupported(
        3, "KVM_EXIT_HYPERCALL"
    )
    assert decode_exit(_run_with(999), b"") == Unsupported(999, "KVM_EXIT_999")


def test_decode_string_io_out_reads_size_times_count_bytes():
    buf = ffi.new("char[]", 4096 + 64)
    run = ffi.cast("struct kvm_run *", buf)
    run.exit_reason = abi.KVM_EXIT_IO
    run.io.direction = abi.KVM_EXIT_IO_OUT
    run.io.size, run.io.count, run.io.port, run.io.data_offset = 2, 3, 0x1F0, 4096
    page = ffi.buffer(buf)
    page[4096:4102] = b"abcdef"
    assert decode_exit(run, page) == IoOut(0x1F0, 2, 3, b"abcdef")
