"""The conformance suite: every guest program of ``tests/guests`` on both accelerators.

Each guest runs on interp and on kvm (the hardware, where this host runs the
mode); each run must give the serial output and exit status the guest declares,
and the two runs must end in the same architectural state: general registers,
RIP, RFLAGS, segment selectors, the low 2 MiB of RAM, and the same sequence of
port and MMIO accesses.  When they differ, the hardware is right.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pyqemu import Machine
from pyqemu.images import GuestProgram
from tests import host_behaviour
from tests.support import GUEST_DIR, kvm_cpuid_leaf1_passthrough, require_accel

GUESTS = sorted(GUEST_DIR.glob("*.s"))
DEBUG_EXIT = "isa-debug-exit,iobase=0xf4,iosize=0x04"
# RFLAGS bits compared: the arithmetic flags, DF, IF, TF and IOPL (RF and the
# virtualisation bits are the accelerator's business, not the guest's).
RFLAGS_MASK = 0x8D5 | 0x100 | 0x200 | 0x400 | 0x3000
COMPARED_RAM = 2 << 20


@dataclasses.dataclass
class Outcome:
    serial: bytes
    reason: str
    exit_code: int | None
    regs: dict[str, int]
    ram: bytes
    io: list[tuple[str, int, int, int, bool]]
    filtered: list[str]
    cause: str | None = None


def run_guest(prog: GuestProgram, accel: str, tmp_path: Path, cpu: str | None = None) -> Outcome:
    """Boot ``prog`` the way its mode says and collect everything the suite compares."""
    kwargs: dict[str, object] = {"cpu": cpu}
    if prog.mode in ("bios", "multiboot"):
        image = tmp_path / f"{prog.name}.{accel}.img"
        image.write_bytes(prog.image())
        kwargs["bios" if prog.mode == "bios" else "kernel"] = str(image)
    io: list[tuple[str, int, int, int, bool]] = []
    if accel == "kvm" and "kvm" in prog.meta:
        # The guest names something this host's KVM may refuse (``#! kvm: what``): a
        # triple fault ends the run instead of a reboot, and is a skip with that reason.
        kwargs["no_reboot"] = True
    try:
        out = _run(prog, accel, kwargs, io)
        if accel == "kvm" and "kvm" in prog.meta and out.cause == "guest-reset":
            pytest.skip(f"this host's KVM cannot run {prog.name} ({prog.meta['kvm']}): "
                        f"triple fault, rip={out.regs['rip']:#x} cs={out.regs['cs']:#x}")
        return out
    except Exception as e:
        # KVM without unrestricted guest (PVM here) runs real mode through its own
        # instruction emulator, which lacks a few instructions: the host cannot be
        # the oracle for those guests, which is a skip, not a pass.
        if accel == "kvm" and "emulation failure" in str(e):
            pytest.skip(f"this host's KVM cannot run {prog.name}: {e}")
        raise


def _run(prog: GuestProgram, accel: str, kwargs: dict[str, object],
         io: list[tuple[str, int, int, int, bool]]) -> Outcome:
    with Machine(accel=accel, memory="32M", devices=[DEBUG_EXIT], **kwargs) as m:  # type: ignore[arg-type]
        if prog.mode not in ("bios", "multiboot"):
            m.load_asm(prog.source, prog.load, mode=prog.mode)
        m.hook_add_io(lambda space, addr, size, value, w: io.append((space, addr, size, value, w)))
        result = m.run(timeout=120)
        env = m.env()
        regs = {name: env.reg(name) for name in
                ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
                 "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip",
                 "cs", "ds", "es", "ss", "fs", "gs")}
        regs["rflags"] = env.eflags & RFLAGS_MASK
        ram = m.mem_read(0, COMPARED_RAM)
        from pyqemu.hw.i386.cpu import x86_cpu_filtered_feature_names
        return Outcome(m.serial_output, result.reason, result.exit_code, regs, ram, io,
                       x86_cpu_filtered_feature_names(m.cpu(0)), result.cause)


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


@pytest.mark.parametrize("path", GUESTS, ids=_ids(GUESTS))
def test_guest_declared_result(path: Path, accel: str, tmp_path: Path) -> None:
    """The guest prints what it declares and exits through isa-debug-exit with its value."""
    prog = GuestProgram.from_file(path)
    out = run_guest(prog, accel, tmp_path)
    assert out.reason == "shutdown", f"{prog.name} on {accel} ended with {out.reason}"
    assert out.exit_code == ((prog.exit or 0) << 1) | 1
    if prog.serial is not None:
        assert out.serial.decode() == prog.serial


@pytest.mark.parametrize("path", GUESTS, ids=_ids(GUESTS))
def test_interp_matches_kvm(path: Path, tmp_path: Path) -> None:
    """interp ends in the state the hardware (kvm) ends in."""
    require_accel("kvm")
    prog = GuestProgram.from_file(path)
    hw = run_guest(prog, "kvm", tmp_path)
    # interp gets the CPU the hardware gave: the model less what KVM filtered out.
    sw = run_guest(prog, "interp", tmp_path,
                   cpu=",".join(["qemu64"] + [f"-{name}" for name in hw.filtered]))
    diff = {k: (hex(hw.regs[k]), hex(sw.regs[k])) for k in hw.regs if hw.regs[k] != sw.regs[k]}
    assert not diff, f"registers differ (kvm, interp): {diff}"
    assert sw.serial == hw.serial
    assert sw.exit_code == hw.exit_code
    assert sw.io == hw.io, "the I/O sequences differ"
    at = int(prog.meta.get("cpuid-leaf1", "-1"), 0)
    if at >= 0 and hw.ram[at:at + 8] != sw.ram[at:at + 8] and kvm_cpuid_leaf1_passthrough():
        # The host's KVM answers CPUID.1 ECX/EDX from the hardware, not from the
        # KVM_SET_CPUID2 table (probed): a host choice (tests/host_behaviour.py,
        # cpuid-not-from-set-cpuid2), reported; those two words, and only those, are not
        # compared.
        host_behaviour.report(
            "cpuid-not-from-set-cpuid2", f"{prog.name}: CPUID.0x1.0 c d stored at {at:#x}",
            host=_dwords(hw.ram, at, 2), interp=_dwords(sw.ram, at, 2))
        hw.ram = hw.ram[:at] + bytes(8) + hw.ram[at + 8:]
        sw.ram = sw.ram[:at] + bytes(8) + sw.ram[at + 8:]
    if sw.ram != hw.ram:
        first = next(i for i in range(COMPARED_RAM) if sw.ram[i] != hw.ram[i])
        pytest.fail(f"RAM differs first at {first:#x}: kvm {hw.ram[first:first + 16].hex()} "
                    f"interp {sw.ram[first:first + 16].hex()}")


def _dwords(ram: bytes, at: int, n: int) -> str:
    return " ".join(f"{int.from_bytes(ram[at + 4 * k:at + 4 * k + 4], 'little'):#x}"
                    for k in range(n))


# Guests this host's KVM cannot run (legacy 32-bit or PAE paging without long mode) name
# Unicorn as their second reference (``#! reference: unicorn``): 32-bit multiboot guests.
UNICORN_GUESTS = [p for p in GUESTS
                  if GuestProgram.from_file(p).meta.get("reference") == "unicorn"]


@pytest.mark.parametrize("path", UNICORN_GUESTS, ids=_ids(UNICORN_GUESTS))
def test_interp_matches_unicorn(path: Path, tmp_path: Path) -> None:
    """interp ends as Unicorn (QEMU's TCG core) ends, from the same loader state: serial
    output, exit status, general registers (tests/unicorn_ref.py lists what the harness
    does in Unicorn's place, with the SDM sections)."""
    unicorn_ref = pytest.importorskip("tests.unicorn_ref")
    prog = GuestProgram.from_file(path)
    image = tmp_path / f"{prog.name}.img"
    image.write_bytes(prog.image())
    ref = unicorn_ref.run_unicorn(prog, str(image))
    assert ref.error is None, f"Unicorn run failed: {ref.error}"
    sw = run_guest(prog, "interp", tmp_path)
    diff = {k: (hex(v), hex(sw.regs[k] & 0xFFFFFFFF)) for k, v in ref.regs.items()
            if v != sw.regs[k] & 0xFFFFFFFF}
    assert sw.serial == ref.serial
    assert sw.exit_code == ref.exit_code
    assert not diff, f"registers differ (unicorn, interp): {diff}"
