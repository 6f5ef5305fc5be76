"""One guest image, run at CPL3 on the host's KVM (the hardware oracle) and on interp.

User-mode code runs natively under KVM, even on a host whose KVM has no VMX/SVM
(the PVM module: README.md, "The KVM on our machines"), so the real CPU answers every
question about a user-mode instruction at a few tens of microseconds per ``KVM_RUN``.  Both sides
start from the same bytes of RAM and the same registers:

==================  ==========================================================
0x001000            GDT: null, code64 DPL0 (0x08), data DPL0 (0x10), data DPL3
                    (0x1b), code64 DPL3 (0x23), code32 DPL3 (0x2b), code16
                    DPL3 (0x33), 64-bit TSS (0x38)
0x002000-0x004fff   PML4, PDPT, PD: 2 MiB pages; 0-2 MiB supervisor-only,
                    2-4 MiB user read/write, 4-6 MiB user read-only, the rest
                    of the address space not present
0x005000            IDT: 32 interrupt gates (DPL3) to the stubs
0x006000            TSS (RSP0 = 0x9000)
0x007000            one stub per vector: ``out 0xc0+vector, al; jmp $`` (CPL0)
0x200000            the snippet, then ``out 0xf0, al``   (CODE)
0x300000-0x301fff   scratch data                            (DATA)
0x3f0000            the user stack pointer                  (STACK)
0x400000-0x5fffff   user read-only                          (RDONLY)
==================  ==========================================================

A snippet ends at the ``out 0xf0, al`` (KVM: an I/O exit; interp: a breakpoint
there, so interp needs no I/O permission) or at a stub (a fault: the vector is in
the stub's address, the error code and the frame on the kernel stack).

Measured on the PVM host (probe in ``test_kvm_differential.py``): exceptions at
CPL3 go through this IDT with the TSS stack switch, exactly as on bare hardware;
RFLAGS.IOPL reads 0 whatever KVM_SET_REGS wrote, yet ``out`` at CPL3 still
exits (PVM traps all port I/O), so IOPL is 0 on both sides; ``INT n``/``INT3``
and ``SYSCALL`` are intercepted by PVM and do not follow the gate DPL or
EFER.SCE, so the generators leave them out.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyqemu.accel.interp.cpu_exec import InterpCore
from pyqemu.accel.kvm import kvm_abi as abi
from pyqemu.accel.ops import EXCP_DEBUG
from pyqemu.system.memory import AddressSpace, MemoryRegion
from pyqemu.target.i386.cpu_state import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    DESC_A_MASK,
    DESC_B_MASK,
    DESC_CS_MASK,
    DESC_DPL_SHIFT,
    DESC_G_MASK,
    DESC_L_MASK,
    DESC_P_MASK,
    DESC_R_MASK,
    DESC_S_MASK,
    DESC_TYPE_SHIFT,
    DESC_W_MASK,
    EFER_LMA,
    EFER_LME,
    CPUX86State,
    SegmentCache,
    x86_reset_state,
)
from pyqemu.target.i386.descriptors import (
    GATE_INT32,
    SYS_TSS32,
    TSS64,
    gate_descriptor,
    segment_descriptor,
)

RAM_SIZE = 6 << 20
GDT, PML4, PDPT, PD, IDT, TSS, STUBS, KSTACK = (0x1000, 0x2000, 0x3000, 0x4000, 0x5000,
                                                0x6000, 0x7000, 0x9000)
CODE, DATA, DATA_SIZE, STACK, RDONLY = 0x200000, 0x300000, 0x2000, 0x3F0000, 0x400000
STACK_LO = STACK - 0x1000              # the user stack bytes compared: STACK_LO..STACK+0x1000
#: User-writable pages a snippet can reach past the data and stack (a displacement
#: past the end of DATA, a string instruction walking down from RDONLY): zeroed
#: before each run and compared after it, so that nothing one snippet leaves there
#: can show up in a later one.
CLEAN = ((DATA + DATA_SIZE, 0x1000), (RDONLY - 0x1000, 0x1000))
END_PORT, FAULT_PORT = 0xF0, 0xC0
NVEC = 32
SEL_CODE64, SEL_DATA3, SEL_CODE3_64, SEL_CODE3_32, SEL_CODE3_16, SEL_TSS = (
    0x08, 0x1B, 0x23, 0x2B, 0x33, 0x38)
USER_CS = {64: SEL_CODE3_64, 32: SEL_CODE3_32, 16: SEL_CODE3_16}
END = bytes([0xE6, END_PORT])          # out 0xf0, al
FLAG_CODE = DESC_P_MASK | DESC_S_MASK | DESC_A_MASK | DESC_CS_MASK | DESC_R_MASK
FLAG_DATA = DESC_P_MASK | DESC_S_MASK | DESC_A_MASK | DESC_W_MASK


def _desc(seg: SegmentCache, dpl: int) -> int:
    """A code/data descriptor (SDM vol. 3A, 3.4.5) with a 4 GiB (or 64 KiB) limit."""
    limit = 0xFFFFF if seg.limit > 0xFFFFF else seg.limit
    return segment_descriptor(seg.base, limit, seg.flags | dpl << DESC_DPL_SHIFT)


def _segments() -> dict[int, SegmentCache]:
    big = DESC_G_MASK | DESC_B_MASK
    return {
        SEL_CODE64: SegmentCache(SEL_CODE64, 0, 0xFFFFFFFF, FLAG_CODE | DESC_L_MASK | DESC_G_MASK),
        0x10: SegmentCache(0x10, 0, 0xFFFFFFFF, FLAG_DATA | big),
        SEL_DATA3: SegmentCache(SEL_DATA3, 0, 0xFFFFFFFF, FLAG_DATA | big | 3 << DESC_DPL_SHIFT),
        SEL_CODE3_64: SegmentCache(SEL_CODE3_64, 0, 0xFFFFFFFF,
                                   FLAG_CODE | DESC_L_MASK | DESC_G_MASK | 3 << DESC_DPL_SHIFT),
        SEL_CODE3_32: SegmentCache(SEL_CODE3_32, 0, 0xFFFFFFFF, FLAG_CODE | big
                                   | 3 << DESC_DPL_SHIFT),
        # 16-bit code starts at IP 0: its base is CODE (IP wraps at 64 KiB).
        SEL_CODE3_16: SegmentCache(SEL_CODE3_16, CODE, 0xFFFF, FLAG_CODE | 3 << DESC_DPL_SHIFT),
    }


def build_image() -> bytes:
    """The first 6 MiB of guest RAM: tables, stubs and zeroed user areas."""
    ram = bytearray(RAM_SIZE)
    segs = _segments()
    gdt = [0] + [_desc(segs[s], s & 3) for s in sorted(segs)]
    # The 16-byte 64-bit TSS descriptor (SDM vol. 3A, 7.2.3): base 63:32 in its upper half.
    gdt += [segment_descriptor(TSS & 0xFFFFFFFF, TSS64.min_limit,
                               DESC_P_MASK | SYS_TSS32 << DESC_TYPE_SHIFT), TSS >> 32]
    struct.pack_into(f"<{len(gdt)}Q", ram, GDT, *gdt)
    struct.pack_into("<Q", ram, PML4, PDPT | 7)
    struct.pack_into("<Q", ram, PDPT, PD | 7)
    struct.pack_into("<3Q", ram, PD, 0x83, (1 << 21) | 0x87, (2 << 21) | 0x85)
    for v in range(NVEC):
        stub = STUBS + v * 8
        ram[stub:stub + 4] = bytes([0xE6, FAULT_PORT + v, 0xEB, 0xFE])
        at = IDT + v * 16
        ram[at:at + 16] = gate_descriptor(SEL_CODE64, stub, GATE_INT32, 3, ia32e=True)
    rsp0 = TSS64["rsp0"]
    ram[TSS + rsp0.offset:TSS + rsp0.offset + rsp0.size] = KSTACK.to_bytes(rsp0.size, "little")
    return bytes(ram)


def build_env(bits: int) -> CPUX86State:
    """CPL3 in 64-bit mode (``bits`` 64) or compatibility mode (32, 16)."""
    env = CPUX86State()
    x86_reset_state(env)
    segs = _segments()
    env.cr[0] = CR0_PE | CR0_ET | CR0_PG
    env.cr[3] = PML4
    env.cr[4] = CR4_PAE
    env.efer = EFER_LME | EFER_LMA
    for i in range(6):
        env.segs[i] = segs[SEL_DATA3].copy()
    env.segs[1] = segs[USER_CS[bits]].copy()
    env.gdt = SegmentCache(0, GDT, 8 * 9 - 1, 0)
    env.idt = SegmentCache(0, IDT, 16 * NVEC - 1, 0)
    env.tr = SegmentCache(SEL_TSS, TSS, 103, DESC_P_MASK | 0xB << DESC_TYPE_SHIFT)
    env.ldt = SegmentCache(0, 0, 0, 0)
    env.rip = entry_ip(bits)
    env.eflags = 2
    return env


def entry_ip(bits: int) -> int:
    """RIP of the snippet's first byte: CODE, or 0 in the 16-bit segment based there."""
    return 0 if bits == 16 else CODE


@dataclass
class Outcome:
    """The state after a snippet: at its end, or at the stub of the fault it raised."""

    regs: list[int]
    rip: int
    rflags: int
    fault: tuple[int, int | None] | None = None     # (vector, error code)
    frame: tuple[int, ...] = ()                     # RIP, CS, RFLAGS, RSP, SS pushed
    cr2: int = 0
    data: bytes = b""
    stack: bytes = b""
    clean: bytes = b""                              # the CLEAN pages, in order
    other: str = ""                                 # anything but an end or a fault
    notes: list[str] = field(default_factory=list)


def _fault_from_stack(vector: int, rsp: int, read: Callable[[int, int], bytes]
                      ) -> tuple[tuple[int, int | None], tuple[int, ...]]:
    if rsp == KSTACK - 48:
        err, *frame = struct.unpack("<6Q", read(rsp, 48))
        return (vector, err), tuple(frame)
    return (vector, None), struct.unpack("<5Q", read(rsp, 40))


class KvmCpl3:
    """One VM with one vCPU, reused for every snippet (``KVM_SET_SREGS``/``REGS`` each)."""

    def __init__(self) -> None:
        from pyqemu.accel.kvm.binding import Kvm
        from pyqemu.accel.kvm.kvm_i386 import set_seg
        self._set_seg = set_seg
        self.kvm = Kvm()
        self.vm = self.kvm.create_vm()
        self.mm = mmap.mmap(-1, RAM_SIZE)
        self._ptr = abi.ffi.from_buffer(self.mm)
        self.addr = int(abi.ffi.cast("uintptr_t", self._ptr))
        self.vm.set_user_memory_region(0, 0, 0, RAM_SIZE, self.addr)
        self.vcpu = self.vm.create_vcpu(0)
        self.mm[:] = build_image()
        self.sregs = {b: self._sregs(build_env(b)) for b in (16, 32, 64)}
        self.loaded: int | None = None

    def _sregs(self, env: CPUX86State) -> Any:
        s = self.vcpu.get_sregs()
        for name, seg in zip(("es", "cs", "ss", "ds", "fs", "gs"), env.segs, strict=True):
            self._set_seg(getattr(s, name), seg)
        self._set_seg(s.tr, env.tr)
        s.tr.s = 0
        self._set_seg(s.ldt, env.ldt)
        s.gdt.base, s.gdt.limit = env.gdt.base, env.gdt.limit
        s.idt.base, s.idt.limit = env.idt.base, env.idt.limit
        s.cr0, s.cr3, s.cr4, s.efer, s.cr2 = env.cr[0], env.cr[3], env.cr[4], env.efer, 0
        return s

    def close(self) -> None:
        self.vcpu.close()
        self.vm.set_user_memory_region(0, 0, 0, 0, self.addr)
        abi.ffi.release(self._ptr)
        self.mm.close()
        self.vm.close()
        self.kvm.close()

    def run(self, bits: int, code: bytes, regs: list[int], rflags: int, data: bytes) -> Outcome:
        from pyqemu.accel.kvm.binding import IoOut
        mm = self.mm
        mm[CODE:CODE + len(code) + 2] = code + END
        mm[DATA:DATA + DATA_SIZE] = data
        mm[STACK_LO:STACK + 0x1000] = bytes(0x2000)
        for a, n in CLEAN:
            mm[a:a + n] = bytes(n)
        self.vcpu.set_sregs(self.sregs[bits])       # a fault left CS/SS at CPL0
        r = self.vcpu.get_regs()
        for name, v in zip(_GPRS, regs, strict=False):     # regs may be the first 8
            setattr(r, name, v)
        r.rip, r.rflags = entry_ip(bits), rflags
        self.vcpu.set_regs(r)
        ex = self.vcpu.run()
        r = self.vcpu.get_regs()
        out = Outcome([getattr(r, n) for n in _GPRS], r.rip, r.rflags,
                      data=bytes(mm[DATA:DATA + DATA_SIZE]),
                      stack=bytes(mm[STACK_LO:STACK + 0x1000]),
                      clean=b"".join(bytes(mm[a:a + n]) for a, n in CLEAN))
        if isinstance(ex, IoOut) and ex.port == END_PORT:
            out.rip -= 2                    # report the address of the end marker
        elif isinstance(ex, IoOut) and FAULT_PORT <= ex.port < FAULT_PORT + NVEC:
            vector = ex.port - FAULT_PORT
            out.rip = STUBS + vector * 8
            out.fault, out.frame = _fault_from_stack(vector, r.rsp,
                                                     lambda a, n: bytes(mm[a:a + n]))
            if vector == 14:
                out.cr2 = self.vcpu.get_sregs().cr2
        else:
            out.other = repr(ex)
        return out


_GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
         "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


class InterpCpl3:
    """The same image on an :class:`InterpCore`; breakpoints at the end and on the stubs."""

    def __init__(self, budget: int = 100_000) -> None:
        root = MemoryRegion.container_new("system", 1 << 32)
        root.add_subregion(0, MemoryRegion.ram_new("ram", RAM_SIZE))
        self.mem = AddressSpace("memory", root)
        self.mem.write_bytes(0, build_image())
        self.envs = {b: build_env(b) for b in (16, 32, 64)}
        self.env = build_env(64)
        self.core = InterpCore(self.env, self.mem, None)
        self.budget = budget

    def run(self, bits: int, code: bytes, regs: list[int], rflags: int, data: bytes) -> Outcome:
        env, core, mem = self.env, self.core, self.mem
        mem.write_bytes(CODE, code + END)
        mem.write_bytes(DATA, data)
        mem.write_bytes(STACK_LO, bytes(0x2000))
        for a, n in CLEAN:
            mem.write_bytes(a, bytes(n))
        core.tb_flush()
        ref = self.envs[bits]
        env.segs[:] = [s.copy() for s in ref.segs]
        env.cr[2] = 0
        env.regs[:] = regs
        env.rip, env.eflags = entry_ip(bits), rflags
        core.cc = None
        core.bp_skip = None
        end = entry_ip(bits) + len(code)
        core.breakpoints = {end} | {STUBS + v * 8 for v in range(NVEC)}
        core.mode_changed()
        reason = core.run(self.budget)
        out = Outcome(list(env.regs), env.rip, env.eflags, data=mem.read_bytes(DATA, DATA_SIZE),
                      stack=mem.read_bytes(STACK_LO, 0x2000),
                      clean=b"".join(mem.read_bytes(a, n) for a, n in CLEAN))
        if reason != EXCP_DEBUG:
            out.other = f"stopped with reason {reason:#x} at {env.rip:#x}"
        elif env.rip != end:
            vector = (env.rip - STUBS) // 8
            out.fault, out.frame = _fault_from_stack(vector, env.regs[4], mem.read_bytes)
            out.cr2 = env.cr[2] if vector == 14 else 0
        return out
