"""The instruction table: mnemonic -> semantic, filled by the ``ops_*`` family modules.

Each family module declares its instructions with :func:`op` (py65's decorator
habit): ``@op("add", "sub")`` registers a generator that, given the block's
:class:`~accel.interp.codegen.Ctx` and the decoded :class:`~accel.interp.codegen.Insn`,
emits the instruction's Python source.  A generator returns normally to let
the block go on, or calls ``c.exit(...)``/``c.end()`` to end it.  A mnemonic
absent from the table is an :class:`~accel.interp.errors.UnimplementedInstruction`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyqemu.accel.interp.codegen import Ctx, Insn

Semantic = Callable[["Ctx", "Insn"], None]

#: mnemonic (as capstone prints it) -> semantic.
OPS: dict[str, Semantic] = {}


#: name -> object made visible to generated code (pure helper functions, constants).
RUNTIME: dict[str, object] = {}


def runtime(fn):  # type: ignore[no-untyped-def]
    """Make a pure helper callable from generated code under its own name."""
    RUNTIME[fn.__name__] = fn
    return fn


def op(*mnemonics: str) -> Callable[[Semantic], Semantic]:
    def register(fn: Semantic) -> Semantic:
        for m in mnemonics:
            if m in OPS:
                raise RuntimeError(f"interp: {m!r} registered twice")  # programmer error
            OPS[m] = fn
        return fn
    return register


def load_families() -> dict[str, Semantic]:
    """Import every family module (each registers its rows) and return the table."""
    from pyqemu.accel.interp import (  # noqa: F401
        ops_alu,
        ops_bcd,
        ops_control,
        ops_move,
        ops_muldiv,
        ops_shift,
        ops_string,
        ops_system,
    )
    return OPS
