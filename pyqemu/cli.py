"""The ``pyqemu`` command line: QEMU's options with QEMU's meaning (``system/vl.c``, ``qemu-options.hx``).

``pyqemu -accel kvm -bios hello.bin -nographic`` behaves as
``qemu-system-x86_64`` does with the same arguments, for guests that use only
what pyqemu models.  A bad option or value prints one line on stderr naming the
problem and exits 1; a guest shutdown ends the process with QEMU's exit status
(``isa-debug-exit``: ``(value << 1) | 1``).  ``pyqemu demo`` runs the bundled demo.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyqemu.util.error import PyQemuError

PROG = "pyqemu"

#: option -> takes an argument
OPTIONS: dict[str, bool] = {
    "-machine": True, "-M": True, "-accel": True, "-enable-kvm": False, "-cpu": True,
    "-smp": True, "-m": True, "-bios": True, "-kernel": True, "-append": True,
    "-initrd": True, "-device": True, "-nographic": False, "-serial": True,
    "-no-reboot": False, "-no-shutdown": False, "-d": True, "-D": True, "-display": True,
    "-monitor": True, "-vga": True, "-S": False, "-name": True, "-version": False,
    "-h": False, "-help": False, "-timeout": True,
    "-lockstep": False, "-lockstep-max-steps": True,
}

USAGE = f"""\
usage: {PROG} [options]          (QEMU's options, single dash)
       {PROG} demo [-accel kvm|interp]

-machine/-M NAME     the board (pc); 'help' lists them
-accel NAME          kvm or interp; 'help' lists them (-enable-kvm = -accel kvm)
-cpu MODEL[,+f,-f,f=on|off,enforce]
                     the CPU model and features; 'help' lists them
-smp [cpus=]n[,sockets=s][,cores=c][,threads=t][,maxcpus=m]
-m SIZE              guest RAM (128M by default; a bare number is MiB)
-bios FILE           a ROM image mapped at the top of 4 GiB and below 1 MiB
-kernel FILE         a multiboot (v1) kernel; -append passes its command line
-device DRIVER[,prop=value...]
                     add a device (isa-serial, isa-debug-exit); 'help' lists them
-nographic           the serial port on stdin/stdout
-serial stdio|file:PATH|none|null
-no-reboot           exit instead of rebooting on a guest reset or triple fault
-d ITEM[,...]        log items (lifecycle, exec, in_asm, cpu, int, ioport); 'help' lists them
-D FILE              write the -d log to FILE instead of stderr
-timeout SECONDS     pyqemu: stop the guest after SECONDS (exit status 124)
-lockstep [-lockstep-max-steps N]
                     pyqemu: run the guest on kvm and interp side by side, compare
                     after every instruction; report the first divergence (exit 2)
-version             print the version
"""


class UsageError(PyQemuError, ValueError):
    """A bad command line; the message names the option."""


@dataclass
class Options:
    machine: str = "pc"
    accel: str | None = None
    cpu: str | None = None
    smp: str = "1"
    memory: str | None = None
    bios: str | None = None
    kernel: str | None = None
    append: str = ""
    devices: list[str] = field(default_factory=list)
    nographic: bool = False
    serial: str | None = None
    no_reboot: bool = False
    log: str | None = None
    logfile: str | None = None
    timeout: float | None = None
    lockstep: bool = False
    lockstep_max_steps: int = 1_000_000
    helps: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str]) -> Options:
    o = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        opt = arg[1:] if arg.startswith("--") else arg  # QEMU accepts --opt too
        if opt not in OPTIONS:
            raise UsageError(f"{arg}: invalid option")
        val = ""
        if OPTIONS[opt]:
            if i + 1 >= len(argv):
                raise UsageError(f"{arg}: requires an argument")
            val = argv[i + 1]
            i += 1
        i += 1
        if opt in ("-h", "-help"):
            o.helps.append("usage")
        elif opt == "-version":
            o.helps.append("version")
        elif opt in ("-machine", "-M"):
            name = val.split(",")[0]
            if name.startswith("type="):
                name = name[5:]
            if name == "help":
                o.helps.append("machine")
            else:
                for extra in val.split(",")[1:]:
                    key, _, v = extra.partition("=")
                    if key == "accel":
                        o.accel = v
                    else:
                        raise UsageError(f"-machine: unsupported property '{key}'")
                o.machine = name
        elif opt == "-accel":
            name = val.split(",")[0]
            if name == "help":
                o.helps.append("accel")
            else:
                o.accel = "interp" if name == "tcg" else name
        elif opt == "-enable-kvm":
            o.accel = "kvm"
        elif opt == "-cpu":
            if val == "help":
                o.helps.append("cpu")
            o.cpu = val
        elif opt == "-smp":
            o.smp = val
        elif opt == "-m":
            o.memory = val
        elif opt == "-bios":
            o.bios = val
        elif opt == "-kernel":
            o.kernel = val
        elif opt == "-append":
            o.append = val
        elif opt == "-initrd":
            raise UsageError("-initrd: initial ram disks come with the Linux boot issue; "
                             "not supported yet")
        elif opt == "-device":
            if val.split(",")[0] == "help":
                o.helps.append("device")
            else:
                o.devices.append(val)
        elif opt == "-nographic":
            o.nographic = True
        elif opt == "-serial":
            o.serial = val
        elif opt == "-no-reboot":
            o.no_reboot = True
        elif opt == "-d":
            if val == "help":
                o.helps.append("log")
            else:
                o.log = val
        elif opt == "-D":
            o.logfile = val
        elif opt == "-timeout":
            try:
                o.timeout = float(val)
            except ValueError:
                raise UsageError(f"-timeout: '{val}' is not a number of seconds") from None
        elif opt == "-lockstep":
            o.lockstep = True
        elif opt == "-lockstep-max-steps":
            try:
                o.lockstep_max_steps = int(val, 0)
            except ValueError:
                raise UsageError(f"-lockstep-max-steps: '{val}' is not a number") from None
            if o.lockstep_max_steps <= 0:
                raise UsageError("-lockstep-max-steps: give a positive number")
        elif opt in ("-display", "-vga", "-monitor"):
            if val not in ("none",):
                raise UsageError(f"{opt} {val}: pyqemu has no display or monitor; "
                                 f"only '{opt} none' is accepted")
        # -S, -name, -no-shutdown: accepted for QEMU compatibility, nothing to do.
    if o.kernel is None and o.append:
        raise UsageError("-append only allowed with -kernel option")
    if o.kernel is not None and o.bios is not None:
        raise UsageError("-bios and -kernel: give one of them")
    return o


def print_help(what: str) -> None:
    if what == "usage":
        print(USAGE, end="")
    elif what == "version":
        from importlib.metadata import PackageNotFoundError, version
        try:
            v = version("pyqemu")
        except PackageNotFoundError:
            v = "(not installed)"
        print(f"{PROG} version {v}: QEMU's vCPU lifecycle in Python (kvm and interp)")
    elif what == "machine":
        import pyqemu.hw.i386.pc
        from pyqemu.hw.core.machine import MACHINE_TYPE_SUFFIX, machine_class_list
        print("Supported machines are:")
        for mc in machine_class_list():
            name = mc.alias or mc.name.removesuffix(MACHINE_TYPE_SUFFIX)
            print(f"{name:<20} {mc.desc}{' (default)' if mc.is_default else ''}")
    elif what == "accel":
        from pyqemu.accel.ops import accel_list
        print("Accelerators supported in pyqemu:")
        for name, desc, why in accel_list():
            state = f" (unavailable here: {why})" if why else ""
            print(f"{name:<8} {desc}{state}")
    elif what == "cpu":
        from pyqemu.hw.i386.cpu import x86_cpu_list
        print(x86_cpu_list(), end="")
    elif what == "device":
        import pyqemu.hw.char.serial_isa
        import pyqemu.hw.misc.debugexit  # noqa: F401
        from pyqemu.hw.core.qdev import DeviceClass
        from pyqemu.qom import object_class_get_list
        print("Devices you can add with -device:")
        for k in object_class_get_list("device"):
            if isinstance(k, DeviceClass) and k.user_creatable:
                props = ", ".join(f"{p.name}=<{p.type}>" for p in k.props)
                print(f'name "{k.name}", desc "{k.desc}"' + (f"\n    {props}" if props else ""))
    elif what == "log":
        from pyqemu.util.trace import GROUPS
        print("Log items (comma separated):")
        for name, desc in GROUPS.items():
            print(f"{name:<13} {desc}")


def _default_serial(o: Options) -> str:
    if o.serial is not None:
        return "null" if o.serial == "none" else o.serial
    return "stdio"  # no display here: the first UART goes to the terminal, as with -nographic


def build_machine(o: Options):  # type: ignore[no-untyped-def]
    from pyqemu.machine import Machine
    from pyqemu.util import trace
    groups = trace.parse_groups(o.log) if o.log else set()
    sink = None
    if groups:
        if o.logfile:
            try:
                stream = open(o.logfile, "w")  # noqa: SIM115 - closed at exit
            except OSError as e:
                raise UsageError(f"-D {o.logfile}: {e.strerror}") from None
            sink = trace.stream_sink(stream)
        else:
            sink = trace.stderr_sink()
    return Machine(o.machine, accel=o.accel or "interp", cpu=o.cpu, smp=o.smp,
                   memory=o.memory, bios=o.bios, kernel=o.kernel, append=o.append,
                   serial=_default_serial(o), serial_input=o.nographic,
                   devices=o.devices, no_reboot=o.no_reboot,
                   trace=groups or None, trace_sink=sink)


def run_machine(o: Options) -> int:
    from pyqemu.machine import check_options
    check_options(o.machine, o.cpu, o.smp, o.memory, o.bios, o.kernel, o.append, o.devices,
                  o.accel or "interp")
    if o.bios is None and o.kernel is None:
        # Checked first: a machine that could only sit in its reset state is not built.
        raise UsageError("nothing to run: give -bios FILE or -kernel FILE "
                         "(the library loads other guests)")
    m = build_machine(o)
    try:
        result = m.run(timeout=o.timeout)
        if result.reason == "shutdown":
            return (result.exit_code or 0) & 0xFF  # exit() keeps the low 8 bits, as QEMU's does
        if result.reason == "halted":
            print(f"{PROG}: every vCPU is halted and nothing can wake it; exiting",
                  file=sys.stderr)
            return 0
        if result.reason == "timeout":
            print(f"{PROG}: stopped after -timeout {o.timeout:g}s", file=sys.stderr)
            return 124
        return 0
    finally:
        m.close()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # SIGINT ends the run cleanly (threads joined, fds closed) instead of a traceback.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if argv[:1] == ["demo"]:
            from pyqemu.demo import demo_main
            return demo_main(argv[1:])
        o = parse_args(argv)
        if o.helps:
            for what in o.helps:
                print_help(what)
            return 0
        if o.lockstep:
            from pyqemu.lockstep import lockstep_main
            return lockstep_main(o)
        return run_machine(o)
    except PyQemuError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{PROG}: {e.filename + ': ' if e.filename else ''}{e.strerror or e}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: terminating on signal {signal.SIGINT.value}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
