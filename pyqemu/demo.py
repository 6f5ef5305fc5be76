"""``pyqemu demo``: boot a small guest from the reset vector and show the lifecycle live.

The guest (``pyqemu/guests/demo_bios.s``) is assembled into a 64 KiB BIOS ROM;
the machine is built on kvm where /dev/kvm is usable, else on interp, with the
``lifecycle`` trace on, so QEMU's call tree (board init, ``object_new``,
``device_set_realized``, ``x86_cpu_realizefn``, ``qemu_init_vcpu``, the vCPU
thread and its exits) scrolls by, followed by what the guest printed.
"""

from __future__ import annotations

import os
import sys
import tempfile
from importlib import resources

from pyqemu.accel.ops import accel_list
from pyqemu.images import GuestProgram

__all__ = ["demo_main", "pick_accel"]

DEMO = "demo_bios.s"


def pick_accel() -> tuple[str, str]:
    """kvm if /dev/kvm is usable here, else interp; with the reason for the choice."""
    for name, _, why in accel_list():
        if name == "kvm":
            if why is None:
                return "kvm", "/dev/kvm is usable"
            return "interp", f"kvm is unavailable here ({why})"
    return "interp", "kvm is not built in"


def demo_main(argv: list[str]) -> int:
    from pyqemu.cli import ACCEL_ALIASES, UsageError
    from pyqemu.machine import Machine
    from pyqemu.util import trace

    accel, why = pick_accel()
    if argv[:1] == ["-accel"] and len(argv) == 2:
        accel, why = ACCEL_ALIASES.get(argv[1], argv[1]), "chosen with -accel"
    elif argv:
        raise UsageError("usage: pyqemu demo [-accel kvm|interp]")
    src = resources.files("pyqemu").joinpath("guests", DEMO).read_text()
    prog = GuestProgram(name="demo", source=src, mode="bios")
    print(f"pyqemu demo: accel={accel} ({why}); lifecycle trace follows (-d lifecycle)\n",
          flush=True)
    fd, path = tempfile.mkstemp(prefix="pyqemu-demo-", suffix=".rom")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(prog.image())
        sink = trace.stream_sink(sys.stdout)
        with Machine(accel=accel, smp=2, bios=path, serial="memory",
                     devices=["isa-debug-exit,iobase=0xf4,iosize=0x04"],
                     trace=["lifecycle"], trace_sink=sink) as m:
            result = m.run(timeout=60)
            out = m.serial_output.decode(errors="replace")
        print("\n--- guest serial output (COM1) ---")
        print(out, end="" if out.endswith("\n") else "\n")
        print("----------------------------------")
        print(f"run ended: {result.reason}, exit status {result.exit_code} "
              f"(isa-debug-exit: (value << 1) | 1)")
        ok = result.reason == "shutdown" and "Hello" in out
        return 0 if ok else 1
    finally:
        os.unlink(path)
