"""The instruction table: mnemonic -> semantic, filled by the ``ops_*`` family modules.

Each family module declares its instructions with :func:`op` (py65's decorator
habit): ``@op("add", "sub")`` registers a generator that, given the block's
:class:`~accel.interp.codegen.Ctx` and the decoded :class:`~accel.interp.codegen.Insn`,
emits the instruction's Python source.  A generator returns normally to let
the block go on, or calls ``c.exit(...)``/``c.end()`` to end it.  A mnemonic
absent from the table is an :class:`~accel.interp.errors.UnimplementedInstruction`.
:mod:`accel.interp.translate` imports every family, so the table is full whenever
a block is translated; the names generated code calls are listed in
:mod:`accel.interp.namespace`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyqemu.accel.interp.codegen import Ctx, Insn

__all__ = ["OPS", "Semantic", "op"]

Semantic = Callable[["Ctx", "Insn"], None]

#: mnemonic (as capstone prints it) -> semantic.
OPS: dict[str, Semantic] = {}


def op(*mnemonics: str) -> Callable[[Semantic], Semantic]:
    def register(fn: Semantic) -> Semantic:
        for m in mnemonics:
            if m in OPS:
                raise RuntimeError(f"interp: {m!r} registered twice")  # programmer error
            OPS[m] = fn
        return fn
    return register
