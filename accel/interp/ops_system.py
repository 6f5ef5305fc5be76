"""System and miscellaneous instructions: IN OUT, CLI STI CLD STD CLC STC CMC, CPUID RDTSC,
RDMSR WRMSR, LGDT LIDT SGDT SIDT, MOV to/from CRn/DRn/Sreg, POP Sreg, INVLPG, CLTS, SMSW,
WBINVD/INVD, UD2, LMSW, LAR LSL VERR VERW, SYSENTER SYSEXIT, BOUND.

Intel SDM vol. 2A/2B, the instruction pages of those names; privilege checks
from vol. 3A, 5.9 (privileged instructions: CPL 0) and vol. 1, 19.5 (I/O: CPL <=
IOPL, else the TSS I/O permission bitmap, :mod:`accel.interp.ioperm`).  Whatever
changes the mode, a segment or a control register runs in a helper after the
block has written its state back, and ends the block.
"""

from __future__ import annotations

from pyqemu.accel.interp.codegen import MASK, SIGN, Ctx, Insn, stack_size
from pyqemu.accel.interp.errors import EXCP_BR, EXCP_DB, EXCP_GP, EXCP_UD
from pyqemu.accel.interp.table import op
from pyqemu.target.i386.cpu_state import CR0_TS, CR4_DE, DF_MASK, IF_MASK, VM_MASK

__all__ = ["CR4_UMIP", "gen_bound", "gen_carry", "gen_cld", "gen_cli", "gen_clts", "gen_cpuid",
           "gen_in", "gen_invlpg", "gen_lar", "gen_lgdt", "gen_lmsw", "gen_ltr", "gen_mov_system",
           "gen_out", "gen_pop_seg", "gen_rdmsr", "gen_rdtsc", "gen_rdtscp", "gen_sgdt",
           "gen_smsw", "gen_str", "gen_swapgs", "gen_syscall", "gen_sysenter", "gen_sysexit",
           "gen_sysret", "gen_ud2", "gen_wbinvd", "gen_wrmsr"]

CR4_UMIP = 1 << 11


def _privileged(c: Ctx, i: Insn) -> bool:
    """Emit #GP(0) for CPL > 0 in protected mode; True if the instruction can go on."""
    if c.mode.pe and c.mode.cpl:
        c.may_fault()
        c.emit(f"raise Fault({EXCP_GP}, 0, why='{i.mnem} at CPL {c.mode.cpl}')")
        c.end()
        return False
    return True


def _iopl_check(c: Ctx, i: Insn) -> None:
    """CLI/STI: #GP(0) at CPL > IOPL (SDM vol. 2A CLI, vol. 2B STI; no bit map for these).
    In virtual-8086 mode the VM86 row makes the test (accel/interp/vm86.py, IOPL < 3)."""
    if c.mode.pe and c.mode.cpl and not c.mode.vm86:
        c.may_fault()
        c.emit(f"if {c.mode.cpl} > (env.eflags >> 12 & 3): "
               f"raise Fault({EXCP_GP}, 0, why='{i.mnem}: CPL > IOPL')")


def _io_check(c: Ctx, port: str, size: int) -> None:
    """IN/OUT "Operation" (SDM vol. 2A IN, vol. 2B OUT): at CPL > IOPL or with VM=1, the
    TSS bit map decides (vol. 1, 19.5.2).  Emitted only for I/O instructions in protected
    mode at CPL > 0 (VM=1 means CPL 3), and the IOPL/VM test is inline, so code at
    CPL <= IOPL does no more than one comparison."""
    if c.mode.pe and c.mode.cpl:
        c.may_fault()
        c.emit(f"if {c.mode.cpl} > (env.eflags >> 12 & 3) or env.eflags & {VM_MASK:#x}: "
               f"io_perm_check(S, {port}, {size})")


@op("in")
def gen_in(c: Ctx, i: Insn) -> None:
    dst, port = i.ops
    p = hex(port.imm & 0xFF) if port.kind == "imm" else c.reg_read(port)
    _io_check(c, p, dst.size)
    v = c.t("v")
    c.emit(f"{v} = IOR({p}, {dst.size})")
    c.reg_write(dst, v)
    c.exit(hex(i.next_ip))
    c.end()


@op("out")
def gen_out(c: Ctx, i: Insn) -> None:
    port, src = i.ops
    p = hex(port.imm & 0xFF) if port.kind == "imm" else c.reg_read(port)
    _io_check(c, p, src.size)
    c.emit(f"IOW({p}, {c.reg_read(src)}, {src.size})")
    c.exit(hex(i.next_ip))
    c.end()


@op("cli", "sti")
def gen_cli(c: Ctx, i: Insn) -> None:
    _iopl_check(c, i)
    if i.mnem == "cli":
        c.emit(f"env.eflags &= ~{IF_MASK:#x}")
    else:
        c.emit(f"env.eflags |= {IF_MASK:#x}")
    c.exit(hex(i.next_ip))        # interrupt-window changes end the block
    c.end()


@op("cld", "std")
def gen_cld(c: Ctx, i: Insn) -> None:
    c.emit(f"env.eflags &= ~{DF_MASK:#x}" if i.mnem == "cld" else f"env.eflags |= {DF_MASK:#x}")


@op("clc", "stc", "cmc")
def gen_carry(c: Ctx, i: Insn) -> None:
    if i.mnem == "cmc":
        t = c.t("cf")
        c.emit(f"{t} = 1 ^ {c.flag('C')}")
        c.set_flag("C", t)
    else:
        c.set_flag("C", "0" if i.mnem == "clc" else "1")


@op("cpuid")
def gen_cpuid(c: Ctx, i: Insn) -> None:
    t = [c.t(x) for x in "abcd"]
    c.emit(f"{', '.join(t)} = CPUID({c.gpr_read(0, 4)}, {c.gpr_read(1, 4)})")
    for reg, v in zip((0, 3, 1, 2), t, strict=True):
        c.gpr_write(reg, 4, f"{v} & 0xFFFFFFFF")
    c.exit(hex(i.next_ip))
    c.end()


@op("rdtsc")
def gen_rdtsc(c: Ctx, i: Insn) -> None:
    t = c.t("tsc")
    c.emit(f"{t} = rdtsc(S)")
    c.gpr_write(0, 4, f"{t} & 0xFFFFFFFF")
    c.gpr_write(2, 4, f"{t} >> 32 & 0xFFFFFFFF")


@op("rdmsr")
def gen_rdmsr(c: Ctx, i: Insn) -> None:
    if not _privileged(c, i):
        return
    c.may_fault()
    t = c.t("msr")
    c.emit(f"{t} = rdmsr(S, {c.gpr_read(1, 4)})")
    c.gpr_write(0, 4, f"{t} & 0xFFFFFFFF")
    c.gpr_write(2, 4, f"{t} >> 32 & 0xFFFFFFFF")


@op("wrmsr")
def gen_wrmsr(c: Ctx, i: Insn) -> None:
    if not _privileged(c, i):
        return
    v = c.t("v")
    ecx = c.t("ecx")
    c.emit(f"{v} = {c.gpr_read(2, 4)} << 32 | {c.gpr_read(0, 4)}")
    c.emit(f"{ecx} = {c.gpr_read(1, 4)}")
    c.sync(hex(i.ip))
    c.emit(f"wrmsr(S, {ecx}, {v})")
    c.finish_after_helper(hex(i.next_ip))
    c.end()


@op("lgdt", "lidt")
def gen_lgdt(c: Ctx, i: Insn) -> None:
    """Limit (16 bits) then base: 24 bits with a 16-bit operand, 32, or 64 in 64-bit mode."""
    if not _privileged(c, i):
        return
    bsize = 8 if c.mode.code == 64 else 4
    la = c.addr(i.ops[0], 2 + bsize)
    limit = c.load(la, 2)
    base = c.load(f"({la} + 2) & {MASK[8]:#x}", bsize)
    bmask = MASK[8] if c.mode.code == 64 else 0xFFFFFF if i.opsize == 2 else MASK[4]
    table = "gdt" if i.mnem == "lgdt" else "idt"
    c.emit(f"env.{table}.limit = {limit}")
    c.emit(f"env.{table}.base = {base} & {bmask:#x}")


@op("sgdt", "sidt")
def gen_sgdt(c: Ctx, i: Insn) -> None:
    bsize = 8 if c.mode.code == 64 else 4
    la = c.addr(i.ops[0], 2 + bsize)
    table = "gdt" if i.mnem == "sgdt" else "idt"
    c.store(la, 2, f"env.{table}.limit")
    c.store(f"({la} + 2) & {MASK[8]:#x}", bsize, f"env.{table}.base")


def gen_mov_system(c: Ctx, i: Insn) -> None:
    """MOV to/from CRn, DRn and Sreg (called from the MOV row)."""
    dst, src = i.ops
    if dst.kind == "seg":
        v = c.t("sel")
        c.emit(f"{v} = {c.read(src)} & 0xFFFF")
        c.sync(hex(i.ip))
        c.emit(f"load_seg(S, {dst.reg}, {v})")
        c.finish_after_helper(hex(i.next_ip))
        c.end()
        return
    if not _privileged(c, i):
        return
    if src.kind == "dr" or dst.kind == "dr":
        _mov_dr(c, i)
        return
    if src.kind == "cr":
        c.reg_write(dst, f"env.cr[{src.reg}] & {MASK[dst.size]:#x}")
        return
    v = c.t("v")
    c.emit(f"{v} = {c.read(src)}")
    c.sync(hex(i.ip))
    c.emit(f"write_cr(S, {dst.reg}, {v})")
    c.finish_after_helper(hex(i.next_ip))
    c.end()


def _mov_dr(c: Ctx, i: Insn) -> None:
    """MOV to/from DR0-DR7 at CPL 0 (SDM vol. 2A, "MOV - Move to/from Debug Registers";
    vol. 3B, 18.2).  DR4/DR5 alias DR6/DR7 unless CR4.DE, which makes them #UD; with
    DR7.GD set any access is a #DB fault with DR6.BD set and DR7.GD cleared (18.2.4);
    in 64-bit mode a write of DR6/DR7 with any of bits 63:32 set is #GP(0).  DR6 reads
    its reserved bits 4-11 and 16-31 as 1 and bit 12 as 0; DR7 bit 10 as 1 and bits
    11, 12, 14, 15 as 0 (QEMU's DR6_FIXED_1/DR7_FIXED_1)."""
    dst, src = i.ops
    n = dst.reg if dst.kind == "dr" else src.reg
    c.may_fault()
    if n in (4, 5):
        c.emit(f"if env.cr[4] & {CR4_DE:#x}: raise Fault({EXCP_UD}, why='mov dr{n} with CR4.DE')")
        n += 2
    c.emit("if env.dr[7] & 0x2000:")
    c.emit("    env.dr[6] = env.dr[6] & ~0xF | 0x2000; env.dr[7] &= ~0x2000")
    c.emit(f"    raise Fault({EXCP_DB}, why='debug register access with DR7.GD')")
    if src.kind == "dr":
        c.reg_write(dst, f"env.dr[{n}] & {MASK[dst.size]:#x}")
        return
    v = c.t("v")
    c.emit(f"{v} = {c.read(src)}")
    if n == 6 or n == 7:
        if c.mode.code == 64:
            c.emit(f"if {v} >> 32: raise Fault({EXCP_GP}, 0, why='mov dr{n}: bits 63:32 set')")
        if n == 6:
            c.emit(f"env.dr[6] = {v} & ~0x1000 | 0xFFFF0FF0")
        else:
            c.emit(f"env.dr[7] = {v} & ~0xD800 | 0x400")
    else:
        c.emit(f"env.dr[{n}] = {v}")
    # A new DR0-DR3/DR7 may arm the guest's breakpoints: end the block with no
    # successor, where the exec loop looks at them (accel/interp/debug.py).
    c.sync(hex(i.ip))
    c.emit("debug_update()")
    c.finish_after_helper(hex(i.next_ip))
    c.end()


def gen_pop_seg(c: Ctx, i: Insn) -> None:
    """POP Sreg: load the selector, then commit RSP (SDM vol. 2B, POP)."""
    (dst,) = i.ops
    size = stack_size(c, i)
    (v,), sp = c.pop([size])
    c.sync(hex(i.ip))
    c.emit(f"load_seg(S, {dst.reg}, {v} & 0xFFFF)")
    m = c.stack_mask()
    if m == 0xFFFF:
        c.emit(f"R[4] = R[4] & ~0xFFFF | {sp}")
    else:
        c.emit(f"R[4] = {sp}")
    c.finish_after_helper(hex(i.next_ip))
    c.end()


@op("invlpg")
def gen_invlpg(c: Ctx, i: Insn) -> None:
    if not _privileged(c, i):
        return
    m = i.ops[0]
    c.emit(f"flush_page({c.linear(c.default_seg(m), c.ea(m))})")


@op("clts")
def gen_clts(c: Ctx, i: Insn) -> None:
    if _privileged(c, i):
        c.emit(f"env.cr[0] &= ~{CR0_TS:#x}")


@op("lmsw")
def gen_lmsw(c: Ctx, i: Insn) -> None:
    """LMSW: CR0[3:0] from the source's low bits; PE can be set but not cleared (SDM vol. 2A,
    LMSW: "CR0[0:3] := SRC[0:3]" ... "cannot be used to switch back to real-address mode")."""
    if not _privileged(c, i):
        return
    v = c.t("v")
    c.emit(f"{v} = env.cr[0] & ~0xE | {c.read(i.ops[0], 2)} & 0xF")
    c.sync(hex(i.ip))
    c.emit(f"write_cr(S, 0, {v})")
    c.finish_after_helper(hex(i.next_ip))
    c.end()


@op("smsw")
def gen_smsw(c: Ctx, i: Insn) -> None:
    """SMSW: not privileged unless CR4.UMIP, then #GP(0) at CPL > 0 (SDM vol. 2B, SMSW)."""
    (dst,) = i.ops
    if c.mode.pe and c.mode.cpl:
        c.may_fault()
        c.emit(f"if env.cr[4] & {CR4_UMIP:#x}: raise Fault({EXCP_GP}, 0, why='smsw with CR4.UMIP')")
    if dst.kind == "mem":
        c.store(c.addr(dst), 2, "env.cr[0] & 0xFFFF")
    else:
        c.reg_write(dst, f"env.cr[0] & {MASK[dst.size]:#x}")


@op("wbinvd", "invd")
def gen_wbinvd(c: Ctx, i: Insn) -> None:
    """Caches are not modelled; still privileged (SDM vol. 2B, WBINVD)."""
    _privileged(c, i)


@op("ud2", "ud0", "ud1")
def gen_ud2(c: Ctx, i: Insn) -> None:
    c.may_fault()
    c.emit(f"raise Fault({EXCP_UD}, why={i.mnem!r})")
    c.end()


@op("ltr", "lldt")
def gen_ltr(c: Ctx, i: Insn) -> None:
    """LTR/LLDT: load TR/LDTR from a GDT system descriptor (SDM vol. 2A, LTR, LLDT).
    #UD in real-address and virtual-8086 mode (the VM86 row, accel/interp/vm86.py)."""
    if not c.mode.pe:
        c.may_fault()
        c.emit(f"raise Fault({EXCP_UD}, why='{i.mnem} in real mode')")
        c.end()
        return
    if not _privileged(c, i):
        return
    v = c.t("sel")
    c.emit(f"{v} = {c.read(i.ops[0])} & 0xFFFF")
    c.sync(hex(i.ip))
    c.emit(f"load_system_seg(S, {i.mnem!r}, {v})")
    c.finish_after_helper(hex(i.next_ip))
    c.end()


@op("str", "sldt")
def gen_str(c: Ctx, i: Insn) -> None:
    """STR/SLDT store the selector; to a register it is zero-extended (SDM vol. 2B, STR).
    "Not recognized in real-address mode": #UD (and in virtual-8086 mode: the VM86 row,
    accel/interp/vm86.py)."""
    (dst,) = i.ops
    if not c.mode.pe:
        c.may_fault()
        c.emit(f"raise Fault({EXCP_UD}, why='{i.mnem} in real mode')")
        c.end()
        return
    value = "env.tr.selector" if i.mnem == "str" else "env.ldt.selector"
    if dst.kind == "mem":
        c.store(c.addr(dst), 2, value)
    else:
        c.reg_write(dst, value)


@op("syscall")
def gen_syscall(c: Ctx, i: Insn) -> None:
    """SYSCALL (64-bit mode, EFER.SCE): RCX = next RIP, R11 = RFLAGS, CS/SS from STAR[47:32],
    RFLAGS &= ~FMASK, RIP = LSTAR (SDM vol. 2B, SYSCALL)."""
    if c.mode.code != 64:
        c.may_fault()
        c.emit(f"raise Fault({EXCP_UD}, why='syscall outside 64-bit mode')")
        c.end()
        return
    c.sync(hex(i.ip))
    c.emit(f"syscall(S, {i.next_ip:#x})")
    c.finish_after_helper(None)
    c.end()


@op("sysret", "sysretq")
def gen_sysret(c: Ctx, i: Insn) -> None:
    """SYSRET: back to CPL 3 at RCX with RFLAGS from R11 (SDM vol. 2B, SYSRET)."""
    if c.mode.code != 64:
        c.may_fault()
        c.emit(f"raise Fault({EXCP_UD}, why='sysret outside 64-bit mode')")
        c.end()
        return
    if not _privileged(c, i):
        return
    c.sync(hex(i.ip))
    c.emit(f"sysret(S, {8 if i.rex_w else 4})")
    c.finish_after_helper(None)
    c.end()


@op("swapgs")
def gen_swapgs(c: Ctx, i: Insn) -> None:
    """SWAPGS: exchange GS.base and IA32_KERNEL_GS_BASE; 64-bit mode, CPL 0 (SDM vol. 2B)."""
    if c.mode.code != 64:
        c.may_fault()
        c.emit(f"raise Fault({EXCP_UD}, why='swapgs outside 64-bit mode')")
        c.end()
        return
    if not _privileged(c, i):
        return
    c.sync(hex(i.ip))
    c.emit("env.segs[5].base, env.kernelgsbase = env.kernelgsbase, env.segs[5].base")
    c.emit("SB[5] = env.segs[5].base")
    c.finish_after_helper(hex(i.next_ip))
    c.end()


@op("rdtscp")
def gen_rdtscp(c: Ctx, i: Insn) -> None:
    """RDTSCP: RDTSC plus ECX = IA32_TSC_AUX (SDM vol. 2B, RDTSCP)."""
    t = c.t("tsc")
    c.emit(f"{t} = rdtsc(S)")
    c.gpr_write(0, 4, f"{t} & 0xFFFFFFFF")
    c.gpr_write(2, 4, f"{t} >> 32 & 0xFFFFFFFF")
    c.gpr_write(1, 4, "env.tsc_aux & 0xFFFFFFFF")


@op("lar", "lsl", "verr", "verw")
def gen_lar(c: Ctx, i: Insn) -> None:
    """LAR/LSL load access rights / segment limit into a register and VERR/VERW test
    readability/writability, each setting ZF when the selector passes the checks of
    :func:`accel.interp.seg.check_selector` (SDM vol. 2A LAR, LSL; vol. 2B VERR, VERW).
    Only ZF changes; with ZF = 0 the destination keeps its value.  #UD in real-address
    mode, and in virtual-8086 mode (the VM86 row, accel/interp/vm86.py)."""
    c.may_fault()
    if not c.mode.pe:
        c.emit(f"raise Fault({EXCP_UD}, why='{i.mnem} in real mode')")
        c.end()
        return
    src = i.ops[-1]
    sel = c.t("sel")
    c.emit(f"{sel} = {c.read(src)} & 0xFFFF")
    c.may_fault()
    v = c.t("v")
    c.emit(f"{v} = check_selector(S, {i.mnem!r}, {sel})")
    zf = c.t("zf")
    c.emit(f"{zf} = 0 if {v} is None else 1")
    if i.mnem in ("lar", "lsl"):
        dst = i.ops[0]
        c.emit(f"if {zf}:")
        c.ind += 1
        c.reg_write(dst, f"{v} & {MASK[min(dst.size, 4)]:#x}")
        c.ind -= 1
    c.set_flag("Z", zf)


@op("sysenter")
def gen_sysenter(c: Ctx, i: Insn) -> None:
    """SYSENTER: to CPL 0 at IA32_SYSENTER_EIP (SDM vol. 2B, SYSENTER; :func:`seg.sysenter`)."""
    c.sync(hex(i.ip))
    c.emit("sysenter(S)")
    c.finish_after_helper(None)
    c.end()


@op("sysexit", "sysexitq")
def gen_sysexit(c: Ctx, i: Insn) -> None:
    """SYSEXIT: to CPL 3 at EDX/RDX with ESP/RSP = ECX/RCX (SDM vol. 2B, SYSEXIT)."""
    c.sync(hex(i.ip))
    c.emit(f"sysexit(S, {8 if i.rex_w or i.mnem == 'sysexitq' else 4})")
    c.finish_after_helper(None)
    c.end()


@op("bound")
def gen_bound(c: Ctx, i: Insn) -> None:
    """BOUND: #BR (a fault) unless lower <= index <= upper, signed, the bounds being two
    operand-size words at the memory operand (SDM vol. 2A, BOUND).  Invalid in 64-bit mode,
    where 62H is EVEX and never decodes as BOUND."""
    reg, m = i.ops
    size = reg.size
    la = c.addr(m, 2 * size)
    lo = c.load(la, size)
    hi = c.load(f"({la} + {size}) & {MASK[4]:#x}", size)
    s = SIGN[size]
    idx = c.t("idx")
    c.emit(f"{idx} = ({c.reg_read(reg)} ^ {s:#x}) - {s:#x}")
    c.emit(f"if {idx} < ({lo} ^ {s:#x}) - {s:#x} or {idx} > ({hi} ^ {s:#x}) - {s:#x}: "
           f"raise Fault({EXCP_BR}, why='bound')")
