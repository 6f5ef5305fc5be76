"""isa-debug-exit: exit status (v << 1) | 1, reads 0, iosize checked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[3]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import pyqemu.hw.misc.debugexit  # noqa: E402,F401  (registers the type)
from pyqemu.hw.core.errors import DeviceError  # noqa: E402
from pyqemu.hw.core.qdev import qdev_new, qdev_prop_set, qdev_realize, qdev_unrealize  # noqa: E402
from pyqemu.system.memory import AddressSpace, MemoryRegion  # noqa: E402
from pyqemu.system.runstate import ShutdownCause  # noqa: E402


class FakeRunControl:
    def __init__(self) -> None:
        self.requests: list[tuple[ShutdownCause, int | None]] = []

    def request_shutdown(self, cause: ShutdownCause, exit_code: int | None = None) -> None:
        self.requests.append((cause, exit_code))


class FakeMachine:
    def __init__(self) -> None:
        self.system_io = MemoryRegion.container_new("io", 1 << 16)
        self.address_space_io = AddressSpace("I/O", self.system_io, io=True)
        self.runctl = FakeRunControl()


def _dev(m, **props):
    dev = qdev_new("isa-debug-exit")
    for k, v in props.items():
        qdev_prop_set(dev, k, v)
    dev.machine = m
    return dev


def test_defaults_are_port_0x501_size_2():
    dev = _dev(FakeMachine())
    assert (dev.iobase, dev.iosize) == (0x501, 2)
    assert dev.klass.user_creatable


@pytest.mark.parametrize("value,size", [(0, 1), (0x10, 1), (0x31, 4), (0x1234, 4)])
def test_write_requests_shutdown_with_status_v_shl_1_or_1(value, size):
    m = FakeMachine()
    dev = _dev(m, iobase="0xf4", iosize="0x04")
    qdev_realize(dev)
    m.address_space_io.write(0xF4, value, size)
    assert m.runctl.requests == [(ShutdownCause.GUEST_SHUTDOWN, (value << 1) | 1)]
    qdev_unrealize(dev)


def test_reads_return_zero_and_unrealize_unmaps():
    m = FakeMachine()
    dev = _dev(m)
    qdev_realize(dev)
    assert m.address_space_io.read(0x501, 2) == 0
    qdev_unrealize(dev)
    assert m.address_space_io.read(0x501, 2) == 0xFFFF
    m.address_space_io.write(0x501, 1, 1)
    assert m.runctl.requests == []


@pytest.mark.parametrize("iosize", [0, 3, 8])
def test_bad_iosize_is_a_device_error_naming_the_property(iosize):
    m = FakeMachine()
    dev = _dev(m, iosize=iosize)
    with pytest.raises(DeviceError, match="'iosize'"):
        qdev_realize(dev)
    assert not dev.realized and m.system_io.subregions == []
