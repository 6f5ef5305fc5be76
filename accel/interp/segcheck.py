"""Segment limit and type checks on ordinary memory accesses (Intel SDM vol. 3A, 5.3
"Limit checking", 5.4 "Type checking", 3.4.5.1 expand-down segments; vol. 2, each
instruction's "#GP(0) If a memory operand effective address is outside the CS, DS,
ES, FS, or GS segment limit" and "#SS(0) ... outside the SS segment limit").

Which checks a segment needs depends only on its hidden descriptor cache, which
changes only when a segment register is loaded (and every load recomputes the
block key, ``InterpCpu.mode_changed``).  So the check *kind* of each of the six
segments is part of the translation-block key (QEMU keeps the like in ``hflags``),
and generated code carries a check only where one can fail (the emitters are
``Ctx.limit_check`` and ``Ctx.type_check`` in :mod:`accel.interp.codegen`): a flat
4 GiB writable data segment, the common case, costs nothing.  The limit itself is read once per
block into a local (``slN``), like the segment base.

- 64-bit mode: no limit or type checks at all (SDM vol. 3A, 5.3.1).
- Real mode: the limit in the cache is checked (SDM vol. 3A, 20.1.1: a word at
  offset 0FFFFH faults; a larger cached limit is "unreal mode"), types are not.
- Protected mode: the limit (expand-down: offsets above it up to FFFFH or
  FFFFFFFFH by the B flag), writes to code or read-only data and reads of
  execute-only code give #GP(0), and any access through a null (unusable)
  segment gives #GP(0) (SDM vol. 3A, 5.4.1; vol. 2, "#GP(0) If ... contains a
  NULL segment selector").

The vector is #SS(0) for SS, #GP(0) for the others.  Code fetches are not checked
against the CS limit here.  The REP string loop, which accesses memory from Python
rather than generated code, calls :func:`check_access` for each element.
"""

from __future__ import annotations

from pyqemu.accel.interp.errors import EXCP_GP, EXCP_SS, Fault
from pyqemu.accel.interp.state import InterpCpu
from pyqemu.target.i386.cpu_state import (
    CR0_PE,
    DESC_B_MASK,
    DESC_CS_MASK,
    DESC_E_MASK,
    DESC_P_MASK,
    DESC_R_MASK,
    DESC_W_MASK,
    R_SS,
    SEG_NAMES,
    VM_MASK,
    CPUX86State,
    SegmentCache,
)

LIMIT = 1        # expand-up with a limit below 4 GiB - 1
DOWN = 2         # expand-down: offsets must lie above the limit
BIG = 4          # expand-down upper bound FFFFFFFFH (B set), else FFFFH
NOWRITE = 8      # code, or data without W
NOREAD = 16      # execute-only code
NULL = 32        # protected mode, not present: null selector or unusable



def segment_checks(env: CPUX86State) -> tuple[int, ...]:
    """The check kind of each segment register (empty when none needs any)."""
    if env.code64:
        return ()
    protected = bool(env.cr[0] & CR0_PE) and not env.eflags & VM_MASK
    kinds = tuple(_kind(s, protected) for s in env.segs)
    return kinds if any(kinds) else ()


def _kind(s: SegmentCache, protected: bool) -> int:
    flags = s.flags
    kind = 0
    if protected and not flags & DESC_P_MASK:
        return NULL
    if not flags & DESC_CS_MASK and flags & DESC_E_MASK:
        kind = DOWN | (BIG if flags & DESC_B_MASK else 0)
    elif s.limit < 0xFFFFFFFF:
        kind = LIMIT
    if protected:
        if flags & DESC_CS_MASK:
            kind |= NOWRITE | (0 if flags & DESC_R_MASK else NOREAD)
        elif not flags & DESC_W_MASK:
            kind |= NOWRITE
    return kind


def check_stack(core: InterpCpu, off: int, size: int, write: bool) -> None:
    """:func:`check_access` for SS, from the segment caches as they are now rather than
    the block's mode: interrupt delivery pushes right after switching SS (and perhaps
    from compatibility to 64-bit mode), before the mode is recomputed."""
    env = core.env
    if env.code64:
        return
    kind = _kind(env.segs[R_SS], bool(env.cr[0] & CR0_PE) and not env.eflags & VM_MASK)
    # An unusable SS outside 64-bit code exists only as the placeholder a task switch
    # leaves when it faults after its commit point (accel/interp/task.py); the SDM
    # leaves that frame's stack open, and it is pushed with the cache as it is.
    if kind and not kind & NULL:
        check_access(core, R_SS, off, size, write, kind)


def check_access(core: InterpCpu, seg: int, off: int, size: int, write: bool,
                 kind: int | None = None) -> None:
    """The same checks at run time, for helpers that access memory themselves (the REP
    string loop, accel/interp/string_rt.py): raise the fault, or return.  ``kind``:
    the segment's check kind when not the current block's."""
    if kind is None:
        checks = core.mode.checks
        kind = checks[seg] if checks else 0
    if not kind:
        return
    name = SEG_NAMES[seg]
    if kind & NULL:
        raise Fault(EXCP_GP, 0, why=f"access through a null {name}")
    if kind & (NOWRITE if write else NOREAD):
        raise Fault(EXCP_GP, 0, why=f"{'write to' if write else 'read of'} {name}: type")
    limit = core.env.segs[seg].limit
    last = off + size - 1
    if kind & LIMIT:
        bad = last > limit
    elif kind & DOWN:
        bad = off <= limit or last > (0xFFFFFFFF if kind & BIG else 0xFFFF)
    else:
        return
    if bad:
        raise Fault(EXCP_SS if seg == R_SS else EXCP_GP, 0, why=f"{name} limit")


__all__ = [
    "BIG",
    "DOWN",
    "LIMIT",
    "NOREAD",
    "NOWRITE",
    "NULL",
    "check_access",
    "check_stack",
    "segment_checks",
]
