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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    lines = tally.summary_lines()
    if lines:
        terminalreporter.write_sep("=", "pyqemu.fpu compared with this processor")
        for line in lines:
            terminalreporter.write_line(line)
