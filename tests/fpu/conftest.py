"""The processor oracle, built once per run, and the match-rate summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fpu import tally
from tests.fpu.oracle import Oracle, build, gcc_path


@pytest.fixture(scope="session")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    """tests/fpu/oracle.c compiled with the machine's gcc and loaded (skip without gcc)."""
    if gcc_path() is None:
        pytest.skip("no gcc on this machine: the processor oracle cannot be built")
    directory: Path = tmp_path_factory.mktemp("fpu-oracle")
    return build(directory)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown processor"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    lines = tally.summary_lines()
    if lines:
        terminalreporter.write_sep("=", f"pyqemu.fpu compared with this processor: {_cpu()}")
        for line in lines:
            terminalreporter.write_line(line)
