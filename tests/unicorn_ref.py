"""Unicorn (QEMU's TCG core, unicorn 2.1) as the second reference for 32-bit guests.

This host's KVM (PVM) refuses legacy 32-bit and PAE paging without long mode, so
for guests that use them the reference is Unicorn, started from exactly the state
pyqemu's loader produced: a Machine is built with ``accel="interp"`` and, before it
runs, its registers (general, EIP, EFLAGS, CR0/CR3/CR4, EFER, GDTR/IDTR, segment
selectors: Unicorn loads them from the GDT in memory, and the hidden parts it gets
are checked against pyqemu's) and its RAM are copied into Unicorn.  IN/OUT are
hooked: 0x3fd (the UART's LSR) reads 0x60, bytes written to 0x3f8 are the serial
output, a write to 0xf4 (isa-debug-exit) stops the run with QEMU's exit status.

Where Unicorn falls short of the hardware it is listed in :data:`UNICORN_KNOWN_ERRORS`
with the SDM section, and the harness does that part itself, as that section says:
nothing is masked.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import unicorn
from unicorn import x86_const as U

from pyqemu import Machine
from pyqemu.images import GuestProgram
from pyqemu.target.i386.paging import (
    ACC_EXEC,
    ACC_READ,
    ACC_WRITE,
    access_allowed,
    accessed_dirty_updates,
    page_walk,
)

DEBUG_EXIT = "isa-debug-exit,iobase=0xf4,iosize=0x04"
RAM_SIZE = 32 << 20
COPIED_RAM = 4 << 20          # the boot area, the multiboot info and the kernel

UNICORN_KNOWN_ERRORS: dict[str, str] = {
    "event-delivery":
        "Unicorn 2.1 does not deliver exceptions or INT n through the IDT: its "
        "cpu_handle_exception calls the UC_HOOK_INTR hooks instead of do_interrupt (and "
        "stops the run without one).  The harness delivers them as Intel SDM vol. 3A "
        "6.12.1 says, for what these guests use: a 32-bit interrupt or trap gate to a "
        "conforming or same-privilege (CPL 0) code segment, a frame of EFLAGS, CS, EIP and, "
        "for vectors 8, 10-14 and 17, the error code (6.13); RF=1 in the image for a fault "
        "(SDM vol. 3A 6.8.3 / vol. 3B 17.3.1.1); TF, VM, RF, NT cleared, and IF for an "
        "interrupt gate (6.12.1.3).",
    "pf-error-code":
        "Unicorn does not expose the #PF error code (QEMU's env->error_code).  The "
        "harness derives it as Intel SDM vol. 3A 4.7 (Figure 4-12) defines it: P from a "
        "walk of the guest's paging structures for CR2, W from the decoded instruction "
        "(capstone: an explicitly written memory operand), U from CPL 3, I/D for an "
        "instruction fetch when CR4.SMEP=1 or CR4.PAE=1 and EFER.NXE=1.",
    "double-fault":
        "As Unicorn never runs do_interrupt, QEMU's double-fault tracking "
        "(env->old_exception, reset at the end of a delivery) keeps the vector of the "
        "first #PF, so every later #PF (or contributory fault) is raised as #DF with error "
        "code 0, though a #DF is only for a fault during the delivery of another (Intel SDM "
        "vol. 3A 6.15, Interrupt 8, Table 6-5).  The harness's deliveries complete inside "
        "the hook, so a vector 8 from Unicorn is such a later fault: it is delivered as the "
        "#PF it is when the walk for CR2 fails (SDM 4.7), and fails the run otherwise.",
    "fetch-fault":
        "A #PF on an instruction fetch (a jump to a not-present page) reaches no "
        "UC_HOOK_INTR: emu_start just returns, EIP at the target, CR2 not set.  A page "
        "fault on a fetch is a #PF with CR2 = the linear address (Intel SDM vol. 3A 4.7, "
        "6.15 Interrupt 14), so when the run ends without an exit and the walk of EIP for a "
        "fetch fails, the harness sets CR2, delivers the #PF and goes on.",
}

_ERROR_CODE_VECTORS = {8, 10, 11, 12, 13, 14, 17}
_FAULT_VECTORS = {0, 5, 6, 7, 10, 11, 12, 13, 14, 16, 17, 19, 20}
_GPRS = (("rax", U.UC_X86_REG_EAX), ("rbx", U.UC_X86_REG_EBX), ("rcx", U.UC_X86_REG_ECX),
         ("rdx", U.UC_X86_REG_EDX), ("rsi", U.UC_X86_REG_ESI), ("rdi", U.UC_X86_REG_EDI),
         ("rbp", U.UC_X86_REG_EBP), ("rsp", U.UC_X86_REG_ESP))
_SEGS = (("es", U.UC_X86_REG_ES, 0), ("cs", U.UC_X86_REG_CS, 1), ("ss", U.UC_X86_REG_SS, 2),
         ("ds", U.UC_X86_REG_DS, 3), ("fs", U.UC_X86_REG_FS, 4), ("gs", U.UC_X86_REG_GS, 5))


@dataclasses.dataclass
class UnicornOutcome:
    serial: bytes
    exit_code: int | None
    regs: dict[str, int]
    io: list[tuple[int, int, int, bool]]
    events: list[tuple[int, int, int]]        # (vector, error code, CR2) delivered
    error: str | None = None


class PageFaultError(Exception):
    """The harness's own walk found no translation (``present``: a protection fault)."""


class _Ref:
    """One Unicorn run of a guest."""

    def __init__(self, uc: unicorn.Uc) -> None:
        self.uc = uc
        self.serial = bytearray()
        self.exit_code: int | None = None
        self.io: list[tuple[int, int, int, bool]] = []
        self.events: list[tuple[int, int, int]] = []

    # -- the guest's page tables, for the harness's own implicit accesses -------------
    def _rd(self, pa: int, size: int) -> int:
        return int.from_bytes(self.uc.mem_read(pa, size), "little")

    def walk(self, la: int, write: bool = False, fetch: bool = False,
             update: bool = True) -> int:
        """Linear -> physical for a supervisor access (target/i386/paging.py); sets the
        A/D bits as SDM vol. 3A 4.8 says when ``update``; raises PageFaultError(present) on a
        failure."""
        uc = self.uc
        cr0, cr3, cr4 = (uc.reg_read(r) for r in (U.UC_X86_REG_CR0, U.UC_X86_REG_CR3,
                                                   U.UC_X86_REG_CR4))
        efer = uc.reg_read(U.UC_X86_REG_MSR, 0xC0000080)
        walk = page_walk(self._rd, cr0, cr3, cr4, efer, la)
        if walk.pa is None:
            raise PageFaultError(False)
        access = ACC_WRITE if write else ACC_EXEC if fetch else ACC_READ
        if not access_allowed(walk, access, False, cr0, efer):
            raise PageFaultError(True)
        if update:
            for e in accessed_dirty_updates(walk, access):
                uc.mem_write(e.addr, e.value.to_bytes(e.size, "little"))
        return walk.pa

    # -- event delivery (UNICORN_KNOWN_ERRORS["event-delivery"]) ------------------------
    def pf_error_code(self, cr2: int, eip: int) -> int:
        """The #PF error code, SDM vol. 3A 4.7 (UNICORN_KNOWN_ERRORS["pf-error-code"])."""
        import capstone
        uc = self.uc
        cr4 = uc.reg_read(U.UC_X86_REG_CR4)
        efer = uc.reg_read(U.UC_X86_REG_MSR, 0xC0000080)
        user = uc.reg_read(U.UC_X86_REG_CS) & 3 == 3
        try:
            self.walk(eip, fetch=True, update=False)
            fetch = False
        except PageFaultError:
            fetch = (cr2 >> 12) == (eip >> 12)
        write = False
        if not fetch:
            md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
            md.detail = True
            code = bytes(uc.mem_read(self.walk(eip, update=False), 16))
            insn = next(md.disasm(code, eip))
            write = any(op.type == capstone.x86.X86_OP_MEM and op.access & capstone.CS_AC_WRITE
                        for op in insn.operands)
        try:
            self.walk(cr2, write=write, fetch=fetch, update=False)
            raise AssertionError(f"#PF at {cr2:#x} but the walk succeeds")
        except PageFaultError as e:
            present = bool(e.args[0])
        i_d = fetch and bool(cr4 & (1 << 20) or (cr4 & 0x20 and efer & 0x800))
        return int(present) | (2 if write else 0) | (4 if user else 0) | (0x10 if i_d else 0)

    def deliver(self, vector: int) -> None:
        uc = self.uc
        eip = uc.reg_read(U.UC_X86_REG_EIP)
        cr2 = uc.reg_read(U.UC_X86_REG_CR2)
        idt_base, idt_limit = uc.reg_read(U.UC_X86_REG_IDTR)[1:3]
        if vector * 8 + 7 > idt_limit:
            raise AssertionError(f"vector {vector:#x} beyond the IDT limit")
        lo, hi = struct.unpack("<II", uc.mem_read(self.walk(idt_base + vector * 8), 8))
        gate_type = (hi >> 8) & 0x1F
        if not hi & 0x8000 or gate_type not in (0xE, 0xF):
            raise AssertionError(f"vector {vector:#x}: not a present 32-bit interrupt/trap gate")
        if uc.reg_read(U.UC_X86_REG_CS) & 3:
            raise AssertionError("event delivery from CPL > 0 is not modelled")
        selector, offset = lo >> 16, (hi & 0xFFFF0000) | (lo & 0xFFFF)
        error = 0
        if vector == 14:
            error = self.pf_error_code(cr2, eip)
        elif vector in _ERROR_CODE_VECTORS:
            raise AssertionError(f"the error code of vector {vector} is not modelled")
        eflags = uc.reg_read(U.UC_X86_REG_EFLAGS)
        image = eflags | (0x10000 if vector in _FAULT_VECTORS else 0)
        frame = [image, uc.reg_read(U.UC_X86_REG_CS), eip]
        if vector in _ERROR_CODE_VECTORS:
            frame.append(error)
        esp = uc.reg_read(U.UC_X86_REG_ESP)
        for value in frame:
            esp = (esp - 4) & 0xFFFFFFFF
            uc.mem_write(self.walk(esp, write=True), struct.pack("<I", value))
        self.events.append((vector, error, cr2))
        new_flags = eflags & ~(0x100 | 0x4000 | 0x10000 | 0x20000)
        if gate_type == 0xE:
            new_flags &= ~0x200
        uc.reg_write(U.UC_X86_REG_ESP, esp)
        uc.reg_write(U.UC_X86_REG_EFLAGS, new_flags)
        if selector != uc.reg_read(U.UC_X86_REG_CS):
            uc.reg_write(U.UC_X86_REG_CS, selector)
        uc.reg_write(U.UC_X86_REG_EIP, offset)

    # -- hooks ---------------------------------------------------------------------------
    def hook_intr(self, uc: unicorn.Uc, vector: int, _: Any) -> None:
        try:
            if vector == 8 and self.events:   # UNICORN_KNOWN_ERRORS["double-fault"]
                cr2 = uc.reg_read(U.UC_X86_REG_CR2)
                eip = uc.reg_read(U.UC_X86_REG_EIP)
                self.pf_error_code(cr2, eip)  # asserts that the walk for CR2 fails
                vector = 14
            self.deliver(vector)
        except Exception as e:  # a harness failure ends the run, reported, not hidden
            self.error = f"vector {vector:#x}: {e}"
            uc.emu_stop()

    def hook_in(self, uc: unicorn.Uc, port: int, size: int, _: Any) -> int:
        value = 0x60 if port == 0x3FD else 0
        self.io.append((port, size, value, False))
        return value

    def hook_out(self, uc: unicorn.Uc, port: int, size: int, value: int, _: Any) -> None:
        self.io.append((port, size, value, True))
        if port == 0x3F8:
            self.serial.append(value & 0xFF)
        elif port == 0xF4:
            self.exit_code = ((value & ((1 << (8 * size)) - 1)) << 1) | 1
            uc.emu_stop()

    error: str | None = None


def run_unicorn(prog: GuestProgram, image_path: str, timeout: float = 60.0) -> UnicornOutcome:
    """Run the multiboot guest ``prog`` (kernel file ``image_path``) on Unicorn from the
    state pyqemu's loader gives it."""
    with Machine(accel="interp", memory="32M", devices=[DEBUG_EXIT], kernel=image_path) as m:
        env = m.env()
        ram = m.mem_read(0, COPIED_RAM)
        state = {
            "gprs": [env.reg(n) for n, _ in _GPRS], "eip": env.rip, "eflags": env.eflags,
            "cr0": env.cr[0], "cr3": env.cr[3], "cr4": env.cr[4], "efer": env.efer,
            "gdt": (env.gdt.base, env.gdt.limit), "idt": (env.idt.base, env.idt.limit),
            "segs": [(env.segs[i].selector, env.segs[i].base, env.segs[i].limit,
                      env.segs[i].flags) for _, _, i in _SEGS],
        }
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    uc.ctl_set_cpu_model(U.UC_CPU_X86_QEMU64)   # NX in CPUID 0x80000001, as pyqemu's model
    uc.mem_map(0, RAM_SIZE)
    uc.mem_write(0, ram)
    for (_, reg), value in zip(_GPRS, state["gprs"], strict=True):
        uc.reg_write(reg, value & 0xFFFFFFFF)
    uc.reg_write(U.UC_X86_REG_GDTR, (0, *state["gdt"], 0))
    uc.reg_write(U.UC_X86_REG_IDTR, (0, *state["idt"], 0))
    uc.reg_write(U.UC_X86_REG_MSR, (0xC0000080, state["efer"]))
    uc.reg_write(U.UC_X86_REG_CR4, state["cr4"])
    uc.reg_write(U.UC_X86_REG_CR3, state["cr3"])
    uc.reg_write(U.UC_X86_REG_CR0, state["cr0"])
    for (name, reg, _), (sel, base, limit, flags) in zip(_SEGS, state["segs"], strict=True):
        uc.reg_write(reg, sel)
        # Unicorn loaded the hidden part from the GDT: it must be what pyqemu had.
        lo, hi = struct.unpack("<II", ram[state["gdt"][0] + (sel & ~7):][:8])
        d_base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)
        d_limit = (hi & 0xF0000) | (lo & 0xFFFF)
        if hi & 0x800000:
            d_limit = (d_limit << 12) | 0xFFF
        assert (d_base, d_limit, hi & 0x00F0FF00) == (base, limit, flags & 0x00F0FF00), \
            f"{name}={sel:#x}: the GDT descriptor is not pyqemu's segment cache"
    uc.reg_write(U.UC_X86_REG_EFLAGS, state["eflags"])
    ref = _Ref(uc)
    uc.hook_add(unicorn.UC_HOOK_INTR, ref.hook_intr)
    uc.hook_add(unicorn.UC_HOOK_INSN, ref.hook_in, None, 1, 0, U.UC_X86_INS_IN)
    uc.hook_add(unicorn.UC_HOOK_INSN, ref.hook_out, None, 1, 0, U.UC_X86_INS_OUT)
    error = None
    eip = state["eip"]
    while True:
        try:
            uc.emu_start(eip, 0xFFFFFFFF, timeout=int(timeout * 1e6))
        except unicorn.UcError as e:
            error = f"{e} at eip={uc.reg_read(U.UC_X86_REG_EIP):#x}"
            break
        eip = uc.reg_read(U.UC_X86_REG_EIP)
        if ref.exit_code is not None or ref.error is not None:
            break
        try:   # UNICORN_KNOWN_ERRORS["fetch-fault"]
            ref.walk(eip, fetch=True, update=False)
            break
        except PageFaultError:
            uc.reg_write(U.UC_X86_REG_CR2, eip)
            ref.hook_intr(uc, 14, None)
            eip = uc.reg_read(U.UC_X86_REG_EIP)
    regs = {name: uc.reg_read(reg) for name, reg in _GPRS}
    return UnicornOutcome(bytes(ref.serial), ref.exit_code, regs, ref.io, ref.events,
                          ref.error or error)
