"""Every command of the README's "The command line" section runs as written.

The section's ``sh`` blocks are read from README.md; each line that starts with
``pyqemu`` (continuation lines joined, ``#`` comments dropped) is run in a fresh
directory, after the section's own ``pyqemu images DIR`` command built the example
images there, with the console script of this environment first on the PATH (as
``. .venv/bin/activate`` puts it) and ``-timeout`` added so nothing can hang.  A
command without ``-accel`` also runs with ``-accel kvm``; kvm runs skip, with the
reason, where /dev/kvm is absent.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import require_accel

README = Path(__file__).resolve().parents[2] / "README.md"
DEBUG_EXIT = "isa-debug-exit"
HELLO_ROM = "Hello from pyqemu! Real mode, straight from the reset vector.\r\n"
HELLO_KERNEL = "Hello from a multiboot kernel! magic=2BADB002\r\ncommand line: "


def command_line_section() -> str:
    text = README.read_text()
    m = re.search(r"^## The command line\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, "README.md has no '## The command line' section"
    return m.group(1)


def readme_commands() -> list[list[str]]:
    """The pyqemu command lines of the section's sh blocks, split as sh would."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", command_line_section(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["pyqemu"]:
                commands.append(words)
    return commands


def _images_command() -> list[str]:
    found = [c for c in readme_commands() if c[1:2] == ["images"]]
    assert len(found) == 1, ("README's command-line section must show the one command that "
                             "builds the example images (pyqemu images DIR)")
    return found[0]


def _runs() -> list[tuple[str, list[str], str | None]]:
    """(test id, the command as written, the -accel added or None)."""
    runs = []
    for words in readme_commands():
        if words[1:2] == ["images"]:
            continue
        line = " ".join(words)
        runs.append((line, words, None))
        if "-accel" not in words and "help" not in words:
            runs.append((line + " [+ -accel kvm]", words, "kvm"))
    return runs


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where the README's images command has run."""
    cwd = tmp_path_factory.mktemp("readme")
    r = subprocess.run(_images_command(), cwd=cwd, env=_env(), capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return cwd


def test_the_images_command_builds_the_images_the_examples_use(workdir: Path) -> None:
    directory = workdir / _images_command()[2]
    assert (directory / "hello.rom").stat().st_size == 64 * 1024
    assert b"\x02\xb0\xad\x1b" in (directory / "kernel.mb").read_bytes()[:8192]
    used = {w for c in readme_commands() for w in c if w.endswith((".rom", ".mb"))}
    assert used, "the examples boot no image"
    for image in used:
        assert (workdir / image).is_file(), f"{image} is not what the images command wrote"


@pytest.mark.parametrize("line, words, accel", _runs(), ids=[r[0] for r in _runs()])
def test_readme_command_runs_as_written(line: str, words: list[str], accel: str | None,
                                        workdir: Path) -> None:
    args = list(words)
    if accel is not None:
        args[1:1] = ["-accel", accel]
    used = args[args.index("-accel") + 1] if "-accel" in args else "interp"
    require_accel(used)
    is_help = "help" in args
    if not is_help:
        args += ["-timeout", "120"]
    r = subprocess.run(args, cwd=workdir, env=_env(), capture_output=True, timeout=300,
                       stdin=subprocess.DEVNULL)
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    if is_help:
        assert r.returncode == 0, err
        assert out.strip(), "help printed nothing"
        return
    kernel = "-kernel" in args
    expected = (0x11 << 1 | 1 if kernel else 0x10 << 1 | 1) if any(
        a.startswith(DEBUG_EXIT) for a in args) else 0
    assert r.returncode == expected, err
    serial_elsewhere = "-serial" in args and args[args.index("-serial") + 1] != "stdio"
    if not serial_elsewhere:
        if kernel:
            append = args[args.index("-append") + 1] if "-append" in args else ""
            assert out == HELLO_KERNEL + append + "\r\n"
        else:
            assert out == HELLO_ROM
    if "-d" in args and "lifecycle" in args[args.index("-d") + 1]:
        thread = "CPU 0/KVM" if used == "kvm" else "CPU 0/INTERP"
        assert "x86_cpu_realizefn" in err and thread in err
    if expected == 0:
        assert "every vCPU is halted" in err


def _python_blocks(section: str) -> list[str]:
    text = README.read_text()
    m = re.search(r"^## " + re.escape(section) + r"\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, f"README.md has no '## {section}' section"
    return re.findall(r"```python\n(.*?)```", m.group(1), re.S)


def test_readme_library_example_runs_as_written() -> None:
    """The "The library" snippet, run as a user would paste it, prints what its comments say."""
    (block,) = _python_blocks("The library")
    accel = re.search(r'accel="(\w+)"', block)
    assert accel, "the library example names its accelerator"
    require_accel(accel.group(1))
    r = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL, cwd=README.parent)
    assert r.returncode == 0, r.stderr
    serial, regs = r.stdout.splitlines()
    assert serial == "b'A'"
    assert regs.split()[0] == hex(0x7C00 + 7)       # after the HLT (mov dx; mov al; out; hlt)
    assert r.stderr == ""                           # warnings stay in the pyqemu logger
