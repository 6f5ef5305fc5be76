"""The ``pyqemu`` command line: QEMU's options with QEMU's meaning (``vl.c``, ``qemu-options.hx``).

``pyqemu -accel kvm -bios hello.rom -nographic`` behaves as
``qemu-system-x86_64`` does with the same arguments, for guests that use only
what pyqemu models.  An option pyqemu does not model is refused, never
accepted and ignored.  A bad option or value prints one line on stderr naming
the option and what pyqemu supports, and exits 1; a guest shutdown ends the
process with QEMU's exit status (``isa-debug-exit``: ``(value << 1) | 1``).
Warnings (the ``pyqemu`` logger) print as ``pyqemu: warning: ...``.

``pyqemu demo`` runs the bundled demo; ``pyqemu images DIR`` writes the example
images (``DIR/hello.rom``, ``DIR/kernel.mb``) that the README's examples boot.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from pyqemu.util.error import PyQemuError

__all__ = ["OPTIONS", "PROG", "Options", "UsageError", "main", "parse_args", "run_machine"]

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

#: QEMU options pyqemu knows but does not model: refused with the reason, never ignored.
UNSUPPORTED: dict[str, str] = {
    "-S": "pyqemu has no monitor to start the vCPUs from; the library's Machine() is "
          "built stopped and runs on run()",
    "-no-shutdown": "pyqemu has no monitor to keep a shut-down guest for; a guest "
                    "shutdown ends the run",
    "-name": "pyqemu has no window, monitor or process title to show a guest name in",
    "-initrd": "pyqemu boots multiboot (v1) kernels without modules or initial RAM "
               "disks: give -kernel FILE and -append ARGS",
}

#: -machine properties pyqemu's pc takes (value None: any), and their only value.
MACHINE_PROPS: dict[str, str | None] = {
    "type": None, "accel": None, "kernel-irqchip": "off", "graphics": "off", "usb": "off",
}
#: -accel properties, as for -machine.
ACCEL_PROPS: dict[str, str | None] = {"kernel-irqchip": "off"}

#: the accelerators' QEMU names -> pyqemu's (tcg is the interpreter's role in QEMU)
ACCEL_ALIASES = {"tcg": "interp"}

MAX_SERIAL_PORTS = 4

USAGE = f"""\
usage: {PROG} [options]          (QEMU's options, single dash)
       {PROG} demo [-accel kvm|interp]
       {PROG} images DIR          write the example images DIR/hello.rom and DIR/kernel.mb

-machine/-M [type=]NAME[,accel=A[:B]][,kernel-irqchip=off]
                     the board (pc); 'help' lists them
-accel NAME          kvm or interp (tcg = interp); 'help' lists them; repeat it for a
                     fallback (-accel kvm -accel tcg); -enable-kvm = -accel kvm
-cpu MODEL[,+f,-f,f=on|off,enforce]
                     the CPU model and features; 'help' lists them
-smp [cpus=]n[,sockets=s][,cores=c][,threads=t][,maxcpus=m]
-m SIZE              guest RAM, 1M..3071M (128M by default; a bare number is MiB)
-bios FILE           a ROM image mapped at the top of 4 GiB and below 1 MiB
-kernel FILE         a multiboot (v1) kernel; -append passes its command line
-device DRIVER[,prop=value...]
                     add a device (isa-serial, isa-debug-exit); 'help' lists them
-nographic           the serial port on stdin/stdout
-serial stdio|file:PATH|null|none
                     COM1's backend; repeat it for COM2..COM4
-no-reboot           exit instead of rebooting on a guest reset or triple fault
-display none, -vga none, -monitor none
                     accepted: pyqemu has no display and no monitor
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
    #: the first accelerator asked for (None: the default, interp); see :attr:`accels`
    accel: str | None = None
    #: every accelerator asked for, in order: the first one available here is used
    accels: list[str] = field(default_factory=list)
    accel_option: str | None = None      # "-accel" or "-machine accel=", for messages
    cpu: str | None = None
    smp: str = "1"
    memory: str | None = None
    bios: str | None = None
    kernel: str | None = None
    append: str = ""
    devices: list[str] = field(default_factory=list)
    nographic: bool = False
    #: COM1's -serial spec (the first -serial), and every -serial in order
    serial: str | None = None
    serials: list[str] = field(default_factory=list)
    no_reboot: bool = False
    log: str | None = None
    logfile: str | None = None
    timeout: float | None = None
    lockstep: bool = False
    lockstep_max_steps: int = 1_000_000
    lockstep_max_steps_given: bool = False
    helps: list[str] = field(default_factory=list)


def _keyvals(opt: str, val: str, implied: str) -> Iterator[tuple[str, str]]:
    """QEMU's ``key=value,key=value`` with an implied first key (``-machine pc``)."""
    for i, part in enumerate(val.split(",")):
        key, sep, v = part.partition("=")
        if not sep:
            if i == 0:
                key, v = implied, key
            else:
                raise UsageError(f"{opt}: '{part}' is not key=value")
        yield key.strip().replace("_", "-"), v.strip()


def _only_value(opt: str, key: str, value: str, allowed: dict[str, str | None]) -> None:
    """Refuse ``key`` unless pyqemu models it, and a value other than its only one."""
    if key not in allowed:
        takes = ", ".join(k + "=" + (v if v is not None else "...") for k, v in allowed.items())
        raise UsageError(f"{opt}: property '{key}' is not supported; pyqemu takes {takes}")
    only = allowed[key]
    if only is not None and value != only:
        why = {"kernel-irqchip": "pyqemu's kvm runs without an in-kernel irqchip",
               "graphics": "pyqemu has no display",
               "usb": "pyqemu's pc has no USB"}.get(key, "")
        raise UsageError(f"{opt}: {key}={value} is not supported; only {key}={only}"
                         + (f" ({why})" if why else ""))


def _accel_names(opt: str, spec: str) -> list[str]:
    """``kvm:tcg`` -> ["kvm", "interp"] (QEMU's accelerator list, tried in order)."""
    names = [ACCEL_ALIASES.get(n.strip(), n.strip()) for n in spec.split(":")]
    if not all(names):
        raise UsageError(f"{opt}: '{spec}' is not an accelerator list (kvm, interp or "
                         "tcg, separated by ':')")
    return names


def _set_accels(o: Options, opt: str, names: list[str]) -> None:
    if o.accel_option is not None and (o.accel_option == "-machine accel=") != (
            opt == "-machine accel="):
        raise UsageError('the -accel and "-machine accel=" options are incompatible; '
                         "give the accelerators with one of them")
    if opt == "-machine accel=":
        o.accels = names          # each -machine accel= replaces the list, as in QEMU
    else:
        o.accels += names         # each -accel adds one, tried in order
    o.accel_option = opt
    o.accel = o.accels[0]


def _parse_machine(o: Options, val: str) -> None:
    for key, v in _keyvals("-machine", val, "type"):
        if key == "type":
            if v == "help":
                o.helps.append("machine")
            elif not v:
                raise UsageError("-machine: no machine type given; -machine help lists them")
            else:
                o.machine = v
        elif key == "accel":
            _set_accels(o, "-machine accel=", _accel_names("-machine accel=", v))
        else:
            _only_value("-machine", key, v, MACHINE_PROPS)


def _parse_accel(o: Options, val: str) -> None:
    name = ""
    for key, v in _keyvals("-accel", val, "accel"):
        if key == "accel":
            name = v
        else:
            _only_value("-accel", key, v, ACCEL_PROPS)
    if name == "help":
        o.helps.append("accel")
    elif ":" in name or not name:
        raise UsageError(f"-accel: '{name}' is not an accelerator (kvm, interp or tcg); "
                         "repeat -accel for a fallback")
    else:
        _set_accels(o, "-accel", [ACCEL_ALIASES.get(name, name)])


def parse_timeout(val: str) -> float:
    """``-timeout SECONDS``: a finite, positive number of seconds."""
    try:
        t = float(val)
    except ValueError:
        t = math.nan
    if not math.isfinite(t) or t <= 0:
        raise UsageError(f"-timeout: '{val}' is not a number of seconds; give a positive "
                         "number (10, 0.5)")
    return t


def _parse_max_steps(val: str) -> int:
    try:
        n = int(val, 0)
    except ValueError:
        n = 0
    if n <= 0:
        raise UsageError(f"-lockstep-max-steps: '{val}' is not a positive number of steps")
    return n


def _parse_display(opt: str, val: str) -> None:
    if val != "none":
        what = "monitor" if opt == "-monitor" else "display"
        raise UsageError(f"{opt} {val}: pyqemu has no {what}; only '{opt} none' is accepted")


def parse_args(argv: Sequence[str]) -> Options:
    """The options, checked for what can be checked without building anything."""
    o = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        opt = arg[1:] if arg.startswith("--") else arg  # QEMU accepts --opt too
        if opt not in OPTIONS:
            raise UsageError(f"{arg}: invalid option; -h lists the options pyqemu takes")
        val = ""
        if OPTIONS[opt]:
            if i + 1 >= len(argv):
                raise UsageError(f"{arg}: requires an argument")
            val = argv[i + 1]
            i += 1
        i += 1
        _parse_option(o, opt, val)
    _check_combinations(o)
    return o


def _parse_option(o: Options, opt: str, val: str) -> None:
    if opt in UNSUPPORTED:
        raise UsageError(f"{opt}: not supported: {UNSUPPORTED[opt]}")
    if opt in ("-h", "-help"):
        o.helps.append("usage")
    elif opt == "-version":
        o.helps.append("version")
    elif opt in ("-machine", "-M"):
        _parse_machine(o, val)
    elif opt == "-accel":
        _parse_accel(o, val)
    elif opt == "-enable-kvm":
        _set_accels(o, "-accel", ["kvm"])
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
    elif opt == "-device":
        if val.split(",")[0] == "help":
            o.helps.append("device")
        else:
            o.devices.append(val)
    elif opt == "-nographic":
        o.nographic = True
    elif opt == "-serial":
        o.serials.append(val)
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
        o.timeout = parse_timeout(val)
    elif opt == "-lockstep":
        o.lockstep = True
    elif opt == "-lockstep-max-steps":
        o.lockstep_max_steps = _parse_max_steps(val)
        o.lockstep_max_steps_given = True
    elif opt in ("-display", "-vga", "-monitor"):
        _parse_display(opt, val)
    else:  # an entry of OPTIONS without a branch here
        raise AssertionError(f"option {opt} is listed but not handled")


def _check_combinations(o: Options) -> None:
    if len(o.serials) > MAX_SERIAL_PORTS:
        raise UsageError(f"-serial: given {len(o.serials)} times; the pc machine has "
                         f"{MAX_SERIAL_PORTS} serial ports (COM1-COM4)")
    o.serial = o.serials[0] if o.serials else None
    if o.kernel is None and o.append:
        raise UsageError("-append only allowed with -kernel option")
    if o.kernel is not None and o.bios is not None:
        raise UsageError("-bios and -kernel: give one of them (pyqemu boots a -kernel "
                         "directly, without firmware)")
    if o.lockstep_max_steps_given and not o.lockstep:
        raise UsageError("-lockstep-max-steps: only with -lockstep")
    if o.lockstep:
        for given, opt, why in (
                (o.timeout is not None, "-timeout", "a lockstep run ends after "
                                                    "-lockstep-max-steps instructions"),
                (o.log is not None or o.logfile is not None, "-d/-D",
                 "the lockstep report goes to stdout"),
                (o.nographic, "-nographic", "a lockstep run reads no serial input"),
                (len(o.serials) > 1, "-serial", "a lockstep run has one serial port")):
            if given:
                raise UsageError(f"{opt}: not supported with -lockstep: {why}")


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


def _serial_specs(o: Options) -> list[str | None]:
    """The board's serial backends, COM1 first.  No -serial: COM1 on stdio (there is no
    display to put it on, so it goes to the terminal, as with -nographic)."""
    specs = o.serials or ["stdio"]
    return [None if s.strip() == "none" else s for s in specs]


def choose_accel(o: Options) -> str:
    """The first accelerator of ``o.accels`` usable here (interp when none was given).

    One accelerator is used as asked (the machine names it if it cannot start); of a
    list (``-accel kvm -accel tcg``, ``-machine accel=kvm:tcg``) the first one
    available is taken, as QEMU's ``configure_accelerators`` does.
    """
    if not o.accels:
        return "interp"
    if len(o.accels) == 1:
        return o.accels[0]
    from pyqemu.accel.ops import accel_list
    known = {name: why for name, _, why in accel_list()}
    for name in o.accels:
        if name not in known:
            raise UsageError(f"{o.accel_option}: invalid accelerator '{name}'; -accel help "
                             "lists them")
    for name in o.accels:
        if known[name] is None:
            return name
    why = "; ".join(f"{n}: {known[n]}" for n in o.accels)
    raise UsageError(f"{o.accel_option}: no accelerator of {':'.join(o.accels)} is "
                     f"available here ({why})")


def build_machine(o: Options, accel: str, log_stream: TextIO | None = None) -> Any:
    """The Machine the options describe (``-d`` lines to ``log_stream``, else stderr)."""
    from pyqemu.machine import Machine
    from pyqemu.util import trace
    groups = trace.parse_groups(o.log) if o.log else set()
    sink = None
    if groups:
        sink = trace.stream_sink(log_stream) if log_stream is not None else trace.stderr_sink()
    return Machine(o.machine, accel=accel, cpu=o.cpu, smp=o.smp,
                   memory=o.memory, bios=o.bios, kernel=o.kernel, append=o.append,
                   serial=_serial_specs(o), serial_input=o.nographic,
                   devices=o.devices, no_reboot=o.no_reboot,
                   trace=groups or None, trace_sink=sink)


def run_machine(o: Options) -> int:
    from pyqemu.machine import check_options
    from pyqemu.util import trace
    accel = choose_accel(o)
    check_options(o.machine, o.cpu, o.smp, o.memory, o.bios, o.kernel, o.append, o.devices,
                  accel)
    if o.log:
        trace.parse_groups(o.log)
    if o.bios is None and o.kernel is None:
        # Checked first: a machine that could only sit in its reset state is not built.
        raise UsageError("nothing to run: give -bios FILE or -kernel FILE "
                         "(the library loads other guests)")
    log_stream: TextIO | None = None
    if o.log and o.logfile:
        try:
            log_stream = open(o.logfile, "w")  # noqa: SIM115 - closed below
        except OSError as e:
            raise UsageError(f"-D {o.logfile}: {e.strerror}") from None
    try:
        m = build_machine(o, accel, log_stream)
        try:
            result = m.run(timeout=o.timeout)
        finally:
            m.close()
    finally:
        if log_stream is not None:
            log_stream.close()
    if result.reason == "shutdown":
        return (result.exit_code or 0) & 0xFF  # exit() keeps the low 8 bits, as QEMU's does
    if result.reason == "halted":
        print(f"{PROG}: every vCPU is halted and nothing can wake it; exiting", file=sys.stderr)
        return 0
    if result.reason == "timeout":
        print(f"{PROG}: stopped after -timeout {o.timeout:g}s", file=sys.stderr)
        return 124
    return 0


class _WarningPrinter(logging.Handler):
    """The ``pyqemu`` logger on the command line: one ``pyqemu: warning: MSG`` line on
    stderr per record (QEMU's ``warn_report`` format); the stream is looked up at each
    record, so a redirected ``sys.stderr`` gets it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            level = record.levelname.lower()
            prefix = f"{PROG}: " if record.levelno >= logging.ERROR else f"{PROG}: {level}: "
            sys.stderr.write(f"{prefix}{msg}\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


@contextmanager
def warnings_to_stderr() -> Iterator[None]:
    """Print the ``pyqemu`` logger's warnings on stderr while the command runs."""
    logger = logging.getLogger("pyqemu")
    handler = _WarningPrinter(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # SIGINT ends the run cleanly (threads joined, fds closed) instead of a traceback.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with warnings_to_stderr():
        try:
            if argv[:1] == ["demo"]:
                from pyqemu.demo import demo_main
                return demo_main(argv[1:])
            if argv[:1] == ["images"]:
                from pyqemu.images import images_main
                return images_main(argv[1:])
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
        except MemoryError:
            print(f"{PROG}: out of memory", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"{PROG}: terminating on signal {signal.SIGINT.value}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
