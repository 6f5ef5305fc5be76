"""Shared fixtures: one run per accelerator, and no vCPU thread left behind; the
terminal summary lists where this host chose otherwise than interp in what the
manuals leave open (tests/host_behaviour.py: reported, not failed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyqemu.util import trace
from tests import host_behaviour
from tests.support import require_accel, vcpu_threads


@pytest.fixture(params=["interp", "kvm"])
def accel(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once per accelerator (kvm skips, with the reason, where absent)."""
    require_accel(request.param)
    return str(request.param)


@pytest.fixture(autouse=True)
def no_vcpu_thread_left() -> object:
    """Every test must leave no vCPU thread behind."""
    yield
    for t in vcpu_threads():
        t.join(5)
    left = [t.name for t in vcpu_threads()]
    assert not left, f"vCPU threads left running: {left}"


@pytest.fixture
def lifecycle() -> Iterator[list[str]]:
    """The lines of the lifecycle trace emitted while the test runs."""
    lines: list[str] = []
    sink = trace.add_sink({"lifecycle"}, lines.append)
    try:
        yield lines
    finally:
        trace.remove_sink(sink)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    """After the run: every case a test reported through host_behaviour.report()."""
    lines = host_behaviour.summary_lines()
    if lines:
        terminalreporter.write_sep("=", "host-dependent behaviours (reported, not failed)")
        for line in lines:
            terminalreporter.write_line(line)
