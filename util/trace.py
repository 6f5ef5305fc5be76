"""Live trace points (QEMU's ``trace/`` and ``-d``), printed as an indented call tree.

The lifecycle trace follows QEMU's call tree (docs/architecture.md, "The
lifecycle"), with QEMU's function names: each step of the real code opens a *span*
(``with trace.span("qemu_init_vcpu", cpu=0):``) or emits an *event*; nested spans
indent. Depth is kept per thread, and a thread started inside a span (a vCPU thread
started by ``create_vcpu_thread``) inherits the depth of the span that started it,
so its steps print as children of the step that created it. Every line names its
thread, the way QEMU's vCPU threads are named (``CPU 0/KVM``).

Groups (``lifecycle``, ``exec``, ``in_asm``, ``cpu``, ``int``, ``ioport``)
are switched on by ``-d`` on the command line or ``Machine(trace=...)``.  A
disabled group costs one attribute test at the trace point: callers that trace
on hot paths test ``trace.enabled("exec")`` first.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from pyqemu.util.error import PyQemuError

#: The groups ``-d`` accepts, with the help text ``-d help`` prints.
GROUPS: dict[str, str] = {
    "lifecycle": "the vCPU lifecycle: board init, QOM, realize, vCPU threads (QEMU's call tree)",
    "exec": "every translation block / KVM_RUN executed (with its exit)",
    "in_asm": "guest code of each translation block when it is translated (interp)",
    "cpu": "registers before each translation block (interp) or KVM_RUN (kvm)",
    "int": "exceptions and interrupts delivered",
    "ioport": "every port I/O and MMIO access, as the device dispatch sees it",
    "unimp": "guest use of unimplemented device registers",
    "guest_errors": "guest errors the devices detect",
}

Sink = Callable[[str], None]


class TraceError(PyQemuError, ValueError):
    """An unknown trace group was asked for."""


class _Tracer:
    """The process-wide trace state: enabled groups and where lines go."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sinks: list[tuple[frozenset[str], Sink]] = []
        self._enabled: frozenset[str] = frozenset()
        self._local = threading.local()
        self._t0 = time.monotonic()

    # -- configuration -------------------------------------------------
    def add_sink(self, groups: set[str] | frozenset[str], sink: Sink) -> Sink:
        """Send the lines of ``groups`` to ``sink``; returns it for :meth:`remove_sink`."""
        unknown = set(groups) - GROUPS.keys()
        if unknown:
            raise TraceError(
                f"unknown trace group {sorted(unknown)[0]!r}; -d help lists them")
        with self._lock:
            self._sinks.append((frozenset(groups), sink))
            self._recompute()
        return sink

    def remove_sink(self, sink: Sink) -> None:
        with self._lock:
            self._sinks = [(g, s) for g, s in self._sinks if s is not sink]
            self._recompute()

    def _recompute(self) -> None:
        enabled: set[str] = set()
        for groups, _ in self._sinks:
            enabled |= groups
        self._enabled = frozenset(enabled)

    def enabled(self, group: str = "lifecycle") -> bool:
        return group in self._enabled

    # -- depth per thread --------------------------------------------------
    def depth(self) -> int:
        return getattr(self._local, "depth", 0)

    def set_depth(self, depth: int) -> None:
        """Called first thing in a new thread with the creator's :meth:`depth`."""
        self._local.depth = depth

    # -- output ------------------------------------------------------------
    def emit(self, group: str, text: str, depth: int | None = None) -> None:
        if group not in self._enabled:
            return
        if depth is None:
            depth = self.depth()
        thread = threading.current_thread().name
        line = f"[{thread:>12}] {'  ' * depth}{text}"
        for groups, sink in list(self._sinks):
            if group in groups:
                sink(line)


tracer = _Tracer()


def _fmt(name: str, kw: dict[str, object]) -> str:
    if not kw:
        return name
    args = " ".join(
        f"{k}={v:#x}" if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 9
        else f"{k}={v}" for k, v in kw.items())
    return f"{name} ({args})"


def enabled(group: str = "lifecycle") -> bool:
    """True when some sink listens to ``group``."""
    return group in tracer._enabled


def event(step: str, group: str = "lifecycle", /, **kw: object) -> None:
    """One line at the current depth (positional-only names leave every keyword free)."""
    if group in tracer._enabled:
        tracer.emit(group, _fmt(step, kw))


@contextmanager
def span(step: str, group: str = "lifecycle", /, **kw: object) -> Iterator[None]:
    """A step of the call tree: its line, then its children one level deeper."""
    if group not in tracer._enabled:
        yield
        return
    tracer.emit(group, _fmt(step, kw))
    depth = tracer.depth()
    tracer.set_depth(depth + 1)
    try:
        yield
    finally:
        tracer.set_depth(depth)


def depth() -> int:
    return tracer.depth()


def set_depth(d: int) -> None:
    tracer.set_depth(d)


def add_sink(groups: set[str] | frozenset[str], sink: Sink) -> Sink:
    return tracer.add_sink(groups, sink)


def remove_sink(sink: Sink) -> None:
    tracer.remove_sink(sink)


def stream_sink(stream: TextIO) -> Sink:
    """A sink writing each line to ``stream`` (stderr by default, like QEMU's ``-d``)."""
    lock = threading.Lock()

    def sink(line: str) -> None:
        with lock:
            stream.write(line + "\n")
            stream.flush()

    return sink


def parse_groups(spec: str) -> set[str]:
    """Parse ``-d lifecycle,int`` into a set of group names; ``help`` is the caller's."""
    groups = {g.strip() for g in spec.split(",") if g.strip()}
    unknown = groups - GROUPS.keys()
    if unknown:
        raise TraceError(f"unknown -d log item {sorted(unknown)[0]!r}; -d help lists them")
    return groups


def stderr_sink() -> Sink:
    return stream_sink(sys.stderr)
