"""The kvm accelerator: kvm_init, memory slots, the vCPU thread's lifecycle and kvm_cpu_exec.

A minimal machine is built here by hand (RAM, a port I/O space with recording
devices, an MMIO device), so these tests depend on system/ and accel/ only,
not on a board.  Every wait has a timeout.
"""

from __future__ import annotations

import struct
import time
from types import SimpleNamespace

import pytest

from pyqemu.accel.kvm.binding import CpuidEntry, FailEntry, InternalError, Unsupported
from pyqemu.accel.kvm.errors import KvmError
from pyqemu.accel.kvm.kvm_all import (
    KvmExitError,
    KVMState,
    kvm_cpuid_entries,
    kvm_handle_exit,
    kvm_init,
)
from pyqemu.accel.ops import AccelError, accel_init, accel_list
from pyqemu.hw.core.cpu import TYPE_CPU, CPUState
from pyqemu.hw.core.machine import SMPConfig
from pyqemu.qom import TypeInfo, object_new, type_init
from pyqemu.system import cpus
from pyqemu.system.memory import AddressSpace, MemoryRegion
from pyqemu.system.runstate import RunControl, RunState
from pyqemu.target.i386 import cpu_state as cs
from pyqemu.util import trace
from tests.accel.kvm.kvm_support import GDT, GDT_ENTRIES, PD, PDPT, PML4, asm, kvm_usable

TIMEOUT = 20.0


@pytest.fixture(autouse=True)
def _need_kvm():
    ok, why = kvm_usable()
    if not ok:
        pytest.skip(why)


# --- a minimal machine ------------------------------------------------------------------


class _TestCPU(CPUState):
    env: cs.CPUX86State


def _test_cpu_init(obj) -> None:
    obj.env = cs.CPUX86State()
    cs.x86_reset_state(obj.env)


TYPE_TEST_CPU = "kvm-accel-test-cpu"
type_init(TypeInfo(name=TYPE_TEST_CPU, parent=TYPE_CPU, instance_type=_TestCPU,
                   instance_init=_test_cpu_init))


class Ports:
    """Port devices: records every access; 0x60 reads 0x5a; 0xf4 raises on write 0xff."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        self.log.append(("r", offset, size, 0x5A))
        return 0x5A

    def write(self, offset: int, value: int, size: int) -> None:
        self.log.append(("w", offset, size, value))
        if offset == 0xF4 and value == 0xFF:
            raise RuntimeError("device exploded on purpose")

    def output(self, port: int) -> bytes:
        return bytes(v for k, p, _, v in self.log if k == "w" and p == port)


class Mmio:
    def __init__(self) -> None:
        self.log: list[tuple[str, int, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        self.log.append(("r", offset, size, 0x11223344))
        return 0x11223344

    def write(self, offset: int, value: int, size: int) -> None:
        self.log.append(("w", offset, size, value))


class Machine(SimpleNamespace):
    pass


@pytest.fixture
def machine():
    ram = MemoryRegion.ram_new("pc.ram", 0x200000)
    sysmem = MemoryRegion.container_new("system", 1 << 32)
    sysmem.add_subregion(0, ram)
    mmio = Mmio()
    sysmem.add_subregion(0x1000000, MemoryRegion.io_new("test-mmio", 0x1000, mmio))
    iomem = MemoryRegion.container_new("io", 0x10000)
    ports = Ports()
    iomem.add_subregion(0, MemoryRegion.io_new("test-ports", 0x10000, ports))
    m = Machine(
        smp=SMPConfig(), ram=ram, ports=ports, mmio=mmio,
        address_space_memory=AddressSpace("memory", sysmem),
        address_space_io=AddressSpace("I/O", iomem, io=True),
        runctl=RunControl(), cpus=[],
    )
    m.accel = kvm_init(m)
    yield m
    for cpu in m.cpus:
        if cpu.thread is not None:
            cpus.cpu_remove_sync(cpu, timeout=TIMEOUT)
    m.accel.close()
    sysmem.close()


def make_cpu(m, index: int = 0) -> _TestCPU:
    cpu = object_new(TYPE_TEST_CPU)
    cpu.cpu_index = index
    cpu.machine = m
    # Set here rather than by qemu_init_vcpu: its traced cpu_address_space_init
    # passes name= to trace.span, which clashes with span's own parameter.
    cpu.as_ = m.address_space_memory
    cpu.io_as = m.address_space_io
    m.cpus.append(cpu)
    return cpu


def long_mode_env(m, env: cs.CPUX86State, rip: int, cpl: int) -> None:
    """Identity-mapped 64-bit mode written into cpu.env (kvm_arch_put_registers pushes it)."""
    view = m.ram.ram()
    user = 0x4 if cpl == 3 else 0
    view[PML4:PML4 + 8] = struct.pack("<Q", PDPT | 0x3 | user)
    view[PDPT:PDPT + 8] = struct.pack("<Q", PD | 0x3 | user)
    view[PD:PD + 4096] = b"".join(struct.pack("<Q", (i << 21) | 0x83 | user) for i in range(512))
    view[GDT:GDT + 8 * len(GDT_ENTRIES)] = b"".join(struct.pack("<Q", d) for d in GDT_ENTRIES)
    common = cs.DESC_P_MASK | cs.DESC_S_MASK | cs.DESC_G_MASK | cs.DESC_A_MASK | (
        cpl << cs.DESC_DPL_SHIFT)
    code = common | cs.DESC_CS_MASK | cs.DESC_R_MASK | cs.DESC_L_MASK
    data = common | cs.DESC_W_MASK | cs.DESC_B_MASK
    cs_sel, ds_sel = (0x08, 0x10) if cpl == 0 else (0x23, 0x1B)
    for i in range(6):
        env.segs[i] = cs.SegmentCache(ds_sel, 0, 0xFFFFFFFF, data)
    env.segs[cs.R_CS] = cs.SegmentCache(cs_sel, 0, 0xFFFFFFFF, code)
    env.gdt = cs.SegmentCache(0, GDT, 8 * len(GDT_ENTRIES) - 1, 0)
    env.cr[0] = cs.CR0_PE | cs.CR0_ET | cs.CR0_PG
    env.cr[3] = PML4
    env.cr[4] = cs.CR4_PAE
    env.efer = cs.EFER_LME | cs.EFER_LMA
    env.rip = rip
    env.regs[cs.R_ESP] = 0x80000
    env.eflags = 0x3002 if cpl == 3 else 0x2


def wait_for(pred, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def start(m, cpu) -> None:
    cpus.qemu_init_vcpu(cpu)
    m.runctl.state = RunState.RUNNING
    cpus.resume_all_vcpus([cpu])


def registers(m, cpu) -> cs.CPUX86State:
    cpus.pause_all_vcpus([cpu])
    with cpus.bql():
        m.accel.ops.synchronize_state(cpu)
    return cpu.env


# --- kvm_init and the registry ---------------------------------------------------------------


def test_kvm_init_names_a_missing_device():
    with pytest.raises(AccelError) as info:
        kvm_init(path="/nonexistent/kvm")
    assert str(info.value).startswith("Could not access KVM kernel module: No such file")


def test_kvm_is_registered_and_available():
    names = {n: why for n, _, why in accel_list()}
    assert "kvm" in names and names["kvm"] is None


def test_accel_init_builds_a_kvm_state():
    state = accel_init("kvm", None)
    try:
        assert isinstance(state, KVMState) and state.ops.name == "kvm"
        assert state.get_supported_cpuid(1, 0, "ecx") & (1 << 31)  # hypervisor bit
    finally:
        state.close()
        state.close()  # idempotent


def test_ram_regions_become_memory_slots_and_follow_topology(machine):
    state = machine.accel
    assert [(gpa, size) for _, gpa, size, _ in state.slots] == [(0, 0x200000)]
    extra = MemoryRegion.ram_new("extra", 0x10000)
    root = machine.address_space_memory.root
    root.add_subregion(0x400000, extra)
    assert [(gpa, size) for _, gpa, size, _ in state.slots] == [(0, 0x200000), (0x400000, 0x10000)]
    root.del_subregion(extra)
    assert [(gpa, size) for _, gpa, size, _ in state.slots] == [(0, 0x200000)]
    extra.close()


# --- the vCPU thread end to end ---------------------------------------------------------------

GUEST = """
    mov rax, 0x1234
    mov dx, 0x3f8
    mov al, 0x48
    out dx, al
    mov al, 0x69
    out dx, al
    mov dx, 0x60
    in al, dx
    mov rbx, rax
    mov rsi, 0x20000
    mov rcx, 0x3
    mov dx, 0x3f8
    rep outsb
    mov rdi, 0x1000000
    mov dword ptr [rdi], 0xcafe
    mov eax, dword ptr [rdi + 0x4]
    hlt
"""


def test_vcpu_lifecycle_runs_io_mmio_and_halts_then_unplugs(machine):
    lines: list[str] = []
    sink = trace.add_sink({"lifecycle"}, lines.append)
    try:
        machine.ram.ram()[0x10000:0x10000 + 256] = asm(GUEST, 64, 0x10000).ljust(256, b"\0")
        machine.ram.ram()[0x20000:0x20003] = b"kvm"
        cpu = make_cpu(machine)
        long_mode_env(machine, cpu.env, 0x10000, 0)
        start(machine, cpu)
        assert cpu.thread.name == "CPU 0/KVM" and cpu.created
        wait_for(lambda: cpu.halted, "HLT")
        env = registers(machine, cpu)
        assert machine.ports.output(0x3F8) == b"Hikvm"
        assert ("r", 0x60, 1, 0x5A) in machine.ports.log
        assert machine.mmio.log == [("w", 0, 4, 0xCAFE), ("r", 4, 4, 0x11223344)]
        assert env.regs[cs.R_EBX] == 0x125A  # 0x1234 with AL replaced by the IN
        assert env.regs[cs.R_EAX] == 0x11223344
        assert env.rip == 0x10000 + len(asm(GUEST, 64, 0x10000))
        assert env.mode_name == "long64"
        cpus.cpu_remove_sync(cpu, timeout=TIMEOUT)
        assert not cpu.created and cpu.accel.vcpu.closed
    finally:
        trace.remove_sink(sink)
    text = "\n".join(lines)
    order = ["kvm_init_vcpu", "KVM_CREATE_VCPU", "KVM_GET_VCPU_MMAP_SIZE", "mmap kvm_run",
             "kvm_arch_init_vcpu", "KVM_SET_CPUID2", "kvm_init_cpu_signals", "created = true",
             "kvm_cpu_exec", "KVM_EXIT_HLT", "kvm_destroy_vcpu"]
    positions = [text.find(step) for step in order]
    assert -1 not in positions, dict(zip(order, positions, strict=True))
    assert positions == sorted(positions)
    assert all(("CPU 0/KVM]" in line) for line in lines if "kvm_init_vcpu" in line)


def test_kick_interrupts_a_guest_spinning_in_user_mode(machine):
    machine.ram.ram()[0x10000:0x10002] = asm("l: jmp l", 64, 0x10000)
    cpu = make_cpu(machine)
    long_mode_env(machine, cpu.env, 0x10000, 3)
    start(machine, cpu)
    time.sleep(0.05)  # let it enter KVM_RUN
    t0 = time.monotonic()
    env = registers(machine, cpu)  # pause_all_vcpus kicks: signal + immediate_exit
    # A hang guard, not a speed figure: the kick returned, within the file's TIMEOUT.
    assert time.monotonic() - t0 < TIMEOUT
    assert env.rip == 0x10000 and env.cpl == 3


def test_env_written_while_paused_is_pushed_before_the_next_run(machine):
    src = "mov dx, 0x3f8; out dx, al; out dx, al; hlt"
    machine.ram.ram()[0x10000:0x10000 + 16] = asm(src, 64, 0x10000).ljust(16, b"\0")
    machine.ports.log.clear()
    cpu = make_cpu(machine)
    long_mode_env(machine, cpu.env, 0x10000, 0)
    cpu.env.regs[cs.R_EAX] = 0x41
    start(machine, cpu)
    wait_for(lambda: cpu.halted, "HLT")
    assert machine.ports.output(0x3F8) == b"AA"
    env = registers(machine, cpu)
    env.regs[cs.R_EAX] = 0x42
    env.rip = 0x10000
    with cpus.bql():
        cpu.halted = False
        assert cpu.vcpu_dirty
    cpus.resume_all_vcpus([cpu])
    wait_for(lambda: len(machine.ports.output(0x3F8)) == 4, "two more OUTs")
    assert machine.ports.output(0x3F8) == b"AABB"


def test_triple_fault_requests_a_reset(machine):
    machine.ram.ram()[0x10000:0x10002] = asm("ud2", 64)
    cpu = make_cpu(machine)
    long_mode_env(machine, cpu.env, 0x10000, 0)
    start(machine, cpu)
    wait_for(lambda: machine.runctl.reset_requested, "reset request")
    cpus.pause_all_vcpus([cpu])


def test_exception_in_a_device_callback_stops_the_vm_and_reaches_runctl(machine):
    machine.ram.ram()[0x10000:0x10010] = asm("mov al, 0xff; out 0xf4, al; hlt", 64).ljust(16, b"\0")
    cpu = make_cpu(machine)
    long_mode_env(machine, cpu.env, 0x10000, 0)
    start(machine, cpu)
    wait_for(lambda: machine.runctl.error is not None, "the error")
    assert isinstance(machine.runctl.error, RuntimeError)
    cpu.thread.join(TIMEOUT)
    assert not cpu.thread.is_alive()
    assert cpu.accel.vcpu.closed  # destroyed even on failure


def test_two_vcpus_run_in_parallel_threads(machine):
    # Each CPU writes its own port; both spin natively afterwards, then pause.
    for idx, port in ((0, 0x80), (1, 0x81)):
        base = 0x10000 + idx * 0x1000
        src = f"mov dx, {port:#x}; mov al, {0x30 + idx:#x}; out dx, al; l: jmp l"
        code = asm(src, 64, base)
        machine.ram.ram()[base:base + len(code)] = code
    machine.smp = SMPConfig(cpus=2, cores=2, maxcpus=2)
    cpu_list = [make_cpu(machine, i) for i in range(2)]
    for i, cpu in enumerate(cpu_list):
        long_mode_env(machine, cpu.env, 0x10000 + i * 0x1000, 3)
        cpus.qemu_init_vcpu(cpu)
    machine.runctl.state = RunState.RUNNING
    cpus.resume_all_vcpus(cpu_list)
    wait_for(lambda: machine.ports.output(0x80) and machine.ports.output(0x81), "both OUTs")
    cpus.pause_all_vcpus(cpu_list)
    assert {c.thread.name for c in cpu_list} == {"CPU 0/KVM", "CPU 1/KVM"}


# --- exit handling as a pure function ----------------------------------------------------------


class _FakeVcpu:
    closed = False

    def get_regs(self):
        raise KvmError("KVM_GET_REGS", 9)


def _fake_cpu():
    return SimpleNamespace(accel=SimpleNamespace(vcpu=_FakeVcpu()), cpu_index=0)


@pytest.mark.parametrize("exit_,text", [
    (InternalError(1, (0x1, 0x2)), "KVM internal error. Suberror: 1 (emulation failure)"),
    (FailEntry(0x80000021, 2), "KVM: entry failed, hardware error 0x80000021"),
    (Unsupported(3, "KVM_EXIT_HYPERCALL"), "KVM: unhandled exit KVM_EXIT_HYPERCALL (3)"),
])
def test_exits_the_loop_cannot_continue_from_raise_kvm_exit_error(exit_, text):
    with pytest.raises(KvmExitError) as info:
        kvm_handle_exit(_fake_cpu(), exit_)
    assert str(info.value).startswith(text)
    assert info.value.exit == exit_


def test_cpuid_table_is_the_cpu_models_own():
    """KVM_SET_CPUID2 gets exactly the model's table (one CPUID source for both accelerators)."""
    import pyqemu.hw.i386.cpu  # noqa: F401  registers the models
    from pyqemu.qom import object_new, object_unref
    from pyqemu.target.i386.cpuid import cpuid_entries_for_kvm

    cpu = object_new("qemu64-x86_64-cpu")
    try:
        entries = kvm_cpuid_entries(cpu)
        assert [(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx) for e in entries] == \
            [tuple(e) for e in cpuid_entries_for_kvm(cpu)]
        assert all(isinstance(e, CpuidEntry) for e in entries)
        keys = [(e.function, e.index) for e in entries]
        assert (0, 0) in keys and (0x80000001, 0) in keys
    finally:
        object_unref(cpu)


def test_real_mode_from_the_reset_state(machine):
    code = asm("mov dx, 0x3f8; mov al, 0x41; out dx, al; hlt", 16, 0x1000)
    machine.ram.ram()[0x1000:0x1000 + len(code)] = code
    cpu = make_cpu(machine)  # env is x86_reset_state's: CS=f000 base ffff0000
    cpu.env.segs[cs.R_CS] = cs.SegmentCache(0, 0, 0xFFFF, cpu.env.segs[cs.R_CS].flags)
    cpu.env.rip = 0x1000
    start(machine, cpu)
    wait_for(lambda: cpu.halted, "HLT")
    env = registers(machine, cpu)
    assert machine.ports.output(0x3F8) == b"A"
    assert env.mode_name == "real" and env.rip == 0x1000 + len(code)
    assert env.segs[cs.R_DS].limit == 0xFFFF


def test_single_step_stops_the_vcpu_with_a_debug_request(machine):
    code = asm("nop; nop; hlt", 16, 0x1000)
    machine.ram.ram()[0x1000:0x1000 + len(code)] = code
    cpu = make_cpu(machine)
    cpu.env.segs[cs.R_CS] = cs.SegmentCache(0, 0, 0xFFFF, cpu.env.segs[cs.R_CS].flags)
    cpu.env.rip = 0x1000
    cpus.qemu_init_vcpu(cpu)
    ops = machine.accel.ops
    assert ops.supports_guest_debug()
    with cpus.bql():
        cpu.singlestep_enabled = True
        ops.update_guest_debug(cpu)
    machine.runctl.state = RunState.RUNNING
    cpus.resume_all_vcpus([cpu])
    wait_for(lambda: machine.runctl.debug_requested, "the debug request")
    env = registers(machine, cpu)
    assert env.rip == 0x1001  # one instruction executed
