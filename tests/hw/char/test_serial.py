"""The 16550A core against the PC16550D datasheet, and its ISA attachment."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[3]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from pyqemu.hw.char import serial as s  # noqa: E402
from pyqemu.hw.char.serial import SerialState  # noqa: E402
from pyqemu.hw.char.serial_isa import ISASerialState  # noqa: E402
from pyqemu.hw.core.errors import DeviceError  # noqa: E402
from pyqemu.hw.core.qdev import qdev_new, qdev_prop_set, qdev_realize, qdev_unrealize  # noqa: E402
from pyqemu.system.chardev import MemoryChardev  # noqa: E402
from pyqemu.system.memory import AddressSpace, MemoryRegion  # noqa: E402


class FakeTimer:
    """A timer factory the test fires by hand (the FIFO character timeout)."""

    def __init__(self) -> None:
        self.armed: list[tuple[float, object, FakeTimer.Handle]] = []

    class Handle:
        def __init__(self) -> None:
            self.cancelled = False

        def cancel(self) -> None:
            self.cancelled = True

    def __call__(self, delay, fn):
        h = FakeTimer.Handle()
        self.armed.append((delay, fn, h))
        return h

    def fire(self) -> None:
        live = [(d, fn, h) for d, fn, h in self.armed if not h.cancelled]
        assert live, "no timer armed"
        live[-1][1]()


@pytest.fixture
def uart():
    levels: list[bool] = []
    out = MemoryChardev()
    timer = FakeTimer()
    u = SerialState(levels.append, out, timer=timer)
    u.levels, u.out, u.timer = levels, out, timer  # type: ignore[attr-defined]
    yield u
    u.close()
    out.close()


def test_reset_values_match_datasheet_table(uart):
    assert uart.read(s.UART_IER) == 0
    assert uart.read(s.UART_IIR) == 0x01
    assert uart.read(s.UART_LCR) == 0
    assert uart.read(s.UART_MCR) == 0
    assert uart.read(s.UART_LSR) == 0x60
    assert uart.read(s.UART_MSR) & 0x0F == 0


def test_thr_write_goes_to_backend_and_thre_temt_set_again(uart):
    for b in b"hi\n":
        uart.write(s.UART_THR, b)
    assert uart.out.getvalue() == b"hi\n"
    assert uart.read(s.UART_LSR) & (s.LSR_THRE | s.LSR_TEMT) == s.LSR_THRE | s.LSR_TEMT


def test_dlab_switches_offsets_0_and_1_to_divisor_latch(uart):
    uart.write(s.UART_IER, 0x05)
    uart.write(s.UART_LCR, s.LCR_DLAB | 0x03)
    uart.write(s.UART_DLL, 0x01)
    uart.write(s.UART_DLM, 0x02)
    assert uart.read(s.UART_DLL) == 0x01 and uart.read(s.UART_DLM) == 0x02
    assert uart.divider == 0x0201
    uart.write(s.UART_LCR, 0x03)
    assert uart.read(s.UART_IER) == 0x05       # IER untouched by the divisor writes
    assert uart.out.getvalue() == b""          # DLL write did not transmit


def test_ier_upper_bits_and_mcr_upper_bits_read_zero(uart):
    uart.write(s.UART_IER, 0xFF)
    uart.write(s.UART_MCR, 0xFF & ~s.MCR_LOOP)
    assert uart.read(s.UART_IER) == 0x0F
    assert uart.read(s.UART_MCR) == 0x0F


def test_scratch_register_holds_a_byte(uart):
    uart.write(s.UART_SCR, 0xA5)
    assert uart.read(s.UART_SCR) == 0xA5


def test_enabling_etbei_raises_thre_and_reading_iir_clears_it(uart):
    uart.write(s.UART_IER, s.IER_ETBEI)
    assert uart.irq_level and uart.levels == [True]
    assert uart.read(s.UART_IIR) == 0x02
    assert not uart.irq_level
    assert uart.read(s.UART_IIR) == 0x01


def test_thr_write_rearms_thre_interrupt_after_transmit(uart):
    uart.write(s.UART_IER, s.IER_ETBEI)
    uart.read(s.UART_IIR)
    uart.write(s.UART_THR, 0x41)
    assert uart.irq_level and uart.read(s.UART_IIR) == 0x02


def test_receive_sets_dr_and_raises_rda_when_enabled(uart):
    uart.receive(b"x")
    assert uart.read(s.UART_LSR) & s.LSR_DR
    assert not uart.irq_level                       # IER.ERBFI still off
    uart.write(s.UART_IER, s.IER_ERBFI)
    assert uart.irq_level and uart.read(s.UART_IIR) == 0x04
    assert uart.read(s.UART_RBR) == ord("x")
    assert not uart.read(s.UART_LSR) & s.LSR_DR
    assert not uart.irq_level


def test_overrun_without_fifo_sets_oe_and_rls_outranks_rda_and_thre(uart):
    uart.write(s.UART_IER, s.IER_ERBFI | s.IER_ETBEI | s.IER_ELSI)
    uart.receive(b"ab")                           # b overwrites a: overrun
    assert uart.read(s.UART_IIR) == 0x06          # line status first
    lsr = uart.read(s.UART_LSR)
    assert lsr & s.LSR_OE and lsr & s.LSR_DR
    assert not uart.read(s.UART_LSR) & s.LSR_OE   # reading LSR cleared OE
    assert uart.read(s.UART_IIR) == 0x04          # then received data
    assert uart.read(s.UART_RBR) == ord("b")
    assert uart.read(s.UART_IIR) == 0x02          # then THR empty
    assert uart.read(s.UART_IIR) == 0x01


def test_modem_status_interrupt_has_lowest_priority_and_msr_read_clears_deltas(uart):
    uart.write(s.UART_IER, s.IER_EDSSI | s.IER_ETBEI)
    uart.set_modem_inputs(cts=False, dsr=True, ri=False, dcd=True)
    assert uart.read(s.UART_IIR) == 0x02          # THRE beats modem status
    assert uart.read(s.UART_IIR) == 0x00          # modem status, pending (bit 0 clear)
    msr = uart.read(s.UART_MSR)
    assert msr & s.MSR_DCTS and not msr & s.MSR_CTS
    assert uart.read(s.UART_MSR) & 0x0F == 0
    assert uart.read(s.UART_IIR) == 0x01


def test_fcr_enables_fifos_shown_in_iir_bits_7_6(uart):
    uart.write(s.UART_FCR, s.FCR_ENABLE)
    assert uart.read(s.UART_IIR) == 0xC1
    uart.write(s.UART_FCR, 0)
    assert uart.read(s.UART_IIR) == 0x01


def test_fifo_trigger_level_gates_rda_and_timeout_reports_the_rest(uart):
    uart.write(s.UART_LCR, 0x03)                          # 8N1
    uart.write(s.UART_FCR, s.FCR_ENABLE | (0b10 << 6))  # trigger at 8
    uart.write(s.UART_IER, s.IER_ERBFI)
    uart.receive(b"1234567")
    assert not uart.irq_level and uart.read(s.UART_IIR) == 0xC1
    uart.receive(b"8")
    assert uart.irq_level and uart.read(s.UART_IIR) == 0xC4
    assert bytes(uart.read(s.UART_RBR) for _ in range(2)) == b"12"
    assert not uart.irq_level                     # 6 left: below the trigger
    delay = uart.timer.armed[-1][0]
    assert delay == pytest.approx(4 * 10 / 9600)  # 4 characters of 8N1 at 9600 baud
    uart.timer.fire()
    assert uart.irq_level and uart.read(s.UART_IIR) == 0xCC
    assert uart.read(s.UART_RBR) == ord("3")      # reading RBR clears the timeout
    assert not uart.irq_level


def test_fifo_holds_16_bytes_then_overruns_keeping_the_fifo(uart):
    uart.write(s.UART_FCR, s.FCR_ENABLE)
    assert uart.can_receive() == 16
    uart.receive(bytes(range(17)))
    assert uart.read(s.UART_LSR) & s.LSR_OE
    assert [uart.read(s.UART_RBR) for _ in range(16)] == list(range(16))
    assert not uart.read(s.UART_LSR) & s.LSR_DR


def test_fcr_receiver_reset_empties_fifo_and_is_self_clearing(uart):
    uart.write(s.UART_FCR, s.FCR_ENABLE)
    uart.receive(b"abc")
    uart.write(s.UART_FCR, s.FCR_ENABLE | s.FCR_RX_RESET)
    assert not uart.read(s.UART_LSR) & s.LSR_DR
    assert uart.fcr & s.FCR_RX_RESET == 0


def test_loopback_routes_thr_to_rbr_and_mcr_outputs_to_msr(uart):
    uart.write(s.UART_MCR, s.MCR_LOOP | s.MCR_RTS | s.MCR_OUT2)
    uart.write(s.UART_THR, 0x5A)
    assert uart.out.getvalue() == b""            # nothing left the chip
    assert uart.read(s.UART_LSR) & s.LSR_DR
    assert uart.read(s.UART_RBR) == 0x5A
    msr = uart.read(s.UART_MSR)
    assert msr & 0xF0 == s.MSR_CTS | s.MSR_DCD
    uart.write(s.UART_MCR, s.MCR_LOOP | s.MCR_DTR | s.MCR_OUT1)
    msr = uart.read(s.UART_MSR)
    assert msr & 0xF0 == s.MSR_DSR | s.MSR_RI
    assert msr & (s.MSR_DCTS | s.MSR_DDSR | s.MSR_DDCD) == s.MSR_DCTS | s.MSR_DDSR | s.MSR_DDCD
    uart.write(s.UART_MCR, s.MCR_LOOP)             # RI on -> off: trailing edge
    assert uart.read(s.UART_MSR) & s.MSR_TERI


def test_loopback_disconnects_external_input(uart):
    uart.write(s.UART_MCR, s.MCR_LOOP)
    uart.receive(b"z")
    assert not uart.read(s.UART_LSR) & s.LSR_DR


def test_backend_input_is_flow_controlled_by_rbr_reads(uart):
    uart.out.set_handlers(uart.receive, uart.can_receive, lock=uart.lock)
    uart.out.feed(b"abc")                  # no FIFO: one byte at a time
    assert uart.out.pending_input == 2
    got = []
    while uart.read(s.UART_LSR) & s.LSR_DR:
        got.append(uart.read(s.UART_RBR))
    assert bytes(got) == b"abc" and not uart.read(s.UART_LSR) & s.LSR_OE


def test_break_sets_bi_and_rls_interrupt(uart):
    uart.write(s.UART_IER, s.IER_ELSI)
    uart.receive_break()
    assert uart.read(s.UART_IIR) == 0x06
    assert uart.read(s.UART_LSR) & s.LSR_BI
    assert uart.read(s.UART_RBR) == 0


# -- the ISA device -------------------------------------------------------------------------

class FakeMachine:
    def __init__(self) -> None:
        self.system_io = MemoryRegion.container_new("io", 1 << 16)
        self.address_space_io = AddressSpace("I/O", self.system_io, io=True)


def _isa_serial(machine, **props) -> ISASerialState:
    dev = qdev_new("isa-serial")
    assert isinstance(dev, ISASerialState)
    for k, v in props.items():
        qdev_prop_set(dev, k, v)
    dev.machine = machine
    return dev


def test_isa_serial_maps_eight_ports_and_unrealize_unmaps():
    m = FakeMachine()
    out = MemoryChardev()
    dev = _isa_serial(m, iobase="0x2f8", irq=3)
    dev.chr = out
    levels = []
    dev.irq_handler = levels.append
    qdev_realize(dev)
    asp = m.address_space_io
    asp.write(0x2F8, ord("K"), 1)
    assert out.getvalue() == b"K"
    assert asp.read(0x2F8 + 5, 1) == 0x60
    asp.write(0x2F9, s.IER_ETBEI, 1)
    assert levels == [True] and dev.irq_level
    qdev_unrealize(dev)
    assert asp.read(0x2FD, 1) == 0xFF           # unassigned again: floats high
    assert not out.closed                        # the caller's backend stays open
    out.close()


def test_isa_serial_defaults_and_spec_backend_owned_by_device(tmp_path):
    m = FakeMachine()
    path = tmp_path / "com1.txt"
    dev = _isa_serial(m, chardev=f"file:{path}")
    assert (dev.index, dev.iobase, dev.irq) == (-1, -1, -1)     # not given: chosen at realize
    qdev_realize(dev)
    assert (dev.index, dev.iobase, dev.irq) == (0, 0x3F8, 4)    # the first free port: COM1
    for b in b"ok":
        m.address_space_io.write(0x3F8, b, 1)
    assert path.read_bytes() == b"ok"
    chr = dev.chr
    qdev_unrealize(dev)
    assert chr is not None and chr.closed


def test_isa_serial_bad_chardev_and_bad_irq_name_the_property(tmp_path):
    m = FakeMachine()
    dev = _isa_serial(m, chardev=f"file:{tmp_path}/no/such/dir/x")
    with pytest.raises(DeviceError, match=r"'chardev'.*no/such/dir"):
        qdev_realize(dev)
    assert not dev.realized and m.system_io.subregions == []
    dev = _isa_serial(m, irq=16)
    with pytest.raises(DeviceError, match="'irq'"):
        qdev_realize(dev)


# -- ISA serial ports: QEMU's index, the next free COM port, clashes named -----------------------

def test_isa_serial_ports_without_properties_take_com1_to_com4_in_turn():
    m = FakeMachine()
    devs = []
    for _ in range(4):
        dev = _isa_serial(m)
        qdev_realize(dev)
        devs.append(dev)
    assert [(d.index, d.iobase, d.irq) for d in devs] == [
        (0, 0x3F8, 4), (1, 0x2F8, 3), (2, 0x3E8, 4), (3, 0x2E8, 3)]
    fifth = _isa_serial(m)
    with pytest.raises(DeviceError, match="all 4 ISA serial ports"):
        qdev_realize(fifth)
    assert (fifth.index, fifth.iobase, fifth.irq) == (-1, -1, -1) and not fifth.realized
    qdev_unrealize(devs[1])                 # COM2 unplugged: the next one takes its place
    again = _isa_serial(m)
    qdev_realize(again)
    assert (again.index, again.iobase, again.irq) == (1, 0x2F8, 3)
    for d in devs[:1] + devs[2:] + [again]:
        qdev_unrealize(d)
    assert m.system_io.subregions == []


def test_isa_serial_index_picks_the_standard_port_and_irq():
    m = FakeMachine()
    dev = _isa_serial(m, index=2)
    qdev_realize(dev)
    assert (dev.iobase, dev.irq) == (0x3E8, 4)
    bad = _isa_serial(m, index=4)
    with pytest.raises(DeviceError, match=r"'index' 4.*index 0-3"):
        qdev_realize(bad)
    qdev_unrealize(dev)


def test_isa_serial_on_ports_already_used_is_refused_naming_both_devices():
    import pyqemu.hw.misc.debugexit  # noqa: F401  (registers isa-debug-exit)
    m = FakeMachine()
    com1 = _isa_serial(m)
    qdev_realize(com1)
    clash = _isa_serial(m, iobase="0x3f8")
    with pytest.raises(DeviceError, match=r"isa-serial COM2: iobase=0x3f8: I/O ports "
                                          r"0x3f8-0x3ff clash with isa-serial COM1 "
                                          r"\(ports 0x3f8-0x3ff\)"):
        qdev_realize(clash)
    assert not clash.realized and len(m.system_io.subregions) == 1
    assert (clash.index, clash.iobase, clash.irq) == (-1, 0x3F8, -1)   # as they were given
    debug = qdev_new("isa-debug-exit")
    qdev_prop_set(debug, "iobase", 0x3FC)
    qdev_prop_set(debug, "iosize", 4)
    debug.id = "dbg"
    m.runctl = object()                     # isa-debug-exit wants one; it is never used here
    debug.machine = m
    with pytest.raises(DeviceError, match=r"isa-debug-exit 'dbg': iobase=0x3fc: I/O ports "
                                          r"0x3fc-0x3ff clash with isa-serial COM1"):
        qdev_realize(debug)
    qdev_unrealize(com1)
    qdev_realize(clash)                     # the ports are free again
    assert clash.index == 0                 # and COM1 is the next free index
    qdev_unrealize(clash)


def test_isa_serial_help_lists_the_defaults_as_the_index_s():
    dc = qdev_new("isa-serial").klass
    props = {p.name: p for p in dc.props}   # type: ignore[attr-defined]
    assert {n: (props[n].type, props[n].default) for n in ("index", "iobase", "irq")} == {
        "index": ("int32", -1), "iobase": ("int32", -1), "irq": ("int32", -1)}
