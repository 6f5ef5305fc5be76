"""End-to-end guest snippets on a bare InterpCore: real mode, mode switches up to long mode,
exceptions through the IVT/IDT, self-modifying code, stops (HLT, breakpoints, exit request,
triple fault) and unimplemented instructions.  Expected values are worked out by hand
from the Intel SDM next to each test.
"""

from __future__ import annotations

import threading

import pytest

from pyqemu.accel.interp.cpu_exec import EXCP_BUDGET
from pyqemu.accel.interp.errors import UnimplementedInstruction
from pyqemu.accel.ops import EXCP_DEBUG, EXCP_HLT, EXCP_INTERRUPT, EXCP_SHUTDOWN
from pyqemu.target.i386.cpu_state import (
    CC_A,
    CC_C,
    CC_P,
    CC_S,
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
    IF_MASK,
)
from pyqemu.target.i386.descriptors import (
    GATE_INT32,
    SYS_TSS32,
    TSS64,
    gate_descriptor,
    segment_descriptor,
)
from tests.accel.interp.harness import CODE, Guest, asm

# GDT entries (SDM vol. 3A, 3.4.5): flat 32-bit code/data, 64-bit code.
_FLAT = DESC_G_MASK | DESC_P_MASK | DESC_S_MASK             # 4 GiB, present, code/data
_CODE, _DATA, _DPL3 = DESC_CS_MASK | DESC_R_MASK, DESC_W_MASK, 3 << DESC_DPL_SHIFT
#: null, 0x08 32-bit code, 0x10 data, 0x18 64-bit code (flat; SDM vol. 3A, 3.4.5)
GDT = [0, segment_descriptor(0, 0xFFFFF, _FLAT | DESC_B_MASK | _CODE),
       segment_descriptor(0, 0xFFFFF, _FLAT | DESC_B_MASK | _DATA),
       segment_descriptor(0, 0xFFFFF, _FLAT | DESC_L_MASK | _CODE)]


def put_gdt(g: Guest, base: int = 0x1700) -> None:
    for i, d in enumerate(GDT):
        g.mem.write(base + 8 * i, d, 8)
    g.env.gdt.base, g.env.gdt.limit = base, 8 * len(GDT) - 1


def idt64_gate(g: Guest, base: int, vector: int, target: int, sel: int = 0x18,
               dpl: int = 0) -> None:
    """A 64-bit interrupt gate (SDM vol. 3A, 6.14.1, Figure 6-8)."""
    g.mem.write_bytes(base + vector * 16,
                      gate_descriptor(sel, target, GATE_INT32, dpl, ia32e=True))


def test_real_mode_arithmetic_stack_and_calls() -> None:
    g = Guest(16)
    g.load("""
        mov sp, 0x7000
        mov cx, 0x5
        xor ax, ax
    top:
        call add_cx
        loop top
        push ax
        pop dx
        hlt
    add_cx:
        add ax, cx
        ret
    """)
    assert g.run() == EXCP_HLT
    assert g.env.regs[0] & 0xFFFF == 15          # 5+4+3+2+1
    assert g.env.regs[2] & 0xFFFF == 15
    assert g.env.regs[1] & 0xFFFF == 0
    assert g.env.regs[4] & 0xFFFF == 0x7000
    assert g.core.icount == 3 + 5 * 4 + 3


def test_real_mode_segments_and_string_instructions() -> None:
    g = Guest(16)
    g.mem.write_bytes(0x20000, b"hello, world\0")
    g.load("""
        mov ax, 0x2000
        mov ds, ax
        mov ax, 0x3000
        mov es, ax
        xor si, si
        xor di, di
        cld
        mov cx, 13
        rep movsb
        mov di, 0x100
        mov ax, 0xabcd
        mov cx, 4
        rep stosw
        xor di, di
        mov al, 0x2c
        mov cx, 0x20
        repne scasb
        hlt
    """)
    assert g.run() == EXCP_HLT
    assert g.mem.read_bytes(0x30000, 13) == b"hello, world\0"
    assert g.mem.read_bytes(0x30100, 8) == bytes.fromhex("cdab") * 4
    # ',' is at index 5: DI stops one past it, CX counted 6 iterations.
    assert g.env.regs[7] & 0xFFFF == 6
    assert g.env.regs[1] & 0xFFFF == 0x20 - 6


def test_port_io_goes_through_the_io_address_space() -> None:
    g = Guest(32)
    g.io_in[0x60] = 0x42
    g.load("""
        mov al, 0x99
        out 0x80, al
        mov dx, 0x3f8
        mov eax, 0x11223344
        out dx, eax
        in al, 0x60
        mov bl, al
        in ax, dx
        hlt
    """)
    assert g.run() == EXCP_HLT
    assert g.io_log == [("out", 0x80, 1, 0x99), ("out", 0x3F8, 4, 0x11223344),
                        ("in", 0x60, 1, 0x42), ("in", 0x3F8, 2, 0x55)]
    assert g.env.regs[3] & 0xFF == 0x42
    assert g.env.regs[0] & 0xFFFF == 0x55


def test_divide_error_is_delivered_through_the_ivt_in_real_mode() -> None:
    """#DE is a fault: the pushed IP is the DIV itself (SDM vol. 3A, 6.15, Interrupt 0)."""
    g = Guest(16)
    g.mem.write(0, 0x0000_2000, 4)        # IVT[0] = 0000:2000
    g.load("""
        mov sp, 0x7000
        mov ax, 0x1234
        xor bx, bx
        div bl
        hlt
    """)
    g.load("""
        mov bp, sp
        mov si, [bp]
        mov di, [bp + 2]
        add word ptr [bp], 2
        mov cx, 0xdead
        iret
    """, addr=0x2000)
    assert g.run() == EXCP_HLT
    assert g.env.regs[1] & 0xFFFF == 0xDEAD
    assert g.env.regs[6] & 0xFFFF == CODE + 8   # mov sp (3) + mov ax (3) + xor (2)
    assert g.env.regs[7] & 0xFFFF == 0          # old CS
    assert g.env.regs[4] & 0xFFFF == 0x7000     # IRET popped IP, CS, FLAGS
    assert g.env.rip == CODE + 10 + 1           # after the HLT behind the skipped DIV


def test_unimplemented_instruction_names_mnemonic_bytes_and_address() -> None:
    g = Guest(16)
    g.load("mov ax, 0x1\nfsin")
    with pytest.raises(UnimplementedInstruction) as e:
        g.run()
    assert str(e.value) == ("interp: unimplemented instruction 'fsin' (d9 fe) at 0x1003 "
                            "(cs:ip 0000:1003)")
    assert isinstance(e.value, NotImplementedError)
    assert g.env.regs[0] == 1 and g.env.rip == 0x1003   # everything before it ran


def test_store_into_the_running_block_takes_effect() -> None:
    """Self-modifying code: the store patches the immediate of a later instruction
    of the same block, and of an already translated block."""
    g = Guest(32)
    code = g.load("""
        mov ebx, 0x1
        mov byte ptr [patch + 1], 0x7
    patch:
        mov eax, 0x1
        add ebx, eax
        hlt
    """)
    assert g.run() == EXCP_HLT
    assert g.env.regs[0] == 7 and g.env.regs[3] == 8
    assert code[13] == 1 and g.mem.read(CODE + 13, 1) == 7


def test_guest_store_invalidates_a_translated_block() -> None:
    g = Guest(32)
    g.load("""
        mov eax, 0x1
        hlt
        mov byte ptr [0x1001], 0x5
        jmp 0x1000
    """)
    assert g.run() == EXCP_HLT and g.env.regs[0] == 1
    g.env.rip = CODE + 6                 # the store, then back to the patched block
    assert g.run() == EXCP_HLT
    assert g.env.regs[0] == 5


def test_real_to_protected_to_long_mode_switch() -> None:
    g = Guest(16)
    g._identity_map()
    put_gdt(g)
    g.mem.write(0x1800, 0x1F | (0x1700 << 16), 6)       # GDTR image: limit, base
    g.load("""
        cli
        lgdt [0x1800]
        mov eax, cr0
        or eax, 0x1
        mov cr0, eax
        jmp 0x08:0x2000
    """, nasm=True)
    g.mem.write_bytes(0x2000, asm("""
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov esp, 0x9000
        mov eax, cr4
        or eax, 0x20
        mov cr4, eax
        mov eax, 0x100000
        mov cr3, eax
        mov ecx, 0xC0000080
        rdmsr
        or eax, 0x100
        wrmsr
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
        jmp 0x18:0x3000
    """, 32, 0x2000, nasm=True))
    g.mem.write_bytes(0x3000, asm("""
        mov rax, 0x123456789
        add rax, rax
        mov [0x5000], rax
        push rax
        pop rbx
        hlt
    """, 64, 0x3000))
    g.core.tb_flush()
    assert g.run() == EXCP_HLT
    assert g.env.mode_name == "long64"
    assert g.env.efer & EFER_LMA
    assert not g.env.eflags & IF_MASK
    assert g.mem.read(0x5000, 8) == 0x2468ACF12
    assert g.env.regs[3] == 0x2468ACF12 and g.env.regs[4] == 0x9000
    assert g.env.segs[1].selector == 0x18


def _long_guest_with_idt() -> Guest:
    g = Guest(64)
    put_gdt(g)
    g.env.segs[1].selector = 0x18
    g.env.idt.base, g.env.idt.limit = 0x6000, 0xFFF
    return g


def test_page_fault_sets_cr2_and_error_code_in_long_mode() -> None:
    """Not-present read at CPL0: error code 0 (SDM vol. 3A, 4.7); the frame is
    SS, RSP, RFLAGS, CS, RIP, error code (6.14.2)."""
    g = _long_guest_with_idt()
    idt64_gate(g, 0x6000, 14, 0x4000)
    g.load("mov rsp, 0x8000\nmov rcx, 0x40000010\nmov rsi, [rcx]\nhlt")
    g.load("mov rax, cr2\nmov rbx, [rsp]\nmov rdx, [rsp + 8]\nhlt", addr=0x4000)
    assert g.run() == EXCP_HLT
    assert g.env.regs[0] == 0x40000010
    assert g.env.cr[2] == 0x40000010
    assert g.env.regs[3] == 0                    # error code
    assert g.env.regs[2] == CODE + 14            # faulting RIP (after two 7-byte movs)
    assert g.env.regs[4] == 0x8000 - 48


def test_write_to_read_only_page_faults_with_protection_error_code() -> None:
    g = _long_guest_with_idt()
    idt64_gate(g, 0x6000, 14, 0x4000)
    g.mem.write(0x100000 + 0x2000 + 8, (1 << 21) | 0x85, 8)   # 2 MiB page 1: P, US, no RW
    g.env.cr[0] |= 1 << 16                                    # CR0.WP: CPL0 honours R/W
    g.load("mov rsp, 0x8000\nmov rcx, 0x200100\nmov dword ptr [rcx], 0x1\nhlt")
    g.load("mov rax, cr2\nmov rbx, [rsp]\nhlt", addr=0x4000)
    assert g.run() == EXCP_HLT
    assert g.env.regs[0] == 0x200100
    assert g.env.regs[3] == 0b011                # P (protection) | W/R (write)
    assert g.mem.read(0x200100, 4) == 0


def test_triple_fault_requests_a_reset_and_returns_shutdown() -> None:
    g = Guest(64)
    g.env.idt.base, g.env.idt.limit = 0, 0       # every vector is past the limit
    called = []
    g.core.on_triple_fault = lambda: called.append(True)
    g.load("ud2")
    assert g.run() == EXCP_SHUTDOWN
    assert called == [True]


def test_software_interrupt_and_iret_in_protected_mode() -> None:
    g = Guest(32)
    put_gdt(g)
    g.mem.write_bytes(0x6000 + 0x30 * 8, gate_descriptor(0x08, 0x2000, GATE_INT32))
    g.env.idt.base, g.env.idt.limit = 0x6000, 0x7FF
    g.load("mov esp, 0x8000\nsti\nint 0x30\nmov ebx, eax\nhlt")
    g.load("mov eax, [esp]\npushfd\npop ecx\niretd", addr=0x2000)
    assert g.run() == EXCP_HLT
    assert g.env.regs[3] == CODE + 8         # pushed EIP: after the 2-byte INT
    assert not g.env.regs[1] & IF_MASK       # the interrupt gate cleared IF
    assert g.env.eflags & IF_MASK            # IRET restored it
    assert g.env.regs[4] == 0x8000


def test_lazy_flags_cross_block_boundaries() -> None:
    """cmp 1, 2 sets CF SF AF PF (0xFFFFFFFF has even parity); INC/DEC keep CF (SDM INC)."""
    g = Guest(32)
    g.load("""
        mov eax, 0x1
        mov ebx, 0x2
        cmp eax, ebx
        jmp a
    a:  setl cl
        setb dl
        jmp b
    b:  mov esi, 0xffffffff
        add esi, 0x1
        jmp c
    c:  dec eax
        jmp d
    d:  adc edi, 0x0
        hlt
    """)
    assert g.run() == EXCP_HLT
    assert g.env.regs[1] & 0xFF == 1 and g.env.regs[2] & 0xFF == 1
    assert g.env.regs[7] == 1                # CF of the add survived DEC and two blocks
    assert g.env.eflags & 0x8D5 == 0         # adc 0 + 0 + 1 = 1: no flag


def test_cmp_flags_materialised_into_env_eflags() -> None:
    g = Guest(32)
    g.load("mov eax, 0x1\ncmp eax, 0x2\nhlt")
    assert g.run() == EXCP_HLT
    assert g.env.eflags & 0x8D5 == CC_C | CC_P | CC_A | CC_S


def test_breakpoint_stops_before_the_instruction_then_resumes() -> None:
    g = Guest(32)
    g.load("mov eax, 0x1\nmov ebx, 0x2\nmov ecx, 0x3\nhlt")
    g.core.breakpoints.add(CODE + 5)
    assert g.run() == EXCP_DEBUG
    assert g.env.rip == CODE + 5 and g.env.regs[0] == 1 and g.env.regs[3] == 0
    assert g.run() == EXCP_HLT
    assert g.env.regs[1] == 3


def test_single_steps_count_one_instruction_each() -> None:
    g = Guest(16)
    g.load("mov ax, 0x1\nadd ax, ax\nadd ax, ax\nhlt")
    for expected in (1, 2, 4):
        assert g.core.step() == EXCP_BUDGET
        assert g.env.regs[0] == expected
    assert g.core.step() == EXCP_HLT
    assert g.core.icount == 4


def test_exit_request_stops_an_endless_loop() -> None:
    g = Guest(32)
    g.load("top: inc eax\njmp top")
    timer = threading.Timer(0.05, lambda: setattr(g.core, "exit_request", True))
    timer.start()
    try:
        assert g.run(max_insns=None) == EXCP_INTERRUPT
    finally:
        timer.cancel()
    assert g.core.exit_request is False
    assert g.env.regs[0] > 0 and g.env.rip in (CODE, CODE + 1)


def test_cpuid_msrs_and_tsc() -> None:
    g = Guest(64)
    g.load("""
        mov eax, 0x7
        xor ecx, ecx
        cpuid
        mov r8, rax
        mov ecx, 0xC0000080
        rdmsr
        mov r9, rax
        mov ecx, 0xC0000103
        mov eax, 0x2a
        xor edx, edx
        wrmsr
        rdmsr
        mov r10, rax
        rdtsc
        shl rdx, 0x20
        or rdx, rax
        mov r11, rdx
        rdtsc
        shl rdx, 0x20
        or rax, rdx
        hlt
    """)
    assert g.run() == EXCP_HLT
    assert g.env.regs[8] == 7                        # the harness' CPUID returns (leaf, ...)
    assert g.env.regs[9] == 0xD00                    # EFER: LME | LMA | NXE
    assert g.env.regs[10] == 0x2A and g.env.tsc_aux == 0x2A
    assert g.env.regs[0] >= g.env.regs[11] > 0       # the TSC is monotonic


def test_unknown_msr_raises_gp() -> None:
    g = Guest(16)
    g.mem.write(13 * 4, 0x0000_2000, 4)              # IVT[13] -> 0000:2000
    g.load("mov sp, 0x7000\nmov ecx, 0x12345\nrdmsr\nhlt")
    g.load("mov bx, 0xbad\nhlt", addr=0x2000)
    assert g.run() == EXCP_HLT
    assert g.env.regs[3] & 0xFFFF == 0xBAD


def test_pop_to_memory_addresses_with_the_incremented_rsp() -> None:
    """POP [ESP+4]: the address is computed after ESP is incremented (SDM vol. 2B, POP)."""
    g = Guest(32)
    g.load("mov esp, 0x7000\npush 0x11\npush 0x22\npop dword ptr [esp + 0x4]\nhlt")
    assert g.run() == EXCP_HLT
    assert g.env.regs[4] == 0x7000 - 4
    assert g.mem.read(0x7000, 4) == 0x22        # (0x6FF8 + 4) + 4
    assert g.mem.read(0x6FFC, 4) == 0x11


def test_trace_groups_in_asm_exec_cpu_int() -> None:
    from pyqemu.util import trace
    lines: list[str] = []
    sink = trace.add_sink({"in_asm", "exec", "cpu", "int"}, lines.append)
    try:
        g = Guest(16)
        g.mem.write(3 * 4, 0x0000_2000, 4)
        g.load("mov sp, 0x7000\nint3\nhlt")
        g.load("iret", addr=0x2000)
        assert g.run() == EXCP_HLT
    finally:
        trace.remove_sink(sink)
    text = "\n".join(lines)
    assert "IN: 0x1000" in text and "int3" in text
    assert "Trace 0x1000" in text and "Trace 0x2000" in text
    assert "rip=1000" in text
    assert "interrupt 3 (#BP) software" in text


USER_GDT = GDT + [segment_descriptor(0, 0xFFFFF, _FLAT | DESC_B_MASK | _DPL3 | _DATA),  # 0x23
                  segment_descriptor(0, 0xFFFFF, _FLAT | DESC_L_MASK | _DPL3 | _CODE)]  # 0x2B


def _user_mode_guest() -> Guest:
    g = _long_guest_with_idt()
    for i, d in enumerate(USER_GDT):
        g.mem.write(0x1700 + 8 * i, d, 8)
    tss = 0x7000
    g.mem.write(0x1700 + 8 * 6, segment_descriptor(                # 0x30: 64-bit TSS
        tss, TSS64.min_limit, DESC_P_MASK | SYS_TSS32 << DESC_TYPE_SHIFT), 8)
    g.mem.write(0x1700 + 8 * 7, 0, 8)
    g.env.gdt.limit = 8 * 8 - 1
    g.mem.write(tss + TSS64.offset("rsp0"), 0x9000, 8)
    return g


def test_user_mode_interrupt_switches_to_the_tss_stack_and_back() -> None:
    """INT from CPL3 through a DPL3 gate: RSP0 from the 64-bit TSS, SS:RSP pushed, IRETQ
    returns to CPL3 (SDM vol. 3A, 6.14.2 and 7.7); LTR marks the TSS busy."""
    g = _user_mode_guest()
    for vector, target in ((0x80, 0x4000), (0x81, 0x5000)):
        idt64_gate(g, 0x6000, vector, target, dpl=3)
    g.load("""
        mov ax, 0x30
        ltr ax
        push 0x23
        push 0x6000
        pushfq
        push 0x2b
        push 0x3000
        iretq
    """)
    g.load("mov eax, 0x7\nint 0x80\nmov ebx, eax\nint 0x81", addr=0x3000)
    g.load("add eax, 0x10\nmov rcx, rsp\niretq", addr=0x4000)
    g.load("mov rdx, [rsp + 8]\nmov rsi, [rsp + 32]\nhlt", addr=0x5000)
    assert g.run() == EXCP_HLT
    assert g.env.regs[3] == 0x17
    assert g.env.regs[1] == 0x9000 - 40          # SS RSP RFLAGS CS RIP on the RSP0 stack
    assert g.env.regs[2] == 0x2B and g.env.regs[6] == 0x23
    assert g.env.cpl == 0 and g.env.tr.selector == 0x30
    assert (g.mem.read(0x1700 + 8 * 6 + 5, 1) & 0xF) == 0xB      # busy 64-bit TSS


def test_iretq_to_outer_level_nulls_segments_more_privileged_than_the_new_cpl() -> None:
    """IRETQ from CPL0 to CPL3 loads a null selector into DS, ES, FS, GS holding a data or
    non-conforming code segment with DPL < 3 (SDM vol. 2A, IRET, "RETURN-TO-OUTER-
    PRIVILEGE-LEVEL", which IA-32e mode reaches too; QEMU's TCG does the same); a DPL3
    data segment stays, and so does a null FS with its base.  A nulled GS keeps the base
    its load gave it (seg.null_outer_data_segs).  A host whose IRETQ from the guest
    kernel is software (KVM's PVM module) may leave FS/GS alone here."""
    g = _user_mode_guest()
    g.load("""
        mov ax, 0x23
        mov es, ax
        mov ax, 0x10
        mov ds, ax
        mov gs, ax
        mov ecx, 0xC0000101
        mov eax, 0x5670
        xor edx, edx
        wrmsr
        xor eax, eax
        mov fs, ax
        mov ecx, 0xC0000100
        mov eax, 0x12340
        xor edx, edx
        wrmsr
        push 0x23
        push 0x6000
        pushfq
        push 0x2b
        push 0x3000
        iretq
    """)
    g.load("mov ebx, 1\njmp 0x3005", addr=0x3000)
    assert g.run(max_insns=40) == EXCP_BUDGET
    env = g.env
    assert env.cpl == 3 and env.regs[3] == 1
    assert env.segs[3].selector == 0          # DS: DPL0 data -> null
    assert env.segs[5].selector == 0 and env.segs[5].base == 0x5670    # GS: DPL0 -> null
    assert env.segs[0].selector == 0x23       # ES: DPL3 data, kept
    assert env.segs[4].selector == 0 and env.segs[4].base == 0x12340   # FS: null, base kept
    assert env.segs[1].selector == 0x2B and env.segs[2].selector == 0x23


def test_iretq_at_the_same_level_keeps_data_segments() -> None:
    g = _user_mode_guest()
    g.load("""
        mov ax, 0x10
        mov ds, ax
        mov rax, rsp
        push 0x10
        push rax
        pushfq
        push 0x18
        push 0x3000
        iretq
    """)
    g.load("mov ebx, 1\njmp 0x3005", addr=0x3000)
    assert g.run(max_insns=40) == EXCP_BUDGET
    assert g.env.cpl == 0 and g.env.regs[3] == 1 and g.env.segs[3].selector == 0x10


def test_syscall_and_sysret() -> None:
    g = Guest(64)
    g.env.star = (0x20 << 48) | (0x18 << 32)
    g.env.lstar = 0x4000
    g.env.fmask = IF_MASK
    g.load("""
        mov ecx, 0xC0000080
        rdmsr
        or eax, 0x1
        wrmsr
        sti
        syscall
        nop
    """)
    g.load("mov rsi, rcx\nmov rdi, r11\nmov rbx, rsp\n.byte 0x48, 0x0f, 0x07", addr=0x4000)
    assert g.run(max_insns=10) == EXCP_BUDGET
    assert g.env.regs[6] == CODE + 15            # RCX: the instruction after SYSCALL
    assert g.env.regs[7] & IF_MASK               # R11: RFLAGS before
    assert g.env.rip == CODE + 15                # 10 instructions: 6 + the handler's 4
    assert g.env.segs[1].selector == 0x33 and g.env.segs[2].selector == 0x2B
    assert g.env.cpl == 3 and g.env.eflags & IF_MASK


def test_code_rewritten_between_runs_is_retranslated() -> None:
    """A host-side write (no guest store, no tb_flush) to translated code is noticed at the
    next run: the page no longer matches what was translated."""
    g = Guest(32)
    g.load("mov eax, 0x1\nhlt")
    assert g.run() == EXCP_HLT and g.env.regs[0] == 1
    g.mem.write(CODE + 1, 0x2, 4)                  # mov eax, 0x2
    g.env.rip = CODE
    assert g.run() == EXCP_HLT and g.env.regs[0] == 2


def test_step_onto_a_fault_stops_at_the_handler() -> None:
    g = Guest(16)
    g.mem.write(6 * 4, 0x0000_2000, 4)          # IVT[6] (#UD) -> 0000:2000
    g.env.regs[4] = 0x7000
    g.load("ud2")
    g.load("hlt", addr=0x2000)
    assert g.core.step() == EXCP_BUDGET
    assert g.env.rip == 0x2000 and g.core.icount == 0
    assert g.mem.read(0x7000 - 6, 2) == CODE   # the fault's IP: UD2 itself


def test_closed_a20_gate_wraps_at_one_mebibyte() -> None:
    g = Guest(16)
    g.env.a20_mask = ~(1 << 20)
    g.mem.write(0x10, 0x77, 1)
    g.load("mov ax, 0xffff\nmov ds, ax\nmov al, byte ptr [0x20]\nhlt")
    assert g.run() == EXCP_HLT
    assert g.env.reg("al") == 0x77              # FFFF:0020 = 0x100010 -> 0x000010


def test_looping_block_with_a_side_exit_writes_back_later_registers() -> None:
    """A block that loops to itself and leaves through an earlier side exit must store the
    registers the *previous iteration* wrote after that exit (here EDI)."""
    g = Guest(64)
    g.load("""
        mov eax, 0x5
        mov edi, 0x8
    bit_loop:
        shr eax, 0x1
        jnc no_xor
        xor eax, 0xedb88320
    no_xor:
        dec edi
        jnz bit_loop
        hlt
    """)
    eax = 5
    for _ in range(8):
        cf, eax = eax & 1, eax >> 1
        eax ^= 0xEDB88320 if cf else 0
    assert g.run() == EXCP_HLT
    assert g.env.regs[0] == eax and g.env.regs[7] == 0
    xors = 0
    v = 5
    for _ in range(8):
        cf, v = v & 1, v >> 1
        xors += cf
        v ^= 0xEDB88320 if cf else 0
    assert g.core.icount == 2 + 8 * 4 + xors + 1      # movs, loop body, taken XORs, HLT


def test_read_modify_write_fault_reports_a_write_access() -> None:
    """INC [m] on a read-only page faults with W=1 even though its first access is the
    read (the CPU checks an RMW read for write; error code P|W here)."""
    g = _long_guest_with_idt()
    idt64_gate(g, 0x6000, 14, 0x4000)
    g.mem.write(0x100000 + 0x2000 + 8, (1 << 21) | 0x85, 8)   # 2 MiB page 1: no RW
    g.env.cr[0] |= 1 << 16                                    # CR0.WP
    g.load("mov rsp, 0x8000\nmov rcx, 0x200100\ninc dword ptr [rcx]\nhlt")
    g.load("mov rbx, [rsp]\nhlt", addr=0x4000)
    assert g.run() == EXCP_HLT
    assert g.env.regs[3] == 0b011
