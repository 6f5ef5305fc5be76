"""``CPUX86State``: the x86 register file every part of pyqemu reads (``target/i386/cpu.h``).

Under interp this *is* the CPU state; under kvm it is what the kernel last
gave us (``synchronize_state`` pulls, ``vcpu_dirty`` pushes back before the
next ``KVM_RUN``), so a monitor, a debugger or a test reads the same thing on
both accelerators.

Segment registers keep QEMU's ``SegmentCache`` form: selector, base, limit and
``flags`` holding the descriptor's attribute bits where the descriptor's high
dword has them (Intel SDM vol. 3A, 3.4.5 "Segment Descriptors"): type at bit 8,
S at 12, DPL at 13, P at 15, AVL at 20, L at 21, D/B at 22, G at 23.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# General registers, in encoding order (Intel SDM vol. 2A, 2.1.5, Table 2-2).
R_EAX, R_ECX, R_EDX, R_EBX, R_ESP, R_EBP, R_ESI, R_EDI = range(8)
REG_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")

# Segment registers, in encoding order (SDM vol. 2A, 3.1.1.1 Sreg).
R_ES, R_CS, R_SS, R_DS, R_FS, R_GS = range(6)
SEG_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")

# EFLAGS bits (SDM vol. 1, 3.4.3).
CC_C, CC_P, CC_A, CC_Z, CC_S, CC_O = 0x1, 0x4, 0x10, 0x40, 0x80, 0x800
TF_MASK, IF_MASK, DF_MASK = 0x100, 0x200, 0x400
IOPL_MASK, NT_MASK, RF_MASK, VM_MASK, AC_MASK = 0x3000, 0x4000, 0x10000, 0x20000, 0x40000
VIF_MASK, VIP_MASK, ID_MASK = 0x80000, 0x100000, 0x200000
EFLAGS_FIXED = 0x2  # bit 1 always reads 1
ARITH_FLAGS = CC_C | CC_P | CC_A | CC_Z | CC_S | CC_O

# Segment attribute bits in SegmentCache.flags.
DESC_TYPE_SHIFT = 8
DESC_A_MASK = 1 << 8
DESC_W_MASK = 1 << 9      # data: writable
DESC_R_MASK = 1 << 9      # code: readable
DESC_C_MASK = 1 << 10     # code: conforming
DESC_E_MASK = 1 << 10     # data: expand down
DESC_CS_MASK = 1 << 11    # code segment
DESC_S_MASK = 1 << 12     # code/data, not system
DESC_DPL_SHIFT = 13
DESC_P_MASK = 1 << 15
DESC_AVL_MASK = 1 << 20
DESC_L_MASK = 1 << 21     # 64-bit code
DESC_B_MASK = 1 << 22     # D/B: 32-bit
DESC_G_MASK = 1 << 23     # limit in 4 KiB units

# Control registers (SDM vol. 3A, 2.5).
CR0_PE, CR0_MP, CR0_EM, CR0_TS, CR0_ET, CR0_NE = 1, 2, 4, 8, 0x10, 0x20
CR0_WP, CR0_AM, CR0_NW, CR0_CD, CR0_PG = 1 << 16, 1 << 18, 1 << 29, 1 << 30, 1 << 31
CR4_VME, CR4_PVI, CR4_TSD, CR4_DE, CR4_PSE, CR4_PAE = 1, 2, 4, 8, 0x10, 0x20
CR4_MCE, CR4_PGE, CR4_PCE, CR4_OSFXSR, CR4_OSXMMEXCPT = 0x40, 0x80, 0x100, 0x200, 0x400
CR4_FSGSBASE, CR4_OSXSAVE, CR4_SMEP, CR4_SMAP = 1 << 16, 1 << 18, 1 << 20, 1 << 21

# MSRs (SDM vol. 4).
MSR_IA32_TSC = 0x10
MSR_IA32_APICBASE = 0x1B
MSR_IA32_MISC_ENABLE = 0x1A0
MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP = 0x174, 0x175, 0x176
MSR_PAT = 0x277
MSR_EFER = 0xC0000080
MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_FMASK = 0xC0000081, 0xC0000082, 0xC0000083, 0xC0000084
MSR_FSBASE, MSR_GSBASE, MSR_KERNELGSBASE = 0xC0000100, 0xC0000101, 0xC0000102
MSR_TSC_AUX = 0xC0000103
EFER_SCE, EFER_LME, EFER_LMA, EFER_NXE = 1, 1 << 8, 1 << 10, 1 << 11

APIC_DEFAULT_ADDRESS = 0xFEE00000
MSR_IA32_APICBASE_BSP = 1 << 8
MSR_IA32_APICBASE_ENABLE = 1 << 11
PAT_POWER_ON = 0x0007040600070406


@dataclass
class SegmentCache:
    """One segment register with its hidden part (QEMU's ``SegmentCache``)."""

    selector: int = 0
    base: int = 0
    limit: int = 0xFFFF
    flags: int = 0

    @property
    def dpl(self) -> int:
        return (self.flags >> DESC_DPL_SHIFT) & 3

    @property
    def type(self) -> int:
        return (self.flags >> DESC_TYPE_SHIFT) & 0xF

    def copy(self) -> SegmentCache:
        return SegmentCache(self.selector, self.base, self.limit, self.flags)


def _segs() -> list[SegmentCache]:
    return [SegmentCache() for _ in range(6)]


@dataclass
class CPUX86State:
    """The architectural state of one x86 CPU."""

    regs: list[int] = field(default_factory=lambda: [0] * 16)
    rip: int = 0
    eflags: int = EFLAGS_FIXED
    segs: list[SegmentCache] = field(default_factory=_segs)
    ldt: SegmentCache = field(default_factory=SegmentCache)
    tr: SegmentCache = field(default_factory=SegmentCache)
    gdt: SegmentCache = field(default_factory=SegmentCache)  # base and limit only
    idt: SegmentCache = field(default_factory=SegmentCache)
    cr: list[int] = field(default_factory=lambda: [0] * 9)   # cr0, -, cr2, cr3, cr4, ..., cr8
    dr: list[int] = field(default_factory=lambda: [0] * 8)
    efer: int = 0
    star: int = 0
    lstar: int = 0
    cstar: int = 0
    fmask: int = 0
    kernelgsbase: int = 0
    sysenter_cs: int = 0
    sysenter_esp: int = 0
    sysenter_eip: int = 0
    tsc_aux: int = 0
    pat: int = PAT_POWER_ON
    apic_base: int = APIC_DEFAULT_ADDRESS | MSR_IA32_APICBASE_ENABLE
    misc_enable: int = 1       # MSR_IA32_MISC_ENABLE_DEFAULT: fast strings
    tsc_offset: int = 0        # guest TSC = host TSC + tsc_offset (interp: its own counter)
    msrs: dict[int, int] = field(default_factory=dict)  # any other MSR the guest wrote
    # x87 / SSE state, kept so both accelerators can carry it (KVM_GET_FPU).
    fpregs: list[int] = field(default_factory=lambda: [0] * 8)   # 80-bit values
    fpu_fcw: int = 0x37F
    fpu_fsw: int = 0
    fpu_ftw: int = 0
    xmm: list[int] = field(default_factory=lambda: [0] * 16)     # 128-bit values
    mxcsr: int = 0x1F80
    a20_mask: int = -1
    # Pending-event bookkeeping of the interpreter (QEMU's exception_index et al.).
    interrupt_pending: int = -1

    # -- derived state (QEMU keeps these in hflags) ------------------------------------
    @property
    def cpl(self) -> int:
        """Current privilege level (SDM vol. 3A, 5.5): SS.DPL in protected mode, 3 in VM86,
        0 in real mode."""
        if not self.cr[0] & CR0_PE:
            return 0
        if self.eflags & VM_MASK:
            return 3
        return self.segs[R_SS].dpl

    @property
    def long_mode_active(self) -> bool:
        return bool(self.efer & EFER_LMA)

    @property
    def code64(self) -> bool:
        return self.long_mode_active and bool(self.segs[R_CS].flags & DESC_L_MASK)

    @property
    def code32(self) -> bool:
        return bool(self.cr[0] & CR0_PE) and not self.code64 and bool(
            self.segs[R_CS].flags & DESC_B_MASK) and not self.eflags & VM_MASK

    @property
    def mode_name(self) -> str:
        if self.code64:
            return "long64"
        if self.long_mode_active:
            return "compat32" if self.code32 else "compat16"
        if not self.cr[0] & CR0_PE:
            return "real"
        if self.eflags & VM_MASK:
            return "vm86"
        return "prot32" if self.code32 else "prot16"

    def reg(self, name: str) -> int:
        """A register by name (``rax``, ``eax``, ``ax``, ``al``, ``rip``, ``cs``, ``cr0`` ...)."""
        return get_reg(self, name)

    def set_reg(self, name: str, value: int) -> None:
        set_reg(self, name, value)

    def copy(self) -> CPUX86State:
        """A deep copy (for snapshots and cross-checking)."""
        import copy
        return copy.deepcopy(self)


def _reg_table() -> dict[str, tuple[int, int, int]]:
    """name -> (index, bit shift, width) for the general registers and their parts."""
    t: dict[str, tuple[int, int, int]] = {}
    legacy = ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di")
    for i, n in enumerate(legacy):
        t["r" + n] = (i, 0, 64)
        t["e" + n] = (i, 0, 32)
        t[n] = (i, 0, 16)
    for i, n in enumerate(("al", "cl", "dl", "bl")):
        t[n] = (i, 0, 8)
        t[n[0] + "h"] = (i, 8, 8)
    for i, n in enumerate(("spl", "bpl", "sil", "dil")):
        t[n] = (i + 4, 0, 8)
    for i in range(8, 16):
        t[f"r{i}"] = (i, 0, 64)
        t[f"r{i}d"] = (i, 0, 32)
        t[f"r{i}w"] = (i, 0, 16)
        t[f"r{i}b"] = (i, 0, 8)
    return t


GPR_PARTS = _reg_table()
_SCALARS = {"rip", "eflags", "efer", "star", "lstar", "cstar", "fmask", "kernelgsbase",
            "tsc_aux", "pat", "apic_base", "sysenter_cs", "sysenter_esp", "sysenter_eip"}


def get_reg(env: CPUX86State, name: str) -> int:
    name = name.lower()
    if name in GPR_PARTS:
        i, shift, width = GPR_PARTS[name]
        return (env.regs[i] >> shift) & ((1 << width) - 1)
    if name in ("eip", "ip"):
        return env.rip & (0xFFFFFFFF if name == "eip" else 0xFFFF)
    if name in ("rflags", "flags"):
        return env.eflags if name == "rflags" else env.eflags & 0xFFFF
    if name in _SCALARS:
        return int(getattr(env, name))
    if name in SEG_NAMES:
        return env.segs[SEG_NAMES.index(name)].selector
    if name.endswith("_base") and name[:-5] in SEG_NAMES:
        return env.segs[SEG_NAMES.index(name[:-5])].base
    if name.startswith("cr") and name[2:].isdigit() and int(name[2:]) < 9:
        return env.cr[int(name[2:])]
    if name.startswith("dr") and name[2:].isdigit() and int(name[2:]) < 8:
        return env.dr[int(name[2:])]
    raise KeyError(f"unknown x86 register '{name}'")


def set_reg(env: CPUX86State, name: str, value: int) -> None:
    name = name.lower()
    if name in GPR_PARTS:
        i, shift, width = GPR_PARTS[name]
        mask = ((1 << width) - 1) << shift
        if width == 32 and shift == 0:
            env.regs[i] = value & 0xFFFFFFFF  # a 32-bit write zero-extends (SDM 3.4.1.1)
        else:
            env.regs[i] = (env.regs[i] & ~mask) | ((value << shift) & mask)
        return
    if name in ("rflags", "eflags", "flags"):
        env.eflags = (value & 0x3F7FD7) | EFLAGS_FIXED
        return
    if name in ("eip", "ip"):
        env.rip = value & (0xFFFFFFFF if name == "eip" else 0xFFFF)
        return
    if name in _SCALARS:
        setattr(env, name, value & 0xFFFFFFFFFFFFFFFF)
        return
    if name in SEG_NAMES:
        # Real-mode semantics for a plain selector write (SDM 20.1.1): base = sel << 4.
        seg = env.segs[SEG_NAMES.index(name)]
        seg.selector = value & 0xFFFF
        if not env.cr[0] & CR0_PE:
            seg.base = seg.selector << 4
        return
    if name.endswith("_base") and name[:-5] in SEG_NAMES:
        env.segs[SEG_NAMES.index(name[:-5])].base = value
        return
    if name.startswith("cr") and name[2:].isdigit() and int(name[2:]) < 9:
        env.cr[int(name[2:])] = value
        return
    if name.startswith("dr") and name[2:].isdigit() and int(name[2:]) < 8:
        env.dr[int(name[2:])] = value
        return
    raise KeyError(f"unknown x86 register '{name}'")


def x86_reset_state(env: CPUX86State) -> None:
    """The power-on/INIT state (SDM vol. 3A, 9.1.1, Table 9-1), as ``x86_cpu_reset_hold`` sets it.

    CS.selector=0xF000 with base 0xFFFF0000 and EIP=0xFFF0, so the first fetch is
    at 0xFFFFFFF0; the other segments base 0, limit 0xFFFF, present read/write data.
    """
    env.regs[:] = [0] * 16
    env.rip = 0xFFF0
    env.eflags = EFLAGS_FIXED
    data = DESC_P_MASK | DESC_S_MASK | DESC_W_MASK | DESC_A_MASK
    for i in range(6):
        env.segs[i] = SegmentCache(0, 0, 0xFFFF, data)
    code = DESC_P_MASK | DESC_S_MASK | DESC_CS_MASK | DESC_R_MASK | DESC_A_MASK
    env.segs[R_CS] = SegmentCache(0xF000, 0xFFFF0000, 0xFFFF, code)
    env.ldt = SegmentCache(0, 0, 0xFFFF, DESC_P_MASK | (2 << DESC_TYPE_SHIFT))
    env.tr = SegmentCache(0, 0, 0xFFFF, DESC_P_MASK | (11 << DESC_TYPE_SHIFT))
    env.gdt = SegmentCache(0, 0, 0xFFFF, 0)
    env.idt = SegmentCache(0, 0, 0xFFFF, 0)
    env.cr[:] = [0] * 9
    env.cr[0] = CR0_ET | CR0_NW | CR0_CD
    env.dr[:] = [0] * 8
    env.dr[6] = 0xFFFF0FF0
    env.dr[7] = 0x400
    env.efer = 0
    env.star = env.lstar = env.cstar = env.fmask = env.kernelgsbase = 0
    env.sysenter_cs = env.sysenter_esp = env.sysenter_eip = 0
    env.tsc_aux = 0
    env.pat = PAT_POWER_ON
    env.msrs.clear()
    env.fpregs[:] = [0] * 8
    env.fpu_fcw, env.fpu_fsw, env.fpu_ftw = 0x37F, 0, 0
    env.xmm[:] = [0] * 16
    env.mxcsr = 0x1F80
    env.interrupt_pending = -1
