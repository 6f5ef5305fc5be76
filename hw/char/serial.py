"""The 16550A UART core (National Semiconductor / TI PC16550D datasheet).

:class:`SerialState` models the chip's eight registers as the datasheet's
Table II ("Summary of Registers") gives them, independent of how the chip is
attached to a bus (QEMU's ``serial.c`` vs ``serial-isa.c``):

===  =====  ===========================================================
off  DLAB   register
===  =====  ===========================================================
0    0      RBR (read) receiver buffer / THR (write) transmitter holding
1    0      IER interrupt enable
0    1      DLL divisor latch, low byte
1    1      DLM divisor latch, high byte
2    x      IIR (read) interrupt identification / FCR (write) FIFO control
3    x      LCR line control (bit 7: DLAB)
4    x      MCR modem control (bit 4: loopback)
5    x      LSR line status
6    x      MSR modem status
7    x      SCR scratch
===  =====  ===========================================================

Transmission is immediate: a byte written to THR (or the transmit FIFO) is
shifted out at once to the character backend, so THRE and TEMT are set again
by the time the write returns and the THRE interrupt re-arms, as it does on the
chip when the transmitter empties.  Reception is fed by :meth:`receive`.  The
FIFO character-timeout interrupt (IIR=0xCC) needs a clock: it is scheduled
four character times after the last FIFO activity through a ``timer``
factory, so that a test can fire it by hand.

The interrupt output is the chip's INTRPT pin, passed to ``set_irq(level)``.
On a PC the board gates it with MCR.OUT2; QEMU does not, and neither do we,
so guests written for QEMU see the same interrupts.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from pyqemu.util import trace

# --- register offsets (Table II) ------------------------------------------------------
UART_RBR = UART_THR = UART_DLL = 0
UART_IER = UART_DLM = 1
UART_IIR = UART_FCR = 2
UART_LCR = 3
UART_MCR = 4
UART_LSR = 5
UART_MSR = 6
UART_SCR = 7

# IER bits 0..3 (bits 4..7 always read 0).
IER_ERBFI = 0x01   # received data available (and character timeout)
IER_ETBEI = 0x02   # transmitter holding register empty
IER_ELSI = 0x04    # receiver line status
IER_EDSSI = 0x08   # modem status

# IIR: bit 0 is 0 while an interrupt is pending; bits 3..1 identify it (Table IV).
IIR_NO_INT = 0x01
IIR_RLS = 0x06     # receiver line status      (priority 1, highest)
IIR_RDA = 0x04     # received data available   (priority 2)
IIR_CTI = 0x0C     # character timeout         (priority 2)
IIR_THRE = 0x02    # THR empty                 (priority 3)
IIR_MSI = 0x00     # modem status              (priority 4)
IIR_FIFO_ENABLED = 0xC0  # bits 7..6 are set when FCR bit 0 is

# FCR bits.
FCR_ENABLE = 0x01
FCR_RX_RESET = 0x02
FCR_TX_RESET = 0x04
FCR_DMA_MODE = 0x08
FCR_TRIGGER_SHIFT = 6
RX_TRIGGER_LEVELS = (1, 4, 8, 14)  # FCR bits 7..6 = 00, 01, 10, 11

# LCR bits.
LCR_WLS_MASK = 0x03   # word length 5..8
LCR_STB = 0x04        # stop bits
LCR_PEN = 0x08        # parity enable
LCR_EPS = 0x10
LCR_STICK = 0x20
LCR_BREAK = 0x40
LCR_DLAB = 0x80

# MCR bits (bits 5..7 always read 0).
MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOP = 0x10
MCR_MASK = 0x1F

# LSR bits.
LSR_DR = 0x01
LSR_OE = 0x02
LSR_PE = 0x04
LSR_FE = 0x08
LSR_BI = 0x10
LSR_THRE = 0x20
LSR_TEMT = 0x40
LSR_RXFIFO_ERR = 0x80
LSR_ERRORS = LSR_OE | LSR_PE | LSR_FE | LSR_BI

# MSR bits: deltas in 3..0, line states in 7..4.
MSR_DCTS = 0x01
MSR_DDSR = 0x02
MSR_TERI = 0x04
MSR_DDCD = 0x08
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80
MSR_DELTAS = 0x0F

FIFO_SIZE = 16
#: The 1.8432 MHz crystal of a PC serial port, divided by 16: baud = this / divisor.
UART_BAUD_BASE = 115200


class Timer(Protocol):
    def cancel(self) -> None: ...


#: ``timer(delay_seconds, callback) -> Timer``: schedules the FIFO timeout.
TimerFactory = Callable[[float, Callable[[], None]], Timer]


def _thread_timer(delay: float, fn: Callable[[], None]) -> Timer:
    t = threading.Timer(delay, fn)
    t.daemon = True
    t.name = "serial fifo timeout"
    t.start()
    return t


class SerialBackend(Protocol):
    """What the UART needs of a character backend (:class:`system.chardev.Chardev`)."""

    def write(self, data: bytes) -> int: ...

    def accept_input(self) -> None: ...


class SerialState:
    """One PC16550D: registers, 16-byte FIFOs and the interrupt logic.

    ``set_irq(level)`` receives the INTRPT output each time it changes;
    ``backend`` takes transmitted bytes; ``lock`` guards the state
    against the backend's input thread and the timeout timer (a device passes
    the big lock); ``timer`` schedules the character timeout (a daemon
    ``threading.Timer`` by default, cancelled by :meth:`close`).
    """

    def __init__(self, set_irq: Callable[[bool], None] | None = None,
                 backend: SerialBackend | None = None, *,
                 lock: threading.RLock | None = None,
                 timer: TimerFactory | None = None,
                 name: str = "serial") -> None:
        self.name = name
        self.set_irq = set_irq
        self.backend = backend
        self.lock = lock if lock is not None else threading.RLock()
        self._timer_factory = timer if timer is not None else _thread_timer
        self._timeout_timer: Timer | None = None
        self.irq_level = False
        self.scr = 0
        self.divider = 12  # 9600 baud until the guest programs it (not reset by MR)
        # Modem inputs seen from the host side: a connected terminal asserts CTS,
        # DSR and DCD; RI stays off.  Loopback replaces them with MCR outputs.
        self.ext_msr = MSR_CTS | MSR_DSR | MSR_DCD
        self.reset()

    # -- reset (datasheet Table III, "UART Reset Configuration") --------------------------
    def reset(self) -> None:
        """Master reset: IER, FCR, LCR, MCR cleared, IIR=0x01, LSR=0x60, MSR deltas cleared."""
        with self.lock:
            self._cancel_timeout()
            self.ier = 0
            self.fcr = 0
            self.lcr = 0
            self.mcr = 0
            self.lsr = LSR_THRE | LSR_TEMT
            self.rbr = 0
            self.msr = self._msr_inputs()
            self.rx_fifo: deque[tuple[int, int]] = deque()  # (byte, LSR error bits)
            self.tx_fifo: deque[int] = deque()
            self.thr_ipending = False
            self.timeout_ipending = False
            self._update_irq()

    # -- derived settings ----------------------------------------------------------------
    @property
    def fifo_enabled(self) -> bool:
        return bool(self.fcr & FCR_ENABLE)

    @property
    def rx_trigger(self) -> int:
        return RX_TRIGGER_LEVELS[(self.fcr >> FCR_TRIGGER_SHIFT) & 3]

    @property
    def loopback(self) -> bool:
        return bool(self.mcr & MCR_LOOP)

    @property
    def baud(self) -> float:
        return UART_BAUD_BASE / (self.divider or 0x10000)

    def char_time(self) -> float:
        """Seconds per character: start bit, 5-8 data bits, parity, 1/1.5/2 stop bits."""
        data_bits = 5 + (self.lcr & LCR_WLS_MASK)
        stop = 1.0 if not self.lcr & LCR_STB else (1.5 if data_bits == 5 else 2.0)
        bits = 1 + data_bits + (1 if self.lcr & LCR_PEN else 0) + stop
        return bits / self.baud

    # -- register access -------------------------------------------------------------------
    def read(self, offset: int) -> int:
        """Read register ``offset`` (0..7), with the datasheet's read side effects."""
        with self.lock:
            return self._read(offset & 7)

    def write(self, offset: int, value: int) -> None:
        """Write register ``offset`` (0..7)."""
        with self.lock:
            self._write(offset & 7, value & 0xFF)

    def _read(self, offset: int) -> int:
        dlab = self.lcr & LCR_DLAB
        if offset == UART_RBR:
            if dlab:
                return self.divider & 0xFF
            return self._read_rbr()
        if offset == UART_IER:
            if dlab:
                return (self.divider >> 8) & 0xFF
            return self.ier
        if offset == UART_IIR:
            iir = self._iir()
            # Reading IIR while it names the THRE interrupt clears it (Table IV).
            if iir & 0x0F == IIR_THRE:
                self.thr_ipending = False
                self._update_irq()
            return iir
        if offset == UART_LCR:
            return self.lcr
        if offset == UART_MCR:
            return self.mcr
        if offset == UART_LSR:
            lsr = self.lsr
            # Reading LSR clears OE, PE, FE, BI; bit 7 stays while an erroneous
            # character is still in the FIFO (LSR7 description).
            self.lsr &= ~LSR_ERRORS
            if not any(err for _, err in self.rx_fifo):
                self.lsr &= ~LSR_RXFIFO_ERR
            self._update_irq()
            return lsr
        if offset == UART_MSR:
            msr = self.msr
            self.msr &= ~MSR_DELTAS  # reading MSR clears the delta bits
            self._update_irq()
            return msr
        return self.scr

    def _write(self, offset: int, value: int) -> None:
        dlab = self.lcr & LCR_DLAB
        if offset == UART_THR:
            if dlab:
                self.divider = (self.divider & 0xFF00) | value
            else:
                self._write_thr(value)
        elif offset == UART_IER:
            if dlab:
                self.divider = (self.divider & 0x00FF) | (value << 8)
            else:
                old = self.ier
                self.ier = value & 0x0F
                # Enabling ETBEI while THR is empty raises THRE at once, as the
                # chip's transmitter-empty condition is level, not edge, driven.
                if not old & IER_ETBEI and self.ier & IER_ETBEI and self.lsr & LSR_THRE:
                    self.thr_ipending = True
                self._update_irq()
        elif offset == UART_FCR:
            self._write_fcr(value)
        elif offset == UART_LCR:
            self.lcr = value
        elif offset == UART_MCR:
            old = self.mcr
            self.mcr = value & MCR_MASK
            if (old ^ self.mcr) & MCR_LOOP or self.loopback:
                self._set_msr_inputs(self._msr_inputs())
        elif offset == UART_LSR:
            pass  # LSR is read-only on a real 16550 (factory test only)
        elif offset == UART_MSR:
            pass  # MSR line bits follow the inputs; writes do nothing useful
        else:
            self.scr = value

    # -- transmit ------------------------------------------------------------------------------
    def _write_thr(self, value: int) -> None:
        self.thr_ipending = False  # writing THR clears the THRE interrupt (Table IV)
        self.lsr &= ~(LSR_THRE | LSR_TEMT)
        if self.fifo_enabled:
            if len(self.tx_fifo) < FIFO_SIZE:
                self.tx_fifo.append(value)
        else:
            self.tx_fifo.clear()
            self.tx_fifo.append(value)
        self._update_irq()
        self._transmit()

    def _transmit(self) -> None:
        """Shift out everything the transmitter holds, then report it empty."""
        while self.tx_fifo:
            byte = self.tx_fifo.popleft()
            if self.loopback:
                # Loopback: the transmitter output is tied to the receiver input.
                self._receive_byte(byte, 0)
            elif self.backend is not None:
                self.backend.write(bytes((byte,)))
        self.lsr |= LSR_THRE | LSR_TEMT
        self.thr_ipending = True
        self._update_irq()

    # -- receive ------------------------------------------------------------------------------
    def can_receive(self) -> int:
        """How many bytes the receiver takes now without an overrun (for flow control)."""
        with self.lock:
            if self.loopback:
                return FIFO_SIZE  # external input is disconnected; it will be dropped
            if self.fifo_enabled:
                return FIFO_SIZE - len(self.rx_fifo)
            return 0 if self.lsr & LSR_DR else 1

    def receive(self, data: bytes) -> None:
        """Bytes arriving on the serial input (SIN) from the backend.

        In loopback mode SIN is disconnected from the receiver, so they are
        dropped.  A byte arriving while the receiver is full overruns (LSR.OE).
        """
        with self.lock:
            if self.loopback:
                return
            for byte in data:
                self._receive_byte(byte, 0)

    def receive_break(self) -> None:
        """A break condition on SIN: a zero character with LSR.BI (LSR4)."""
        with self.lock:
            if not self.loopback:
                self._receive_byte(0, LSR_BI)

    def _receive_byte(self, byte: int, err: int) -> None:
        if self.fifo_enabled:
            if len(self.rx_fifo) >= FIFO_SIZE:
                # The shift register overwrites itself; the FIFO is kept (LSR1).
                self.lsr |= LSR_OE
            else:
                self.rx_fifo.append((byte, err))
                if len(self.rx_fifo) == 1:
                    self.lsr |= err
                if err:
                    self.lsr |= LSR_RXFIFO_ERR
            self.timeout_ipending = False
            self._arm_timeout()
        else:
            if self.lsr & LSR_DR:
                self.lsr |= LSR_OE  # the previous character was never read
            self.rbr = byte
            self.lsr |= err
        self.lsr |= LSR_DR
        self._update_irq()

    def _read_rbr(self) -> int:
        if self.fifo_enabled:
            value = 0
            if self.rx_fifo:
                value, _ = self.rx_fifo.popleft()
                if self.rx_fifo:
                    # The error of the character now at the top becomes visible.
                    self.lsr |= self.rx_fifo[0][1]
                    self._arm_timeout()
                else:
                    self._cancel_timeout()
            if not self.rx_fifo:
                self.lsr &= ~LSR_DR
            self.timeout_ipending = False  # reading RBR clears the timeout (Table IV)
        else:
            value = self.rbr
            self.lsr &= ~LSR_DR
        self._update_irq()
        backend = self.backend
        if backend is not None and hasattr(backend, "accept_input"):
            # Room again: let the backend hand over input it held back.
            backend.accept_input()
        return value

    # -- FIFO control and the timeout ----------------------------------------------------------
    def _write_fcr(self, value: int) -> None:
        if (value ^ self.fcr) & FCR_ENABLE:
            # Changing FCR0 clears both FIFOs.
            self.rx_fifo.clear()
            self.tx_fifo.clear()
            self._cancel_timeout()
            self.timeout_ipending = False
            self.lsr &= ~(LSR_DR | LSR_RXFIFO_ERR)
        if not value & FCR_ENABLE:
            # "FCR0 must be a 1 when other FCR bits are written to or they will
            # not be programmed."
            self.fcr = 0
            self._update_irq()
            return
        if value & FCR_RX_RESET:
            self.rx_fifo.clear()
            self._cancel_timeout()
            self.timeout_ipending = False
            self.lsr &= ~(LSR_DR | LSR_RXFIFO_ERR)
        if value & FCR_TX_RESET:
            self.tx_fifo.clear()
            self.lsr |= LSR_THRE | LSR_TEMT
        # Bits 1 and 2 are self-clearing; keep enable, DMA mode and the trigger.
        self.fcr = value & (FCR_ENABLE | FCR_DMA_MODE | (3 << FCR_TRIGGER_SHIFT))
        self._update_irq()

    def _arm_timeout(self) -> None:
        """Restart the 4-character-time timeout (FIFO mode, data below the trigger)."""
        self._cancel_timeout()
        self._timeout_timer = self._timer_factory(4 * self.char_time(), self.char_timeout)

    def _cancel_timeout(self) -> None:
        t = getattr(self, "_timeout_timer", None)
        if t is not None:
            t.cancel()
            self._timeout_timer = None

    def char_timeout(self) -> None:
        """The FIFO timeout fired: no character in or out of the RX FIFO for 4 character times."""
        with self.lock:
            self._timeout_timer = None
            if self.fifo_enabled and self.rx_fifo:
                self.timeout_ipending = True
                self._update_irq()

    # -- modem status ---------------------------------------------------------------------------
    def _msr_inputs(self) -> int:
        if self.loopback:
            # Loopback ties RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD (MCR4).
            m = self.mcr
            return ((MSR_CTS if m & MCR_RTS else 0) | (MSR_DSR if m & MCR_DTR else 0)
                    | (MSR_RI if m & MCR_OUT1 else 0) | (MSR_DCD if m & MCR_OUT2 else 0))
        return self.ext_msr

    def _set_msr_inputs(self, lines: int) -> None:
        old = self.msr
        delta = 0
        changed = (old ^ lines) & 0xF0
        if changed & MSR_CTS:
            delta |= MSR_DCTS
        if changed & MSR_DSR:
            delta |= MSR_DDSR
        if changed & MSR_DCD:
            delta |= MSR_DDCD
        if changed & MSR_RI and old & MSR_RI:
            delta |= MSR_TERI  # trailing edge only: RI went from on to off
        self.msr = (old & MSR_DELTAS) | delta | (lines & 0xF0)
        self._update_irq()

    def set_modem_inputs(self, *, cts: bool, dsr: bool, ri: bool, dcd: bool) -> None:
        """The host side's modem lines (ignored by MSR while in loopback)."""
        with self.lock:
            self.ext_msr = ((MSR_CTS if cts else 0) | (MSR_DSR if dsr else 0)
                            | (MSR_RI if ri else 0) | (MSR_DCD if dcd else 0))
            if not self.loopback:
                self._set_msr_inputs(self.ext_msr)

    # -- interrupts (Table IV) -------------------------------------------------------------------
    def _rda(self) -> bool:
        if self.fifo_enabled:
            return len(self.rx_fifo) >= self.rx_trigger
        return bool(self.lsr & LSR_DR)

    def _iir(self) -> int:
        ident = IIR_NO_INT
        if self.ier & IER_ELSI and self.lsr & LSR_ERRORS:
            ident = IIR_RLS
        elif self.ier & IER_ERBFI and self._rda():
            ident = IIR_RDA
        elif self.ier & IER_ERBFI and self.timeout_ipending:
            ident = IIR_CTI
        elif self.ier & IER_ETBEI and self.thr_ipending:
            ident = IIR_THRE
        elif self.ier & IER_EDSSI and self.msr & MSR_DELTAS:
            ident = IIR_MSI
        if self.fifo_enabled:
            ident |= IIR_FIFO_ENABLED
        return ident

    def _update_irq(self) -> None:
        level = not self._iir() & IIR_NO_INT
        if level == self.irq_level:
            return
        self.irq_level = level
        if trace.enabled("ioport"):
            trace.event(f"{self.name} irq {'raise' if level else 'lower'}", "ioport")
        if self.set_irq is not None:
            self.set_irq(level)

    # -- lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        """Cancel the timeout timer (so no thread outlives the device)."""
        with self.lock:
            self._cancel_timeout()
