"""Character backends (QEMU's ``chardev/``): where a serial port's bytes go and come from.

A :class:`Chardev` is the host side of a character device: the frontend (the
16550 of :mod:`hw.char.serial`) calls :meth:`Chardev.write` for every byte the
guest transmits, and registers handlers with :meth:`Chardev.set_handlers` to be
given the bytes the host sends (QEMU's ``qemu_chr_fe_set_handlers`` with
``fd_can_read``/``fd_read``).  Input is flow controlled as in QEMU: a backend
holds what the frontend cannot take yet (``can_receive()`` says how much it
can) and hands it over when the frontend calls :meth:`Chardev.accept_input`
(``qemu_chr_fe_accept_input``) after the guest drained its receive FIFO.

Backends, by the ``-serial`` spelling :func:`qemu_chr_new` accepts:

``stdio`` / ``mon:stdio``
    :class:`StdioChardev`: output to stdout; with ``read_input=True`` (what
    ``-nographic`` asks for) a daemon reader thread polls stdin with ``select``
    and a timeout, so :meth:`close` always returns promptly.  The terminal is
    put in raw mode (no echo, no line buffering) only if stdin is a tty, and
    restored on close.  pyqemu has no monitor, so ``mon:stdio`` is stdio.
``file:PATH``
    :class:`FileChardev`: output written (unbuffered) to PATH, truncated first.
``null``
    :class:`NullChardev`: output discarded, never any input.
``memory``
    :class:`MemoryChardev`: a thread-safe capture buffer; the library and the
    tests read the guest's serial output from it and can feed it input.
``none``
    no backend at all: :func:`qemu_chr_new` returns ``None`` (QEMU then creates
    no serial port).

Threads and locks: a backend's input (the stdio reader thread, or
:meth:`MemoryChardev.feed` from any thread) reaches the frontend's handlers
with the frontend's lock held (the one passed to :meth:`set_handlers`, the big
lock for a device), and only that lock guards the pending input, so a vCPU
thread that holds the big lock and calls :meth:`accept_input` cannot deadlock
with the reader thread.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable
from typing import BinaryIO

from pyqemu.util.error import PyQemuError

ReceiveHandler = Callable[[bytes], None]
CanReceive = Callable[[], int]

# How long the stdio reader thread blocks in select() before it looks at its
# stop event again: the upper bound on how long close() waits for it.
_READER_POLL_S = 0.05


class ChardevError(PyQemuError, ValueError):
    """A character backend could not be created (bad -serial spec, unwritable file)."""


class Chardev:
    """The base of every backend (QEMU's ``Chardev``): output, input handlers, close."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._receive: ReceiveHandler | None = None
        self._can_receive: CanReceive | None = None
        # Guards _pending and the handler calls; replaced by the frontend's lock.
        self._fe_lock: threading.RLock | threading.Lock = threading.RLock()
        self._pending = bytearray()
        self.closed = False

    # -- output ----------------------------------------------------------------------
    def write(self, data: bytes) -> int:
        """Send ``data`` to the host side (``qemu_chr_fe_write``); returns the count written."""
        if self.closed:
            raise ChardevError(f"chardev '{self.label}' is closed")
        return self._write(bytes(data))

    def _write(self, data: bytes) -> int:
        raise NotImplementedError

    # -- input -----------------------------------------------------------------------
    def set_handlers(self, receive: ReceiveHandler | None,
                     can_receive: CanReceive | None = None,
                     lock: threading.RLock | None = None) -> None:
        """Install (or with ``None`` remove) the frontend's input handlers.

        ``receive(data)`` is called with at most ``can_receive()`` bytes (all of
        them if ``can_receive`` is None) while ``lock`` is held.  Called by the
        frontend at realize, before any input can flow, and at unrealize.
        """
        self._receive = receive
        self._can_receive = can_receive
        if lock is not None:
            self._fe_lock = lock
        if receive is not None:
            self.accept_input()

    def accept_input(self) -> None:
        """The frontend has room again (``qemu_chr_fe_accept_input``): hand over pending input."""
        with self._fe_lock:
            while self._pending and self._receive is not None:
                n = len(self._pending)
                if self._can_receive is not None:
                    n = min(n, self._can_receive())
                if n <= 0:
                    return
                chunk = bytes(self._pending[:n])
                del self._pending[:n]
                self._receive(chunk)

    def _feed(self, data: bytes) -> None:
        """Input from the host side: queue it and deliver what the frontend can take."""
        if not data:
            return
        with self._fe_lock:
            self._pending += data
        self.accept_input()

    @property
    def pending_input(self) -> int:
        """Bytes received from the host that the frontend has not taken yet."""
        with self._fe_lock:
            return len(self._pending)

    # -- lifetime --------------------------------------------------------------------
    def close(self) -> None:
        """Release the backend's resources (idempotent); unregisters its label."""
        self.closed = True
        _unregister(self)
        self._receive = None
        self._can_receive = None

    def __enter__(self) -> Chardev:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


class NullChardev(Chardev):
    """``-serial null``: output goes nowhere and no input ever comes."""

    def __init__(self, label: str = "null") -> None:
        super().__init__(label)

    def _write(self, data: bytes) -> int:
        return len(data)


class MemoryChardev(Chardev):
    """A capture buffer (like QEMU's ``ringbuf`` chardev, unbounded): thread safe.

    The guest's output accumulates; :meth:`getvalue` reads it, :meth:`take`
    reads and clears it, :meth:`wait_for` waits (with a timeout) until some
    bytes appear.  :meth:`feed` sends input to the frontend.
    """

    def __init__(self, label: str = "memory") -> None:
        super().__init__(label)
        self._buf = bytearray()
        # A leaf lock: nothing is called while it is held.
        self._cond = threading.Condition(threading.Lock())

    def _write(self, data: bytes) -> int:
        with self._cond:
            self._buf += data
            self._cond.notify_all()
        return len(data)

    def getvalue(self) -> bytes:
        with self._cond:
            return bytes(self._buf)

    def take(self) -> bytes:
        with self._cond:
            out = bytes(self._buf)
            self._buf.clear()
            return out

    def wait_for(self, needle: bytes, timeout: float) -> bool:
        """Wait until ``needle`` is in the output or ``timeout`` seconds pass; True if found."""
        with self._cond:
            return self._cond.wait_for(lambda: needle in self._buf, timeout)

    def feed(self, data: bytes) -> None:
        """Input for the frontend, as if typed on the host side."""
        self._feed(bytes(data))


class FileChardev(Chardev):
    """``-serial file:PATH``: the guest's output written to PATH (created or truncated)."""

    def __init__(self, path: str, label: str | None = None) -> None:
        super().__init__(label or f"file:{path}")
        self.path = path
        try:
            # Unbuffered, so a reader of the file (or a crash) sees every byte sent.
            self._file: BinaryIO | None = open(path, "wb", buffering=0)  # noqa: SIM115 - closed by close()
        except OSError as e:
            raise ChardevError(f"chardev: could not open '{path}': {e.strerror}") from None

    def _write(self, data: bytes) -> int:
        assert self._file is not None
        try:
            return self._file.write(data) or 0
        except OSError as e:
            raise ChardevError(f"chardev: write to '{self.path}' failed: {e.strerror}") from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


class StdioChardev(Chardev):
    """``-serial stdio``: output to stdout; input from stdin when ``read_input`` (``-nographic``).

    ``stdin``/``stdout`` are file descriptors (default 0 and 1), so a test can
    pass a pipe.  The reader thread is a daemon that polls with ``select``
    every 50 ms and watches a stop event: :meth:`close` stops and joins it.
    """

    def __init__(self, label: str = "stdio", *, read_input: bool = False,
                 stdin: int | None = None, stdout: int | None = None) -> None:
        super().__init__(label)
        self._in_fd = 0 if stdin is None else stdin
        self._out_fd = 1 if stdout is None else stdout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved_tty: list | None = None  # termios attributes to restore on close
        self._write_lock = threading.Lock()
        if read_input:
            self._enter_raw_mode()
            self._thread = threading.Thread(target=self._reader, name=f"chardev {label}",
                                            daemon=True)
            self._thread.start()

    def _write(self, data: bytes) -> int:
        # os.write on the fd, not sys.stdout: nothing else buffers the guest's bytes.
        with self._write_lock:
            view = memoryview(data)
            while view:
                n = os.write(self._out_fd, view)
                view = view[n:]
        return len(data)

    def _enter_raw_mode(self) -> None:
        """Character-at-a-time input without echo, only if stdin is a terminal.

        ISIG is kept so that ^C still stops pyqemu (there is no monitor to
        quit from), and output processing (OPOST) too, so the guest's "\\n"
        still starts a new line.
        """
        if not os.isatty(self._in_fd):
            return
        import termios
        attrs = termios.tcgetattr(self._in_fd)
        self._saved_tty = [list(a) if isinstance(a, list) else a for a in attrs]
        iflag, lflag = attrs[0], attrs[3]
        iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
                   | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON)
        lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.IEXTEN)
        attrs[0], attrs[3] = iflag, lflag
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(self._in_fd, termios.TCSANOW, attrs)

    def _reader(self) -> None:
        """The reader thread: poll stdin until EOF or the stop event."""
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._in_fd], [], [], _READER_POLL_S)
                if not ready:
                    continue
                data = os.read(self._in_fd, 4096)
            except (OSError, ValueError):
                return  # stdin closed under us: no more input
            if not data:
                return  # EOF
            self._feed(data)

    @property
    def reader_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # select() returns within _READER_POLL_S; a reader stuck in a frontend
            # handler is the frontend's bug, so bound the wait instead of hanging.
            self._thread.join(timeout=2.0)
            self._thread = None
        if self._saved_tty is not None:
            import termios
            with contextlib.suppress(termios.error):  # the terminal is gone: nothing to restore
                termios.tcsetattr(self._in_fd, termios.TCSANOW, self._saved_tty)
            self._saved_tty = None
        super().close()


_registry: dict[str, Chardev] = {}
_registry_lock = threading.Lock()


def qemu_chr_register(chr: Chardev) -> Chardev:
    """Make ``chr`` findable by its label (``-chardev ...,id=LABEL``); labels are unique."""
    with _registry_lock:
        if chr.label in _registry and _registry[chr.label] is not chr:
            raise ChardevError(f"chardev: duplicate id '{chr.label}'")
        _registry[chr.label] = chr
    return chr


def qemu_chr_find(label: str) -> Chardev | None:
    """The registered, open backend named ``label`` (``qemu_chr_find``), or None."""
    with _registry_lock:
        chr = _registry.get(label)
    return chr if chr is not None and not chr.closed else None


def _unregister(chr: Chardev) -> None:
    with _registry_lock:
        if _registry.get(chr.label) is chr:
            del _registry[chr.label]


def qemu_chr_new(spec: str, label: str | None = None, *,
                 read_input: bool = False) -> Chardev | None:
    """Create a backend from a ``-serial`` spec (``qemu_chr_new`` / ``qemu_chr_parse_compat``).

    Accepts ``stdio``, ``mon:stdio`` (treated as stdio: pyqemu has no monitor),
    ``file:PATH``, ``null``, ``memory`` and ``none`` (returns ``None``: no
    backend, so no serial port).  ``read_input`` makes a stdio backend read
    stdin (``-nographic``).  A bad spec raises :class:`ChardevError` naming it.
    With a ``label`` the backend is registered (:func:`qemu_chr_find`) until closed.
    """
    chr = _chr_new(spec, label, read_input)
    if chr is not None and label is not None:
        try:
            qemu_chr_register(chr)
        except ChardevError:
            chr.close()
            raise
    return chr


def _chr_new(spec: str, label: str | None, read_input: bool) -> Chardev | None:
    s = spec.strip()
    if s == "none":
        return None
    if s == "null":
        return NullChardev(label or "null")
    if s == "memory":
        return MemoryChardev(label or "memory")
    if s in ("stdio", "mon:stdio"):
        return StdioChardev(label or "stdio", read_input=read_input)
    if s.startswith("file:"):
        path = s[len("file:"):]
        if not path:
            raise ChardevError(f"-serial '{spec}': file: needs a path")
        return FileChardev(path, label)
    kind = s.split(":", 1)[0]
    raise ChardevError(f"-serial '{spec}': unsupported chardev '{kind}' "
                       "(supported: stdio, mon:stdio, file:PATH, null, none, memory)")


__all__ = ["Chardev", "ChardevError", "FileChardev", "MemoryChardev", "NullChardev",
           "StdioChardev", "qemu_chr_find", "qemu_chr_new", "qemu_chr_register"]
