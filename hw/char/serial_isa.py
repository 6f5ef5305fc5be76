"""The ISA attachment of the 16550A: QOM type ``isa-serial`` (QEMU's ``serial-isa.c``).

The UART core (:class:`hw.char.serial.SerialState`) knows nothing of buses;
this device gives it an 8-port I/O window at ``iobase`` in the machine's I/O
space, an interrupt line and a character backend.

Static properties (QEMU's ``serial-isa.c``; -1 means "not given"):

``index`` (int32, default -1)
    which serial port this is (COM1 = 0 ... COM4 = 3); when not given, the next
    free one on this I/O space (QEMU numbers ISA serial ports in realize order:
    the board's COM1 from ``-serial`` first, so ``-device isa-serial`` becomes
    COM2).  It names the regions and picks the defaults below.
``iobase`` (int32, default -1)
    first port of the 8-register window; by default the index's standard port
    (``isa_serial_io``: 0x3f8, 0x2f8, 0x3e8, 0x2e8).  A window that overlaps
    ports another device already decodes is refused, naming both devices.
``irq`` (int32, default -1)
    the ISA IRQ number (0..15) the board routes INTRPT to; by default the
    index's (``isa_serial_irq``: 4, 3, 4, 3).
``chardev`` (str)
    the label of a registered backend (:func:`system.chardev.qemu_chr_find`)
    or a ``-serial`` spec (``stdio``, ``file:PATH``, ``null``, ``memory`` ...)
    that the device then creates and owns; empty or ``none`` means no backend
    (transmitted bytes are dropped, as on a port with nothing plugged in).

Wiring before realize (the board's job): ``dev.machine`` with a ``system_io``
MemoryRegion (the root of ``address_space_io``); optionally
``dev.irq_handler = f`` with ``f(level: bool)`` (the board has no interrupt
controller model: the level is also kept in ``dev.irq_level``); optionally
``dev.chr`` set to a :class:`~system.chardev.Chardev` object, which then wins
over the ``chardev`` property and stays the caller's to close.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from pyqemu.hw.char.serial import SerialState
from pyqemu.hw.core.errors import DeviceError
from pyqemu.hw.core.qdev import (
    TYPE_DEVICE,
    DeviceClass,
    DeviceState,
    Property,
    device_class_set_props,
)
from pyqemu.hw.isa.isa_bus import isa_register_ioport, isa_unregister_ioport
from pyqemu.qom import Object, ObjectClass, TypeInfo, type_init
from pyqemu.system.chardev import Chardev, ChardevError, qemu_chr_find, qemu_chr_new
from pyqemu.system.cpus import qemu_global_mutex
from pyqemu.system.memory import MemoryRegion

__all__ = ["ISA_SERIAL_PORTS", "MAX_ISA_SERIAL_PORTS", "TYPE_ISA_SERIAL", "ISASerialState",
           "serial_isa_init"]

TYPE_ISA_SERIAL = "isa-serial"

#: The PC's standard COM ports (``isa_serial_io`` / ``isa_serial_irq``): index -> (iobase, irq).
ISA_SERIAL_PORTS = ((0x3F8, 4), (0x2F8, 3), (0x3E8, 4), (0x2E8, 3))
MAX_ISA_SERIAL_PORTS = len(ISA_SERIAL_PORTS)

#: the realized ISA serial ports, to find the next free index of an I/O space
_realized: weakref.WeakSet[ISASerialState] = weakref.WeakSet()

_IOSIZE = 8


class _SerialIOOps:
    """The 8-register window: one byte per port; wider accesses are split byte by byte."""

    def __init__(self, uart: SerialState) -> None:
        self.uart = uart

    def read(self, offset: int, size: int) -> int:
        value = 0
        for i in range(size):
            if offset + i < _IOSIZE:
                value |= self.uart.read(offset + i) << (8 * i)
        return value

    def write(self, offset: int, value: int, size: int) -> None:
        for i in range(size):
            if offset + i < _IOSIZE:
                self.uart.write(offset + i, (value >> (8 * i)) & 0xFF)


class ISASerialState(DeviceState):
    """``ISASerialState``: the UART, its I/O region and its backend."""

    iobase: int
    irq: int
    index: int
    chardev: str | None
    machine: Any
    uart: SerialState | None
    iomem: MemoryRegion | None
    chr: Chardev | None
    owns_chr: bool
    irq_handler: Callable[[bool], None] | None
    irq_level: bool


def isa_serial_instance_init(obj: Object) -> None:
    dev = obj
    assert isinstance(dev, ISASerialState)
    dev.machine = None
    dev.uart = None
    dev.iomem = None
    dev.chr = None
    dev.owns_chr = False
    dev.irq_handler = None
    dev.irq_level = False


def _set_irq(dev: ISASerialState, level: bool) -> None:
    dev.irq_level = level
    if dev.irq_handler is not None:
        dev.irq_handler(level)


def _resolve_chardev(dev: ISASerialState) -> tuple[Chardev | None, bool]:
    """(backend, owned): the ``chr`` attribute, a registered label, or a spec to create."""
    if dev.chr is not None:
        return dev.chr, False
    spec = (dev.chardev or "").strip()
    if not spec or spec == "none":
        return None, False
    found = qemu_chr_find(spec)
    if found is not None:
        return found, False
    try:
        return qemu_chr_new(spec, read_input=False), True
    except ChardevError as e:
        raise DeviceError(f"{_describe(dev)}: property 'chardev': {e}") from None


def _describe(dev: ISASerialState) -> str:
    """How messages name the port: its id, else COM1..COM4."""
    if dev.id:
        return f"isa-serial '{dev.id}'"
    if 0 <= dev.index < MAX_ISA_SERIAL_PORTS:
        return f"isa-serial COM{dev.index + 1}"
    return "isa-serial"


def _next_free_index(system_io: MemoryRegion) -> int:
    used = {d.index for d in _realized if d.iomem is not None and d.iomem.container is system_io}
    for i in range(MAX_ISA_SERIAL_PORTS):
        if i not in used:
            return i
    raise DeviceError(f"isa-serial: all {MAX_ISA_SERIAL_PORTS} ISA serial ports "
                      f"(COM1-COM{MAX_ISA_SERIAL_PORTS}) are in use")


def isa_serial_realize(dev: DeviceState) -> None:
    """``serial_isa_realizefn``: pick the index, iobase and irq, open the backend, claim
    the 8 ports.

    Fails with :class:`DeviceError` naming the property (or, for ports another
    device decodes, both devices); on failure nothing is left mapped or open and
    the properties are as they were.
    """
    assert isinstance(dev, ISASerialState)
    machine = dev.machine
    system_io = getattr(machine, "system_io", None)
    if not isinstance(system_io, MemoryRegion):
        raise DeviceError("isa-serial: no ISA I/O space: the board must set dev.machine "
                          "(with a system_io MemoryRegion) before realize")
    given = (dev.index, dev.iobase, dev.irq)
    index = dev.index if dev.index != -1 else _next_free_index(system_io)
    if not 0 <= index < MAX_ISA_SERIAL_PORTS:
        raise DeviceError(f"isa-serial: property 'index' {index}: there are "
                          f"{MAX_ISA_SERIAL_PORTS} ISA serial ports, index 0-"
                          f"{MAX_ISA_SERIAL_PORTS - 1} (COM1-COM{MAX_ISA_SERIAL_PORTS})")
    iobase = dev.iobase if dev.iobase != -1 else ISA_SERIAL_PORTS[index][0]
    irq = dev.irq if dev.irq != -1 else ISA_SERIAL_PORTS[index][1]
    if not 0 <= irq <= 15:
        raise DeviceError(f"isa-serial: property 'irq' {irq} is not an ISA IRQ (0..15)")
    dev.index, dev.iobase, dev.irq = index, iobase, irq
    try:
        chr, owned = _resolve_chardev(dev)
        name = f"serial{index}"
        uart = SerialState(lambda level: _set_irq(dev, level), chr, lock=qemu_global_mutex,
                           name=name)
        iomem = MemoryRegion.io_new(name, _IOSIZE, _SerialIOOps(uart))
        try:
            isa_register_ioport(system_io, iobase, iomem, _describe(dev))
        except BaseException:
            uart.close()
            if owned and chr is not None:
                chr.close()
            raise
    except BaseException:
        dev.index, dev.iobase, dev.irq = given
        raise
    if chr is not None:
        # Input reaches the UART under the big lock, as QEMU's main loop holds it.
        chr.set_handlers(uart.receive, uart.can_receive, lock=qemu_global_mutex)
    dev.uart, dev.iomem, dev.chr = uart, iomem, chr
    dev.owns_chr = owned
    _realized.add(dev)


def isa_serial_unrealize(dev: DeviceState) -> None:
    """Undo realize in reverse: detach input, unmap, stop the timer, close an owned backend."""
    assert isinstance(dev, ISASerialState)
    _realized.discard(dev)
    chr, owned = dev.chr, dev.owns_chr
    if chr is not None:
        chr.set_handlers(None)
    if dev.iomem is not None:
        isa_unregister_ioport(dev.iomem)
    if dev.uart is not None:
        dev.uart.close()
    if owned and chr is not None:
        chr.close()
        dev.chr = None
    dev.uart = None
    dev.iomem = None
    dev.owns_chr = False


def isa_serial_reset(dev: DeviceState) -> None:
    assert isinstance(dev, ISASerialState)
    if dev.uart is not None:
        dev.uart.reset()


def isa_serial_class_init(klass: ObjectClass, data: Any) -> None:
    dc = klass
    assert isinstance(dc, DeviceClass)
    dc.realize = isa_serial_realize
    dc.unrealize = isa_serial_unrealize
    dc.reset = isa_serial_reset
    dc.desc = "16550A UART on the ISA bus"
    dc.user_creatable = True
    dc.category = "input"
    device_class_set_props(dc, [
        Property("index", "int32", -1,
                 description="serial port number, COM1 = 0 (default: the next free one)"),
        Property("iobase", "int32", -1,
                 description="first I/O port (default: the index's, 0x3f8 for COM1)"),
        Property("irq", "int32", -1, description="ISA IRQ (default: the index's, 4 for COM1)"),
        Property("chardev", "str", "", description="backend label or -serial spec"),
    ])


def serial_isa_init(machine: Any, index: int, chr: Chardev | None) -> ISASerialState:
    """Create and realize COM``index+1`` at its standard port and IRQ (``serial_isa_init``)."""
    from pyqemu.hw.core.qdev import qdev_new, qdev_prop_set, qdev_realize
    if not 0 <= index < MAX_ISA_SERIAL_PORTS:
        raise DeviceError(f"isa-serial: index {index} has no standard port "
                          f"(0..{MAX_ISA_SERIAL_PORTS - 1})")
    dev = qdev_new(TYPE_ISA_SERIAL)
    assert isinstance(dev, ISASerialState)
    iobase, irq = ISA_SERIAL_PORTS[index]
    qdev_prop_set(dev, "index", index)
    qdev_prop_set(dev, "iobase", iobase)
    qdev_prop_set(dev, "irq", irq)
    dev.machine = machine
    dev.chr = chr
    qdev_realize(dev)
    return dev


type_init(TypeInfo(
    name=TYPE_ISA_SERIAL, parent=TYPE_DEVICE,
    instance_type=ISASerialState, instance_init=isa_serial_instance_init,
    class_init=isa_serial_class_init,
))
