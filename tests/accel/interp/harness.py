"""Guest builders for the interp tests: a bare InterpCore in real, flat 32-bit or long mode.

The states are set directly in ``CPUX86State`` (what a loader or KVM_SET_SREGS
would do), so each test starts in the mode it exercises; mode *switches* are
tested by guest code in test_modes.py.
"""

from __future__ import annotations

from pyqemu.accel.interp.cpu_exec import InterpCore
from pyqemu.system.memory import AddressSpace, MemoryRegion
from pyqemu.target.i386.asm import assemble
from pyqemu.target.i386.cpu_state import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    DESC_A_MASK,
    DESC_B_MASK,
    DESC_CS_MASK,
    DESC_G_MASK,
    DESC_L_MASK,
    DESC_P_MASK,
    DESC_R_MASK,
    DESC_S_MASK,
    DESC_W_MASK,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    CPUX86State,
    SegmentCache,
    x86_reset_state,
)

RAM_SIZE = 4 << 20
CODE = 0x1000
PML4 = 0x100000          # identity map of the first 1 GiB with 2 MiB pages (SDM 4.5)
DATA_FLAGS = DESC_P_MASK | DESC_S_MASK | DESC_A_MASK | DESC_W_MASK
CODE_FLAGS = DESC_P_MASK | DESC_S_MASK | DESC_A_MASK | DESC_CS_MASK | DESC_R_MASK

def asm(src: str, bits: int, addr: int = CODE, nasm: bool = False) -> bytes:
    """Assemble for ``bits`` (16, 32, 64) with the project's keystone wrapper."""
    return assemble(src, bits, addr, syntax="nasm" if nasm else "intel")


class Guest:
    """RAM, a port-I/O space with a recording device, and a core."""

    def __init__(self, bits: int, ram_size: int = RAM_SIZE) -> None:
        self.bits = bits
        root = MemoryRegion.container_new("system", 1 << 32)
        self.ram = MemoryRegion.ram_new("ram", ram_size)
        root.add_subregion(0, self.ram)
        self.mem = AddressSpace("memory", root)
        self.io_log: list[tuple[str, int, int, int]] = []
        self.io_in: dict[int, int] = {}
        guest = self

        class Ports:
            def read(self, offset: int, size: int) -> int:
                v = guest.io_in.get(offset, 0x55)
                guest.io_log.append(("in", offset, size, v))
                return v

            def write(self, offset: int, value: int, size: int) -> None:
                guest.io_log.append(("out", offset, size, value))

        ioroot = MemoryRegion.container_new("io", 0x10000)
        ioroot.add_subregion(0, MemoryRegion.io_new("ports", 0x10000, Ports()))
        self.io = AddressSpace("io", ioroot, io=True)
        self.env = env = CPUX86State()
        x86_reset_state(env)
        if bits == 16:
            env.segs[1] = SegmentCache(0, 0, 0xFFFF, CODE_FLAGS)
        else:
            big = DESC_B_MASK | DESC_G_MASK
            env.cr[0] = CR0_PE | CR0_ET
            for i in range(6):
                env.segs[i] = SegmentCache(0x10, 0, 0xFFFFFFFF, DATA_FLAGS | big)
            env.segs[1] = SegmentCache(0x08, 0, 0xFFFFFFFF, CODE_FLAGS | big)
            if bits == 64:
                env.segs[1].flags = CODE_FLAGS | DESC_L_MASK | DESC_G_MASK
                self._identity_map()
                env.cr[3] = PML4
                env.cr[4] = CR4_PAE
                env.efer = EFER_LME | EFER_LMA | EFER_NXE
                env.cr[0] |= CR0_PG
        env.rip = CODE
        env.regs[4] = 0x8000
        self.core = InterpCore(env, self.mem, self.io, lambda a, c: (a, c, 0x1234, 0x5678))

    def _identity_map(self) -> None:
        w = self.mem.write
        w(PML4, (PML4 + 0x1000) | 7, 8)
        w(PML4 + 0x1000, (PML4 + 0x2000) | 7, 8)
        for i in range(512):
            w(PML4 + 0x2000 + i * 8, (i << 21) | 0x87, 8)   # P RW US PS

    def load(self, src: str, addr: int = CODE, nasm: bool = False) -> bytes:
        code = asm(src, self.bits, addr, nasm)
        self.mem.write_bytes(addr, code)
        self.core.tb_flush()
        return code

    def run(self, max_insns: int | None = 100000) -> int:
        return self.core.run(max_insns)
