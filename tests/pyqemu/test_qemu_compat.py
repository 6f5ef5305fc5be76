"""Side by side with QEMU: the same arguments give the same output and exit status.

Runs only where Debian's qemu-system-x86 is installed (it is not a dependency);
``-accel tcg`` stands for interp.  QEMU boots a -kernel through SeaBIOS and its
multiboot option ROM, which print a banner first, so for kernels only the guest's
own output (the tail of QEMU's) is compared.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pyqemu.images import GuestProgram
from tests.pyqemu.test_cli import DEBUG_EXIT, pyqemu
from tests.support import GUEST_DIR

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")


def qemu(*args: str, timeout: float = 60) -> tuple[int, bytes]:
    assert QEMU is not None
    r = subprocess.run([QEMU, *args], capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout


@pytest.mark.parametrize("guest", ["hello_bios"])
def test_bios_guest_same_as_qemu_tcg(guest: str, tmp_path: Path) -> None:
    rom = tmp_path / f"{guest}.rom"
    rom.write_bytes(GuestProgram.from_file(GUEST_DIR / f"{guest}.s").image())
    args = ["-bios", str(rom), "-nographic", "-device", DEBUG_EXIT, "-no-reboot"]
    q_status, q_out = qemu("-accel", "tcg", *args)
    ours = pyqemu("-accel", "interp", *args)
    assert ours.returncode == q_status
    assert ours.stdout.encode() == q_out


def test_multiboot_kernel_same_guest_output_as_qemu_tcg(tmp_path: Path) -> None:
    kernel = tmp_path / "hello.mb"
    prog = GuestProgram.from_file(GUEST_DIR / "hello_multiboot.s")
    kernel.write_bytes(prog.image())
    args = ["-kernel", str(kernel), "-nographic", "-device", DEBUG_EXIT, "-no-reboot"]
    q_status, q_out = qemu("-accel", "tcg", *args)
    ours = pyqemu("-accel", "interp", *args)
    assert ours.returncode == q_status
    assert q_out.endswith(ours.stdout.encode())
    assert prog.serial is not None and ours.stdout == prog.serial
