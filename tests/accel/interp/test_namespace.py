"""The generated-code ABI: a block reads only the globals accel/interp/namespace.py lists,
and of the core (``S``) only its state.

Blocks are translated (not run) from instructions that reach every helper, in each
code size, and their compiled functions are inspected: every global they load must
be in :data:`~pyqemu.accel.interp.namespace.NAMES` (or a builtin), and every helper
listed must be reached by some block.
"""

from __future__ import annotations

import ast
import builtins
import dis
from collections.abc import Iterator

import pytest

from pyqemu.accel.interp.namespace import NAMES, block_namespace
from pyqemu.accel.interp.translate import TranslationBlock
from pyqemu.target.i386.cpu_state import DESC_DPL_SHIFT, R_SS
from tests.accel.interp.harness import CODE, Guest

#: What generated code may touch of the core itself: its state, nothing it forwards.
S_STATE = {"cc", "icount", "limit", "smc", "get_flags"}

#: Instructions that between them reach every helper of the table, by code size.
PROGRAMS = {
    # JMP/CALL ptr16:16 as bytes (keystone assembles far pointers only in NASM syntax).
    16: [".byte 0xea, 0x20, 0x00, 0x10, 0x00", ".byte 0x9a, 0x20, 0x00, 0x10, 0x00", "retf",
         "iret", "int 0x10", "into", "popf", "mov ds, ax", "pop es", "lds ax, [bx]", "aam 7",
         "daa", "div bx", "idiv bl",
         "in al, dx", "out 0x80, al", "rep movsb", "outsb", "cpuid", "rdtsc", "lgdt [bx]",
         "add ax, bx\njz 0x1000"],
    32: ["ljmp [eax]", "lcall [eax]", "retf 4", "iretd", "int3", "lar eax, ebx", "lsl eax, ebx",
         "verr ax", "ltr ax", "lldt ax", "sysenter", "sysexit", "mov cr0, eax",
         "mov cr3, eax", "lmsw ax", "rdmsr", "wrmsr", "mov dr7, eax", "invlpg [eax]",
         "repne scasb", "repe cmpsd", "insd", "push eax\npop ss", "mov ebx, [eax]\n"
         "add [ebx], ecx\njmp eax", "sub eax, 1\njnz 0x1000", "bts [eax], ecx"],
    # SYSRET with REX.W (48 0F 07): keystone lacks the mnemonic.
    64: ["syscall", ".byte 0x48, 0x0f, 0x07", "iretq", "rep stosq", "lss rax, [rbx]",
         "int 0x80", "rdtscp", "cmpxchg [rax], rbx", "swapgs", "ret",
         "xadd [rax], rcx\nadc rax, rbx"],
}
#: At CPL 3 IN/OUT consult IOPL and the TSS bit map.
CPL3_PROGRAMS = ["in al, dx", "out dx, eax"]


def _blocks() -> Iterator[TranslationBlock]:
    for bits, programs in [*PROGRAMS.items(), (32, CPL3_PROGRAMS)]:
        g = Guest(bits)
        if programs is CPL3_PROGRAMS:
            g.env.segs[R_SS].flags |= 3 << DESC_DPL_SHIFT     # CPL = SS.DPL
            g.core.mode_changed()
        for text in programs:
            g.load(text + "\nhlt")
            core = g.core
            yield core.translator.translate(CODE, core.mode, 64, set(),
                                            core.jump_cache(core.mode.key))


def _globals_read(tb: TranslationBlock) -> set[str]:
    return {i.argval for i in dis.get_instructions(tb.fn.__code__)  # type: ignore[attr-defined]
            if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}


def test_every_global_a_block_reads_is_in_the_table() -> None:
    listed = {n.name for n in NAMES}
    seen: set[str] = set()
    for tb in _blocks():
        names = _globals_read(tb)
        unknown = {n for n in names - listed if not hasattr(builtins, n)}
        assert not unknown, f"block at {tb.pc:#x} reads unlisted globals {unknown}:\n{tb.source}"
        seen |= names
    helpers = {n.name for n in NAMES if "(S" in n.use or n.name in (
        "IOR", "IOW", "CPUID", "BCD", "DIVU", "DIVS", "flush_page", "debug_update")}
    assert helpers - seen == set(), f"helpers no test block reached: {helpers - seen}"


def test_blocks_touch_only_the_state_of_the_core() -> None:
    for tb in _blocks():
        touched = {node.attr for node in ast.walk(ast.parse(tb.source))
                   if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                   and node.value.id == "S"}
        assert touched <= S_STATE, f"block at {tb.pc:#x} uses S.{touched - S_STATE}"


def test_the_namespace_holds_exactly_the_listed_names() -> None:
    g = Guest(32)
    ns = block_namespace(g.core)
    assert set(ns) - {"__builtins__"} == {n.name for n in NAMES}
    assert len({n.name for n in NAMES}) == len(NAMES)
    assert all(n.what and n.use and n.provider for n in NAMES)


@pytest.mark.parametrize("name", ["far_jump", "load_seg", "rep_string", "write_cr", "iret"])
def test_helpers_are_reached_without_a_forwarding_method_on_the_core(name: str) -> None:
    g = Guest(32)
    assert not hasattr(g.core, name)
    assert callable(g.core.namespace[name])
