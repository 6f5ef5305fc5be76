"""The command line: QEMU's options, QEMU's exit statuses, one clear line for bad input."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from pyqemu.images import GuestProgram, bios_image
from tests.support import GUEST_DIR, kvm_unavailable_reason

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
         "import pyqemu.accel.kvm.kvm_all as k, sys;"
         "k.kvm_init.__defaults__ = (None, '/nonexistent/kvm');"
         "from pyqemu.cli import main; sys.exit(main(sys.argv[1:]))",
         "-accel", "kvm", "-bios", str(hello_rom)],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "kvm" in r.stderr.lower() and "Traceback" not in r.stderr


# -- bad values: one line naming the option and what is supported, status 1 ------------------------

def assert_one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Status 1, one line on stderr holding every needle, no traceback, nothing on stdout,
    and no word of the project's own plans."""
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert line.startswith("pyqemu: ")
    for needle in needles:
        assert needle in line, line
    assert not re.search(r"\b(issue|later|not yet|yet)\b", line), line
    return line


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-1", "0", "-inf", "1.5.5", "",
                                   "0x", "64Q", "4T", "99999999999999999999G", "9" * 5000,
                                   "3072M", "1K"])
def test_bad_memory_size_is_one_line_naming_m(value: str, hello_rom: Path) -> None:
    r = pyqemu("-m", value, "-bios", str(hello_rom), timeout=60)
    line = assert_one_line_error(r, "-m")
    assert any(w in line for w in ("is not a size", "too small", "too large")), line


@pytest.mark.parametrize("value", ["64M", "1.5G", "128", "0x40", "size=32M", "3071M"])
def test_good_memory_sizes_run(value: str, hello_rom: Path) -> None:
    r = pyqemu("-m", value, "-bios", str(hello_rom), "-device", DEBUG_EXIT, timeout=120)
    assert r.returncode == 33, r.stderr


def test_ram_that_cannot_be_mapped_here_is_one_line_naming_m(hello_rom: Path) -> None:
    """Within pyqemu's limit but beyond what this process may map (RLIMIT_AS)."""
    code = ("import resource, sys; from pyqemu.cli import main;"
            "vm = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize();"
            "resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY));"
            "sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "-m", "3000M", "-bios", str(hello_rom)],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert_one_line_error(r, "-m: cannot allocate 3000M of guest RAM")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "0.0", "garbage", "1e400",
                                   ""])
def test_bad_timeout_is_one_line_naming_timeout(value: str, hello_rom: Path) -> None:
    r = pyqemu("-timeout", value, "-bios", str(hello_rom), timeout=60)
    assert_one_line_error(r, "-timeout", "give a positive number")


def test_timeout_stops_a_spinning_guest_with_status_124(tmp_path: Path) -> None:
    rom = tmp_path / "spin.rom"
    rom.write_bytes(bios_image("spin:\n    jmp spin\n"))
    r = pyqemu("-bios", str(rom), "-timeout", "0.5", "-serial", "none", timeout=60)
    assert r.returncode == 124, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "pyqemu: stopped after -timeout 0.5s"


@pytest.mark.parametrize("args, needles", [
    (["-S"], ["-S: not supported", "Machine()"]),
    (["-no-shutdown"], ["-no-shutdown: not supported", "a guest shutdown ends the run"]),
    (["-name", "guest1"], ["-name: not supported"]),
    (["-initrd", "/tmp/initrd.img"], ["-initrd: not supported", "multiboot (v1)", "-kernel FILE"]),
    (["-vga", "std"], ["-vga std", "only '-vga none'"]),
    (["-display", "gtk"], ["-display gtk", "only '-display none'"]),
    (["-monitor", "stdio"], ["-monitor stdio", "no monitor"]),
    (["-machine", "pc,kernel-irqchip=on"], ["-machine: kernel-irqchip=on is not supported",
                                           "only kernel-irqchip=off", "in-kernel irqchip"]),
    (["-machine", "pc,kernel-irqchip=split"], ["kernel-irqchip=split"]),
    (["-machine", "pc,vmport=off"], ["-machine: property 'vmport' is not supported",
                                    "accel=", "kernel-irqchip=off"]),
    (["-machine", "pc,graphics=on"], ["graphics=on", "no display"]),
    (["-machine", "pc,accel=kvm", "-accel", "tcg"], ["-accel", "-machine accel=",
                                                    "incompatible"]),
    (["-accel", "tcg", "-machine", "accel=kvm"], ["incompatible"]),
    (["-machine", "pc,accel=hax"], ["invalid accelerator 'hax'"]),
    (["-machine", "pc,accel=kvm::tcg"], ["-machine accel=", "not an accelerator list"]),
    (["-accel", "tcg,thread=multi"], ["-accel: property 'thread' is not supported"]),
    (["-accel", "kvm,kernel-irqchip=on"], ["-accel: kernel-irqchip=on is not supported"]),
    (["-accel", "kvm:tcg"], ["-accel: 'kvm:tcg' is not an accelerator", "repeat -accel"]),
    (["-serial", "null"] * 5, ["-serial: given 5 times", "4 serial ports"]),
    (["-lockstep-max-steps", "5"], ["-lockstep-max-steps: only with -lockstep"]),
    (["-lockstep", "-timeout", "5"], ["-timeout: not supported with -lockstep"]),
    (["-lockstep", "-d", "lifecycle"], ["-d/-D: not supported with -lockstep"]),
    (["-lockstep", "-nographic"], ["-nographic: not supported with -lockstep"]),
    (["-lockstep", "-serial", "null", "-serial", "null"],
     ["-serial: not supported with -lockstep"]),
    (["-lockstep-max-steps", "-3", "-lockstep"], ["-lockstep-max-steps: '-3'"]),
    (["-device", "isa-serial,iobase=0x3f8"], ["isa-serial COM2: iobase=0x3f8",
                                              "clash with isa-serial COM1 (ports 0x3f8-0x3ff)"]),
    (["-device", "isa-debug-exit,iobase=0x3f8"], ["isa-debug-exit: iobase=0x3f8",
                                                  "clash with isa-serial COM1"]),
    (["-device", "isa-serial,index=7"], ["'index' 7", "index 0-3"]),
    (["-device", "isa-serial"] * 4, ["all 4 ISA serial ports (COM1-COM4) are in use"]),
    (["-device", "isa-debug-exit,iobase=0xfffe,iosize=4"], ["outside the I/O space"]),
])
def test_refused_options_name_the_option_and_what_is_supported(
        args: list[str], needles: list[str], hello_rom: Path) -> None:
    r = pyqemu(*args, "-bios", str(hello_rom), timeout=60)
    assert_one_line_error(r, *needles)


def test_every_unsupported_qemu_option_is_refused_never_ignored(hello_rom: Path) -> None:
    from pyqemu.cli import OPTIONS, UNSUPPORTED
    for opt in UNSUPPORTED:
        args = [opt, "x"] if OPTIONS[opt] else [opt]
        assert_one_line_error(pyqemu(*args, "-bios", str(hello_rom), timeout=60),
                              f"{opt}: not supported")


# -- -machine accel=, -accel lists --------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["-machine", "pc,accel=tcg"],
    ["-machine", "accel=tcg"],
    ["-M", "pc", "-machine", "accel=interp,kernel-irqchip=off"],
    ["-machine", "type=pc,accel=tcg,graphics=off,usb=off"],
    ["-accel", "tcg"],
    ["-accel", "interp,kernel-irqchip=off"],
])
def test_machine_accel_is_accepted_as_qemu_does(args: list[str], hello_rom: Path) -> None:
    r = pyqemu(*args, "-bios", str(hello_rom), "-device", DEBUG_EXIT, "-d", "lifecycle",
               timeout=120)
    assert r.returncode == 33, r.stderr
    assert r.stdout == "Hello from the reset vector!\r\n"
    assert "CPU 0/INTERP" in r.stderr


@pytest.mark.parametrize("args", [["-machine", "accel=kvm:tcg"], ["-accel", "kvm", "-accel", "tcg"],
                                  ["-enable-kvm", "-accel", "tcg"]])
def test_an_accelerator_list_takes_the_first_available(args: list[str], hello_rom: Path) -> None:
    r = pyqemu(*args, "-bios", str(hello_rom), "-device", DEBUG_EXIT, "-d", "lifecycle",
               timeout=120)
    assert r.returncode == 33, r.stderr
    thread = "CPU 0/INTERP" if kvm_unavailable_reason() else "CPU 0/KVM"
    assert thread in r.stderr


def test_an_accelerator_list_with_none_available_names_each(hello_rom: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-c",
         "import pyqemu.accel.kvm.kvm_all as k, sys;"
         "k.kvm_init.__defaults__ = (None, '/nonexistent/kvm');"
         "from pyqemu.cli import main; sys.exit(main(sys.argv[1:]))",
         "-accel", "kvm", "-accel", "kvm", "-bios", str(hello_rom)],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "kvm" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# -- serial ports: -serial per COM port, -device isa-serial on the next free one ------------------

def test_device_isa_serial_takes_com2_and_the_guest_s_com1_output_stays(hello_rom: Path,
                                                                        tmp_path: Path) -> None:
    com2 = tmp_path / "com2.txt"
    r = pyqemu("-bios", str(hello_rom), "-nographic", "-device", f"isa-serial,chardev=file:{com2}",
               "-device", DEBUG_EXIT, "-d", "ioport", timeout=120)
    assert r.returncode == 33, r.stderr
    assert r.stdout == "Hello from the reset vector!\r\n"
    assert com2.read_bytes() == b""


def test_repeated_serial_options_are_com1_then_com2(hello_rom: Path, tmp_path: Path) -> None:
    com2 = tmp_path / "com2.txt"
    r = pyqemu("-bios", str(hello_rom), "-serial", "stdio", "-serial", f"file:{com2}",
               "-device", DEBUG_EXIT, timeout=120)
    assert r.returncode == 33, r.stderr
    assert r.stdout == "Hello from the reset vector!\r\n" and com2.exists()
    r = pyqemu("-bios", str(hello_rom), "-serial", "none", "-serial", "stdio",
               "-device", DEBUG_EXIT, timeout=120)
    assert r.returncode == 33, r.stderr
    assert r.stdout == ""                 # COM1 is absent: the guest's output goes nowhere


# -- -kernel and -bios read at most what fits; only regular files ---------------------------------

@pytest.fixture
def special_files(tmp_path: Path) -> list[tuple[Path, str]]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return [(fifo, "a FIFO"), (tmp_path, "a directory"), (Path("/dev/zero"), "a character device"),
            (Path("/dev/null"), "a character device")]


def test_kernel_and_bios_that_are_not_regular_files_are_refused(
        special_files: list[tuple[Path, str]]) -> None:
    for path, kind in special_files:
        r = pyqemu("-kernel", str(path), timeout=30)      # a FIFO must not block the open
        assert_one_line_error(r, f"-kernel '{path}'", kind, "not a regular file")
        r = pyqemu("-bios", str(path), timeout=30)
        assert_one_line_error(r, f"could not load PC BIOS '{path}'", kind)


def test_a_5_gib_kernel_is_refused_by_its_size_without_reading_it(tmp_path: Path) -> None:
    huge = tmp_path / "huge.mb"
    with open(huge, "wb") as f:
        f.truncate(5 << 30)                               # sparse: costs no disk
    r = pyqemu("-kernel", str(huge), "-m", "64M", timeout=60)
    assert_one_line_error(r, f"-kernel '{huge}'", "5368709120 bytes (5.0 GiB)",
                          "more than the guest's 67108864 bytes (64.0 MiB) of RAM (-m)")
    # The whole child stayed small (reading the file would have cost 5 GiB).
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 1 << 20   # KiB: 1 GiB


def test_a_kernel_larger_than_ram_is_refused_naming_its_size(tmp_path: Path) -> None:
    big = tmp_path / "big.mb"
    big.write_bytes(GuestProgram.from_file(GUEST_DIR / "hello_multiboot.s").image()
                    + bytes(3 << 20))
    r = pyqemu("-kernel", str(big), "-m", "2M", timeout=60)
    assert_one_line_error(r, f"-kernel '{big}'", "more than the guest's 2097152 bytes")


def test_a_big_bios_is_refused_naming_its_size(tmp_path: Path) -> None:
    big = tmp_path / "big.rom"
    with open(big, "wb") as f:
        f.truncate(1 << 30)
    r = pyqemu("-bios", str(big), timeout=60)
    assert_one_line_error(r, f"could not load PC BIOS '{big}'", "1073741824 bytes (1.0 GiB)",
                          "more than the 16 MiB a PC BIOS may have")


def test_messages_in_the_command_line_speak_to_users() -> None:
    """No message (string literal) of the modules behind the command line mentions the
    project's own work plan: they say what pyqemu supports instead."""
    import ast
    root = Path(__file__).resolve().parents[2]
    files = ["pyqemu/cli.py", "pyqemu/machine.py", "pyqemu/images.py", "pyqemu/demo.py",
             "hw/i386/multiboot.py", "hw/i386/loader_bios.py", "hw/i386/loader_asm.py",
             "hw/i386/pc.py", "hw/core/machine.py", "hw/core/qdev.py", "hw/core/loader.py",
             "hw/char/serial_isa.py", "hw/misc/debugexit.py", "hw/isa/isa_bus.py",
             "system/chardev.py"]
    for name in files:
        tree = ast.parse((root / name).read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in docstrings
                    and re.search(r"\b(issue|later|not yet)\b", node.value, re.I)):
                raise AssertionError(f"{name}:{node.lineno}: {node.value!r}")
