"""The command line: QEMU's options, QEMU's exit statuses, one clear line for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pyqemu.images import GuestProgram
from tests.support import GUEST_DIR

DEBUG_EXIT = "isa-debug-exit,iobase=0xf4,iosize=0x04"


def pyqemu(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the command line in a fresh process, as a user would.  stdout is decoded
    without newline translation, so the guest's "\r\n" stays as it was sent."""
    r = subprocess.run([sys.executable, "-m", "pyqemu.cli", *args], capture_output=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="replace"),
                                       r.stderr.decode(errors="replace"))


@pytest.fixture(scope="module")
def hello_rom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rom") / "hello.rom"
    path.write_bytes(GuestProgram.from_file(GUEST_DIR / "hello_bios.s").image())
    return path


@pytest.fixture(scope="module")
def hello_kernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kernel") / "hello.mb"
    path.write_bytes(GuestProgram.from_file(GUEST_DIR / "hello_multiboot.s").image())
    return path


def test_bios_guest_prints_and_exits_with_debug_exit_status(accel: str, hello_rom: Path) -> None:
    r = pyqemu("-accel", accel, "-bios", str(hello_rom), "-nographic", "-device", DEBUG_EXIT)
    assert r.stdout == "Hello from the reset vector!\r\n"
    assert r.returncode == (0x10 << 1) | 1, r.stderr


def test_multiboot_kernel_runs_with_serial_on_stdio(accel: str, hello_kernel: Path) -> None:
    r = pyqemu("-accel", accel, "-kernel", str(hello_kernel), "-serial", "stdio",
               "-device", DEBUG_EXIT)
    assert r.stdout.startswith("Hello from multiboot!\r\nmagic=2BADB002 flags-ok")
    assert r.returncode == (0x11 << 1) | 1, r.stderr


def test_serial_to_file(hello_rom: Path, tmp_path: Path) -> None:
    out = tmp_path / "com1.txt"
    r = pyqemu("-accel", "interp", "-bios", str(hello_rom), "-serial", f"file:{out}",
               "-device", DEBUG_EXIT)
    assert r.returncode == 33, r.stderr
    assert out.read_bytes() == b"Hello from the reset vector!\r\n"
    assert r.stdout == ""


def test_lifecycle_trace_shows_the_seed_steps_in_order(accel: str, hello_rom: Path) -> None:
    r = pyqemu("-accel", accel, "-bios", str(hello_rom), "-serial", "none",
               "-device", DEBUG_EXIT, "-d", "lifecycle")
    assert r.returncode == 33, r.stderr
    steps = ["machine_run_board_init", "pc_init1", "x86_cpus_init", "x86_cpu_new", "object_new",
             "class_init", "instance_init", "object_property_set_bool", "property_set_bool",
             "device_set_realized", "x86_cpu_realizefn", "x86_cpu_expand_features",
             "x86_cpu_filter_features", "cpu_exec_realizefn", "mce_init", "qemu_init_vcpu",
             "create_vcpu_thread", f"{accel}_init_vcpu", "created = true",
             "x86_cpu_apic_realize", "cpu_reset", "cpu_common_realizefn", "vm_start"]
    log = r.stderr
    pos = 0
    for step in steps:
        found = log.find(step, pos)
        assert found >= 0, f"step {step!r} missing or out of order in:\n{log}"
        pos = found
    thread = "CPU 0/KVM" if accel == "kvm" else "CPU 0/INTERP"
    assert any(thread in line and f"{accel}_init_vcpu" in line for line in log.splitlines())


@pytest.mark.parametrize("args, message", [
    (["-cpu", "pentium9"], "pentium9"),
    (["-cpu", "qemu64,+nosuchfeature"], "nosuchfeature"),
    (["-machine", "vax"], "vax"),
    (["-accel", "hax"], "hax"),
    (["-smp", "0"], "-smp"),
    (["-smp", "8,sockets=2,cores=2,threads=1"], "-smp"),
    (["-m", "lots"], "-m"),
    (["-bios", "/nonexistent/bios.bin"], "/nonexistent/bios.bin"),
    (["-kernel", "/nonexistent/kernel"], "/nonexistent/kernel"),
    (["-frobnicate"], "-frobnicate"),
    (["-device", "no-such-device"], "no-such-device"),
])
def test_bad_input_gets_one_line_and_status_1(args: list[str], message: str) -> None:
    r = pyqemu(*args, timeout=60)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr


def test_malformed_kernel_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "notmultiboot.bin"
    bad.write_bytes(b"\x90" * 4096)
    r = pyqemu("-kernel", str(bad), timeout=60)
    assert r.returncode == 1
    assert str(bad) in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("what, expect", [
    ("-cpu", "qemu64"), ("-machine", "pc"), ("-accel", "interp"), ("-device", "isa-debug-exit"),
    ("-d", "lifecycle"),
])
def test_help_lists(what: str, expect: str) -> None:
    r = pyqemu(what, "help", timeout=60)
    assert r.returncode == 0, r.stderr
    assert expect in r.stdout


def test_cpu_help_lists_models_and_flags() -> None:
    r = pyqemu("-cpu", "help", timeout=60)
    for model in ("qemu64", "qemu32", "kvm64", "base", "max", "host"):
        assert model in r.stdout
    for flag in ("sse2", "popcnt", "lm"):
        assert flag in r.stdout


def test_kvm_missing_is_a_clear_error(hello_rom: Path) -> None:
    """With /dev/kvm absent (a path that does not exist), -accel kvm names the problem."""
    r = subprocess.run(
        [sys.executable, "-c",
         "import accel.kvm.kvm_all as k, sys; k.kvm_init.__defaults__ = (None, '/nonexistent/kvm');"
         "from pyqemu.cli import main; sys.exit(main(sys.argv[1:]))",
         "-accel", "kvm", "-bios", str(hello_rom)],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "kvm" in r.stderr.lower() and "Traceback" not in r.stderr
