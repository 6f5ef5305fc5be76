"""Warnings go to the ``pyqemu`` logger: silent in a library by default, capturable
(``logging.getLogger("pyqemu")``, caplog), printed by the command line as the one line
``pyqemu: warning: MSG`` it always printed.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from pyqemu.images import GuestProgram
from tests.support import GUEST_DIR

INTERP_WARNING = "interp doesn't support requested features: "


@pytest.fixture(scope="module")
def hello_rom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rom") / "hello.rom"
    path.write_bytes(GuestProgram.from_file(GUEST_DIR / "hello_bios.s").image())
    return path


def test_the_pyqemu_logger_has_a_null_handler() -> None:
    import pyqemu  # noqa: F401  (installs it)
    handlers = logging.getLogger("pyqemu").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_library_prints_nothing_on_stderr_by_default() -> None:
    """In a plain interpreter (no pytest handlers): building an interp machine, whose CPU
    model asks for features interp lacks, writes nothing to stderr."""
    code = "from pyqemu import Machine\nMachine(accel='interp').close()\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


def test_library_warnings_are_captured_as_log_records(caplog: pytest.LogCaptureFixture,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    from pyqemu import Machine
    with caplog.at_level(logging.WARNING, logger="pyqemu"):
        Machine(accel="interp").close()
    records = [r for r in caplog.records if r.name.startswith("pyqemu")]
    assert [r.levelno for r in records] == [logging.WARNING]
    assert records[0].getMessage().startswith(INTERP_WARNING)
    assert "pyqemu: warning" not in capfd.readouterr().err


def test_library_user_can_silence_the_warnings(capfd: pytest.CaptureFixture[str]) -> None:
    from pyqemu import Machine
    logger = logging.getLogger("pyqemu")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        Machine(accel="interp").close()
    finally:
        logger.setLevel(old)
    assert capfd.readouterr().err == ""


def test_command_line_prints_the_warning_as_one_line(hello_rom: Path) -> None:
    """The same line as before the logger: 'pyqemu: warning: ...', once."""
    r = subprocess.run([sys.executable, "-m", "pyqemu.cli", "-accel", "interp", "-bios",
                        str(hello_rom), "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 33, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("pyqemu: warning: " + INTERP_WARNING)


def test_command_line_handler_formats_pyqemu_records_and_is_removed_after(
        capsys: pytest.CaptureFixture[str]) -> None:
    from pyqemu.cli import main, warnings_to_stderr
    logger = logging.getLogger("pyqemu")
    before = list(logger.handlers)
    with warnings_to_stderr():
        logging.getLogger("pyqemu.hw.example").warning("the %s lacks %s", "host", "sse4.2")
        logging.getLogger("pyqemu").error("a failure")
        logging.getLogger("pyqemu").info("not shown")
    assert capsys.readouterr().err == ("pyqemu: warning: the host lacks sse4.2\n"
                                       "pyqemu: a failure\n")
    assert main(["-cpu", "help"]) == 0
    capsys.readouterr()
    assert logger.handlers == before


def test_command_line_in_process_prints_the_warning_once(
        hello_rom: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pyqemu.cli import main
    assert main(["-accel", "interp", "-bios", str(hello_rom), "-serial", "null",
                 "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]) == 33
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("pyqemu: warning: " + INTERP_WARNING)
