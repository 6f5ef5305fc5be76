"""The interp accelerator seen from the machine: registration, CPUID limits, the vCPU
thread's lifecycle and trace, HLT, breakpoints and triple faults through ``Machine``."""

from __future__ import annotations

import pytest

import pyqemu.accel.interp  # noqa: F401  (registers the accelerator)
from pyqemu import Machine
from pyqemu.accel.interp.accel_ops import (
    INTERP_FEATURES,
    SUPPORTED,
    InterpAccelOps,
    InterpAccelState,
)
from pyqemu.accel.ops import AccelError, accel_list
from pyqemu.util import trace


def test_registered_with_description() -> None:
    entries = {name: (desc, why) for name, desc, why in accel_list()}
    assert entries["interp"] == ("pure-Python x86 interpreter (TCG-style, capstone decoder)", None)


def test_cpuid_mask_from_feature_names_is_the_mask_of_before() -> None:
    # The mask as it was written bit by bit before it was built from feature names:
    # leaf 1 EDX PSE(3) TSC(4) MSR(5) PAE(6) CX8(8) APIC(9) PGE(13) CMOV(15) PAT(16)
    # CLFLUSH(19); ECX CX16(13) POPCNT(23) hypervisor(31); 80000001H EDX SYSCALL(11)
    # NX(20) RDTSCP(27) LM(29); ECX LAHF/SAHF(0).
    assert SUPPORTED == {
        (1, "edx"): 0x0009A378, (1, "ecx"): 0x80802000,
        (7, "ebx"): 0, (7, "ecx"): 0, (7, "edx"): 0,
        (0xD, "eax"): 0, (0xD, "edx"): 0,
        (0x80000001, "edx"): 0x28100800, (0x80000001, "ecx"): 0x00000001,
    }
    assert len(set(INTERP_FEATURES)) == len(INTERP_FEATURES) == 18


def test_supported_cpuid_is_what_the_interpreter_implements() -> None:
    st = InterpAccelState(None)
    edx1 = st.get_supported_cpuid(1, 0, "edx")
    assert edx1 is not None
    assert not edx1 & 1                         # no x87 FPU
    assert edx1 & (1 << 15) and edx1 & (1 << 4)  # CMOV, TSC
    assert not edx1 & (1 << 25)                 # no SSE
    ecx1 = st.get_supported_cpuid(1, 0, "ecx")
    assert ecx1 is not None
    assert ecx1 & (1 << 23) and not ecx1 & 1                       # POPCNT, no SSE3
    ext = st.get_supported_cpuid(0x80000001, 0, "edx")
    assert ext is not None
    assert ext & (1 << 29) and ext & (1 << 11)                     # LM, SYSCALL
    assert st.get_supported_cpuid(0, 0, "ebx") is None             # vendor: no limit
    with pytest.raises(AccelError, match="unknown CPUID register 'esp'"):
        st.get_supported_cpuid(1, 0, "esp")


def test_machine_runs_on_an_interp_vcpu_thread() -> None:
    lines: list[str] = []
    sink = trace.add_sink({"lifecycle"}, lines.append)
    try:
        with Machine(accel="interp", memory="16M") as m:
            m.load_asm("mov ax, 0x1234\nmov bx, ax\nhlt", 0x7C00, "real")
            result = m.run(timeout=20)
            assert result.reason == "halted"
            assert m.reg_read("bx") == 0x1234
    finally:
        trace.remove_sink(sink)
    init = [line for line in lines if "interp_init_vcpu" in line]
    assert init and "CPU 0/INTERP" in init[0]
    assert any("interp_destroy_vcpu" in line for line in lines)


def test_breakpoint_stops_the_machine_for_the_debugger() -> None:
    with Machine(accel="interp", memory="16M") as m:
        m.load_asm("mov ax, 0x1\nmov ax, 0x2\nhlt", 0x7C00, "real")
        cpu = m.cpu(0)
        ops = cpu.accel_ops
        assert isinstance(ops, InterpAccelOps) and ops.supports_guest_debug()
        ops.insert_breakpoint(cpu, 0, 0x7C03, 1)
        assert m.run(timeout=20).reason == "debug"
        assert m.reg_read("ip") == 0x7C03 and m.reg_read("ax") == 1
        ops.remove_breakpoint(cpu, 0, 0x7C03, 1)
        with pytest.raises(AccelError, match="no breakpoint at 0x7c03"):
            ops.remove_breakpoint(cpu, 0, 0x7C03, 1)
        assert m.run(timeout=20).reason == "halted"
        assert m.reg_read("ax") == 2


def test_machine_single_step_runs_one_instruction_per_step() -> None:
    with Machine(accel="interp", memory="16M") as m:
        m.load_asm("mov ax, 0x1\nadd ax, ax\nadd ax, ax\nhlt", 0x7C00, "real")
        for ip, ax in ((0x7C03, 1), (0x7C05, 2), (0x7C07, 4)):
            assert m.step().reason == "debug"
            assert (m.reg_read("ip"), m.reg_read("ax")) == (ip, ax)
        assert m.run(timeout=20).reason == "halted"


def test_cpu_exec_of_a_halted_vcpu_returns_halted_at_once() -> None:
    from pyqemu.accel.ops import EXCP_HALTED
    from pyqemu.system.cpus import qemu_global_mutex
    with Machine(accel="interp", memory="16M") as m:
        m.load_asm("hlt", 0x7C00, "real")
        assert m.run(timeout=20).reason == "halted"
        cpu = m.cpu(0)
        assert cpu.halted
        with qemu_global_mutex:
            assert cpu.accel_ops.cpu_exec(cpu) == EXCP_HALTED
        assert m.reg_read("ip") == 0x7C01
