"""Measure the interpreter's speed: ``python -m accel.interp.bench [seconds]``.

Runs guest loops (a tight register loop, a memory copy loop and a call/ret loop)
in 32-bit protected mode on a bare :class:`InterpCore` and prints guest
instructions per second for each.  Prints, never asserts: speed is a figure to
watch (``python -m benchmarks.run`` is the project's suite of them).
"""

from __future__ import annotations

import sys
import time

from pyqemu.accel.interp.cpu_exec import InterpCore
from pyqemu.accel.ops import EXCP_HLT
from pyqemu.system.memory import AddressSpace, MemoryRegion
from pyqemu.target.i386.asm import assemble
from pyqemu.target.i386.cpu_state import (
    CR0_ET,
    CR0_PE,
    DESC_A_MASK,
    DESC_B_MASK,
    DESC_CS_MASK,
    DESC_G_MASK,
    DESC_P_MASK,
    DESC_R_MASK,
    DESC_S_MASK,
    DESC_W_MASK,
    CPUX86State,
    SegmentCache,
    x86_reset_state,
)

__all__ = ["LOOPS", "flat32_core", "main", "measure"]

LOOPS = {
    "register loop (add/xor/dec/jnz)": """
        mov ecx, {n}
    top:
        add eax, ecx
        xor ebx, eax
        lea edx, [eax + ebx*2]
        dec ecx
        jnz top
        hlt
    """,
    "memory loop (load/add/store)": """
        mov ecx, {n}
        mov esi, 0x20000
    top:
        mov eax, [esi]
        add eax, ecx
        mov [esi + 4], eax
        dec ecx
        jnz top
        hlt
    """,
    "call/ret loop": """
        mov ecx, {n}
        mov esp, 0x80000
    top:
        call f
        dec ecx
        jnz top
        hlt
    f:
        inc eax
        ret
    """,
}


def flat32_core(code: bytes, at: int = 0x1000) -> InterpCore:
    """A bare core in flat 32-bit protected mode with 1 MiB of RAM and ``code`` at ``at``."""
    root = MemoryRegion.container_new("system", 1 << 32)
    ram = MemoryRegion.ram_new("ram", 1 << 20)
    root.add_subregion(0, ram)
    mem = AddressSpace("memory", root)
    env = CPUX86State()
    x86_reset_state(env)
    env.cr[0] = CR0_PE | CR0_ET
    flags = DESC_P_MASK | DESC_S_MASK | DESC_A_MASK | DESC_B_MASK | DESC_G_MASK
    for i in range(6):
        env.segs[i] = SegmentCache(0x10, 0, 0xFFFFFFFF, flags | DESC_W_MASK)
    env.segs[1] = SegmentCache(0x08, 0, 0xFFFFFFFF, flags | DESC_CS_MASK | DESC_R_MASK)
    env.rip = at
    mem.write_bytes(at, code)
    return InterpCore(env, mem)


def measure(src: str, n: int) -> tuple[int, float]:
    core = flat32_core(assemble(src.format(n=hex(n)), "prot32", 0x1000))
    t0 = time.process_time()   # CPU time of this thread: steadier than wall time on a busy host
    reason = core.run()
    dt = time.process_time() - t0
    if reason != EXCP_HLT:
        raise SystemExit(f"bench: the loop stopped with {reason:#x}, not HLT")
    return core.icount, dt


def main(argv: list[str]) -> int:
    seconds = float(argv[1]) if len(argv) > 1 else 1.0
    for name, src in LOOPS.items():
        n, dt = measure(src, 2000)               # calibrate
        iters = max(1000, int(2000 * seconds / max(dt, 1e-6)))
        n, dt = measure(src, iters)
        print(f"{name:36} {n:>10} insns in {dt:6.2f} s = {n / dt / 1e6:6.2f} M insns/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
