"""``isa-debug-exit``: a port that ends the VM with a status the guest chooses.

This is QEMU's test device (``hw/misc/debugexit.c``), not a PC chip: a write
of value ``v`` (of the access's width) to any port of the window shuts the
machine down with exit status ``(v << 1) | 1``, so a guest can never produce
status 0 by accident and a test harness can tell "the guest reported" from
"pyqemu exited normally".  Reads return 0.

Static properties: ``iobase`` (uint32, default 0x501) and ``iosize``
(uint32, default 2; 1, 2 or 4).  The board sets ``dev.machine`` (with
``system_io`` and ``runctl``) before realize.  ``-device
isa-debug-exit,iobase=0xf4,iosize=0x04`` is the usual test setup.

The status handed to :meth:`RunControl.request_shutdown` is the full value;
a process exit status keeps its low 8 bits, as QEMU's ``exit()`` does.
"""

from __future__ import annotations

from typing import Any

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
from pyqemu.system.memory import MemoryRegion
from pyqemu.system.runstate import ShutdownCause
from pyqemu.util import trace

__all__ = ["TYPE_ISA_DEBUG_EXIT", "ISADebugExitState"]

TYPE_ISA_DEBUG_EXIT = "isa-debug-exit"


class ISADebugExitState(DeviceState):
    iobase: int
    iosize: int
    machine: Any
    iomem: MemoryRegion | None


class _DebugExitOps:
    def __init__(self, dev: ISADebugExitState) -> None:
        self.dev = dev

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, value: int, size: int) -> None:
        status = (value << 1) | 1
        trace.event(f"isa-debug-exit: guest wrote {value:#x}, exit status {status}", "ioport")
        self.dev.machine.runctl.request_shutdown(ShutdownCause.GUEST_SHUTDOWN, status)


def debug_exit_instance_init(obj: Object) -> None:
    assert isinstance(obj, ISADebugExitState)
    obj.machine = None
    obj.iomem = None


def debug_exit_realizefn(dev: DeviceState) -> None:
    """Check ``iosize``/``iobase`` and claim the window in the machine's I/O space (ports
    another device decodes are refused, naming both devices)."""
    assert isinstance(dev, ISADebugExitState)
    if dev.iosize not in (1, 2, 4):
        raise DeviceError(f"isa-debug-exit: property 'iosize' must be 1, 2 or 4, "
                          f"not {dev.iosize}")
    system_io = getattr(dev.machine, "system_io", None)
    if not isinstance(system_io, MemoryRegion):
        raise DeviceError("isa-debug-exit: no ISA I/O space: the board must set dev.machine "
                          "(with a system_io MemoryRegion) before realize")
    if getattr(dev.machine, "runctl", None) is None:
        raise DeviceError("isa-debug-exit: the machine has no run control to shut down")
    iomem = MemoryRegion.io_new("isa-debug-exit", dev.iosize, _DebugExitOps(dev))
    owner = f"isa-debug-exit '{dev.id}'" if dev.id else "isa-debug-exit"
    isa_register_ioport(system_io, dev.iobase, iomem, owner)
    dev.iomem = iomem


def debug_exit_unrealizefn(dev: DeviceState) -> None:
    assert isinstance(dev, ISADebugExitState)
    if dev.iomem is not None:
        isa_unregister_ioport(dev.iomem)
    dev.iomem = None


def debug_exit_class_init(klass: ObjectClass, data: Any) -> None:
    dc = klass
    assert isinstance(dc, DeviceClass)
    dc.realize = debug_exit_realizefn
    dc.unrealize = debug_exit_unrealizefn
    dc.desc = "exit the VM with status (value << 1) | 1 on a port write"
    dc.user_creatable = True
    dc.category = "misc"
    device_class_set_props(dc, [
        Property("iobase", "uint32", 0x501, description="first I/O port"),
        Property("iosize", "uint32", 0x02, description="window size: 1, 2 or 4 ports"),
    ])


type_init(TypeInfo(
    name=TYPE_ISA_DEBUG_EXIT, parent=TYPE_DEVICE,
    instance_type=ISADebugExitState, instance_init=debug_exit_instance_init,
    class_init=debug_exit_class_init,
))
