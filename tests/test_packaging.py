"""The distribution: one import namespace, ``pyqemu``, and one ``py.typed`` covering it.

The repository keeps its top-level folders (util, qom, hw, system, target, accel);
``pip install .`` must put only ``pyqemu`` into site-packages, so a user's own
``util`` or ``system`` module never collides with ours.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("util", "qom", "hw", "system", "target", "accel")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    src = tmp_path_factory.mktemp("src") / "pyqemu"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", ".*_cache", ".hypothesis", "__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(out), str(src)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    (whl,) = out.glob("pyqemu-*.whl")
    return whl


def test_the_wheel_holds_only_the_pyqemu_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"pyqemu"}
    # Every layer is inside it, as real files (not links), and one py.typed covers all.
    for layer in LAYERS:
        assert f"pyqemu/{layer}/__init__.py" in names
    assert "pyqemu/accel/interp/cpu_exec.py" in names
    assert "pyqemu/target/i386/paging.py" in names
    # The guest sources the example images and the demo are built from, with their library.
    assert {"pyqemu/guests/hello.s", "pyqemu/guests/kernel.s",
            "pyqemu/guests/lib/uart32.inc"} <= set(names)
    assert [n for n in names if n.endswith("py.typed")] == ["pyqemu/py.typed"]


def test_installed_tree_imports_under_pyqemu_and_nothing_else(wheel: Path,
                                                              tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    # Isolated: no repository on the path, no .pth files (the dev install's finder);
    # only the extracted wheel and the plain third-party packages it depends on.
    deps = sysconfig.get_paths()["purelib"]
    probe = (f"import sys; sys.path[:0] = [{str(site)!r}, {deps!r}]\n"
             "import pyqemu.accel.interp, pyqemu.hw.i386.pc, pyqemu.target.i386.cpuid\n"
             "from pyqemu import Machine\n"
             "from pyqemu.images import example_image\n"
             "assert len(example_image('hello.rom')) == 0x10000\n"
             "assert b'\\x02\\xb0\\xad\\x1b' in example_image('kernel.mb')\n"
             f"assert pyqemu.__file__.startswith({str(site)!r}), pyqemu.__file__\n"
             "print('ok')\n")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True,
                       text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    for layer in LAYERS:
        r = subprocess.run([sys.executable, "-I", "-S", "-c",
                            f"import sys; sys.path[:0] = [{str(site)!r}, {deps!r}]\n"
                            f"import pyqemu, {layer}"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert r.returncode != 0 and f"No module named '{layer}'" in r.stderr, (layer, r.stderr)
