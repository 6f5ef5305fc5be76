# SYSCALL/SYSRET between ring 3 and a 64-bit kernel (Intel SDM vol. 2B, SYSCALL and
# SYSRET; vol. 3A, 5.8.8): a multiboot kernel enters IA-32e mode, loads a TSS (RSP0),
# sets EFER.SCE, STAR (kernel CS 0x10/SS 0x18, user base 0x18: SS 0x23, CS 0x2b), LSTAR
# and SFMASK, and SYSRETQs to ring 3 (user pages alias the image at +1 MiB).  Ring 3
# prints through a write syscall (the kernel's handler drives the UART), checks what
# SYSCALL left in RCX/R11 (the kernel reports them) and exits through a syscall that
# writes isa-debug-exit.
# This host's KVM (PVM) does not run it: SYSCALL from ring 3 reaches LSTAR still at CPL 3
# (CS 0x2b), whose fetch from the supervisor page is a #PF and, without an IDT, a triple
# fault; the `#! kvm:` line names that, and the suite skips kvm only when the run ends so.
#! kvm: SYSCALL from ring 3 to the guest's own LSTAR
#! mode: multiboot
#! include: lib/user64.inc
#! exit: 0x2c
#! serial: kernel: to ring 3\r\nHi from ring 3\r\nr11=0000000000000447 rcx-ok cs=0010 ss=0018\r\n
    .code32
entry:
    mov esp, 0x90000
    .byte 0x0f, 0x01, 0x15                   # lgdt [gdtr] (no stray 0x66)
    .long gdtr
    # 0x10000 PML4, 0x11000 PDPT, 0x12000 PD, 0x13000 PT.
    mov edi, 0x10000
    mov ecx, 0x1400
    xor eax, eax
    cld
    rep stosd
    jmp user64_enter                         # lib/user64.inc: paging, TSS, IA-32e

    .code64
long_entry:
    mov ecx, 0xc0000080                      # EFER.SCE
    rdmsr
    or eax, 0x1
    wrmsr
    mov ecx, 0xc0000081                      # STAR[47:32] kernel CS, [63:48] user base
    xor eax, eax
    mov edx, 0x00180010
    wrmsr
    mov ecx, 0xc0000082                      # LSTAR
    lea rax, [rip + syscall_entry]
    mov rdx, rax
    shr rdx, 0x20
    wrmsr
    mov ecx, 0xc0000084                      # SFMASK: clear TF, DF, IF, AC on entry
    mov eax, 0x40700
    xor edx, edx
    wrmsr
    lea rsi, [rip + s_kernel]
    call puts
    lea rcx, [rip + user_code]
    add rcx, 0x100000
    mov r11d, 0x2
    mov rsp, 0x3ff000                        # the user stack (a user page)
    sysret                                   # REX.W: to 64-bit ring 3

# Ring 3 (runs at its label + 1 MiB).  write(rdi=char): rax 1; status: rax 2; exit: rax 60.
user_code:
    lea rbx, [rip + s_user]
user_loop:
    movzx edi, byte ptr [rbx]
    test edi, edi
    jz user_done
    cmp edi, 0x0                             # AF defined (TEST leaves it undefined): SYSCALL
    mov eax, 0x1                             # saves RFLAGS in R11, which the kernel pushes
    syscall
    inc rbx
    jmp user_loop
user_done:
    cmp edi, 0x0                             # AF defined: R11 below is printed
    stc
    std
    mov eax, 0x2                             # the kernel prints the R11 and RCX it got
    syscall
    mov edi, 0x2c
    mov eax, 0x3c
    syscall
    hlt                                      # not reached

syscall_entry:
    mov qword ptr [rip + user_rsp], rsp      # SYSCALL keeps the user RSP
    mov rsp, 0x90000
    push rcx
    push r11
    cmp eax, 0x1
    je sys_write
    cmp eax, 0x2
    je sys_status
    cmp eax, 0x3c
    je sys_exit
    mov rax, -1
    jmp sys_ret
sys_write:
    mov eax, edi
    call putc
    xor eax, eax
    jmp sys_ret
sys_status:
    mov r8, rcx
    lea rsi, [rip + s_r11]
    call puts
    mov rax, r11
    mov ecx, 0x10
    call puthexn
    lea rdx, [rip + user_done]
    add rdx, 0x10000c                 # cmp edi, 0 (3), stc (1), std (1), mov eax, 2 (5),
                                      # syscall (2)
    lea rsi, [rip + s_rcx_ok]
    cmp r8, rdx
    je sys_status_rcx
    lea rsi, [rip + s_rcx_bad]
sys_status_rcx:
    call puts
    mov ax, cs
    movzx eax, ax
    mov ecx, 0x4
    call puthexn
    lea rsi, [rip + s_ss]
    call puts
    mov ax, ss
    movzx eax, ax
    call puthexn
    lea rsi, [rip + crlf]
    call puts
    xor eax, eax
sys_ret:
    pop r11
    pop rcx
    mov rsp, qword ptr [rip + user_rsp]
    sysret                                   # REX.W: to 64-bit ring 3
sys_exit:
    mov eax, edi
    out 0xf4, al
    hlt

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
user_rsp:
    .quad 0
    .align 16
tss:
    .long 0
    .quad 0x80008                            # RSP0 (aligned down to 16 on use)
    .quad 0, 0, 0
    .quad 0x70000                            # IST1
    .quad 0, 0, 0, 0, 0, 0, 0
    .word 0, 0x68                            # no I/O permission bitmap
s_kernel:
    .ascii "kernel: to ring 3"
    .byte 0x0d, 0x0a, 0x00
s_user:
    .ascii "Hi from ring 3"
    .byte 0x0d, 0x0a, 0x00
s_r11:
    .ascii "r11="
    .byte 0x00
s_rcx_ok:
    .ascii " rcx-ok cs="
    .byte 0x00
s_rcx_bad:
    .ascii " rcx-bad cs="
    .byte 0x00
s_ss:
    .ascii " ss="
    .byte 0x00
crlf:
    .byte 0x0d, 0x0a, 0x00
