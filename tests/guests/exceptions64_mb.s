# Exceptions and interrupts in long mode (Intel SDM vol. 3A, 6.14): a multiboot kernel
# enters IA-32e mode, installs an IDT of 64-bit interrupt gates and a 64-bit TSS (RSP0,
# IST1) and takes #DE (div by 0, through IST1), #UD (ud2), #GP (a non-canonical access,
# a WRMSR to a bad MSR), #PF (a write to a not-present page: the handler checks CR2 and
# the error code, maps the page and the write completes; #UD on a misaligned stack: the
# frame is aligned to 16, 6.14.2).  Then it IRETQs to ring 3 twice (user pages alias the
# kernel image at +1 MiB): int3 (#BP, a DPL 3 gate) switches to RSP0, a read of a
# supervisor page takes #PF with U=1, and ud2 returns to the kernel each time.
# Software interrupts are int3 in ring 3 only: this host's KVM (PVM) runs CPL 0 code
# through its instruction emulator, which cannot emulate INT n/INT3 outside real mode
# (KVM_EXIT_INTERNAL_ERROR), and gives ring-3 INT n (CD ib) #UD or that same error;
# int 0x80 is exercised by paging32_mb.s (interp against Unicorn).  Each
# handler logs (vector, error code, CR2, address of the saved RIP); the kernel prints it.
#! mode: multiboot
#! include: lib/user64.inc
#! exit: 0x2b
#! serial: v=00 e=00000000 cr2=00000000 f=0006FFD8\r\nv=06 e=00000000 cr2=00000000 f=0008FFC8\r\nv=0D e=00000000 cr2=00000000 f=0008FFD8\r\nv=0D e=00000000 cr2=00000000 f=0008FFD8\r\nv=0E e=00000002 cr2=00300000 f=0008FFD8\r\nv=03 e=00000000 cr2=00300000 f=0007FFD8\r\nv=06 e=00000000 cr2=00300000 f=0007FFD8\r\nv=0E e=00000005 cr2=00100000 f=0007FFD8\r\nv=06 e=00000000 cr2=00100000 f=0007FFD8\r\nr=00000122 00005A5A\r\n
    .code32
entry:
    mov esp, 0x90000
    .byte 0x0f, 0x01, 0x15                   # lgdt [gdtr] (no stray 0x66)
    .long gdtr
    # 0x10000 PML4, 0x11000 PDPT, 0x12000 PD, 0x13000 PT, 0x14000 IDT, 0x20000 the log.
    mov edi, 0x10000
    mov ecx, 0x1400
    xor eax, eax
    cld
    rep stosd
    mov edi, 0x20000
    mov ecx, 0x400
    rep stosd
    jmp user64_enter                         # lib/user64.inc: paging, TSS, IA-32e

    .code64
long_entry:
    mov edi, 0x0
    mov esi, isr_de
    mov edx, 0x8e01                          # interrupt gate, IST1
    call set_gate
    mov edx, 0x8e00
    mov edi, 0x6
    mov esi, isr_ud
    call set_gate
    mov edi, 0xd
    mov esi, isr_gp
    call set_gate
    mov edi, 0xe
    mov esi, isr_pf
    call set_gate
    mov edx, 0xee00                          # DPL 3: int3 reachable from ring 3
    mov edi, 0x3
    mov esi, isr_bp
    call set_gate
    mov ebx, idtr
    lidt [rbx]

    mov ebx, resume
    lea rax, [rip + after_de]
    mov qword ptr [rbx], rax
    mov eax, 0x1
    xor edx, edx
    xor ecx, ecx
    cmp ecx, edx                             # AF defined (XOR leaves it undefined): the
    div ecx                                  # fault frames below hold these flags
after_de:
    lea rax, [rip + after_ud]
    mov qword ptr [rbx], rax
    push rax                                 # RSP = 8 mod 16: the frame is aligned
    ud2
after_ud:
    pop rax
    lea rax, [rip + after_gp]
    mov qword ptr [rbx], rax
    mov rsi, 0x8000000000000000
    mov rax, qword ptr [rsi]
after_gp:
    lea rax, [rip + after_gp2]
    mov qword ptr [rbx], rax
    mov ecx, 0x12345678
    xor eax, eax
    xor edx, edx
    cmp eax, edx                             # AF defined, as above
    wrmsr
after_gp2:
    mov esi, 0x300000
    mov dword ptr [rsi], 0x5a5a              # #PF, mapped by the handler, then done

    # To ring 3 twice: SS, RSP, RFLAGS, CS, RIP for IRETQ.
    xor r14d, r14d
    lea rax, [rip + user_code1]
    jmp enter_user
user_phase2:
    mov ebx, resume
    lea rax, [rip + user_resume]
    add rax, 0x100000
    mov qword ptr [rbx], rax
    lea rax, [rip + user_code2]
enter_user:
    add rax, 0x100000
    push 0x23
    push 0x3ff000
    push 0x2
    push 0x2b
    push rax
    iretq

after_user:
    mov rsp, 0x90000
    # IRETQ to ring 3 nulls DS, ES, FS and GS, which hold the DPL0 selector 0x18 (SDM
    # vol. 2A, IRET); this host's KVM leaves FS and GS.  Reload all four.
    mov ax, 0x18
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    inc r14d
    cmp r14d, 0x1
    je user_phase2
    mov ebx, 0x20000
    mov r13d, dword ptr [rbx]                # entries logged
    add rbx, 0x10
print_log:
    mov esi, s_v
    call puts
    mov rax, qword ptr [rbx]
    mov ecx, 0x2
    call puthexn
    mov esi, s_e
    call puts
    mov rax, qword ptr [rbx + 8]
    mov ecx, 0x8
    call puthexn
    mov esi, s_cr2
    call puts
    mov rax, qword ptr [rbx + 16]
    call puthexn
    mov esi, s_f
    call puts
    mov rax, qword ptr [rbx + 24]
    call puthexn
    mov esi, crlf
    call puts
    add rbx, 0x20
    dec r13d
    jnz print_log
    mov esi, s_r
    call puts
    mov esi, 0x3ff000
    mov eax, dword ptr [rsi]
    call puthexn
    mov al, 0x20
    call putc
    mov esi, 0x300000
    mov eax, dword ptr [rsi]
    call puthexn
    mov esi, crlf
    call puts
    cmp al, 0x0                              # AF defined (TEST leaves it undefined) at the end
    mov al, 0x2b
    out 0xf4, al
    hlt

# Ring 3 code: runs at its label + 1 MiB (user alias of the image).
user_code1:
    int3
    ud2                                      # #UD from ring 3: back to the kernel
user_code2:
    mov eax, 0x122
    mov ebx, 0x3ff000
    mov qword ptr [rbx], rax
    mov eax, 0x100000
    mov eax, dword ptr [rax]                 # supervisor page: #PF, error code U|P
user_resume:
    ud2                                      # #UD from ring 3: back to the kernel

# set_gate: IDT[EDI] = 64-bit gate to RSI, type/DPL/IST word EDX, selector 0x10 (6.14.1).
set_gate:
    push rdi
    shl edi, 0x4
    add edi, 0x14000
    mov eax, esi
    and eax, 0xffff
    or eax, 0x100000
    mov dword ptr [rdi], eax
    mov eax, esi
    and eax, 0xffff0000
    or eax, edx
    mov dword ptr [rdi + 4], eax
    mov rax, rsi
    shr rax, 0x20
    mov dword ptr [rdi + 8], eax
    mov dword ptr [rdi + 12], 0
    pop rdi
    ret

isr_de:
    push 0
    push 0x0
    jmp isr_common
isr_bp:
    push 0
    push 0x3
    jmp isr_common
isr_ud:
    push 0
    push 0x6
    jmp isr_common
isr_gp:
    push 0xd
    jmp isr_common
isr_pf:
    push 0xe
    jmp isr_common

# Stack here: vector, error code, RIP, CS, RFLAGS, RSP, SS.
isr_common:
    push rax
    push rbx
    push rcx
    push rdx
    mov ecx, 0x20000
    mov eax, dword ptr [rcx]
    inc dword ptr [rcx]
    shl eax, 0x5
    lea rbx, [rcx + rax + 0x10]
    mov rax, qword ptr [rsp + 32]
    mov qword ptr [rbx], rax
    mov rax, qword ptr [rsp + 40]
    mov qword ptr [rbx + 8], rax
    mov rax, cr2
    mov qword ptr [rbx + 16], rax
    lea rax, [rsp + 48]
    mov qword ptr [rbx + 24], rax
    mov rax, qword ptr [rsp + 32]
    cmp eax, 0x3
    je isr_done
    cmp eax, 0x6
    jne isr_not_user_ud
    test byte ptr [rsp + 56], 0x3            # the saved CS: #UD from ring 3 ends user mode
    jnz after_user
isr_not_user_ud:
    cmp eax, 0xe
    jne isr_resume
    mov rax, cr2
    cmp rax, 0x300000
    jne isr_resume
    mov ecx, 0x13800
    mov dword ptr [rcx], 0x300003            # map it (supervisor, writable) and retry
    invlpg [rax]
    jmp isr_done
isr_resume:
    mov ecx, resume
    mov rax, qword ptr [rcx]
    mov qword ptr [rsp + 48], rax
isr_done:
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 0x10
    iretq

# puts: print the NUL-terminated string at RSI.
puts:
    lodsb
    test al, al
    jz puts_done
    call putc
    jmp puts
puts_done:
    ret

putc:
    push rdx
    push rax
    mov dx, 0x3fd
putc_wait:
    in al, dx
    test al, 0x20
    jz putc_wait
    pop rax
    mov dx, 0x3f8
    out dx, al
    pop rdx
    ret

# puthexn: print the low ECX hex digits of RAX (upper case).
puthexn:
    push rcx
    push rax
    mov edx, ecx
    shl ecx, 0x2
    ror rax, cl
puthex_loop:
    rol rax, 0x4
    push rax
    and al, 0xf
    cmp al, 0x9
    jbe puthex_digit
    add al, 0x7
puthex_digit:
    add al, 0x30
    call putc
    pop rax
    dec edx
    jnz puthex_loop
    pop rax
    pop rcx
    ret

    .align 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff                 # 0x08 code32
    .quad 0x00af9a000000ffff                 # 0x10 code64
    .quad 0x00cf92000000ffff                 # 0x18 data
    # The user descriptors come with their accessed bits set: IRETQ loading them must
    # set A (SDM vol. 3A, 3.4.5.1; interp does), but this host's KVM (PVM) emulates
    # IRETQ to ring 3 without writing it, so it cannot be the oracle for that write.
    .quad 0x00cff3000000ffff                 # 0x23 user data
    .quad 0x00affb000000ffff                 # 0x2b user code64
    .quad 0, 0                               # 0x30 TSS (filled in)
gdtr:
    .word 0x3f
    .long gdt
    .align 8
idtr:
    .word 0xfff
    .quad 0x14000
resume:
    .quad 0
    .align 16
tss:
    .long 0
    .quad 0x80008                            # RSP0 (aligned down to 16 on use)
    .quad 0, 0, 0
    .quad 0x70000                            # IST1
    .quad 0, 0, 0, 0, 0, 0, 0
    .word 0, 0x68                            # no I/O permission bitmap
s_v:
    .ascii "v="
    .byte 0x00
s_e:
    .ascii " e="
    .byte 0x00
s_cr2:
    .ascii " cr2="
    .byte 0x00
s_f:
    .ascii " f="
    .byte 0x00
s_r:
    .ascii "r="
    .byte 0x00
crlf:
    .byte 0x0d, 0x0a, 0x00
