"""The one keystone wrapper: x86 assembly source to bytes, for guests, tests and benchmarks.

pyqemu's guest programs are assembly source assembled at load time.  Keystone
(0.9.2) has quirks this module absorbs once:

* NASM syntax (needed for far jumps such as ``jmp 0x8:0x1000``) reads bare
  numbers as hex, and once a process has assembled anything in NASM syntax every
  later assembly *in that process* does too, whatever the syntax option: NASM
  sources are therefore assembled in a child process;
* keystone's statement count is unreliable on errors, so an error is located by
  trying each line alone.

Modes are named as the loaders name them (``real``, ``prot32``, ``long64``) or by
their code size (16, 32, 64).
"""

from __future__ import annotations

import subprocess
import sys
from functools import lru_cache
from typing import Any

from pyqemu.target.i386.errors import AssemblerError

__all__ = ["MODES", "assemble"]

#: mode name -> code size in bits
MODES = {"real": 16, "prot32": 32, "long64": 64, 16: 16, 32: 32, 64: 64}


def _bits(mode: str | int) -> int:
    bits = MODES.get(mode)
    if bits is None:
        raise AssemblerError(f"assemble: unknown mode '{mode}' (real, prot32, long64)")
    return bits


@lru_cache(maxsize=16)
def _ks(bits: int) -> Any:
    import keystone
    mode = {16: keystone.KS_MODE_16, 32: keystone.KS_MODE_32, 64: keystone.KS_MODE_64}[bits]
    return keystone.Ks(keystone.KS_ARCH_X86, mode)


@lru_cache(maxsize=4096)
def assemble(source: str, mode: str | int, addr: int = 0, *, syntax: str = "intel") -> bytes:
    """Assemble ``source`` for ``mode`` as if placed at ``addr``.

    ``syntax`` is ``intel`` (keystone's default) or ``nasm``.  An error is an
    :class:`~pyqemu.target.i386.errors.AssemblerError` naming the mode, keystone's
    message and, when one line alone is at fault, that line.  Results are cached
    (the same source at the same address always gives the same bytes).
    """
    bits = _bits(mode)
    name = {16: "real", 32: "prot32", 64: "long64"}[bits]
    if syntax not in ("intel", "nasm"):
        raise AssemblerError(f"assemble: unknown syntax '{syntax}' (intel, nasm)")
    if syntax == "nasm":
        return _assemble_nasm_isolated(source, bits, name, addr)
    import keystone
    ks = _ks(bits)
    try:
        encoding, _ = ks.asm(source, addr)
    except keystone.KsError as e:
        raise AssemblerError(f"assemble ({name}): {_locate_error(ks, source, addr)}{e}") from None
    if not encoding:
        raise AssemblerError(f"assemble ({name}): the source assembled to nothing")
    return bytes(encoding)


_NASM_CHILD = """\
import sys, keystone as k
modes = {16: k.KS_MODE_16, 32: k.KS_MODE_32, 64: k.KS_MODE_64}
ks = k.Ks(k.KS_ARCH_X86, modes[int(sys.argv[1])])
ks.syntax = k.KS_OPT_SYNTAX_NASM
try:
    sys.stdout.write(bytes(ks.asm(sys.stdin.read(), int(sys.argv[2]))[0] or b"").hex())
except k.KsError as e:
    sys.stderr.write(str(e))
    sys.exit(1)
"""


def _assemble_nasm_isolated(source: str, bits: int, name: str, addr: int) -> bytes:
    """NASM syntax in a child process (see the module docstring for why)."""
    r = subprocess.run([sys.executable, "-c", _NASM_CHILD, str(bits), str(addr)], input=source,
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssemblerError(f"assemble ({name}, nasm): {r.stderr.strip() or 'keystone failed'}")
    if not r.stdout:
        raise AssemblerError(f"assemble ({name}, nasm): the source assembled to nothing")
    return bytes.fromhex(r.stdout)


def _locate_error(ks: Any, source: str, addr: int) -> str:
    """'line N: `text`: ' for the first line that fails on its own, else ''.

    A line that only misses a label defined elsewhere is not the culprit.
    """
    import keystone
    for n, line in enumerate(source.splitlines(), 1):
        text = line.split(";", 1)[0].strip() if not line.strip().startswith("#") else ""
        if not text or text.endswith(":"):
            continue
        try:
            ks.asm(text, addr)
        except keystone.KsError as e:
            if e.errno != keystone.KS_ERR_ASM_SYMBOL_MISSING:
                return f"line {n}: `{line.strip()}`: "
    return ""
